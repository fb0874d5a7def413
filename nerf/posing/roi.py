"""The region of interest: the sphere around the object that NeuS's unit sphere is mapped onto (scale_mat),
found from the sparse points of structure from motion.

Sparse points include the background (table, walls, far clutter) and a few wrong triangulations. The object
is what every camera frames, so:
1. candidates are the points seen by several cameras (track length >= MIN_TRACK) and nearer the point the
   cameras look at (the point nearest all optical axes) than NEAR_FRACTION x the median camera distance;
2. of those, the points inside the image of at least FRAMED_FRACTION of the cameras are the object's (a
   table or wall around it leaves some of the views); fewer than MIN_POINTS: the fraction is lowered;
3. the sphere is centred on their bounding box; its radius is their farthest distance from that centre times
   MARGIN — sparse points under-sample the object's extremities (legs, spires: few features, few views), so
   the farthest point, not a quantile, and a margin (1.1 left 0.3 % of a rendered cow's surface outside).
   On DTU scan24 the sphere meets every object-mask pixel's ray, with a radius 0.96 x the reference's and
   its centre 9 % of that radius away; on the rendered cow (24 views) it holds the whole true surface;
4. the sphere stays clear of the cameras (at most CAMERA_CLEARANCE x the nearest camera's distance), since a
   camera inside the unit sphere is refused by the loader."""
import numpy as np

from ..camera_geometry import point_nearest_axes
from .errors import PosingError

MIN_TRACK = 3
MIN_POINTS = 20
NEAR_FRACTION = 0.75
FRAMED_FRACTIONS = (0.9, 0.75, 0.5)  # tried in turn until MIN_POINTS remain
MARGIN = 1.25
CAMERA_CLEARANCE = 0.9


def framed_fraction(points, intrinsics, c2w, size):
    """[N] fraction of the cameras (intrinsics [V, 3, 3], c2w [V, 4, 4], size (width, height)) in whose image
    each of points [N, 3] lies (in front of the camera, inside the frame)."""
    width, height = size
    w2c = np.linalg.inv(c2w)
    counts = np.zeros(len(points))
    for k, pose in zip(intrinsics, w2c):  # a loop over the cameras: [V, N, 3] would be large for big models
        cam = points @ pose[:3, :3].T + pose[:3, 3]
        z = cam[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = (cam @ k[0]) / z
            v = (cam @ k[1]) / z
        counts += (z > 0) & (u >= -0.5) & (u <= width - 0.5) & (v >= -0.5) & (v <= height - 0.5)
    return counts / len(c2w)


def region_of_interest(points, track_lengths, intrinsics, c2w, size, where):
    """(centre [3], radius) of the object's sphere from sparse points [N, 3] with their track_lengths [N],
    seen by pinhole cameras intrinsics [V, 3, 3], c2w [V, 4, 4] (OpenCV axes) of images of `size` (w, h)."""
    look_at = point_nearest_axes(c2w, where)
    camera_distance = np.linalg.norm(c2w[:, :3, 3] - look_at, axis=1)
    near = np.linalg.norm(points - look_at, axis=1) < NEAR_FRACTION * np.median(camera_distance)
    candidates = near & (track_lengths >= MIN_TRACK)
    if candidates.sum() < MIN_POINTS:
        candidates = near & (track_lengths >= 2)
    framed = framed_fraction(points[candidates], intrinsics, c2w, size)
    for fraction in FRAMED_FRACTIONS:
        selected = points[candidates][framed >= fraction]
        if len(selected) >= MIN_POINTS:
            break
    else:
        raise PosingError(f"{where}: only {len(selected)} sparse points that most cameras frame; too few for the "
                          f"region of interest (pass --center x,y,z --radius r)")
    centre = 0.5 * (selected.min(0) + selected.max(0))
    radius = MARGIN * np.linalg.norm(selected - centre, axis=1).max()
    nearest_camera = np.linalg.norm(c2w[:, :3, 3] - centre, axis=1).min()
    return centre, float(min(radius, CAMERA_CLEARANCE * nearest_camera))
