"""Camera geometry, for every format once poses are camera-to-world in OpenCV axes: lens distortion (checked,
and undone onto a pinhole camera), splitting a projection matrix, checking that the cameras can see a common
object, and the normalisation of the transforms formats (which come without one)."""
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from .input_checks import DatasetError, check_file, format_row, matrix

# The largest |coordinate| and radius, and 1 / the smallest radius, of a region of interest and of the points and
# camera centres it is computed from (world units): the normalisation divides by the radius and squares
# coordinates, which must neither overflow nor leave a singular matrix.
COORDINATE_LIMIT = 1e9
# Focal lengths in units of the image's longer side: beyond these a camera sees next to nothing or wraps
# around (ray directions overflow, its projection matrix is singular to float precision).
FOCAL_RANGE = (1e-2, 1e4)


def check_sphere(centre, radius, centre_name="--center", radius_name="--radius"):
    """DatasetError naming the flag (or file and key) unless the region of interest (centre [3], radius) lies
    within COORDINATE_LIMIT with a radius of at least 1 / COORDINATE_LIMIT (NaN fails too)."""
    centre = np.asarray(centre, np.float64)
    if centre.shape != (3,) or not np.all(np.abs(centre) <= COORDINATE_LIMIT):
        raise DatasetError(f"{centre_name}: {centre.tolist()} is not three numbers x,y,z within "
                           f"+-{COORDINATE_LIMIT:g}")
    if not 1 / COORDINATE_LIMIT <= radius <= COORDINATE_LIMIT:
        raise DatasetError(f"{radius_name}: {radius!r} is not a number from {1 / COORDINATE_LIMIT:g} to "
                           f"{COORDINATE_LIMIT:g}")


# The names of a lens's distortion coefficients in the order OpenCV takes them (cv2.fisheye's for a fisheye lens).
OPENCV_COEFFICIENTS = ("k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6")
FISHEYE_COEFFICIENTS = ("k1", "k2", "k3", "k4")


# How much a lens may scale the image's edge against a pinhole's (the distorted / undistorted radius there): a fit
# beyond puts a few pixels' worth of the view in the image, or a sliver of it over the whole image.
LENS_EDGE_SCALE = (0.1, 10.0)


def radial_factor(dist, fisheye, t):
    """A lens's radial distortion as the factor distorted / undistorted at t [N] (the ray's radius in normalised
    image units, or for `fisheye` its angle theta to the axis) -> [N]; the distorted radius is t times it.
    dist: OpenCV's coefficients, k1 k2 p1 p2 [k3 [k4 k5 k6]] (a rational polynomial in t^2 when k4..k6 are
    given; p1, p2 are tangential, not radial), or cv2.fisheye's k1 k2 k3 k4 (theta_d = theta (1 + k1 theta^2 +
    k2 theta^4 + k3 theta^6 + k4 theta^8))."""
    t2 = np.square(t)
    if fisheye:
        k1, k2, k3, k4 = dist
        return 1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4)))
    k1, k2, _, _, k3, k4, k5, k6 = opencv_coefficients(dist)
    return (1 + t2 * (k1 + t2 * (k2 + t2 * k3))) / (1 + t2 * (k4 + t2 * (k5 + t2 * k6)))


def opencv_coefficients(dist):
    """OpenCV's 4, 5 or 8 distortion coefficients -> the 8 of its rational model (the missing ones 0) [8]."""
    return np.concatenate([np.asarray(dist, np.float64), np.zeros(8 - len(dist))])


def describe_distortion(dist, fisheye):
    """'k1 -5, k2 0' (and any other radial coefficient that is not 0), for a message."""
    names = FISHEYE_COEFFICIENTS if fisheye else OPENCV_COEFFICIENTS
    terms = [f"{n} {v:g}" for n, v in zip(names, dist) if n in ("k1", "k2") or (n[0] == "k" and v != 0)]
    return ("fisheye " if fisheye else "") + "distortion " + ", ".join(terms)


def check_distortion(k, dist, size, path, label, fisheye=False):
    """DatasetError unless a lens's radial distortion (k [3, 3], size (W, H); dist and `fisheye` as for
    `radial_factor`) maps undistorted radii (fisheye: angles theta) one-to-one onto the circle the image's edges
    enclose about the principal point: a radial map r (1 + k1 r^2 + k2 r^4 + k3 r^6) that turns back before
    reaching it folds the image, and undistorting it gives garbage. (Only the inscribed circle: fits that go
    wrong in the far corners are left to the undistortion, `lens_undistortion`.)"""
    width, height = size
    edge = min(k[0, 2] + 0.5, width - 0.5 - k[0, 2]) / k[0, 0], min(k[1, 2] + 0.5, height - 0.5 - k[1, 2]) / k[1, 1]
    reach = max(min(edge), 0.0)  # the inscribed circle's radius in normalised image units
    top = 4.0 * reach + 1e-6
    radii = np.linspace(0.0, min(top, np.pi) if fisheye else top, 4001)  # a fisheye's theta ends behind it
    with np.errstate(all="ignore"):  # huge coefficients: inf and NaN fail the checks below
        distorted = radii * radial_factor(dist, fisheye, radii)
        factor = radial_factor(dist, fisheye, np.array([reach]))[0]  # at the edge; a real lens's is near 1
    reached = np.nonzero(distorted >= reach)[0]
    lens = f"{label} {describe_distortion(dist, fisheye)}"
    if not len(reached) or not np.all(np.diff(distorted[: reached[0] + 1]) > 0):
        raise DatasetError(f"{path}: {lens} folds the image (the radial map turns back before the image's edge)")
    low, high = LENS_EDGE_SCALE
    if not low <= factor <= high:
        raise DatasetError(f"{path}: {lens} scales the image's edge by {factor:.3g}, expected a lens's ({low:g} to "
                           f"{high:g})")


@dataclass
class Undistortion:
    """Resampling onto a pinhole camera of the same image size."""

    intrinsics: np.ndarray  # [3, 3] pinhole K of the output images, pixel centres at integers
    map_x: Optional[np.ndarray]  # [H, W] float32 source column of each output pixel (None: copy the image)
    map_y: Optional[np.ndarray]  # [H, W] float32 source row

    def apply(self, image):
        """image [H, W, C] or [H, W] (an image, or a mask or alpha channel, which binary_mask thresholds after)
        -> the undistorted one, same shape. Sources up to half a pixel outside repeat the edge: the output's
        border lies on the input's, and must not fade to black."""
        if self.map_x is None:
            return image
        return cv2.remap(image, self.map_x, self.map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def border_pixels(width, height, samples):
    """Pixels u, v [4 * samples] along the edge of a width x height image (its corners included)."""
    us = np.linspace(0, width - 1, samples)
    vs = np.linspace(0, height - 1, samples)
    u = np.concatenate([us, us, np.zeros_like(vs), np.full_like(vs, width - 1)])
    v = np.concatenate([np.zeros_like(us), np.full_like(us, height - 1), vs, vs])
    return u, v


def inside_image(pixels, width, height):
    """Whether every pixel position [N, 2] (x, y) is finite and within the width x height image's extent."""
    return bool(np.all(np.isfinite(pixels)) and np.all(pixels >= -0.5) and np.all(pixels[:, 0] <= width - 0.5)
                and np.all(pixels[:, 1] <= height - 0.5))


def smallest_zoom(covers, low, high, steps=40):
    """The smallest focal-length factor in [low, high] for which covers(factor) holds, by bisection (covers must
    be false below some factor and true above it); `high` when none below it does."""
    for _ in range(steps):
        mid = 0.5 * (low + high)
        low, high = (low, mid) if covers(mid) else (mid, high)
    return high


# The widest ray a pinhole view made by undistortion may show (at its corners): beyond, a fisheye's pinhole view
# spends its pixels on the rim.
MAX_RAY_ANGLE = np.radians(80.0)
MAX_ZOOM = 100.0  # the largest focal-length factor tried for a pinhole view whose every pixel has a source


def increasing_radius(dist, fisheye):
    """How far from the axis (normalised pinhole radius, up to tan(MAX_RAY_ANGLE)) the lens's radial map still
    increases: beyond, a fitted polynomial turns back and rays there would take their colour from nearer the
    centre (the image folds onto itself)."""
    top = MAX_RAY_ANGLE if fisheye else np.tan(MAX_RAY_ANGLE)
    t = np.linspace(0.0, top, 4001)
    with np.errstate(all="ignore"):
        rising = np.diff(t * radial_factor(dist, fisheye, t)) > 0
    end = t[np.argmin(rising)] if not rising.all() else top
    return float(np.tan(end) if fisheye else end)


def distorted_pixels(k, dist, fisheye, x, y):
    """Where rays (x, y, 1) [N] (normalised pinhole coordinates) land in the image of a lens (k [3, 3], dist as
    for `radial_factor`) -> pixel positions [N, 2], by OpenCV's model, as its undistortion maps use it."""
    rays = np.stack([x, y, np.ones_like(x)], axis=-1)
    if fisheye:
        return cv2.fisheye.projectPoints(rays[None], np.zeros(3), np.zeros(3), k, dist)[0].reshape(-1, 2)
    return cv2.projectPoints(rays, np.zeros(3), np.zeros(3), k, dist)[0].reshape(-1, 2)


def lens_undistortion(k, dist, fisheye, size, path, label):
    """The Undistortion of a lens's images (k [3, 3], pixel centres at integers; dist and `fisheye` as for
    `radial_factor`; size (W, H)) onto the widest pinhole camera of the same size, principal point and aspect
    ratio whose every pixel has a source in the image (as cv2.getOptimalNewCameraMatrix's alpha=0 or
    cv2.fisheye's balance=0, but keeping the principal point and checked along the whole border): a barrel or
    fisheye lens's view widens (smaller focal lengths), a pincushion one's narrows, and no pixel is left black
    for training to fit. The view stays where the radial map increases (`increasing_radius`). DatasetError when
    the distortion is not a lens's (`check_distortion`) or no such view exists (a principal point far outside
    the image)."""
    check_distortion(k, dist, size, path, label, fisheye)
    width, height = size
    dist = np.asarray(dist, np.float64) if fisheye else opencv_coefficients(dist)
    u, v = border_pixels(width, height, max(width, height))  # every border pixel
    x0, y0 = (u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1]  # their rays at the lens's focal lengths
    farthest, limit = np.hypot(x0, y0).max(), increasing_radius(dist, fisheye)

    def covers(zoom):
        """Whether the pinhole view at `zoom` times the lens's focal lengths has every pixel's source inside."""
        return farthest <= zoom * limit and inside_image(distorted_pixels(k, dist, fisheye, x0 / zoom, y0 / zoom),
                                                         width, height)

    widest = farthest / limit
    zoom = widest if covers(widest) else smallest_zoom(covers, widest, MAX_ZOOM)
    if not covers(zoom):
        raise DatasetError(f"{path}: {label} {describe_distortion(dist, fisheye)}: no pinhole view of the lens lies "
                           f"inside its {width}x{height} image (is the principal point inside it?)")
    new_k = k.copy()
    new_k[:2, :2] *= zoom
    if fisheye:
        map_x, map_y = cv2.fisheye.initUndistortRectifyMap(k, dist, np.eye(3), new_k, (width, height), cv2.CV_32FC1)
    else:
        map_x, map_y = cv2.initUndistortRectifyMap(k, dist, None, new_k, (width, height), cv2.CV_32FC1)
    return Undistortion(new_k, map_x, map_y)


def decompose_projection(P):
    """Split a 3x4 projection P = K [R | t] into K (3x3, positive focal lengths, K[2,2] = 1) and the
    camera-to-world pose (4x4). P and -P are the same camera and give the same result: the camera looks along
    det(M) m3 (M = P[:, :3], m3 its last row; Hartley & Zisserman 6.2.3), so P is first scaled to det(M) > 0,
    and the signs RQ leaves on K's diagonal are moved into R (K R = (K D)(D R), D = diag(+-1), det D = 1)."""
    P = np.asarray(P, dtype=np.float64)
    if np.linalg.det(P[:, :3]) < 0:
        P = -P
    k, rotation, centre = cv2.decomposeProjectionMatrix(P)[:3]
    signs = np.where(np.diag(k) < 0, -1.0, 1.0)
    if np.prod(signs) > 0:  # else det(K) < 0: a degenerate P; left as it is for the caller's check
        k, rotation = k * signs, signs[:, None] * rotation
    k = k / k[2, 2]
    pose = np.eye(4)
    pose[:3, :3] = rotation.T
    pose[:3, 3] = (centre[:3] / centre[3])[:, 0]
    return k, pose


def unit_projection(P):
    """P divided by its largest entry: the same camera (a projection is defined up to scale), whose determinant
    and decomposition cannot overflow however large the file's numbers are."""
    largest = np.abs(P).max()
    return P / largest if largest > 0 else P


def projection_camera(P, path, key):
    """(K [3, 3], camera-to-world [4, 4]) of the projection P [3, 4] K [R | t], entry `key` of the cameras file
    `path` (the error names both). DatasetError unless its 3x3 part has full rank and it decomposes into a K with
    positive focal lengths; any scale of P is the same camera (`unit_projection`)."""
    P = unit_projection(P)
    m = P[:, :3]
    if abs(np.linalg.det(m)) <= 1e-9 * np.prod(np.linalg.norm(m, axis=1)):
        raise DatasetError(f"{path}: {key} is singular (its 3x3 part K R has rank < 3: a zero focal length?)")
    with np.errstate(all="ignore"):
        K, c2w = decompose_projection(P)
    if not (np.all(np.isfinite(K)) and np.all(np.isfinite(c2w)) and K[0, 0] > 0 and K[1, 1] > 0):
        raise DatasetError(f"{path}: {key} is not a valid projection K[R|t]")
    return K, c2w


def world_mat_camera(value, path, key):
    """(K [3, 3], camera-to-world [4, 4]) of a NeuS `world_mat` (a 4x4 or 3x4 array, entry `key` of the
    cameras file `path`): a finite matrix and a projection `projection_camera` takes, else DatasetError."""
    with np.errstate(all="ignore"):  # huge entries overflow in the checks' arithmetic: they refuse the matrix
        return projection_camera(matrix(value, path, key, ((4, 4), (3, 4)))[:3, :4], path, key)


def similarity_scale(m):
    """The uniform scale of a similarity m [4, 4] (world units per unit of the space it maps from)."""
    return float(np.cbrt(abs(np.linalg.det(m[:3, :3]))))


def opengl_to_opencv(c2w):
    c2w = c2w.copy()
    c2w[:, :3, 1:3] *= -1  # flip y and z camera axes
    return c2w


def point_nearest_axes(c2w, where):
    """The point closest (least squares) to all cameras' optical axes: object-centric captures look at it."""
    a = np.zeros((3, 3))
    b = np.zeros(3)
    for o, d in zip(c2w[:, :3, 3], c2w[:, :3, 2]):
        proj = np.eye(3) - np.outer(d, d)
        a += proj
        b += proj @ o
    if np.linalg.cond(a) > 1e6:
        raise DatasetError(f"{where}: cameras all look the same way; cannot find the object to normalise the scene")
    return np.linalg.solve(a, b)


def check_camera_geometry(intrinsics, c2w, size, sources, root, train=None, unit_sphere=False):
    """Cameras that cannot reconstruct anything: the training cameras all at one point, a camera inside the
    object, looking away from it, or with the object far off its image. `sources[i]` = (file, label) of
    camera i for the message; `train` selects the training views.

    unit_sphere: the poses are in NeuS's normalised space, where the object is the unit sphere; otherwise
    (the transforms formats, in world units) the object is taken to be around the point nearest all optical
    axes, which is returned for `normalise_cameras`.
    """
    low, high = FOCAL_RANGE
    focal = np.stack([intrinsics[:, 0, 0], intrinsics[:, 1, 1]], 1) / max(size)
    impossible = ~np.all((focal >= low) & (focal <= high), axis=1)  # NaN too
    if impossible.any():
        i = int(np.argmax(impossible))
        raise DatasetError(f"{sources[i][0]}: {sources[i][1]} has focal lengths {format_row(focal[i] * max(size))} px "
                           f"for {size[1]}x{size[0]} images, expected {low:g} to {high:g} times the longer side")
    n = len(c2w)
    files = sorted({f for f, _ in sources})
    where = files[0] if len(files) == 1 else root
    centres = c2w[:, :3, 3]
    overflow = ~np.isfinite(np.linalg.norm(centres - np.median(centres, axis=0), axis=1))
    if overflow.any():  # the distances below would be inf or NaN, and every comparison with them false
        i = int(np.argmax(overflow))
        raise DatasetError(f"{sources[i][0]}: {sources[i][1]} is too far from the other cameras to compute with (the "
                           f"distance overflows a float: camera at {format_row(centres[i])})")
    trained = centres if train is None else centres[train]
    if len(trained) > 1 and np.ptp(trained, axis=0).max() <= 1e-6 * np.abs(trained).max():
        what = "training cameras" if train is not None and not train.all() else "cameras"
        train_files = sorted({sources[i][0] for i in np.nonzero(train)[0]}) if train is not None else files
        at = ", ".join(f"{x:.4g}" for x in trained[0])
        raise DatasetError(f"{train_files[0] if len(train_files) == 1 else where}: all {len(trained)} {what} are "
                           f"at one point ({at}); the views need different positions")
    if unit_sphere:
        centre, name = np.zeros(3), "the centre of the unit sphere"
        hint = " (a negative focal length or a mirrored pose in world_mat does this)"
    else:
        centre, name, hint = point_nearest_axes(c2w, where), "the point nearest all optical axes", ""
    distance = np.linalg.norm(centres - centre, axis=1)
    if unit_sphere:
        inside = distance <= 1.0
        problem = "camera centre is inside the unit sphere (the object region), {:.3g} from its centre"
    else:
        inside = distance < 0.05 * np.median(distance)
        problem = (f"is at the object: {{:.3g}} from {name}, where the median camera is "
                   f"{np.median(distance):.3g} away")
    if inside.any():
        i = int(np.argmax(inside))
        raise DatasetError(f"{sources[i][0]}: {sources[i][1]} {problem.format(distance[i])}")
    # the centre in each camera's frame: in front (z > 0), and projecting inside or near the image
    local = np.einsum("vji,vj->vi", c2w[:, :3, :3], centre - centres)
    z = local[:, 2]
    behind = z <= 1e-9 * distance
    if behind.all():
        raise DatasetError(f"{where}: all {n} cameras look away from the object: {name} is behind every one{hint}")
    if behind.any():
        i = int(np.argmax(behind))
        raise DatasetError(f"{sources[i][0]}: {sources[i][1]} looks away from the object: {name} is behind it{hint}")
    uv = np.einsum("vij,vj->vi", intrinsics, local)
    u, v = uv[:, 0] / z, uv[:, 1] / z
    h, w = size
    off = ~((u >= -w) & (u <= 2 * w) & (v >= -h) & (v <= 2 * h))  # NaN (from overflow) too
    if off.any():
        i = int(np.argmax(off))
        raise DatasetError(f"{sources[i][0]}: {sources[i][1]} does not see the object: {name} projects to pixel "
                           f"({u[i]:.4g}, {v[i]:.4g}), far outside the {w}x{h} image")
    return centre


def downscale_intrinsics(K, factor):
    """Camera matrices K [..., 3, 3] (numpy or torch) of images `factor` times larger -> a copy for the smaller
    images, pixel centres kept at integers: u' = (u + 0.5) / factor - 0.5."""
    K = K.copy() if isinstance(K, np.ndarray) else K.clone()
    K[..., :2, :] /= factor
    K[..., :2, 2] += 0.5 / factor - 0.5
    return K


def project_points(points, K, w2c):
    """World points [N, 3] through the camera K [3, 3], w2c [4, 4] (OpenCV axes) -> (u [N], v [N], z [N]):
    pixel coordinates (pixel centres at integers) and depth; u and v are finite, and meaningful where z > 0."""
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[:, 2]
    uv = cam @ K.T
    z_safe = np.where(z > 0, z, 1.0)
    return uv[:, 0] / z_safe, uv[:, 1] / z_safe, z


def in_image(u, v, z, size):
    """Whether projections (u, v, z [N], from `project_points`) fall in front of the camera and inside an image
    of size (H, W) -> [N] bool."""
    h, w = size
    return (z > 0) & (u > -0.5) & (u < w - 0.5) & (v > -0.5) & (v < h - 0.5)


def carve(points, images_shape, intrinsics, c2w, masks):
    """The points [N, 3] that project in front of and inside every view (and inside its mask, when there are
    masks) -> [M, 3]."""
    keep = np.arange(len(points))  # indices of the points every camera so far sees
    h, w = images_shape
    for i in range(len(c2w)):
        u, v, z = project_points(points[keep], intrinsics[i], np.linalg.inv(c2w[i]))
        inside = in_image(u, v, z, images_shape)
        if masks is not None:
            seen = np.nonzero(inside)[0]
            ui = np.clip(np.round(u[seen]), 0, w - 1).astype(int)
            vi = np.clip(np.round(v[seen]), 0, h - 1).astype(int)
            inside[seen] = masks[i][vi, ui] > 0
        keep = keep[inside]
    return points[keep]


def lattice(lo, hi, grid):
    """grid^3 points [grid^3, 3] spanning the box lo..hi [3], and the cell size [3]."""
    axes = [np.linspace(a, b, grid) for a, b in zip(lo, hi)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3), (hi - lo) / (grid - 1)


def normalise_cameras(images, masks, intrinsics, c2w, root, grid=64, centre=None):
    """A similarity (normalised -> world, 4x4) that puts the object inside the unit sphere, for formats
    that come without one.

    1. A first centre: the point closest (least squares) to all cameras' optical axes — object-centric
       captures look at the object (`centre`, when `check_camera_geometry` has found it already).
    2. Carving: points of a grid^3 lattice in a cube around it (half-size 0.9 x the nearest camera's distance,
       so no camera is inside) are kept if they project in front of and inside every view, and inside every
       view's mask when masks (or alpha) exist. This is the visual hull, or without masks the common frustum.
       The carving is repeated on a grid^3 lattice over the kept points' box (one cell wider), so the
       sphere's margin is a cell of that finer lattice.
    3. The sphere: centred on the kept points' bounding box, radius = farthest kept point + one cell, x 1.05.

    Without masks the carving would keep the common frustum (the room too): the sphere is instead the one
    about the first centre that the cameras see whole (`inscribed_radius`).
    """
    centres = c2w[:, :3, 3]
    if centre is None:
        centre = point_nearest_axes(c2w, root)
    if masks is None:
        return sphere_similarity(centre, inscribed_radius(centre, images.shape[1:3], intrinsics, c2w))
    half = 0.9 * np.linalg.norm(centres - centre, axis=1).min()

    def carved(points):
        kept = carve(points, images.shape[1:3], intrinsics, c2w, masks)
        if not len(kept):
            raise DatasetError(f"{root}: no point is seen by every camera (inside every mask); cannot normalise "
                               f"the scene")
        return kept

    points, cell = lattice(centre - half, centre + half, grid)
    kept = carved(points)
    points, cell = lattice(kept.min(0) - cell, kept.max(0) + cell, grid)
    kept = carved(points)
    centre = (kept.min(0) + kept.max(0)) / 2
    return sphere_similarity(centre, 1.05 * (np.linalg.norm(kept - centre, axis=1).max() + np.linalg.norm(cell)))


def inscribed_radius(centre, image_size, intrinsics, c2w, quantile=0.2):
    """Radius of the sphere about `centre` [3] that a camera sees whole: the distance from it to the nearest
    side plane of the camera's frustum (and at most 0.9 of its distance to the camera) -> the `quantile` of
    that over the cameras. An object-centric capture keeps the object in frame, so without masks this is
    where it can be; the quantile rather than the minimum lets a few close-ups cut into it."""
    h, w = image_size
    radii = []
    for k, pose in zip(intrinsics, c2w):
        local = np.linalg.inv(pose)[:3, :3] @ (centre - pose[:3, 3])  # the centre in camera axes
        corners = np.array([[-0.5, -0.5, 1], [w - 0.5, -0.5, 1], [w - 0.5, h - 0.5, 1], [-0.5, h - 0.5, 1]])
        rays = corners @ np.linalg.inv(k).T  # [4, 3] frustum edges
        sides = [np.cross(rays[i], rays[(i + 1) % 4]) for i in range(4)]  # inward normals of the side planes
        distances = [abs(n @ local) / np.linalg.norm(n) if n @ local > 0 else 0.0 for n in sides]
        radii.append(min(min(distances), 0.9 * np.linalg.norm(local)))
    return float(np.quantile(radii, quantile))


def sphere_similarity(centre, radius):
    """The similarity (4x4) that maps the unit sphere onto the sphere (centre [3], radius)."""
    to_world = np.eye(4)
    to_world[:3, :3] *= radius
    to_world[:3, 3] = centre
    return to_world


def renormalise(c2w, old_to_world, new_to_world):
    """Poses c2w [N, 4, 4] of the normalised space of `old_to_world` in that of `new_to_world` (similarities)."""
    m = np.linalg.inv(new_to_world) @ old_to_world
    scale = np.cbrt(np.linalg.det(m[:3, :3]))
    out = c2w.copy()
    out[:, :3, :3] = (m[:3, :3] / scale) @ c2w[:, :3, :3]
    out[:, :3, 3] = c2w[:, :3, 3] @ m[:3, :3].T + m[:3, 3]
    return out


# ----------------------------------------------------------------------------------------------------------
# NeuS cameras files (cameras_sphere.npz): the one guarded reader, for every tool that reads them


def open_cameras_npz(path):
    """The NeuS cameras file `path` as an open np.load archive (use it in a `with`); DatasetError naming the file
    when it is missing, empty, or no .npz archive (text, a pickle, a lone .npy array, a truncated archive)."""
    check_file(path, "a cameras file")
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise DatasetError(f"{path}: unreadable cameras file ({e.strerror})") from None
    # known by its first bytes: np.load would read a huge non-zip file whole before failing
    if magic == b"\x93NUMPY":
        raise DatasetError(f"{path}: a single .npy array, expected an .npz archive of world_mat_i and scale_mat_i")
    if magic[:2] != b"PK":
        raise DatasetError(f"{path}: unreadable cameras file (not an .npz archive)")
    try:
        return np.load(path)  # allow_pickle=False: object members are refused (npz_matrix)
    except Exception as e:  # a truncated or damaged archive
        raise DatasetError(f"{path}: unreadable cameras file ({type(e).__name__})") from None


def read_world_mats(path):
    """{view i: world_mat_i [4, 4] float64, finite} of the NeuS cameras file `path` (every world_mat_<digits>
    member; open_cameras_npz's and npz_matrix's DatasetError for a bad file or member)."""
    prefix = "world_mat_"
    with open_cameras_npz(path) as cams:
        return {int(k[len(prefix):]): npz_matrix(cams, k, path) for k in cams.files
                if k.startswith(prefix) and k[len(prefix):].isdecimal()}


def npz_matrix(cams, key, path):
    """Member `key` of the open cameras file `path` as a finite float64 4x4 (a 3x4 gets the row [0, 0, 0, 1])."""
    if key not in cams.files:
        raise DatasetError(f"{path}: {key} missing")
    try:
        value = cams[key]
    except ValueError as e:  # np.load refuses object arrays (they are pickles)
        if "allow_pickle" in str(e):
            raise DatasetError(f"{path}: {key} is an array of Python objects (pickled), expected numbers") from None
        raise DatasetError(f"{path}: {key} unreadable ({type(e).__name__})") from None
    except Exception as e:  # a damaged member, or one whose header asks for more memory than there is
        raise DatasetError(f"{path}: {key} unreadable ({type(e).__name__})") from None
    m = matrix(value, path, key, ((4, 4), (3, 4)))
    return m if m.shape == (4, 4) else np.vstack([m, [0.0, 0.0, 0.0, 1.0]])


@np.errstate(all="ignore")  # huge or tiny entries: the checks refuse the non-finite or zero results, silently
def check_scale_mat(m, path, key):
    """scale_mat (4x4) maps the unit sphere to the world: it must be a similarity (rotation, uniform scale,
    translation), else the sphere would be an ellipsoid and the outputs would not map back, and its sphere one
    that `check_sphere` takes (a radius that neither underflows nor overflows the arithmetic on it)."""
    a = m[:3, :3]
    s2, det = np.trace(a.T @ a) / 3, np.linalg.det(a)
    if not (np.isfinite(s2) and np.isfinite(det)):
        raise DatasetError(f"{path}: {key} is too large (its scale overflows a float)")
    if s2 == 0 or abs(det) < 1e-12 * s2**1.5:
        raise DatasetError(f"{path}: {key} is singular")
    if np.abs(m[3] - [0, 0, 0, 1]).max() > 1e-6 * np.abs(m).max():
        raise DatasetError(f"{path}: {key} has bottom row {format_row(m[3])}, expected [0, 0, 0, 1]")
    if np.abs(a.T @ a / s2 - np.eye(3)).max() > 1e-3:
        raise DatasetError(f"{path}: {key} is not a similarity (rotation, uniform scale, translation): it would "
                           f"map the unit sphere to an ellipsoid")
    check_sphere(m[:3, 3], similarity_scale(m), f"{path}: {key} centre", f"{path}: {key} radius")
