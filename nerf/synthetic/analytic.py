"""Analytic shapes of the synthetic scenes: signed distance functions (basic_shapes.py, blade.py, wire.py,
relief.py, checker.py) placed in the world, rendered by sphere tracing, meshed by marching cubes for the ground
truth (sdf_mesh.py)."""
import numpy as np

from .appearance import lambert
from .basic_shapes import blob_shape, sphere_shape, torus_shape
from .blade import blade_shape
from .cameras import pixel_rays
from .checker import checker_shape
from .geometry import normalize, rotation_matrix
from .relief import relief_shape
from .sdf_mesh import sparse_marching_cubes
from .wire import wire_shape

# the gt mesh's box: the bounding sphere's box with a margin, in radii
GT_PAD = 1.03
# Sphere-tracing steps before a ray counts as a miss. A ray that grazes a face at angle θ closes in on it by a
# factor (1 - 0.95 sin θ) a step: ~350 steps at 2°, ~7 000 at 0.1°. A few hundred steps rendered such rays (a thin
# plate seen nearly edge-on: ~1 300 pixels of the blade's 49 views at 800x600) as empty background; the few rays
# that need more cost little, as the active set has shrunk to them.
MAX_TRACE_STEPS = 100_000
# name -> UnitShape factory, in the order the CLI lists them
UNIT_SHAPES = {"sphere": sphere_shape, "torus": torus_shape, "blob": blob_shape, "blade": blade_shape,
               "wire": wire_shape, "relief": relief_shape, "checker": checker_shape}


def unit_shape(name):
    """The UnitShape of the analytic shape `name`."""
    if name not in UNIT_SHAPES:
        raise ValueError(name)
    return UNIT_SHAPES[name]()


class AnalyticShape:
    """An SDF defined in unit space, placed in the world by a similarity.

    world_sdf(p) = scale * unit_sdf(rot^T (p - offset) / scale), which stays a true (or conservative) distance in
    world units. The bounding sphere (centre = the `offset` [3] given, radius_mm) is tilted by a random 25
    degrees, so that the torus' hole is seen obliquely from the cap.
    """

    def __init__(self, name, radius_mm, offset, rng):
        self.name = name
        self.rot = rotation_matrix(normalize(rng.normal(size=3)), np.radians(25.0))
        self.spec = unit_shape(name)
        self.unit_sdf = self.spec.sdf
        self.scale = radius_mm / self.spec.radius
        # place the bounding-sphere centre at `offset`
        self.offset = offset - self.rot @ self.spec.centre * self.scale
        self.centre = offset.copy()
        self.radius = radius_mm

    def to_unit(self, p):
        """Unit-frame points [..., 3] of world points p [..., 3]."""
        # column-wise affine map: (N,3)@(3,3) through BLAS is slow for the tall, thin arrays used here
        a = self.rot / self.scale
        b = -(self.offset @ self.rot) / self.scale
        x, y, z = p[..., 0], p[..., 1], p[..., 2]
        return np.stack([x * a[0, k] + y * a[1, k] + z * a[2, k] + b[k] for k in range(3)], axis=-1)

    def sdf(self, p):
        """World SDF [...] at world points p [..., 3]."""
        return self.scale * self.unit_sdf(self.to_unit(p))

    def albedo_fn(self):
        """The shape's own albedo as a function of world points [N, 3] -> [N, 3], or None (procedural texture)."""
        if self.spec.albedo is None:
            return None
        return lambda points: self.spec.albedo(self.to_unit(points))

    def gt_resolution_floor(self):
        """The coarsest marching-cubes grid that keeps the shape's finest feature (1 without one)."""
        if self.spec.gt_cell is None:
            return 1
        return int(np.ceil(2 * GT_PAD * self.radius / (self.spec.gt_cell * self.scale))) + 1

    def thin_mesh(self, mesh):
        """The faces of `mesh` (the gt mesh, a Trimesh) on the shape's thin part, as a Trimesh, and the thin part's
        description in mm for scene.json; (None, None) for a shape without one."""
        thin = self.spec.thin_part
        if thin is None:
            return None, None
        on_thin = thin.contains(self.to_unit(np.asarray(mesh.triangles_center)))
        part = mesh.submesh([np.nonzero(on_thin)[0]], append=True)
        info = {"kind": thin.kind, "thickness_mm": float(thin.size * self.scale),
                **{f"{key}_mm": float(value * self.scale) for key, value in thin.info.items()}}
        return part, info

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
        for _ in range(MAX_TRACE_STEPS):
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
        """Marching cubes (a trimesh.Trimesh, outward winding) of the world SDF over the bounding box on a grid of
        `resolution` (raised to gt_resolution_floor()) points per axis (sdf_mesh.sparse_marching_cubes)."""
        import trimesh

        resolution = max(resolution, self.gt_resolution_floor())
        n_blocks = max(1, int(np.ceil((resolution - 1) / block)))
        pad = GT_PAD * self.radius
        step = 2 * pad / (n_blocks * block)
        verts, faces = sparse_marching_cubes(self.sdf, self.centre - pad, step, n_blocks, block)
        mesh = trimesh.Trimesh(verts, faces, process=False)
        # PyMCubes winds faces inward for SDF<0 inside; the signed volume (divergence theorem) says which way they
        # turn, cheaper than trimesh's mass properties on the millions of faces of a thin shape
        tri = verts[faces]
        if np.einsum("ij,ij->", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])) < 0:
            mesh.invert()
        return mesh
