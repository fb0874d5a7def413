"""Mesh extraction: marching cubes of the SDF on a lattice over the unit sphere's box, evaluated exactly only in
the blocks near the surface, vertex colours, in world units (files: mesh_export.py)."""
import numpy as np
import torch
import torch.nn.functional as F
import trimesh

import raymarching
from raymarching.torch_impl import pymcubes_marching_cubes

KERNEL_MAX_POINTS = 2**31  # the marching-cubes kernel indexes lattice points with int
BLOCK = 8  # lattice cells a block's side; a power of 2, so upsampling meets the coarse points exactly
MARGIN = 2.0  # block diagonals: 4x the half diagonal a distance needs (surface_blocks), slack for steeper SDFs


def lattice_position(index, resolution, radius):
    """Positions (numpy or tensor, as `index`) of lattice index coordinates index [...] (float64; may lie past
    the lattice's end) of the resolution^3 lattice spanning [-radius, radius]^3, axis by axis."""
    return index * (2 * radius / (resolution - 1)) - radius


def lattice_axis(n, resolution, radius, device, stride=1):
    """Positions [n] float32 of the lattice indices 0, stride, 2 * stride, ... on one axis (the same float32
    values on every device: computed in float64, rounded once)."""
    index = torch.arange(n, dtype=torch.float64, device=device) * stride
    return lattice_position(index, resolution, radius).float()


def clipped_sdf(sdf_fn, x, radius):
    """SDF at x [N, 3] -> [N] float32. Outside the sphere of `radius` the field has never been trained; taking
    max(sdf, |x| - radius) clips the surface to the sphere, so the mesh is always closed (watertight)."""
    return torch.maximum(sdf_fn(x).float(), x.norm(dim=-1) - radius)


@torch.no_grad()
def sample_sdf_grid(sdf_fn, resolution, radius, device, chunk=2**18, as_tensor=False, stride=1, size=None):
    """`clipped_sdf` on the whole resolution^3 lattice spanning [-radius, radius]^3, as float32 numpy [R, R, R]
    (x, y, z order); with `as_tensor`, a float32 tensor left on `device` instead (no copy to the host, for the
    GPU marching cubes). With `stride` and `size`, on the lattice indices 0, stride, ..., (size - 1) * stride
    per axis instead -> [size, size, size] (the last ones may lie past the lattice's end)."""
    n = size or resolution
    axis = lattice_axis(n, resolution, radius, device, stride)
    grid = torch.empty((n,) * 3, dtype=torch.float32, device=device) if as_tensor else np.empty((n,) * 3, np.float32)
    slab = max(1, chunk // n**2)  # x-slices per chunk
    for i in range(0, n, slab):
        x = torch.stack(torch.meshgrid(axis[i : i + slab], axis, axis, indexing="ij"), -1).reshape(-1, 3)
        sdf = clipped_sdf(sdf_fn, x, radius).reshape(-1, n, n)
        grid[i : i + len(sdf)] = sdf if as_tensor else sdf.cpu().numpy()
    return grid


def marching_cubes(grid, radius):
    """Zero level set of an SDF grid [R, R, R] over [-radius, radius]^3 -> numpy (vertices [V, 3] float32,
    faces [F, 3] int64), faces oriented with outward normals (towards positive SDF).

    A numpy grid goes to PyMCubes; a tensor to `raymarching.marching_cubes` (on CUDA our kernel: the same mesh
    up to the order of vertices and faces, positions to fp32 rounding; welded there too, then copied once), or
    to PyMCubes on the host when the GPU has no room for the kernel's work arrays (6 bytes a lattice point) or
    the grid is too large for its int indices."""
    if min(grid.shape) < 2:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)
    if torch.is_tensor(grid) and grid.numel() >= KERNEL_MAX_POINTS:
        grid = grid.cpu().numpy()
    resolution = len(grid)
    if torch.is_tensor(grid):
        try:
            vertices, faces = raymarching.marching_cubes(grid)  # lattice index units, on the grid's device
        except torch.OutOfMemoryError:
            grid = grid.cpu().numpy()
    if not torch.is_tensor(grid):
        vertices, faces = (torch.from_numpy(a) for a in pymcubes_marching_cubes(grid))
    vertices, faces = weld_lattice_points(vertices, faces.long())
    vertices, faces = vertices.cpu().numpy(), faces.cpu().numpy()
    return lattice_position(vertices.astype(np.float64), resolution, radius).astype(np.float32), faces


def weld_lattice_points(vertices, faces):
    """vertices [V, 3] (lattice index units), faces [F, 3] int64 of marching cubes, tensors on one device -> the
    same mesh with the vertices that share a lattice point welded into one and the faces this leaves without area
    dropped.

    A lattice value exactly at the level puts the vertex of every crossing edge it ends on the lattice point
    itself: several vertices in one place, joined by zero-area faces, which tools that merge coincident vertices
    (trimesh, MeshLab) read as a pinch, not a closed surface. A float32 SDF hits 0.0 exactly more often than one
    would guess (its values near the surface are differences of terms ~0.5, spaced 6e-8 apart: a 96^3 mesh of
    a torus had one such point), and a float32 vertex whose edge fraction is below its rounding lands on the
    point too. Welded, the mesh is closed again; elsewhere nothing changes. On the kernel's device: a full pass
    over millions of faces is milliseconds on a GPU and a fifth of a second in numpy."""
    on_point = (vertices == vertices.round()).all(dim=1).nonzero().squeeze(1)
    if len(on_point) < 2:
        return vertices, faces
    point = vertices[on_point].long()  # [P, 3] lattice indices; one integer key each
    side = int(point.max()) + 1
    keys, inverse = torch.unique((point[:, 0] * side + point[:, 1]) * side + point[:, 2], return_inverse=True)
    if len(keys) == len(on_point):
        return vertices, faces
    first = torch.full_like(keys, len(vertices)).scatter_reduce(0, inverse, on_point, "amin")  # per lattice point
    remap = torch.arange(len(vertices), device=vertices.device)
    remap[on_point] = first[inverse]
    faces = remap[faces]
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])]
    used = torch.zeros(len(vertices), dtype=torch.bool, device=vertices.device)
    used[faces.reshape(-1)] = True
    return vertices[used], (used.cumsum(0) - 1)[faces]


def block_corners(sdf_fn, resolution, radius, device, chunk=2**18):
    """`sample_sdf_grid` at every BLOCK-th lattice index: the corners of as many blocks of BLOCK^3 lattice points
    as cover the lattice -> [n, n, n] float32 tensor on `device`, n = ceil(R / BLOCK) + 1."""
    size = -(-resolution // BLOCK) + 1
    return sample_sdf_grid(sdf_fn, resolution, radius, device, chunk, as_tensor=True, stride=BLOCK, size=size)


def surface_blocks(coarse, resolution, radius, margin=MARGIN):
    """Blocks of the resolution^3 lattice over [-radius, radius]^3 that may hold the surface, from the SDF at
    their corners, coarse [n, n, n] (see `block_corners`) -> block indices [M, 3] int64: block b covers the
    lattice indices [b * BLOCK, (b + 1) * BLOCK) on each axis. A block is near when its corners' signs differ or
    one has |SDF| below `margin` block diagonals: a trained SDF is close to a distance (Lipschitz ~1), and every
    point of a block lies within half a diagonal of a corner."""
    diagonal = BLOCK * 2 * radius / (resolution - 1) * 3**0.5
    corners = coarse.unfold(0, 2, 1).unfold(1, 2, 1).unfold(2, 2, 1).reshape(*(s - 1 for s in coarse.shape), 8)
    lo, hi = corners.aminmax(dim=-1)
    near = (corners.abs().amin(-1) < margin * diagonal) | ((lo < 0) & (hi >= 0))
    return near.nonzero()


def upsample(coarse, resolution, device):
    """The lattice's grid [R, R, R] float32 on `device`, trilinear in the blocks' corners coarse [n, n, n] (see
    `block_corners`): where a block's corners agree in sign, so do all its points (no surface)."""
    n = coarse.shape[0]
    side = (n - 1) * BLOCK + 1  # lattice points the corners span: lattice index i at coarse coordinate i / BLOCK
    grid = torch.empty((resolution,) * 3, dtype=torch.float32, device=device)
    for c in range(n - 1):  # a slab of blocks at a time, to keep the work array small
        part = coarse[None, None, c : c + 2].to(device)  # [1, 1, 2, n, n]
        fine = F.interpolate(part, size=(BLOCK + 1, side, side), mode="trilinear", align_corners=True)[0, 0]
        end = min(c * BLOCK + len(fine), resolution)
        grid[c * BLOCK : end] = fine[: end - c * BLOCK, :resolution, :resolution]
    return grid


def fill_blocks(grid, sdf_fn, blocks, radius, chunk):
    """Writes `clipped_sdf` into grid [R, R, R] (the lattice over [-radius, radius]^3) at the lattice points of
    the blocks [M, 3] int64 (see `surface_blocks`), evaluated in chunks of about `chunk` points on the blocks'
    device -> grid."""
    resolution = grid.shape[0]
    axis = lattice_axis(resolution, resolution, radius, blocks.device)
    step = torch.arange(BLOCK, device=blocks.device)
    offsets = torch.stack(torch.meshgrid(step, step, step, indexing="ij"), -1).reshape(-1, 3)  # [BLOCK^3, 3]
    per = max(1, chunk // BLOCK**3)  # blocks per chunk
    for i in range(0, len(blocks), per):
        index = (blocks[i : i + per, None] * BLOCK + offsets).reshape(-1, 3)
        index = index[(index < resolution).all(-1)]  # past the lattice's end
        sdf = clipped_sdf(sdf_fn, axis[index], radius).to(grid.device)
        index = index.to(grid.device)
        grid[index[:, 0], index[:, 1], index[:, 2]] = sdf
    return grid


def restore_thin_parts(grid, sdf_fn, blocks, radius, chunk):
    """Keeps parts thinner than a lattice cell, which the lattice can step over: a cell of the blocks [M, 3]
    (see `surface_blocks`) whose eight corners in grid [R, R, R] are all outside but whose centre is inside holds
    such a part (a thin plate between two lattice planes); its lowest corner takes the centre's SDF, so marching
    cubes closes a sheet around that corner instead of leaving a hole (the part moves by at most half a cell
    diagonal). Only cells whose lowest corner is within half a cell diagonal are evaluated: no other can hold an
    inside point (the SDF is ~1-Lipschitz). Fields without such parts keep every value -> grid."""
    resolution = grid.shape[0]
    half_diagonal = 0.5 * 3**0.5 * 2 * radius / (resolution - 1)
    step = torch.arange(BLOCK + 1, device=blocks.device)
    points = torch.stack(torch.meshgrid(step, step, step, indexing="ij"), -1)  # [BLOCK + 1] * 3 + [3]
    cells = points[:BLOCK, :BLOCK, :BLOCK].reshape(-1, 3)  # [BLOCK^3, 3], a block's cells by their first corner
    corner = points[:2, :2, :2].reshape(8, 3).to(grid.device)
    shifts = corner.tolist()  # the same eight offsets, for slicing (read once: no device sync per chunk)
    per = max(1, chunk // BLOCK**3)  # blocks per chunk, as fill_blocks
    marks, depths = [], []  # applied after every cell is read, so that no chunk sees another's marks
    for i in range(0, len(blocks), per):
        first = blocks[i : i + per, None] * BLOCK  # [b, 1, 3]
        index = (first + points.reshape(-1, 3)).clamp(max=resolution - 1).to(grid.device)
        values = grid[index[..., 0], index[..., 1], index[..., 2]].reshape(-1, *points.shape[:3])
        # each cell's lowest corner (value, and which of `corner`): over the eight shifted views of the block
        lowest, which = torch.stack([values[:, a : a + BLOCK, b : b + BLOCK, c : c + BLOCK]
                                     for a, b, c in shifts]).min(0)
        lowest, which = lowest.reshape(len(first), -1), which.reshape(len(first), -1)  # [b, BLOCK^3]
        cell = (first + cells).to(grid.device)  # [b, BLOCK^3, 3]
        near = (lowest >= 0) & (lowest < half_diagonal) & (cell < resolution - 1).all(-1)
        cell, which = cell[near], which[near]  # [C, 3], [C]
        if len(cell) == 0:  # (a kernel may not take an empty batch)
            continue
        corners = cell[:, None] + corner  # [C, 8, 3]
        centre = lattice_position(cell.double() + 0.5, resolution, radius).float()
        sdf = clipped_sdf(sdf_fn, centre.to(blocks.device), radius).to(grid.device)
        inside = sdf < 0
        target = corners[inside, which[inside]]  # [K, 3]: the lowest corner of each cell with a part inside
        marks.append((target[:, 0] * resolution + target[:, 1]) * resolution + target[:, 2])
        depths.append(sdf[inside])
    if marks:  # a corner that several cells pick takes the lowest of their centres: the same on every device
        grid.view(-1).scatter_reduce_(0, torch.cat(marks), torch.cat(depths), reduce="amin")
    return grid


@torch.no_grad()
def extract_surface(sdf_fn, resolution, radius, device, chunk=None):
    """Marching cubes of the SDF on a resolution^3 lattice over [-radius, radius]^3 -> (vertices, faces) as
    `marching_cubes` of the whole lattice gives them, evaluating the SDF exactly only in the blocks near the
    surface (`surface_blocks`) and filling the rest from the coarse grid (`upsample`, no surface there), with the
    parts thinner than a cell kept (`restore_thin_parts`). On CUDA the grid stays on the GPU for our kernel, or
    goes to the host when it has no room."""
    on_gpu = torch.device(device).type == "cuda"
    chunk = chunk or (2**20 if on_gpu else 2**18)
    coarse = block_corners(sdf_fn, resolution, radius, device, chunk)
    blocks = surface_blocks(coarse, resolution, radius)
    if len(blocks) == 0:  # no surface anywhere
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)

    def lattice(grid_device):
        grid = fill_blocks(upsample(coarse, resolution, grid_device), sdf_fn, blocks, radius, chunk)
        return restore_thin_parts(grid, sdf_fn, blocks, radius, chunk)

    grid = None
    if on_gpu:
        # No room for the grid beside the network: the host's grid below (PyMCubes) instead.
        try:
            grid = lattice(device)
        except torch.OutOfMemoryError:
            pass
    if grid is None:
        grid = lattice("cpu").numpy()
    return marching_cubes(grid, radius)


def surface_color_fn(model, device, chunk=None):
    """color_fn(points [N, 3] float32 numpy, normalised space) -> rgb [N, 3] float32 in [0, 1]: the colour
    network at each point as seen head-on (view direction = -normal, the normal from the SDF's gradient), in
    chunks of `chunk` points (default: 2^18 on a GPU, where each chunk waits for its copy back; 2^16 on the CPU,
    whose field twin holds every hash level's corners at once)."""
    model.eval()
    chunk = chunk or (2**18 if torch.device(device).type == "cuda" else 2**16)

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
