"""Mesh extraction: marching cubes over the unit sphere's box, vertex colours, in world units (files:
mesh_export.py)."""
import numpy as np
import torch
import torch.nn.functional as F
import trimesh

import raymarching
from raymarching.torch_impl import pymcubes_marching_cubes

KERNEL_MAX_POINTS = 2**31  # the marching-cubes kernel indexes lattice points with int


@torch.no_grad()
def sample_sdf_grid(sdf_fn, resolution, radius, device, chunk=2**18, box=None, as_tensor=False):
    """SDF on a resolution^3 lattice spanning [-radius, radius]^3, as float32 numpy [R, R, R] (x, y, z order), or
    on its sub-block `box` = ((i0, i1), (j0, j1), (k0, k1)) of lattice indices (half-open) -> [i1 - i0, ...].
    With `as_tensor`, a float32 tensor left on `device` instead (no copy to the host, for the GPU marching cubes).

    Outside the sphere of `radius` the field has never been trained; taking max(sdf, |x| - radius) clips the
    surface to the sphere, so the mesh is always closed (watertight)."""
    lin = torch.linspace(-radius, radius, resolution, device=device)
    box = box or ((0, resolution),) * 3
    xs_all, ys, zs = (lin[a:b] for a, b in box)
    shape = (len(xs_all), len(ys), len(zs))
    grid = torch.empty(shape, dtype=torch.float32, device=device) if as_tensor else np.empty(shape, np.float32)
    slab = max(1, chunk // max(len(ys) * len(zs), 1))  # x-slices per chunk
    for i in range(0, len(xs_all), slab):
        xs = xs_all[i : i + slab]
        pts = torch.stack(torch.meshgrid(xs, ys, zs, indexing="ij"), -1).reshape(-1, 3)
        sdf = sdf_fn(pts).float()
        sdf = torch.maximum(sdf, pts.norm(dim=-1) - radius).reshape(len(xs), len(ys), len(zs))
        grid[i : i + len(xs)] = sdf if as_tensor else sdf.cpu().numpy()
    return grid


def marching_cubes(grid, radius, resolution=None, offset=(0, 0, 0)):
    """Zero level set of an SDF grid over [-radius, radius]^3 -> numpy (vertices [V, 3] float32, faces [F, 3]
    int64), faces oriented with outward normals (towards positive SDF). `grid` may be the sub-block of a
    resolution^3 lattice that starts at lattice index `offset` (see `sample_sdf_grid`).

    A numpy grid goes to PyMCubes; a tensor to `raymarching.marching_cubes` (on CUDA our kernel: the same mesh
    up to the order of vertices and faces, positions to fp32 rounding), or to PyMCubes on the host when the GPU
    has no room for the kernel's work arrays (6 bytes a lattice point) or the grid is too large for its int
    indices."""
    resolution = resolution or grid.shape[0]
    if min(grid.shape) < 2:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)
    if torch.is_tensor(grid) and grid.numel() >= KERNEL_MAX_POINTS:
        grid = grid.cpu().numpy()
    if torch.is_tensor(grid):
        try:
            vertices, faces = raymarching.marching_cubes(grid)  # lattice index units, on the grid's device
        except torch.OutOfMemoryError:
            grid = grid.cpu().numpy()
        else:
            offset = torch.tensor(offset, dtype=torch.float64, device=vertices.device)
            vertices = (vertices.double() + offset) / (resolution - 1) * 2 * radius - radius
            return vertices.float().cpu().numpy(), faces.cpu().numpy()
    vertices, faces = pymcubes_marching_cubes(grid)
    vertices = (vertices + np.asarray(offset)) / (resolution - 1) * 2 * radius - radius
    return vertices.astype(np.float32), faces.astype(np.int64)


@torch.no_grad()
def surface_box(sdf_fn, resolution, radius, device, coarse=64, margin=2.0):
    """Index box of the resolution^3 lattice that holds the zero level set, from a coarse lattice: the cells
    around coarse points inside the surface or with |SDF| below `margin` coarse-cell diagonals (a surface point
    is within half a diagonal of some coarse point, and a trained SDF is close to a distance). None if there
    are none."""
    coarse = min(coarse, resolution)
    grid = sample_sdf_grid(sdf_fn, coarse, radius, device)
    cell = 2 * radius / (coarse - 1)
    candidates = np.argwhere(grid < margin * cell * 3**0.5)  # inside (negative), or outside but close
    if len(candidates) == 0:
        return None
    scale = (resolution - 1) / (coarse - 1)  # coarse index -> fine index
    lo = np.clip(np.floor((candidates.min(0) - 1) * scale), 0, resolution - 1).astype(int)
    hi = np.clip(np.ceil((candidates.max(0) + 1) * scale) + 1, 1, resolution).astype(int)
    return tuple(zip(lo.tolist(), hi.tolist()))


def extract_surface(sdf_fn, resolution, radius, device):
    """Marching cubes of the SDF on a resolution^3 lattice over [-radius, radius]^3, evaluated only in the box
    that holds the surface (`surface_box`); a side of the box where the surface comes within two cells of it is
    pushed out and the box sampled again, so the box never cuts the surface. -> (vertices, faces) as
    `marching_cubes` of the whole lattice gives them."""
    box = surface_box(sdf_fn, resolution, radius, device)
    if box is None:  # no surface anywhere
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)
    close = 2 * (2 * radius / (resolution - 1)) * 3**0.5
    step = max(8, resolution // 8)
    on_gpu = torch.device(device).type == "cuda"  # the grid stays there, for our marching-cubes kernel
    while True:
        try:
            grid = sample_sdf_grid(sdf_fn, resolution, radius, device, box=box, as_tensor=on_gpu)
        except torch.OutOfMemoryError:  # no room for the grid on the GPU: keep it on the host (PyMCubes)
            on_gpu = False
            continue
        grown = []
        for axis, (lo, hi) in enumerate(box):
            side = (slice(None),) * axis  # indexes numpy and torch alike
            first, last = grid[side + (0,)], grid[side + (-1,)]
            lo = max(lo - step, 0) if lo > 0 and bool(first.min() < close) else lo
            hi = min(hi + step, resolution) if hi < resolution and bool(last.min() < close) else hi
            grown.append((lo, hi))
        if tuple(grown) == box:
            break
        box = tuple(grown)
    return marching_cubes(grid, radius, resolution, offset=[lo for lo, _ in box])


def surface_color_fn(model, device, chunk=2**16):
    """color_fn(points [N, 3] float32 numpy, normalised space) -> rgb [N, 3] float32 in [0, 1]: the colour
    network at each point as seen head-on (view direction = -normal, the normal from the SDF's gradient)."""
    model.eval()

    def color_fn(points):
        colors = []
        for i in range(0, len(points), chunk):
            x = torch.from_numpy(np.ascontiguousarray(points[i : i + chunk], np.float32)).to(device)
            _, feature, gradient = model.sdf_and_gradient(x, create_graph=False)
            normals = F.normalize(gradient.float(), dim=-1)
            with torch.no_grad():
                colors.append(model.color(x, normals, -normals, feature).float().clamp(0, 1).cpu().numpy())
        return np.concatenate(colors) if colors else np.zeros((0, 3), np.float32)

    return color_fn


def extract_mesh(model, resolution, to_world, device, radius):
    """The model's surface as a coloured trimesh in the input's world frame (to_world: 4x4 similarity)."""
    model.eval()
    vertices, faces = extract_surface(model.sdf, resolution, radius=radius, device=device)
    colors = (surface_color_fn(model, device)(vertices) * 255 + 0.5).astype(np.uint8)
    world = vertices.astype(np.float64) @ to_world[:3, :3].T + to_world[:3, 3]
    if np.linalg.det(to_world[:3, :3]) < 0:  # a reflection flips the orientation of the faces
        faces = faces[:, ::-1]
    return trimesh.Trimesh(world, faces, vertex_colors=colors, process=False)
