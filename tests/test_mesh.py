"""Marching cubes over the unit sphere's box, in world units, watertight; the SDF evaluated only near the surface
gives the whole lattice's mesh; parts thinner than a cell are kept."""
import numpy as np
import pytest
import torch

from nerf.mesh import BLOCK, block_corners, extract_surface, marching_cubes, sample_sdf_grid, surface_blocks, upsample


def test_sphere_mesh_is_closed_and_on_the_surface():
    grid = sample_sdf_grid(lambda x: x.norm(dim=-1) - 0.6, resolution=64, radius=1.0, device="cpu")
    vertices, faces = marching_cubes(grid, radius=1.0)
    r = np.linalg.norm(vertices, axis=1)
    assert np.abs(r - 0.6).max() < 2 / 63  # within a cell
    import trimesh

    mesh = trimesh.Trimesh(vertices, faces)
    assert mesh.is_watertight and mesh.volume > 0  # outward faces


@pytest.mark.parametrize("as_tensor", [False, True], ids=["pymcubes", "raymarching"])
def test_lattice_values_exactly_at_the_level_leave_the_mesh_closed(as_tensor):
    """An SDF exactly 0.0 at lattice points (float32 SDFs do that) would put several vertices on each such point
    with zero-area faces between them, a pinch to any tool that merges coincident vertices: they are welded."""
    import trimesh

    from raymarching.torch_impl import pymcubes_marching_cubes

    grid = sample_sdf_grid(lambda x: x.norm(dim=-1) - 0.6, resolution=48, radius=1.0, device="cpu")
    near = np.argwhere(np.abs(grid) < 0.3 * 2 / 47)  # lattice points the surface passes close by
    grid[tuple(near[::7].T)] = 0.0
    raw_vertices, _ = pymcubes_marching_cubes(grid.copy())
    assert len(np.unique(raw_vertices, axis=0)) < len(raw_vertices)  # the case arises without the welding
    vertices, faces = marching_cubes(torch.from_numpy(grid) if as_tensor else grid, radius=1.0)
    assert len(np.unique(vertices, axis=0)) == len(vertices)
    mesh = trimesh.Trimesh(vertices, faces)  # merges coincident vertices, as tools do
    assert len(mesh.vertices) == len(vertices) and mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.euler_number == 2 and mesh.area_faces.min() > 0
    assert np.abs(np.linalg.norm(vertices, axis=1) - 0.6).max() < 2 / 47


def test_surface_leaving_the_sphere_is_clipped_closed():
    """A plane would run off the grid; clipping with |x| - 1 closes it (always watertight)."""
    grid = sample_sdf_grid(lambda x: x[:, 2] - 0.1, resolution=48, radius=1.0, device="cpu")
    vertices, faces = marching_cubes(grid, radius=1.0)
    import trimesh

    mesh = trimesh.Trimesh(vertices, faces)
    assert mesh.is_watertight
    assert np.linalg.norm(vertices, axis=1).max() <= 1.0 + 2 / 47


def sorted_rows(a):
    return a[np.lexsort(a.T[::-1])]


def canonical_mesh(vertices, faces):
    """Vertices sorted [V, 3], and faces [F, 3] on the sorted vertices, each rotated to start at its smallest
    id (winding kept), rows sorted: equal for meshes equal up to the order of their vertices and faces."""
    order = np.lexsort(vertices.T[::-1])
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    faces = rank[faces]
    first = faces.argmin(1)
    faces = np.stack([faces[np.arange(len(faces)), (first + s) % 3] for s in range(3)], 1)
    return vertices[order], sorted_rows(faces)


def counting(sdf_fn):
    """sdf_fn, and a list that holds the number of points it was called on so far."""
    count = [0]

    def counted(x):
        count[0] += len(x)
        return sdf_fn(x)

    return counted, count


def dot(x, v):
    """x [N, 3] . v [3] or [N, 3] -> [N], element by element: a point's value must not depend on the batch it
    comes in (matmul and reductions may round differently with the batch's size or alignment, and the comparisons
    of the sparse and the whole lattice below are exact)."""
    return x[:, 0] * v[..., 0] + x[:, 1] * v[..., 1] + x[:, 2] * v[..., 2]


def sphere(x):
    return dot(x, x).sqrt() - 0.6


def torus(x):
    """Off-centre, tilted torus (radii 0.4 and 0.12)."""
    x = x - torch.tensor([0.15, -0.1, 0.05])
    z = dot(x, torch.tensor([0.3, 0.2, 0.93]))
    ring = (dot(x, x) - z**2).clamp(min=0).sqrt() - 0.4
    return (ring**2 + z**2).sqrt() - 0.12


def thin_plate(resolution):
    """A tilted plate 1.5 lattice cells thick: few block corners lie inside it (a margin of 0 misses most of it)."""
    normal = torch.nn.functional.normalize(torch.tensor([0.2, 0.3, 1.0]), dim=0)
    return lambda x: (dot(x, normal) - 0.05).abs() - 0.75 * 2 / (resolution - 1)


@pytest.mark.parametrize("resolution", [37, 64, 96, 97, 101])  # the last blocks overrun the lattice by 0, 3 or 7 (8)
def test_sparse_extraction_equals_the_whole_lattice(resolution):
    """Evaluating the SDF only in the blocks near the surface gives the mesh of the whole lattice: a sphere, an
    off-centre torus, a plate thinner than two cells, a plane that leaves the bounding sphere (clipped). At the
    lowest resolutions every block is near (MARGIN block diagonals is most of the box): those check the blocks'
    overrun past the lattice's end."""
    fields = {
        "sphere": sphere,
        "torus": torus,
        "thin plate": thin_plate(resolution),
        "plane": lambda x: x[:, 2] - 0.1,
    }
    for name, sdf in fields.items():
        want_v, want_f = marching_cubes(sample_sdf_grid(sdf, resolution, 1.0, "cpu"), 1.0)
        got_v, got_f = extract_surface(sdf, resolution, 1.0, "cpu")
        assert len(want_f) > 100, name
        assert len(got_f) == len(want_f) and len(got_v) == len(want_v), name
        got_v, got_f = canonical_mesh(got_v, got_f)
        want_v, want_f = canonical_mesh(want_v, want_f)
        assert np.allclose(got_v, want_v, atol=1e-6) and np.array_equal(got_f, want_f), name


def evaluated_points(sdf, resolution):
    """How many points extract_surface evaluates: the coarse lattice, and the near blocks' lattice points."""
    coarse = block_corners(sdf, resolution, 1.0, "cpu")
    blocks = surface_blocks(coarse, resolution, 1.0)
    return coarse.numel() + int((resolution - blocks * BLOCK).clamp(max=BLOCK).prod(-1).sum())


def test_sparse_extraction_evaluates_far_less_than_the_lattice():
    sdf, count = counting(sphere)
    assert len(extract_surface(sdf, 101, 1.0, "cpu")[1]) > 1000
    # and the centres of the cells just outside the surface (restore_thin_parts): ~1 % more here
    assert evaluated_points(sphere, 101) < count[0] < 1.03 * evaluated_points(sphere, 101)
    assert evaluated_points(sphere, 512) < 0.2 * 512**3  # at the default --mc_resolution: 15% (BLOCK 8)


def test_no_surface_gives_an_empty_mesh():
    nothing = lambda x: torch.full((x.shape[0],), 10.0)  # noqa: E731
    sdf, count = counting(nothing)
    vertices, faces = extract_surface(sdf, 96, 1.0, "cpu")
    assert vertices.shape == (0, 3) and vertices.dtype == np.float32
    assert faces.shape == (0, 3) and faces.dtype == np.int64
    assert count[0] == block_corners(nothing, 96, 1.0, "cpu").numel()  # those only


def test_upsampled_grid_holds_the_coarse_values_at_its_points():
    """Lattice index i of the upsampled grid sits at coarse coordinate i / BLOCK exactly."""
    n = -(-37 // BLOCK) + 1  # blocks' corners for 37 lattice points, the last past the lattice's end
    coarse = torch.randn(n, n, n, generator=torch.Generator().manual_seed(0))
    grid = upsample(coarse, 37, "cpu")
    assert grid.shape == (37, 37, 37)
    assert torch.equal(grid[::BLOCK, ::BLOCK, ::BLOCK], coarse[:-1, :-1, :-1])
    assert torch.allclose(grid[BLOCK // 2, 0, 0], (coarse[0, 0, 0] + coarse[1, 0, 0]) / 2)


def test_marching_cubes_falls_back_to_pymcubes_when_the_gpu_is_full(monkeypatch):
    """A grid tensor whose kernel run finds no memory gives PyMCubes's mesh of it (host copy) instead of an error."""
    import nerf.mesh as mesh

    grid = mesh.sample_sdf_grid(lambda x: x.norm(dim=-1) - 0.5, 40, 1.0, "cpu", as_tensor=True)
    expected = mesh.marching_cubes(grid.numpy().copy(), 1.0)

    def out_of_memory(sdf, level=0.0):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(mesh.raymarching, "marching_cubes", out_of_memory)
    vertices, faces = mesh.marching_cubes(grid, 1.0)
    assert len(faces) > 100
    assert np.array_equal(vertices, expected[0]) and np.array_equal(faces, expected[1])


def test_marching_cubes_leaves_grids_too_large_for_the_kernel_to_pymcubes(monkeypatch):
    import nerf.mesh as mesh

    grid = mesh.sample_sdf_grid(lambda x: x.norm(dim=-1) - 0.5, 40, 1.0, "cpu", as_tensor=True)
    expected = mesh.marching_cubes(grid.numpy().copy(), 1.0)

    def never(sdf, level=0.0):
        raise AssertionError("the kernel was called for a grid beyond its int indexing")

    monkeypatch.setattr(mesh, "KERNEL_MAX_POINTS", grid.numel())
    monkeypatch.setattr(mesh.raymarching, "marching_cubes", never)
    vertices, faces = mesh.marching_cubes(grid, 1.0)
    assert np.array_equal(vertices, expected[0]) and np.array_equal(faces, expected[1])


def sub_cell_plate(resolution, normal, thickness_cells, offset=0.0):
    """A square plate (half side 0.5) thinner than a lattice cell, its mid-plane through `offset` along `normal`
    -> (sdf, points [N, 3] on its two faces)."""
    normal = torch.nn.functional.normalize(torch.tensor(normal, dtype=torch.float32), dim=0)
    half = 0.5 * thickness_cells * 2 / (resolution - 1)
    u = torch.nn.functional.normalize(torch.linalg.cross(normal, torch.tensor([1.0, 0.0, 0.0])), dim=0)
    v = torch.linalg.cross(normal, u)

    def sdf(x):
        across = (dot(x, normal) - offset).abs() - half
        in_plane = torch.maximum(dot(x, u).abs(), dot(x, v).abs()) - 0.5
        return torch.maximum(across, in_plane)

    g = torch.linspace(-0.45, 0.45, 40)
    a, b = torch.meshgrid(g, g, indexing="ij")
    mid = a.reshape(-1, 1) * u + b.reshape(-1, 1) * v + offset * normal
    return sdf, torch.cat([mid + half * normal, mid - half * normal]).numpy()


@pytest.mark.parametrize("normal, thickness, offset, lost_before, lost_after",
                         [((0.0, 1.0, 0.0), 0.6, 0.0, 1.0, 0.0), ((0.2, 0.3, 1.0), 0.25, 0.013, 0.1, 0.05)],
                         ids=["between lattice planes", "tilted"])
def test_a_plate_thinner_than_a_cell_is_kept(normal, thickness, offset, lost_before, lost_after):
    """A plate under a cell thick: between two lattice planes (0.6 cells) no lattice point is inside it and the
    whole lattice has no faces there at all; tilted (0.25 cells) it is torn. With restore_thin_parts the mesh
    stays closed and (nearly) every point of the plate's faces lies within a cell of it."""
    import trimesh
    from scipy.spatial import cKDTree

    resolution = 64
    cell = 2 / (resolution - 1)
    sdf, on_faces = sub_cell_plate(resolution, normal, thickness, offset)  # offset 0: midway between two planes

    def lost(vertices, faces):  # fraction of the plate's face points farther than a cell from the mesh
        if len(faces) == 0:
            return 1.0
        points = trimesh.Trimesh(vertices, faces).sample(200_000, seed=0)
        return (cKDTree(points).query(on_faces)[0] >= cell).mean()

    assert lost(*marching_cubes(sample_sdf_grid(sdf, resolution, 1.0, "cpu"), 1.0)) >= lost_before
    vertices, faces = extract_surface(sdf, resolution, 1.0, "cpu")
    assert trimesh.Trimesh(vertices, faces).is_watertight
    assert lost(vertices, faces) <= lost_after


def test_thin_parts_change_nothing_thicker():
    """A plate 1.2 cells thick centred on a lattice plane (every cell it crosses has a corner inside) keeps the
    whole lattice's mesh: nothing is marked where the lattice sees the part (thicker surfaces: the sphere, torus
    and 1.5-cell plate of test_sparse_extraction_equals_the_whole_lattice)."""
    resolution = 64
    sdf, _ = sub_cell_plate(resolution, (0.0, 1.0, 0.0), 1.2, offset=-1.0 + 32 * 2 / (resolution - 1))
    want_v, want_f = marching_cubes(sample_sdf_grid(sdf, resolution, 1.0, "cpu"), 1.0)
    got_v, got_f = extract_surface(sdf, resolution, 1.0, "cpu")
    assert len(want_f) > 100 and len(got_f) == len(want_f)
    assert np.allclose(canonical_mesh(got_v, got_f)[0], canonical_mesh(want_v, want_f)[0], atol=1e-6)
