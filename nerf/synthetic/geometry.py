"""Small vector helpers of the synthetic scenes (numpy, float64)."""
import numpy as np


def normalize(v, axis=-1):
    """v [..., 3] scaled to unit length along `axis` (zero vectors stay ~0)."""
    return v / np.maximum(np.linalg.norm(v, axis=axis, keepdims=True), 1e-12)


def rotation_matrix(axis, angle):
    """[3, 3] Rodrigues rotation about `axis` [3] by `angle` radians."""
    axis = normalize(np.asarray(axis, dtype=np.float64))
    x, y, z = axis
    skew = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + np.sin(angle) * skew + (1 - np.cos(angle)) * skew @ skew
