"""The 'checker' shape: a plain sphere painted with a high-contrast longitude/latitude checkerboard, to test that
sharp texture edges are not turned into relief."""
import numpy as np

from .basic_shapes import unit_sphere_sdf
from .unit_shape import UnitShape

# 12 x 6 fields of 30 x 30 degrees
CHECKER_LONGITUDES, CHECKER_LATITUDES = 12, 6
CHECKER_DARK = np.array([0.08, 0.08, 0.10])
CHECKER_BRIGHT = np.array([0.92, 0.90, 0.85])


def checker_albedo(q):
    """Albedo [N, 3] of unit points q [N, 3]: dark or bright by the parity of their longitude/latitude field."""
    longitude = np.arctan2(q[:, 1], q[:, 0]) + np.pi  # [0, 2 pi]
    latitude = np.arccos(np.clip(q[:, 2] / np.maximum(np.linalg.norm(q, axis=1), 1e-12), -1.0, 1.0))  # [0, pi]
    column = np.floor(longitude / (2 * np.pi) * CHECKER_LONGITUDES).astype(np.int64)
    row = np.floor(latitude / np.pi * CHECKER_LATITUDES).astype(np.int64)
    bright = ((column + row) % 2 == 0)[:, None]
    return np.where(bright, CHECKER_BRIGHT, CHECKER_DARK)


def checker_shape():
    """The checker sphere as a UnitShape (geometry: the unit sphere exactly)."""
    return UnitShape(unit_sphere_sdf, np.zeros(3), 1.0, albedo=checker_albedo, albedo_name="checker")
