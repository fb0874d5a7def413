"""Mesh extraction: marching cubes over the unit sphere's box, vertex colours, export in world units."""
import os

import mcubes
import numpy as np
import torch
import torch.nn.functional as F
import trimesh


@torch.no_grad()
def sample_sdf_grid(sdf_fn, resolution, radius=1.0, device="cpu", chunk=2**18):
    """SDF on a resolution^3 lattice spanning [-radius, radius]^3, as float32 numpy [R, R, R] (x, y, z order).

    Outside the sphere of `radius` the field has never been trained; taking max(sdf, |x| - radius) clips the
    surface to the sphere, so the mesh is always closed (watertight)."""
    lin = torch.linspace(-radius, radius, resolution, device=device)
    grid = np.empty((resolution,) * 3, dtype=np.float32)
    slab = max(1, chunk // (resolution * resolution))  # x-slices per chunk
    for i in range(0, resolution, slab):
        xs = lin[i : i + slab]
        pts = torch.stack(torch.meshgrid(xs, lin, lin, indexing="ij"), -1).reshape(-1, 3)
        sdf = sdf_fn(pts).float()
        sdf = torch.maximum(sdf, pts.norm(dim=-1) - radius)
        grid[i : i + len(xs)] = sdf.reshape(len(xs), resolution, resolution).cpu().numpy()
    return grid


def marching_cubes(grid, radius=1.0):
    """Zero level set of an SDF grid over [-radius, radius]^3 -> (vertices [V, 3] float, faces [F, 3] int),
    faces oriented with outward normals (towards positive SDF)."""
    # PyMCubes treats values above the iso-level as inside: hand it -sdf.
    vertices, faces = mcubes.marching_cubes(-grid, 0.0)
    resolution = grid.shape[0]
    vertices = vertices / (resolution - 1) * 2 * radius - radius
    return vertices.astype(np.float32), faces.astype(np.int64)


def vertex_colors(model, vertices, device, chunk=2**16):
    """Colour of each vertex as seen head-on (view direction = -normal), uint8 [V, 3]."""
    colors = []
    for i in range(0, len(vertices), chunk):
        x = torch.from_numpy(vertices[i : i + chunk]).to(device)
        _, feature, gradient = model.sdf_and_gradient(x, create_graph=False)
        normals = F.normalize(gradient.float(), dim=-1)
        with torch.no_grad():
            rgb = model.color(x, normals, -normals, feature)
        colors.append((rgb.float().clamp(0, 1) * 255 + 0.5).byte().cpu().numpy())
    return np.concatenate(colors) if colors else np.zeros((0, 3), np.uint8)


def extract_mesh(model, resolution, to_world, device, radius=1.0):
    """The model's surface as a coloured trimesh in the input's world frame (to_world: 4x4 similarity)."""
    model.eval()
    grid = sample_sdf_grid(model.sdf, resolution, radius=radius, device=device)
    vertices, faces = marching_cubes(grid, radius=radius)
    colors = vertex_colors(model, vertices, device)
    world = vertices.astype(np.float64) @ to_world[:3, :3].T + to_world[:3, 3]
    if np.linalg.det(to_world[:3, :3]) < 0:  # a reflection flips the orientation of the faces
        faces = faces[:, ::-1]
    return trimesh.Trimesh(world, faces, vertex_colors=colors, process=False)


def export_mesh(mesh, path):
    """Write a mesh atomically (temporary file, then rename): a killed run never leaves half a file."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    ext = os.path.splitext(path)[1]
    tmp = f"{path}.tmp{ext}"
    mesh.export(tmp)
    os.replace(tmp, path)
