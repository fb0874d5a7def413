"""Cameras of the synthetic scenes: pinhole intrinsics, a DTU-like cap of OpenCV cameras, pixel rays, and the
camera matrices the NeuS and transforms.json formats store."""
import numpy as np

from .geometry import normalize, rotation_matrix

# Elevation band (degrees) of the camera cap and camera distance band in units of the object's bounding radius.
ELEVATION_RANGE_DEG = (10.0, 60.0)
DISTANCE_RANGE = (2.6, 2.9)
# Fraction of the image height the bounding sphere's silhouette spans at the mean camera distance; the object
# itself is a little smaller than its bounding sphere, so it ends up filling ~60-70% of the frame.
FRAME_FILL = 0.82
# Azimuth step of the golden-angle spiral the cameras are laid out on.
GOLDEN_ANGLE = np.pi * (3.0 - np.sqrt(5.0))


def make_intrinsics(width, height):
    """Pinhole K [3, 3] with the bounding sphere spanning FRAME_FILL of the height.

    At distance D a sphere of radius r projects (on axis) to a disc of radius f * r / sqrt(D^2 - r^2) pixels. The
    principal point is deliberately a few pixels off the image centre so that a loader which assumes cx = W/2
    shows.
    """
    dist = 0.5 * (DISTANCE_RANGE[0] + DISTANCE_RANGE[1])
    focal = 0.5 * FRAME_FILL * height * np.sqrt(dist**2 - 1.0)
    cx = 0.5 * (width - 1) + 0.012 * width
    cy = 0.5 * (height - 1) - 0.010 * height
    return np.array([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]])


def look_at_w2c(cam_pos, target, roll):
    """World-to-camera (R [3, 3], t [3]) of an OpenCV camera at cam_pos [3] looking at target [3], rolled by
    `roll` radians about its optical axis."""
    forward = normalize(target - cam_pos)
    up_world = np.array([0.0, 0.0, 1.0])
    right = normalize(np.cross(forward, up_world))
    down = np.cross(forward, right)
    c2w_rot = np.stack([right, down, forward], axis=1)
    c2w_rot = c2w_rot @ rotation_matrix([0, 0, 1], roll)
    w2c_rot = c2w_rot.T
    return w2c_rot, -w2c_rot @ cam_pos


def make_cameras(n_views, centre, radius, rng, azimuth_offset=0.0):
    """Cameras on the elevation cap around an object of bounding sphere (centre [3], radius), spread by a
    golden-angle spiral.

    Returns a list of (R_w2c [3, 3], t_w2c [3]). Azimuth covers the full circle, so the object is seen from all
    sides; elevation is stratified in sin(elevation) (equal-area on the sphere) between ELEVATION_RANGE_DEG.
    """
    sin_lo, sin_hi = np.sin(np.radians(ELEVATION_RANGE_DEG))
    cams = []
    for i in range(n_views):
        frac = (i + 0.5) / n_views
        sin_el = sin_lo + (sin_hi - sin_lo) * frac
        sin_el += rng.uniform(-0.25, 0.25) * (sin_hi - sin_lo) / n_views
        elevation = np.arcsin(np.clip(sin_el, sin_lo, sin_hi))
        azimuth = azimuth_offset + i * GOLDEN_ANGLE + rng.uniform(-0.05, 0.05)
        dist = radius * rng.uniform(*DISTANCE_RANGE)
        direction = np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                              np.sin(elevation)])
        cam_pos = centre + dist * direction
        # small look-at jitter so the object centre is not always the principal point, and a slight roll, as a
        # hand-held/robot capture has
        target = centre + rng.normal(0.0, 0.04 * radius, 3)
        roll = np.radians(rng.uniform(-3.0, 3.0))
        cams.append(look_at_w2c(cam_pos, target, roll))
    return cams


def pixel_rays(K, R_w2c, t_w2c, width, height):
    """World-space ray origin [3] and unit directions [H * W, 3] (row-major pixels) through every pixel centre of
    the camera K [3, 3], R_w2c [3, 3], t_w2c [3]."""
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    pix = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], axis=1)
    dirs_cam = pix @ np.linalg.inv(K).T
    dirs_world = normalize(dirs_cam @ R_w2c)  # R^T applied to row vectors
    origin = -R_w2c.T @ t_w2c
    return origin, dirs_world


def world_mat(K, R, t):
    """NeuS/IDR world_mat [4, 4] = K4 @ W2C of the camera K [3, 3], R [3, 3], t [3] (world -> pixels)."""
    k4 = np.eye(4)
    k4[:3, :3] = K
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = R, t
    return k4 @ w2c


def c2w_opengl(R, t):
    """Camera-to-world [4, 4] in OpenGL axes (x right, y up, z backward) of the OpenCV camera R [3, 3], t [3]."""
    c2w = np.eye(4)
    c2w[:3, :3] = R.T
    c2w[:3, 3] = -R.T @ t
    return c2w @ np.diag([1.0, -1.0, -1.0, 1.0])
