#!/usr/bin/env python
"""Ground-truth synthetic scene generator for NeuS-style surface reconstruction.

Renders an object with known geometry from a cap of cameras and writes the
scene in the NeuS/IDR layout (``image/``, ``mask/``, ``cameras_sphere.npz``)
and/or the instant-ngp layout (``transforms.json``), together with the true
surface (``gt_mesh.ply``) so reconstructions can be scored with
``scripts/eval_mesh.py``.

Conventions (all written files follow these; ``scene.json`` repeats them):

* World units are millimetres.  World "up" is +z.
* Cameras use OpenCV axes: x right, y down, z forward (into the scene).
* Pixel (u, v) -- u column, v row -- has its CENTRE at integer coordinates:
  the ray of pixel (u, v) is the one through K^-1 [u, v, 1]^T.  Every pixel is
  rendered with exactly that single ray (no anti-aliasing), so the mask is the
  exact silhouette sampled at pixel centres.
* ``world_mat_i`` = K4 @ W2C_i (4x4), K4 = [[K, 0], [0, 0, 0, 1]], so
  world_mat_i @ [X, Y, Z, 1] = w * [u, v, 1, 1/depth] (same as DTU/IDR).
* ``scale_mat_i`` = [[r, 0, 0, cx], [0, r, 0, cy], [0, 0, r, cz], [0, 0, 0, 1]]
  maps the unit sphere of the normalised space onto a world sphere of radius
  r = SCALE_MAT_MARGIN * object radius centred on the object centre; it is the
  same for every view.
* ``transforms.json`` (instant-ngp): pixel centres at +0.5, so its cx, cy are
  the OpenCV ones + 0.5; ``transform_matrix`` is camera-to-world in OpenGL
  axes (x right, y up, z backward), i.e. C2W_opencv @ diag(1, -1, -1, 1).

Cameras: ``views`` cameras on a full 360 degree ring-shaped cap (elevation
10..60 degrees above the object centre), laid out along a golden-angle spiral
so any number of views covers the cap evenly, at 2.6..2.9 object radii from
the centre, each looking at the object centre plus a small random offset and
with a small random roll.  The object's underside (below ~-10 degrees) is
never seen, as in DTU.

Appearance is view-independent: albedo (the mesh's UV texture when it has
one, otherwise a smooth procedural 3D colour field in world coordinates)
times Lambertian shading from a fixed world light plus ambient.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The unit sphere of the normalised space must enclose the object with room to
# spare (NeuS samples the background outside it), but not so much that the
# object occupies a small part of it.
SCALE_MAT_MARGIN = 1.15
# Elevation band (degrees) of the camera cap and camera distance band in units
# of the object's bounding radius.
ELEVATION_RANGE_DEG = (10.0, 60.0)
DISTANCE_RANGE = (2.6, 2.9)
# Fraction of the image height the bounding sphere's silhouette spans at the
# mean camera distance; the object itself is a little smaller than its
# bounding sphere, so it ends up filling ~60-70% of the frame.
FRAME_FILL = 0.82
# Light from above and slightly to one side, so the top is bright and the
# sides have visible shading gradients; ambient keeps the shadowed side
# textured (the photometric loss needs contrast everywhere).
LIGHT_DIR_WORLD = np.array([0.35, -0.45, 0.82])
AMBIENT = 0.35
SHAPES = ("sphere", "torus", "blob", "spot", "bunny")


# --------------------------------------------------------------------------
# Locating the shared meshes
# --------------------------------------------------------------------------

def shared_mesh_dirs():
    """Candidate folders holding the shared meshes (spot/, bunny.obj)."""
    candidates = []
    if os.environ.get("NSR_SHARED_DATA"):
        candidates.append(os.path.join(os.environ["NSR_SHARED_DATA"], "meshes"))
    candidates += [
        "/work/shared/data/meshes",
        os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "meshes"),
        os.path.join(REPO_ROOT, "shared", "data", "meshes"),
    ]
    return [c for c in candidates if os.path.isdir(c)]


def resolve_mesh_path(shape):
    """Map 'spot'/'bunny' to the shared OBJ; any other string is a path."""
    if shape == "spot":
        rel = os.path.join("spot", "spot_triangulated.obj")
    elif shape == "bunny":
        rel = "bunny.obj"
    else:
        if not os.path.isfile(shape):
            raise FileNotFoundError(f"mesh file not found: {shape}")
        return shape
    for d in shared_mesh_dirs():
        if os.path.isfile(os.path.join(d, rel)):
            return os.path.join(d, rel)
    raise FileNotFoundError(
        f"shape '{shape}' needs shared/data/meshes/{rel} "
        "(looked in /work/shared/data and ../shared/data; set NSR_SHARED_DATA)")


# --------------------------------------------------------------------------
# Small geometry helpers
# --------------------------------------------------------------------------

def normalize(v, axis=-1):
    return v / np.maximum(np.linalg.norm(v, axis=axis, keepdims=True), 1e-12)


def rotation_matrix(axis, angle):
    """Rodrigues rotation about `axis` by `angle` radians."""
    axis = normalize(np.asarray(axis, dtype=np.float64))
    x, y, z = axis
    skew = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + np.sin(angle) * skew + (1 - np.cos(angle)) * skew @ skew


# OBJ files from the usual sources are y-up; the cameras orbit the world z
# axis, so meshes are turned to z-up on load.
Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


# --------------------------------------------------------------------------
# Cameras
# --------------------------------------------------------------------------

def make_intrinsics(width, height):
    """Pinhole K with the bounding sphere spanning FRAME_FILL of the height.

    At distance D a sphere of radius r projects (on axis) to a disc of radius
    f * r / sqrt(D^2 - r^2) pixels.  The principal point is deliberately a few
    pixels off the image centre so that a loader which assumes cx = W/2 shows.
    """
    dist = 0.5 * (DISTANCE_RANGE[0] + DISTANCE_RANGE[1])
    focal = 0.5 * FRAME_FILL * height * np.sqrt(dist ** 2 - 1.0)
    cx = 0.5 * (width - 1) + 0.012 * width
    cy = 0.5 * (height - 1) - 0.010 * height
    return np.array([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]])


def look_at_w2c(cam_pos, target, roll):
    """World-to-camera (R, t) for an OpenCV camera at cam_pos looking at target."""
    forward = normalize(target - cam_pos)
    up_world = np.array([0.0, 0.0, 1.0])
    right = normalize(np.cross(forward, up_world))
    down = np.cross(forward, right)
    c2w_rot = np.stack([right, down, forward], axis=1)
    # roll about the optical axis
    c2w_rot = c2w_rot @ rotation_matrix([0, 0, 1], roll)
    w2c_rot = c2w_rot.T
    return w2c_rot, -w2c_rot @ cam_pos


def make_cameras(n_views, centre, radius, rng, azimuth_offset=0.0):
    """Cameras on the elevation cap, spread by a golden-angle spiral.

    Returns a list of (R_w2c, t_w2c).  Azimuth covers the full circle, so the
    object is seen from all sides; elevation is stratified in sin(elevation)
    (equal-area on the sphere) between ELEVATION_RANGE_DEG.
    """
    golden_angle = np.pi * (3.0 - np.sqrt(5.0))
    sin_lo, sin_hi = np.sin(np.radians(ELEVATION_RANGE_DEG))
    cams = []
    for i in range(n_views):
        frac = (i + 0.5) / n_views
        sin_el = sin_lo + (sin_hi - sin_lo) * frac
        sin_el += rng.uniform(-0.25, 0.25) * (sin_hi - sin_lo) / n_views
        elevation = np.arcsin(np.clip(sin_el, sin_lo, sin_hi))
        azimuth = azimuth_offset + i * golden_angle + rng.uniform(-0.05, 0.05)
        dist = radius * rng.uniform(*DISTANCE_RANGE)
        direction = np.array([np.cos(elevation) * np.cos(azimuth),
                              np.cos(elevation) * np.sin(azimuth),
                              np.sin(elevation)])
        cam_pos = centre + dist * direction
        # small look-at jitter so the object centre is not always the
        # principal point, and a slight roll, as a hand-held/robot capture has
        target = centre + rng.normal(0.0, 0.04 * radius, 3)
        roll = np.radians(rng.uniform(-3.0, 3.0))
        cams.append(look_at_w2c(cam_pos, target, roll))
    return cams


def pixel_rays(K, R_w2c, t_w2c, width, height):
    """World-space ray origin and unit directions for every pixel centre."""
    u, v = np.meshgrid(np.arange(width, dtype=np.float64),
                       np.arange(height, dtype=np.float64))
    pix = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], axis=1)
    dirs_cam = pix @ np.linalg.inv(K).T
    dirs_world = normalize(dirs_cam @ R_w2c)  # R^T applied to row vectors
    origin = -R_w2c.T @ t_w2c
    return origin, dirs_world


# --------------------------------------------------------------------------
# Appearance
# --------------------------------------------------------------------------

def make_procedural_texture(rng):
    """Parameters of a smooth 3D colour field (a few sinusoids in 3D)."""
    palette = np.array([[0.85, 0.35, 0.20], [0.20, 0.55, 0.85],
                        [0.95, 0.85, 0.30], [0.30, 0.75, 0.35]])
    palette = palette[rng.permutation(len(palette))]
    # wave vectors in cycles per object radius: two broad colour blends and
    # one finer stripe pattern, so there is texture at several scales
    dirs = normalize(rng.normal(size=(3, 3)))
    freqs = np.array([0.8, 1.1, 3.0]) * 2.0 * np.pi
    return {"palette": palette, "wave": dirs * freqs[:, None],
            "phase": rng.uniform(0, 2 * np.pi, 3)}


def procedural_albedo(points_world, centre, radius, tex):
    """Albedo in [0.08, 0.95] of world points, a function of position only."""
    q = (points_world - centre) / radius
    s = 0.5 + 0.5 * np.sin(q @ tex["wave"].T + tex["phase"])  # (N, 3)
    pal = tex["palette"]
    base = (pal[0] * (1 - s[:, :1]) + pal[1] * s[:, :1]) * (1 - s[:, 1:2]) \
        + (pal[2] * (1 - s[:, :1]) + pal[3] * s[:, :1]) * s[:, 1:2]
    stripes = 0.7 + 0.3 * s[:, 2:3] ** 2
    return np.clip(base * stripes, 0.08, 0.95)


def sample_texture_bilinear(image, uv):
    """Bilinear lookup with wrap-around; uv in [0,1]^2, v=0 at the image bottom
    (OBJ convention)."""
    h, w = image.shape[:2]
    x = uv[:, 0] * w - 0.5
    y = (1.0 - uv[:, 1]) * h - 0.5
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    fx = (x - x0)[:, None]
    fy = (y - y0)[:, None]
    x0w, x1w = x0 % w, (x0 + 1) % w
    y0w, y1w = y0 % h, (y0 + 1) % h
    top = image[y0w, x0w] * (1 - fx) + image[y0w, x1w] * fx
    bottom = image[y1w, x0w] * (1 - fx) + image[y1w, x1w] * fx
    return top * (1 - fy) + bottom * fy


def lambert(albedo, normals):
    light = normalize(LIGHT_DIR_WORLD)
    diffuse = np.clip(normals @ light, 0.0, None)[:, None]
    return albedo * (AMBIENT + (1.0 - AMBIENT) * diffuse)


# --------------------------------------------------------------------------
# Analytic shapes (signed distance functions), rendered by sphere tracing
# --------------------------------------------------------------------------

def _smooth_min(a, b, k):
    """Polynomial smooth minimum; blends surfaces within distance k."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


class AnalyticShape:
    """An SDF defined in unit space, placed in the world by a similarity.

    world_sdf(p) = scale * unit_sdf(rot^T (p - offset) / scale), which stays a
    true (or conservative) distance in world units.
    """

    def __init__(self, name, radius_mm, offset, rng):
        self.name = name
        tilt = rotation_matrix(normalize(rng.normal(size=3)), np.radians(25.0))
        self.rot = tilt
        if name == "sphere":
            self.unit_sdf = lambda q: np.linalg.norm(q, axis=-1) - 1.0
            unit_centre, unit_radius = np.zeros(3), 1.0
        elif name == "torus":
            # tilted so the hole is seen obliquely from the cap
            major, minor = 0.7, 0.3

            def torus(q):
                ring = np.linalg.norm(q[..., :2], axis=-1) - major
                return np.sqrt(ring ** 2 + q[..., 2] ** 2) - minor
            self.unit_sdf = torus
            unit_centre, unit_radius = np.zeros(3), major + minor
        elif name == "blob":
            # smooth union of spheres: non-convex (saddles, a concave waist)
            centres = np.array([[0.0, 0.0, 0.0], [0.55, 0.1, 0.15],
                                [-0.45, 0.3, -0.1], [0.05, -0.55, 0.2],
                                [-0.1, 0.05, 0.55]])
            radii = np.array([0.5, 0.33, 0.36, 0.3, 0.25])

            def blob(q):
                # per-sphere scalar arithmetic: avoids (N, 5, 3) temporaries
                x, y, z = q[..., 0], q[..., 1], q[..., 2]
                out = None
                for (cx, cy, cz), r in zip(centres, radii):
                    d = np.sqrt((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) - r
                    out = d if out is None else _smooth_min(out, d, 0.18)
                return out
            self.unit_sdf = blob
            unit_centre, unit_radius = self._measure(blob)
        else:
            raise ValueError(name)
        self.scale = radius_mm / unit_radius
        # place the bounding-sphere centre at `offset`
        self.offset = offset - self.rot @ unit_centre * self.scale
        self.centre = offset.copy()
        self.radius = radius_mm

    @staticmethod
    def _measure(unit_sdf, res=96):
        """Bounding-box centre and bounding radius of an SDF's zero set."""
        import mcubes
        grid = np.linspace(-1.6, 1.6, res)
        q = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), -1)
        verts, _ = mcubes.marching_cubes(unit_sdf(q), 0.0)
        verts = verts * (grid[1] - grid[0]) + grid[0]
        centre = 0.5 * (verts.min(0) + verts.max(0))
        return centre, np.linalg.norm(verts - centre, axis=1).max() * 1.005

    def sdf(self, p):
        # column-wise affine map: (N,3)@(3,3) through BLAS is slow for the
        # tall, thin arrays used here
        a = self.rot / self.scale
        b = -(self.offset @ self.rot) / self.scale
        x, y, z = p[..., 0], p[..., 1], p[..., 2]
        q = np.stack([x * a[0, k] + y * a[1, k] + z * a[2, k] + b[k]
                      for k in range(3)], axis=-1)
        return self.scale * self.unit_sdf(q)

    def normal(self, p):
        h = 1e-4 * self.radius
        grad = np.zeros_like(p)
        for axis in range(3):
            e = np.zeros(3)
            e[axis] = h
            grad[:, axis] = self.sdf(p + e) - self.sdf(p - e)
        return normalize(grad)

    def sphere_trace(self, origin, dirs):
        """Hit distance along each ray (inf where it misses)."""
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
        origin, dirs = pixel_rays(K, R, t, width, height)
        t_hit = self.sphere_trace(origin, dirs)
        hit = np.isfinite(t_hit)
        points = origin + t_hit[hit, None] * dirs[hit]
        normals = self.normal(points)
        rgb = lambert(albedo_fn(points), normals)
        return hit.reshape(height, width), rgb, hit

    def gt_mesh(self, resolution, block=4):
        """Marching cubes of the world SDF over the bounding box.

        The SDF is evaluated finely only in blocks of block^3 cells that the
        surface can reach: a block whose corners all lie farther from the
        surface than the block diagonal (the SDF is ~1-Lipschitz) holds no
        surface and has one sign throughout, so its coarse corner values are
        enough for marching cubes.  ~10x fewer evaluations at 256^3.
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
        ci, cj, ck = np.meshgrid(coarse_idx, coarse_idx, coarse_idx,
                                 indexing="ij")
        coarse = self.sdf(grid_points(ci, cj, ck).reshape(-1, 3)).reshape(
            ci.shape)
        # nearest-neighbour upsampling gives far blocks their (uniform) sign
        up = np.repeat(np.repeat(np.repeat(coarse, block, 0), block, 1),
                       block, 2)
        values = up[:res, :res, :res].copy()
        corner_min = np.min(np.stack([
            np.abs(coarse[a:a + n_blocks, b:b + n_blocks, c:c + n_blocks])
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


# --------------------------------------------------------------------------
# Triangle meshes, rendered by z-buffer rasterisation at pixel centres
# --------------------------------------------------------------------------

def _edge(ax, ay, bx, by, px, py):
    """Twice the signed area of triangle (a, b, p)."""
    return (bx - ax) * (py - ay) - (by - ay) * (px - ax)


def rasterize(verts_cam, faces, K, width, height, budget=3_000_000):
    """Visible triangle id per pixel centre (-1 = background).

    verts_cam: (N, 3) camera-space vertices, all with z > 0 (the cameras are
    outside the bounding sphere).  Screen-space barycentrics give 1/z exactly
    (1/z is affine in screen space for a planar triangle), so the depth test is
    exact at pixel centres.  Candidate pixels of many triangles are handled at
    once: triangles sorted by bounding-box size, each chunk padded to its
    largest box, at most `budget` candidates per chunk.
    """
    z = verts_cam[:, 2]
    u = K[0, 0] * verts_cam[:, 0] / z + K[0, 2]
    v = K[1, 1] * verts_cam[:, 1] / z + K[1, 2]
    fu, fv, fz = u[faces], v[faces], z[faces]
    area = _edge(fu[:, 0], fv[:, 0], fu[:, 1], fv[:, 1], fu[:, 2], fv[:, 2])
    umin = np.maximum(np.ceil(fu.min(1)), 0).astype(np.int64)
    umax = np.minimum(np.floor(fu.max(1)), width - 1).astype(np.int64)
    vmin = np.maximum(np.ceil(fv.min(1)), 0).astype(np.int64)
    vmax = np.minimum(np.floor(fv.max(1)), height - 1).astype(np.int64)
    ok = (umax >= umin) & (vmax >= vmin) & (np.abs(area) > 1e-12)
    tri_ids = np.nonzero(ok)[0]
    side = np.maximum(umax - umin + 1, vmax - vmin + 1)[tri_ids]
    order = np.argsort(side, kind="stable")
    tri_ids, side = tri_ids[order], side[order]

    zbuf = np.full(width * height, np.inf)
    tribuf = np.full(width * height, -1, dtype=np.int64)
    start = 0
    while start < tri_ids.size:
        guess = min(start + max(budget // int(side[start]) ** 2, 1), tri_ids.size)
        s = int(side[guess - 1])
        end = min(start + max(budget // (s * s), 1), tri_ids.size)
        s = int(side[end - 1])
        tris = tri_ids[start:end]
        start = end

        offs = np.arange(s)
        cu = (umin[tris][:, None, None] + offs[None, None, :])
        cv = (vmin[tris][:, None, None] + offs[None, :, None])
        cu = np.broadcast_to(cu, (tris.size, s, s)).reshape(tris.size, -1)
        cv = np.broadcast_to(cv, (tris.size, s, s)).reshape(tris.size, -1)
        inbox = (cu <= umax[tris][:, None]) & (cv <= vmax[tris][:, None])
        rows, cols = np.nonzero(inbox)
        px = cu[rows, cols].astype(np.float64)
        py = cv[rows, cols].astype(np.float64)
        tri = tris[rows]
        a = area[tri]
        su, sv = fu[tri], fv[tri]
        l0 = _edge(su[:, 1], sv[:, 1], su[:, 2], sv[:, 2], px, py) / a
        l1 = _edge(su[:, 2], sv[:, 2], su[:, 0], sv[:, 0], px, py) / a
        l2 = 1.0 - l0 - l1
        inside = (l0 >= 0) & (l1 >= 0) & (l2 >= 0)
        zt = fz[tri[inside]]
        inv_depth = (l0[inside] / zt[:, 0] + l1[inside] / zt[:, 1]
                     + l2[inside] / zt[:, 2])
        depth = 1.0 / inv_depth
        pix = cv[rows, cols][inside] * width + cu[rows, cols][inside]
        tri = tri[inside]
        np.minimum.at(zbuf, pix, depth)
        win = depth <= zbuf[pix]
        tribuf[pix[win]] = tri[win]
    return tribuf


def perspective_barycentrics(verts_cam, faces, tri, pix_u, pix_v, K):
    """Barycentric weights (in 3D) of the surface point seen at each pixel."""
    z = verts_cam[:, 2]
    u = K[0, 0] * verts_cam[:, 0] / z + K[0, 2]
    v = K[1, 1] * verts_cam[:, 1] / z + K[1, 2]
    fu, fv, fz = u[faces[tri]], v[faces[tri]], z[faces[tri]]
    a = _edge(fu[:, 0], fv[:, 0], fu[:, 1], fv[:, 1], fu[:, 2], fv[:, 2])
    l0 = _edge(fu[:, 1], fv[:, 1], fu[:, 2], fv[:, 2], pix_u, pix_v) / a
    l1 = _edge(fu[:, 2], fv[:, 2], fu[:, 0], fv[:, 0], pix_u, pix_v) / a
    screen = np.stack([l0, l1, 1 - l0 - l1], 1)
    w = screen / fz
    return w / w.sum(1, keepdims=True)


class MeshShape:
    """A triangle mesh turned z-up, scaled to radius_mm and placed at offset."""

    def __init__(self, path, radius_mm, offset, texture_path=None):
        import trimesh
        self.name = os.path.splitext(os.path.basename(path))[0]
        mesh = trimesh.load(path, process=False, force="mesh")
        if len(mesh.faces) == 0:
            raise ValueError(f"mesh has no faces: {path}")
        verts = np.asarray(mesh.vertices, dtype=np.float64) @ Y_UP_TO_Z_UP.T
        bb_centre = 0.5 * (verts.min(0) + verts.max(0))
        # bounding sphere about the bounding-box centre (a definition that is
        # easy to reproduce; within a few % of the minimal sphere)
        bound = np.linalg.norm(verts - bb_centre, axis=1).max()
        self.vertices = (verts - bb_centre) * (radius_mm / bound) + offset
        self.faces = np.asarray(mesh.faces, dtype=np.int64)
        self.centre = offset.copy()
        self.radius = radius_mm

        self.uv, self.texture = None, None
        uv = getattr(mesh.visual, "uv", None)
        if uv is not None and len(uv) == len(verts):
            image = self._find_texture(mesh, path, texture_path)
            if image is not None:
                self.uv, self.texture = np.asarray(uv, dtype=np.float64), image

        # OBJ loaders split vertices at UV seams; merge by position so the
        # shading normals (and the exported GT surface) have no seams.
        _, self.position_index = np.unique(
            np.round(self.vertices, 6), axis=0, return_inverse=True)
        self.position_index = self.position_index.ravel()
        self.face_normals = normalize(np.cross(
            self.vertices[self.faces[:, 1]] - self.vertices[self.faces[:, 0]],
            self.vertices[self.faces[:, 2]] - self.vertices[self.faces[:, 0]]))
        # area-weighted vertex normals accumulated on merged positions
        area_normals = 0.5 * np.cross(
            self.vertices[self.faces[:, 1]] - self.vertices[self.faces[:, 0]],
            self.vertices[self.faces[:, 2]] - self.vertices[self.faces[:, 0]])
        acc = np.zeros((self.position_index.max() + 1, 3))
        for k in range(3):
            np.add.at(acc, self.position_index[self.faces[:, k]], area_normals)
        self.vertex_normals = normalize(acc[self.position_index])

    @staticmethod
    def _find_texture(mesh, path, texture_path):
        """RGB float texture: explicit path, else the OBJ's material image, else
        the only PNG/JPG beside the OBJ (Spot ships its texture that way)."""
        import cv2
        if texture_path is None:
            material = getattr(mesh.visual, "material", None)
            image = getattr(material, "image", None)
            # trimesh substitutes a tiny placeholder when the OBJ has no mtl
            if image is not None and min(image.size) > 4:
                return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
            folder = os.path.dirname(os.path.abspath(path))
            images = [f for f in sorted(os.listdir(folder))
                      if f.lower().endswith((".png", ".jpg", ".jpeg"))]
            if len(images) != 1:
                return None
            texture_path = os.path.join(folder, images[0])
        bgr = cv2.imread(texture_path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"cannot read texture {texture_path}")
        return bgr[:, :, ::-1].astype(np.float64) / 255.0

    def render(self, K, R, t, width, height, albedo_fn):
        verts_cam = self.vertices @ R.T + t
        if verts_cam[:, 2].min() <= 1e-6:
            raise ValueError("mesh crosses the camera plane")
        tribuf = rasterize(verts_cam, self.faces, K, width, height)
        hit = tribuf >= 0
        pix = np.nonzero(hit)[0]
        tri = tribuf[pix]
        pu = (pix % width).astype(np.float64)
        pv = (pix // width).astype(np.float64)
        bary = perspective_barycentrics(verts_cam, self.faces, tri, pu, pv, K)
        corners = self.faces[tri]
        points = np.einsum("nk,nkd->nd", bary, self.vertices[corners])
        normals = normalize(np.einsum("nk,nkd->nd", bary,
                                      self.vertex_normals[corners]))
        face_n = self.face_normals[tri]
        # Make the shading normal agree with the winding, then face it toward
        # the camera: on a closed, consistently wound mesh the second flip
        # never fires, so shading stays view-independent; it only rescues
        # open or inconsistently wound meshes.
        normals *= np.sign(np.sum(normals * face_n, 1, keepdims=True) + 1e-12)
        cam_pos = -R.T @ t
        toward = np.sum(face_n * (cam_pos - points), 1, keepdims=True)
        normals *= np.where(toward < 0, -1.0, 1.0)
        if self.texture is not None:
            uv = np.einsum("nk,nkd->nd", bary, self.uv[corners])
            albedo = sample_texture_bilinear(self.texture, uv)
        else:
            albedo = albedo_fn(points)
        return hit.reshape(height, width), lambert(albedo, normals), hit

    def gt_mesh(self, resolution=None):
        import trimesh
        mesh = trimesh.Trimesh(self.vertices, self.faces, process=False)
        mesh.merge_vertices(merge_tex=True, merge_norm=True)
        return mesh


# --------------------------------------------------------------------------
# Scene assembly and writers
# --------------------------------------------------------------------------

def _world_mat(K, R, t):
    k4 = np.eye(4)
    k4[:3, :3] = K
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = R, t
    return k4 @ w2c


def _c2w_opengl(R, t):
    c2w = np.eye(4)
    c2w[:3, :3] = R.T
    c2w[:3, 3] = -R.T @ t
    return c2w @ np.diag([1.0, -1.0, -1.0, 1.0])


def _render_views(shape, cams, K, width, height, albedo_fn, background, out_dir,
                  sub=""):
    """Render and write image/ and mask/ PNGs; returns per-view coverage."""
    import cv2
    img_dir = os.path.join(out_dir, sub, "image")
    mask_dir = os.path.join(out_dir, sub, "mask")
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(mask_dir, exist_ok=True)
    bg = np.array([1.0, 1.0, 1.0] if background == "white" else [0.0, 0.0, 0.0])
    coverage = []
    for i, (R, t) in enumerate(cams):
        mask, rgb, hit = shape.render(K, R, t, width, height, albedo_fn)
        image = np.tile(bg, (width * height, 1))
        image[hit] = rgb
        image8 = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
        image8 = image8.reshape(height, width, 3)
        cv2.imwrite(os.path.join(img_dir, f"{i:06d}.png"), image8[:, :, ::-1],
                    [cv2.IMWRITE_PNG_COMPRESSION, 6])
        cv2.imwrite(os.path.join(mask_dir, f"{i:03d}.png"),
                    mask.astype(np.uint8) * 255, [cv2.IMWRITE_PNG_COMPRESSION, 6])
        coverage.append(float(mask.mean()))
    return coverage


def _write_neus_cameras(path, cams, K, scale_mat):
    arrays = {}
    for i, (R, t) in enumerate(cams):
        arrays[f"world_mat_{i}"] = _world_mat(K, R, t)
        arrays[f"scale_mat_{i}"] = scale_mat
    np.savez(path, **arrays)


def _write_transforms(path, cams, K, width, height, centre, scale_radius,
                      sub=""):
    frames = []
    for i, (R, t) in enumerate(cams):
        frames.append({
            "file_path": os.path.join(sub, "image", f"{i:06d}.png"),
            "mask_path": os.path.join(sub, "mask", f"{i:03d}.png"),
            "transform_matrix": _c2w_opengl(R, t).tolist(),
        })
    meta = {
        "camera_model": "OPENCV",
        "fl_x": K[0, 0], "fl_y": K[1, 1],
        # instant-ngp puts pixel centres at +0.5
        "cx": K[0, 2] + 0.5, "cy": K[1, 2] + 0.5,
        "w": width, "h": height,
        "camera_angle_x": 2 * np.arctan(width / (2 * K[0, 0])),
        "camera_angle_y": 2 * np.arctan(height / (2 * K[1, 1])),
        "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0,
        # not an instant-ngp key: the world sphere enclosing the object (mm);
        # same as scale_mat in cameras_sphere.npz
        "sphere_center": list(map(float, centre)),
        "sphere_radius": float(scale_radius),
        "world_units": "mm",
        "frames": frames,
    }
    with open(path, "w") as f:
        json.dump(meta, f, indent=1)


def make_scene(out_dir, shape="sphere", views=32, width=400, height=300,
               radius_mm=200.0, formats=("neus", "transforms"), seed=0,
               background="black", holdout_jitter=False, gt_resolution=256,
               texture=None, verbose=False):
    """Render a synthetic scene into out_dir; returns the scene.json dict.

    shape: 'sphere' | 'torus' | 'blob' (analytic SDFs, sphere traced) or
    'spot' | 'bunny' | path to an OBJ (rasterised).  formats: any of 'neus',
    'transforms'.  gt_resolution: marching-cubes grid for analytic shapes.
    holdout_jitter: also render views//4 (at least 2) extra cameras placed
    between the training ones (azimuth offset by half a golden angle, own
    random jitter) into out_dir/holdout/ in the same formats, for novel-view
    evaluation on poses never trained on.
    """
    if isinstance(formats, str):
        formats = tuple(f for f in formats.split(",") if f)
    unknown = set(formats) - {"neus", "transforms"}
    if unknown:
        raise ValueError(f"unknown formats: {sorted(unknown)}")
    if background not in ("black", "white"):
        raise ValueError("background must be 'black' or 'white'")
    t_start = time.time()
    rng = np.random.default_rng(seed)
    # object centre near, but deliberately not at, the world origin (5-15% of
    # the radius) so a loader that ignores scale_mat's translation shows
    offset_dir = normalize(rng.normal(size=3))
    offset = offset_dir * radius_mm * rng.uniform(0.05, 0.15)
    texture_params = make_procedural_texture(rng)
    if shape in ("sphere", "torus", "blob"):
        obj = AnalyticShape(shape, radius_mm, offset, rng)
        kind = "analytic"
    else:
        obj = MeshShape(resolve_mesh_path(shape), radius_mm, offset, texture)
        kind = "mesh"
    centre, radius = obj.centre, obj.radius

    K = make_intrinsics(width, height)
    cams = make_cameras(views, centre, radius, rng)

    def albedo_fn(points):
        return procedural_albedo(points, centre, radius, texture_params)

    os.makedirs(out_dir, exist_ok=True)
    t_render = time.time()
    coverage = _render_views(obj, cams, K, width, height, albedo_fn,
                             background, out_dir)
    render_seconds = time.time() - t_render

    scale_radius = SCALE_MAT_MARGIN * radius
    scale_mat = np.diag([scale_radius, scale_radius, scale_radius, 1.0])
    scale_mat[:3, 3] = centre
    subsets = [("", cams)]
    if holdout_jitter:
        hold_rng = np.random.default_rng([seed, 1])
        n_hold = max(2, views // 4)
        hold_cams = make_cameras(n_hold, centre, radius, hold_rng,
                                 azimuth_offset=0.5 * np.pi * (3 - np.sqrt(5)))
        _render_views(obj, hold_cams, K, width, height, albedo_fn, background,
                      out_dir, sub="holdout")
        subsets.append(("holdout", hold_cams))
    for sub, sub_cams in subsets:
        if "neus" in formats:
            _write_neus_cameras(os.path.join(out_dir, sub, "cameras_sphere.npz"),
                                sub_cams, K, scale_mat)
        if "transforms" in formats:
            _write_transforms(os.path.join(out_dir, sub, "transforms.json"),
                              sub_cams, K, width, height, centre, scale_radius)

    t_mesh = time.time()
    gt = obj.gt_mesh(gt_resolution)
    gt.export(os.path.join(out_dir, "gt_mesh.ply"))
    mesh_seconds = time.time() - t_mesh

    info = {
        "shape": shape if shape in SHAPES else os.path.abspath(shape),
        "shape_kind": kind,
        "views": views,
        "holdout_views": len(subsets[-1][1]) if holdout_jitter else 0,
        "width": width, "height": height,
        "world_units": "mm",
        "object_radius": float(radius),
        "object_centre": list(map(float, centre)),
        "scale_mat_radius": float(scale_radius),
        "K": K.tolist(),
        "seed": seed,
        "background": background,
        "formats": list(formats),
        "textured_by": ("uv_texture" if kind == "mesh" and obj.texture is not None
                        else "procedural_3d"),
        "light_dir_world": list(map(float, normalize(LIGHT_DIR_WORLD))),
        "ambient": AMBIENT,
        "elevation_deg": list(ELEVATION_RANGE_DEG),
        "distance_in_radii": list(DISTANCE_RANGE),
        "mask_coverage_mean": float(np.mean(coverage)),
        "gt_mesh": {"vertices": int(len(gt.vertices)),
                    "faces": int(len(gt.faces)),
                    "marching_cubes_resolution":
                        gt_resolution if kind == "analytic" else None},
        "conventions": {
            "camera_axes": "OpenCV: x right, y down, z forward",
            "world_up": "+z",
            "pixel_centres": "integer (u col, v row); ray = K^-1 [u, v, 1]",
            "world_mat": "K4 @ W2C (4x4), world mm -> pixels",
            "scale_mat": "diag(r, r, r, 1) + translation centre: unit sphere "
                         "-> world",
            "transforms_json": "instant-ngp: cx, cy = OpenCV + 0.5; "
                               "transform_matrix = C2W in OpenGL axes",
        },
        "timings_s": {"render": round(render_seconds, 3),
                      "gt_mesh": round(mesh_seconds, 3),
                      "total": round(time.time() - t_start, 3)},
    }
    with open(os.path.join(out_dir, "scene.json"), "w") as f:
        json.dump(info, f, indent=1)
    if verbose:
        print(f"{out_dir}: {shape}, {views} views {width}x{height}, "
              f"render {render_seconds:.1f}s, gt mesh {mesh_seconds:.1f}s, "
              f"coverage {np.mean(coverage):.2f}")
    return info


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="output folder")
    parser.add_argument("--shape", default="sphere",
                        help="sphere | torus | blob | spot | bunny | PATH.obj")
    parser.add_argument("--views", type=int, default=32)
    parser.add_argument("--width", type=int, default=400)
    parser.add_argument("--height", type=int, default=300)
    parser.add_argument("--radius_mm", type=float, default=200.0)
    parser.add_argument("--formats", default="neus,transforms",
                        help="comma list of: neus, transforms")
    parser.add_argument("--holdout_jitter", action="store_true",
                        help="also render held-out views between the training "
                             "poses into OUT/holdout/")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--background", choices=("black", "white"),
                        default="black")
    parser.add_argument("--gt_resolution", type=int, default=256,
                        help="marching-cubes grid for analytic shapes")
    parser.add_argument("--texture", default=None,
                        help="texture image for an OBJ with UVs")
    args = parser.parse_args(argv)
    try:
        make_scene(args.out, shape=args.shape, views=args.views,
                   width=args.width, height=args.height,
                   radius_mm=args.radius_mm, formats=args.formats,
                   seed=args.seed, background=args.background,
                   holdout_jitter=args.holdout_jitter,
                   gt_resolution=args.gt_resolution, texture=args.texture,
                   verbose=True)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
