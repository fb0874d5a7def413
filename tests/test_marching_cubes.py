"""raymarching.marching_cubes: the twin (PyMCubes) on CPU, and the CUDA kernel against the twin on GPU."""
import math

import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial import cKDTree

import raymarching
from raymarching import torch_impl

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# Kernel against twin, lattice units: fp32 positions (half an ulp is 3.8e-6 below 64) against PyMCubes's float64
# rounded to fp32. The test fields below were chosen so that no two vertices are closer than 4x this.
KERNEL_ATOL = 2e-5


def lattice(shape):
    """Lattice index coordinates [X, Y, Z, 3] float64 of a grid of `shape`."""
    axes = [torch.arange(n, dtype=torch.float64) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)


def sphere_sdf(shape, centre, radius):
    """[X, Y, Z] float32: distance to a sphere, in lattice index units."""
    return ((lattice(shape) - torch.tensor(centre, dtype=torch.float64)).norm(dim=-1) - radius).float()


def smooth_field(shape, seed, waves=6, frequency=5.0, closed=False):
    """[X, Y, Z] float32: a sum of random plane waves over the unit box (several separate surfaces, every cell
    case). `closed` sets the boundary layer to +1, so every surface is closed."""
    g = torch.Generator().manual_seed(seed)
    unit = lattice(shape) / torch.tensor([max(n - 1, 1) for n in shape], dtype=torch.float64)
    directions = torch.randn(waves, 3, generator=g, dtype=torch.float64) * frequency
    phases = torch.rand(waves, generator=g, dtype=torch.float64) * 2 * math.pi
    field = torch.sin(unit @ directions.T + phases).sum(-1).float()
    if closed:
        field[[0, -1]] = 1.0
        field[:, [0, -1]] = 1.0
        field[:, :, [0, -1]] = 1.0
    return field


def crossing_edges(sdf, level=0.0):
    """Number of lattice edges whose ends lie on opposite sides of the level (inside iff sdf < level)."""
    inside = sdf < level
    return sum(int((inside.narrow(a, 0, n - 1) != inside.narrow(a, 1, n - 1)).sum())
               for a, n in enumerate(sdf.shape))


def face_normals(vertices, faces):
    v = vertices[faces]  # [F, 3, 3]
    return torch.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1)


def closed_mesh(vertices, faces):
    return trimesh.Trimesh(vertices.cpu().numpy(), faces.cpu().numpy(), process=False)


def canonical_faces(faces):
    """[F, 3] int64 numpy, each triangle rotated to start at its smallest id (winding kept), rows sorted."""
    first = faces.argmin(1)
    rotated = np.stack([faces[np.arange(len(faces)), (first + s) % 3] for s in range(3)], 1)
    return rotated[np.lexsort(rotated.T[::-1])] if len(faces) else rotated


def assert_same_mesh(got, want, atol):
    """The same vertices (each within atol of exactly one of the other's) and the same oriented faces."""
    got_v, got_f = (x.cpu().numpy() for x in got)
    want_v, want_f = (x.cpu().numpy() for x in want)
    assert got_v.shape == want_v.shape and got_f.shape == want_f.shape
    if len(want_v) == 0:
        return
    tree = cKDTree(want_v.astype(np.float64))
    # Matching by position is unambiguous only if distinct vertices are far apart compared with atol.
    if len(want_v) > 1:
        assert tree.query(want_v, k=2)[0][:, 1].min() > 4 * atol, "field too degenerate for this comparison"
    distance, match = tree.query(got_v.astype(np.float64))
    assert distance.max() < atol
    assert len(np.unique(match)) == len(got_v)  # a bijection
    assert np.array_equal(canonical_faces(match[got_f]), canonical_faces(want_f))


# ---------------------------------------------------------------------------------------------------------------
# The twin (CPU)
# ---------------------------------------------------------------------------------------------------------------


def test_sphere_is_closed_outward_and_on_the_surface():
    centre, radius = (15.2, 14.7, 16.1), 10.3
    sdf = sphere_sdf((32, 31, 33), centre, radius)
    vertices, faces = raymarching.marching_cubes(sdf)
    assert vertices.dtype == torch.float32 and faces.dtype == torch.int64
    r = (vertices.double() - torch.tensor(centre, dtype=torch.float64)).norm(dim=-1)
    assert (r - radius).abs().max() < 0.05  # lattice units: linear interpolation of a distance is close
    mesh = closed_mesh(vertices, faces)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume == pytest.approx(4 / 3 * math.pi * radius**3, rel=0.01)  # > 0: normals point outward
    assert len(vertices) == crossing_edges(sdf)  # one vertex per crossing edge, shared by its cells


def test_level_is_the_iso_value():
    sdf = sphere_sdf((24, 24, 24), (11.5, 11.5, 11.5), 6.0)
    vertices, faces = raymarching.marching_cubes(sdf, level=2.5)
    r = (vertices.double() - 11.5).norm(dim=-1)
    assert (r - 8.5).abs().max() < 0.05
    assert closed_mesh(vertices, faces).volume > 0


@pytest.mark.parametrize("shape", [(17, 9, 30), (2, 5, 3), (31, 2, 7)])
def test_odd_non_cubic_grids_vertices_on_their_edges(shape):
    sdf = smooth_field(shape, seed=sum(shape))
    level = 0.2
    vertices, faces = raymarching.marching_cubes(sdf, level)
    assert len(faces) > 0 and len(vertices) == crossing_edges(sdf, level)
    assert int(faces.min()) >= 0 and int(faces.max()) < len(vertices)
    # Each vertex lies on a lattice edge (two integer coordinates), where the edge's linear interpolation of
    # the values equals the level.
    v = vertices.double()
    on_lattice = (v - v.round()).abs() < 1e-6
    assert (on_lattice.sum(1) >= 2).all()
    axis = (~on_lattice).double().argmax(1)  # the moving coordinate (any, for a vertex on a lattice point)
    lower = v.floor().long()
    lower[torch.arange(len(v)), axis] = lower[torch.arange(len(v)), axis].clamp(max=torch.tensor(shape)[axis] - 2)
    upper = lower.clone()
    upper[torch.arange(len(v)), axis] += 1
    a, b = (sdf[tuple(p.T)].double() for p in (lower, upper))
    t = v[torch.arange(len(v)), axis] - lower[torch.arange(len(v)), axis]
    assert ((1 - t) * a + t * b - level).abs().max() < 1e-5
    if min(shape) > 2:  # else every point is on the boundary
        closed = smooth_field(shape, seed=sum(shape), closed=True)
        mesh = closed_mesh(*raymarching.marching_cubes(closed, level))
        assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0


def test_open_surface_faces_point_towards_positive_values():
    shape = (9, 12, 21)
    sdf = (lattice(shape)[..., 2] - 8.3 + 0.2 * lattice(shape)[..., 0]).float()  # a tilted plane, z grows outward
    vertices, faces = raymarching.marching_cubes(sdf)
    normals = face_normals(vertices.double(), faces)
    assert len(faces) > 0 and (normals[:, 2] > 0).all()


def test_nothing_to_extract_gives_empty_arrays():
    for sdf in (torch.ones(8, 9, 10), -torch.ones(5, 5, 5), torch.zeros(1, 7, 7), torch.zeros(0, 3, 3),
                sphere_sdf((1, 20, 20), (0, 10, 10), 5)):
        vertices, faces = raymarching.marching_cubes(sdf)
        assert vertices.shape == (0, 3) and faces.shape == (0, 3)
        assert vertices.dtype == torch.float32 and faces.dtype == torch.int64


def test_a_value_exactly_at_the_level_is_outside():
    sdf = torch.ones(3, 3, 3)
    sdf[1, 1, 1] = 0.0  # at the level: outside, like the rest
    assert len(raymarching.marching_cubes(sdf)[1]) == 0
    sdf[1, 1, 1] = -1.0
    vertices, faces = raymarching.marching_cubes(sdf)
    assert len(vertices) == 6 and closed_mesh(vertices, faces).volume > 0  # an octahedron round the point


def test_twin_leaves_its_input_unchanged():
    sdf = smooth_field((10, 11, 12), seed=3)
    before = sdf.clone()
    raymarching.marching_cubes(sdf)
    assert torch.equal(sdf, before)


def test_bad_shape_raises_value_error_with_the_shape():
    with pytest.raises(ValueError, match=r"sdf must be \[X, Y, Z\], got \(4, 4\)"):
        raymarching.marching_cubes(torch.zeros(4, 4))


def test_kernel_case_tables_are_pymcubes_current_ones():
    """src/marching_cubes_tables.h is what scripts/make_mc_tables.py makes from PyMCubes now."""
    import os
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, os.path.join(root, "scripts"))
    try:
        import make_mc_tables
    finally:
        sys.path.pop(0)
    with open(make_mc_tables.HEADER) as f:
        assert f.read() == make_mc_tables.header_text()


# ---------------------------------------------------------------------------------------------------------------
# The CUDA kernel against the twin
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def backend():
    from raymarching.backend import get_backend

    module = get_backend()
    assert module is not None, "the CUDA extension failed to build"
    return module


def kernel_and_twin(sdf, level=0.0):
    got = raymarching.marching_cubes(sdf.cuda(), level)
    assert got[0].is_cuda and got[1].is_cuda
    assert got[0].dtype == torch.float32 and got[1].dtype == torch.int64
    return got, torch_impl.marching_cubes(sdf, level)


@requires_cuda
@pytest.mark.parametrize("shape", [(2, 2, 2), (2, 5, 3), (17, 23, 31), (40, 33, 25)])
@pytest.mark.parametrize("level", [0.0, 0.3])
def test_cuda_marching_cubes_equals_the_twin(backend, shape, level):
    sdf = smooth_field(shape, seed=sum(shape))
    got, want = kernel_and_twin(sdf, level)
    assert_same_mesh(got, want, atol=KERNEL_ATOL)


@requires_cuda
def test_cuda_marching_cubes_every_case(backend):
    """Noise: every one of the 256 cell cases occurs (checked for this seed)."""
    sdf = torch.randn(15, 14, 13, generator=torch.Generator().manual_seed(5))
    got, want = kernel_and_twin(sdf)
    assert_same_mesh(got, want, atol=KERNEL_ATOL)


@requires_cuda
def test_cuda_marching_cubes_closed_outward_and_deterministic(backend):
    sdf = smooth_field((129, 97, 111), seed=11, closed=True)
    vertices, faces = raymarching.marching_cubes(sdf.cuda())
    mesh = closed_mesh(vertices, faces)
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0
    assert len(vertices) == crossing_edges(sdf)
    twin_vertices, twin_faces = torch_impl.marching_cubes(sdf)
    assert len(vertices) == len(twin_vertices) and len(faces) == len(twin_faces)
    again = raymarching.marching_cubes(sdf.cuda())
    assert torch.equal(again[0], vertices) and torch.equal(again[1], faces)
    sphere = sphere_sdf((32, 31, 33), (15.2, 14.7, 16.1), 10.3)
    got, want = kernel_and_twin(sphere)
    assert_same_mesh(got, want, atol=KERNEL_ATOL)


@requires_cuda
def test_cuda_marching_cubes_edge_cases(backend):
    for sdf in (torch.ones(8, 9, 10), -torch.ones(5, 5, 5), torch.zeros(1, 7, 7)):
        vertices, faces = raymarching.marching_cubes(sdf.cuda())
        assert vertices.shape == (0, 3) and faces.shape == (0, 3) and vertices.is_cuda
    # A strided view (made contiguous by the wrapper) and a value exactly at the level (outside).
    sdf = smooth_field((20, 13, 9), seed=2).permute(2, 0, 1)
    got, want = kernel_and_twin(sdf)
    assert_same_mesh(got, want, atol=KERNEL_ATOL)
    sdf = torch.ones(3, 3, 3)
    sdf[1, 1, 1] = 0.0
    assert len(raymarching.marching_cubes(sdf.cuda())[1]) == 0


@requires_cuda
def test_cuda_marching_cubes_uses_the_twin_when_torch_only(backend, monkeypatch):
    sdf = smooth_field((12, 10, 11), seed=4)
    kernel = raymarching.marching_cubes(sdf.cuda())
    monkeypatch.setenv("INSTANT_NSR_TORCH_ONLY", "1")
    twin = raymarching.marching_cubes(sdf.cuda())
    assert twin[0].is_cuda
    assert_same_mesh(kernel, twin, atol=KERNEL_ATOL)


@requires_cuda
def test_cuda_mesh_stage_equals_the_cpu_path(backend):
    """nerf.mesh on CUDA keeps the grid on the GPU and gives the CPU path's mesh (world units)."""
    from nerf.mesh import extract_surface, marching_cubes, sample_sdf_grid

    def sdf_fn(x):
        return (x - torch.tensor([0.1, -0.2, 0.05], device=x.device)).norm(dim=-1) - 0.45

    resolution = 96
    grid = sample_sdf_grid(sdf_fn, resolution, 1.0, "cuda", as_tensor=True)
    assert torch.is_tensor(grid) and grid.is_cuda
    gpu = marching_cubes(grid, 1.0)
    cpu = marching_cubes(grid.cpu().numpy(), 1.0)
    assert_same_mesh([torch.from_numpy(x) for x in gpu], [torch.from_numpy(x) for x in cpu], atol=1e-5)
    # Evaluating only the blocks near the surface (the rest upsampled, on the GPU) gives the whole lattice's mesh.
    sparse = extract_surface(sdf_fn, resolution, 1.0, "cuda")
    assert_same_mesh([torch.from_numpy(x) for x in sparse], [torch.from_numpy(x) for x in gpu], atol=1e-5)
    # A plate thinner than a cell: restore_thin_parts marks the same lattice points on both devices.
    from nerf.mesh import BLOCK, restore_thin_parts

    normal = torch.nn.functional.normalize(torch.tensor([0.2, 0.3, 1.0]), dim=0).tolist()

    def plate(x):  # element by element, so that both devices round alike
        across = x[:, 0] * normal[0] + x[:, 1] * normal[1] + x[:, 2] * normal[2] - 0.013
        return across.abs() - 0.3 / (resolution - 1)

    n = -(-resolution // BLOCK)
    blocks = torch.stack(torch.meshgrid(*[torch.arange(n)] * 3, indexing="ij"), -1).reshape(-1, 3)
    grids = [restore_thin_parts(sample_sdf_grid(plate, resolution, 1.0, device, as_tensor=True), plate,
                                blocks.to(device), 1.0, 2**18).cpu() for device in ("cpu", "cuda")]
    before = sample_sdf_grid(plate, resolution, 1.0, "cpu", as_tensor=True)
    assert (grids[0] != before).sum() > 100  # some corners were marked
    assert torch.equal(grids[0] < 0, grids[1] < 0) and torch.allclose(grids[0], grids[1], atol=1e-6)
