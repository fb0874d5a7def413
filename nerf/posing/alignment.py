"""How far recovered cameras are from reference ones: a similarity (Umeyama) fitted to the camera centres takes
the recovered frame (arbitrary position, rotation and scale, as structure from motion leaves it) onto the
reference frame, and the errors are measured there."""
import numpy as np


def umeyama(source, target):
    """The similarity (scale s, rotation R [3, 3], translation t [3]) minimising sum |s R source + t - target|^2
    for source, target [N, 3], N >= 3 not all on a line (Umeyama 1991: SVD of the cross-covariance, with the
    sign fix that keeps R a rotation rather than a reflection)."""
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    mean_s, mean_t = source.mean(0), target.mean(0)
    ds, dt = source - mean_s, target - mean_t
    cov = dt.T @ ds / len(source)
    u, d, vt = np.linalg.svd(cov)
    sign = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2, 2] = -1
    rotation = u @ sign @ vt
    var_s = (ds**2).sum() / len(source)
    scale = np.trace(np.diag(d) @ sign) / var_s
    translation = mean_t - scale * rotation @ mean_s
    return scale, rotation, translation


def rotation_angle_deg(rotations):
    """Angles (degrees) [N] of rotations [N, 3, 3], from both the cosine (trace) and the sine (the skew part):
    arccos of the trace alone loses all precision near 0."""
    cos = (np.trace(rotations, axis1=1, axis2=2) - 1) / 2
    skew = rotations - np.transpose(rotations, (0, 2, 1))
    sin = 0.5 * np.linalg.norm(np.stack([skew[:, 2, 1], skew[:, 0, 2], skew[:, 1, 0]], 1), axis=1)
    return np.degrees(np.arctan2(sin, cos))


def pose_errors(c2w, reference_c2w, scene_radius):
    """Errors of camera-to-world poses c2w [N, 4, 4] against reference_c2w [N, 4, 4] (same views, OpenCV axes)
    after the similarity that best maps c2w's centres onto the reference's. scene_radius (reference units) is
    the size the centre errors are reported relative to.

    Returns a dict: rotation_deg [N], centre_error [N] (reference units), centre_error_rel [N] (/ scene_radius),
    similarity (scale, rotation [3, 3], translation [3]: recovered frame -> reference frame)."""
    scale, rotation, translation = umeyama(c2w[:, :3, 3], reference_c2w[:, :3, 3])
    centres = scale * c2w[:, :3, 3] @ rotation.T + translation
    rotations = rotation @ c2w[:, :3, :3]
    relative = np.einsum("nji,njk->nik", reference_c2w[:, :3, :3], rotations)  # R_ref^T R
    centre_error = np.linalg.norm(centres - reference_c2w[:, :3, 3], axis=1)
    return {"rotation_deg": rotation_angle_deg(relative), "centre_error": centre_error,
            "centre_error_rel": centre_error / scene_radius, "similarity": (scale, rotation, translation)}
