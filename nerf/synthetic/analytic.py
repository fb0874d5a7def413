"""Analytic shapes of the synthetic scenes (sphere, torus, blob): signed distance functions placed in the world,
rendered by sphere tracing, meshed by marching cubes for the ground truth."""
import numpy as np

from .appearance import lambert
from .cameras import pixel_rays
from .geometry import normalize, rotation_matrix

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


def unit_shape(name):
    """(unit SDF, bounding centre [3], bounding radius) of the analytic shape `name`."""
    if name == "sphere":
        return unit_sphere_sdf, np.zeros(3), 1.0
    if name == "torus":
        return unit_torus_sdf, np.zeros(3), TORUS_MAJOR + TORUS_MINOR
    if name == "blob":
        return (unit_blob_sdf, *measure_zero_set(unit_blob_sdf))
    raise ValueError(name)


class AnalyticShape:
    """An SDF defined in unit space, placed in the world by a similarity.

    world_sdf(p) = scale * unit_sdf(rot^T (p - offset) / scale), which stays a true (or conservative) distance in
    world units. The bounding sphere (centre = the `offset` [3] given, radius_mm) is tilted by a random 25
    degrees, so that the torus' hole is seen obliquely from the cap.
    """

    def __init__(self, name, radius_mm, offset, rng):
        self.name = name
        self.rot = rotation_matrix(normalize(rng.normal(size=3)), np.radians(25.0))
        self.unit_sdf, unit_centre, unit_radius = unit_shape(name)
        self.scale = radius_mm / unit_radius
        # place the bounding-sphere centre at `offset`
        self.offset = offset - self.rot @ unit_centre * self.scale
        self.centre = offset.copy()
        self.radius = radius_mm

    def sdf(self, p):
        """World SDF [...] at world points p [..., 3]."""
        # column-wise affine map: (N,3)@(3,3) through BLAS is slow for the tall, thin arrays used here
        a = self.rot / self.scale
        b = -(self.offset @ self.rot) / self.scale
        x, y, z = p[..., 0], p[..., 1], p[..., 2]
        q = np.stack([x * a[0, k] + y * a[1, k] + z * a[2, k] + b[k] for k in range(3)], axis=-1)
        return self.scale * self.unit_sdf(q)

    def normal(self, p):
        """Unit outward normals [N, 3] at world points p [N, 3] (central differences)."""
        h = 1e-4 * self.radius
        grad = np.zeros_like(p)
        for axis in range(3):
            e = np.zeros(3)
            e[axis] = h
            grad[:, axis] = self.sdf(p + e) - self.sdf(p - e)
        return normalize(grad)

    def sphere_trace(self, origin, dirs):
        """Hit distance [N] along each ray from origin [3] along unit dirs [N, 3] (inf where it misses)."""
        n = dirs.shape[0]
        t_hit = np.full(n, np.inf)
        # restrict marching to the bounding sphere: analytic entry/exit
        oc = origin - self.centre
        b = dirs @ oc
        c = oc @ oc - (1.02 * self.radius) ** 2
        disc = b * b - c
        active = np.nonzero(disc > 0)[0]
        sq = np.sqrt(disc[active])
        t = np.maximum(-b[active] - sq, 0.0)
        t_far = -b[active] + sq
        eps = 1e-5 * self.radius
        for _ in range(400):
            if active.size == 0:
                break
            d = self.sdf(origin + t[:, None] * dirs[active])
            hit = d < eps
            t_hit[active[hit]] = t[hit]
            # 0.95: the smooth union is only approximately 1-Lipschitz
            t = t + 0.95 * d
            keep = (~hit) & (t < t_far)
            active, t, t_far = active[keep], t[keep], t_far[keep]
        return t_hit

    def render(self, K, R, t, width, height, albedo_fn):
        """Mask [H, W], shaded colours [M, 3] of the M hit pixels, and hit [H * W] (row-major) seen by the camera
        K [3, 3], R [3, 3], t [3]; albedo_fn maps world points [M, 3] to albedo [M, 3]."""
        origin, dirs = pixel_rays(K, R, t, width, height)
        t_hit = self.sphere_trace(origin, dirs)
        hit = np.isfinite(t_hit)
        points = origin + t_hit[hit, None] * dirs[hit]
        normals = self.normal(points)
        rgb = lambert(albedo_fn(points), normals)
        return hit.reshape(height, width), rgb, hit

    def gt_mesh(self, resolution, block=4):
        """Marching cubes (a trimesh.Trimesh, outward winding) of the world SDF over the bounding box.

        The SDF is evaluated finely only in blocks of block^3 cells that the surface can reach: a block whose
        corners all lie farther from the surface than the block diagonal (the SDF is ~1-Lipschitz) holds no
        surface and has one sign throughout, so its coarse corner values are enough for marching cubes. ~10x
        fewer evaluations at 256^3.
        """
        import mcubes
        import trimesh

        n_blocks = max(1, int(np.ceil((resolution - 1) / block)))
        res = n_blocks * block + 1
        pad = 1.03 * self.radius
        lo = self.centre - pad
        step = 2 * pad / (res - 1)

        def grid_points(i, j, k):
            return lo + step * np.stack([i, j, k], axis=-1).astype(np.float64)

        coarse_idx = np.arange(n_blocks + 1) * block
        ci, cj, ck = np.meshgrid(coarse_idx, coarse_idx, coarse_idx, indexing="ij")
        coarse = self.sdf(grid_points(ci, cj, ck).reshape(-1, 3)).reshape(ci.shape)
        # nearest-neighbour upsampling gives far blocks their (uniform) sign
        up = np.repeat(np.repeat(np.repeat(coarse, block, 0), block, 1), block, 2)
        values = up[:res, :res, :res].copy()
        corner_min = np.min(np.stack([np.abs(coarse[a : a + n_blocks, b : b + n_blocks, c : c + n_blocks])
                                      for a in (0, 1) for b in (0, 1) for c in (0, 1)]), axis=0)
        near = np.argwhere(corner_min < 1.5 * block * step * np.sqrt(3))
        offs = np.arange(block + 1)
        oi, oj, ok = np.meshgrid(offs, offs, offs, indexing="ij")
        for chunk in np.array_split(near, max(1, len(near) // 2000)):
            bi = chunk[:, 0, None, None, None] * block + oi
            bj = chunk[:, 1, None, None, None] * block + oj
            bk = chunk[:, 2, None, None, None] * block + ok
            vals = self.sdf(grid_points(bi, bj, bk).reshape(-1, 3))
            values[bi, bj, bk] = vals.reshape(bi.shape)
        verts, faces = mcubes.marching_cubes(values, 0.0)
        # PyMCubes already shares vertices between faces: no merging needed
        mesh = trimesh.Trimesh(verts * step + lo, faces, process=False)
        if mesh.volume < 0:  # PyMCubes winds faces inward for SDF<0 inside
            mesh.invert()
        return mesh
