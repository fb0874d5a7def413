"""The first analytic shapes of the synthetic scenes, as SDFs in their unit frame: a sphere, a torus and a blob
(a smooth union of spheres)."""
import numpy as np

from .unit_shape import UnitShape

TORUS_MAJOR, TORUS_MINOR = 0.7, 0.3
# smooth union of spheres: non-convex (saddles, a concave waist)
BLOB_CENTRES = np.array([[0.0, 0.0, 0.0], [0.55, 0.1, 0.15], [-0.45, 0.3, -0.1], [0.05, -0.55, 0.2],
                         [-0.1, 0.05, 0.55]])
BLOB_RADII = np.array([0.5, 0.33, 0.36, 0.3, 0.25])
BLOB_BLEND = 0.18


def smooth_min(a, b, k):
    """Polynomial smooth minimum of SDF values a, b [...]; blends surfaces within distance k."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


def unit_sphere_sdf(q):
    """SDF [...] of the unit sphere at points q [..., 3]."""
    return np.linalg.norm(q, axis=-1) - 1.0


def unit_torus_sdf(q):
    """SDF [...] of a torus about the z axis (radii TORUS_MAJOR, TORUS_MINOR) at points q [..., 3]."""
    ring = np.linalg.norm(q[..., :2], axis=-1) - TORUS_MAJOR
    return np.sqrt(ring**2 + q[..., 2] ** 2) - TORUS_MINOR


def unit_blob_sdf(q):
    """Conservative SDF [...] of the smooth union of the BLOB_* spheres at points q [..., 3]."""
    # per-sphere scalar arithmetic: avoids (N, 5, 3) temporaries
    x, y, z = q[..., 0], q[..., 1], q[..., 2]
    out = None
    for (cx, cy, cz), r in zip(BLOB_CENTRES, BLOB_RADII):
        d = np.sqrt((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) - r
        out = d if out is None else smooth_min(out, d, BLOB_BLEND)
    return out


def measure_zero_set(unit_sdf, res=96):
    """Bounding-box centre [3] and bounding radius of an SDF's zero set inside [-1.6, 1.6]^3."""
    import mcubes

    grid = np.linspace(-1.6, 1.6, res)
    q = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), -1)
    verts, _ = mcubes.marching_cubes(unit_sdf(q), 0.0)
    verts = verts * (grid[1] - grid[0]) + grid[0]
    centre = 0.5 * (verts.min(0) + verts.max(0))
    return centre, np.linalg.norm(verts - centre, axis=1).max() * 1.005


def sphere_shape():
    """The unit sphere as a UnitShape."""
    return UnitShape(unit_sphere_sdf, np.zeros(3), 1.0)


def torus_shape():
    """The torus as a UnitShape."""
    return UnitShape(unit_torus_sdf, np.zeros(3), TORUS_MAJOR + TORUS_MINOR)


def blob_shape():
    """The blob as a UnitShape."""
    return UnitShape(unit_blob_sdf, *measure_zero_set(unit_blob_sdf))
