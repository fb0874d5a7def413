"""Marching cubes over the unit sphere's box, in world units, watertight."""
import numpy as np
import torch

from nerf.mesh import marching_cubes, sample_sdf_grid


def test_sphere_mesh_is_closed_and_on_the_surface():
    grid = sample_sdf_grid(lambda x: x.norm(dim=-1) - 0.6, resolution=64, radius=1.0, device="cpu")
    vertices, faces = marching_cubes(grid, radius=1.0)
    r = np.linalg.norm(vertices, axis=1)
    assert np.abs(r - 0.6).max() < 2 / 63  # within a cell
    import trimesh

    mesh = trimesh.Trimesh(vertices, faces)
    assert mesh.is_watertight and mesh.volume > 0  # outward faces


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


def triangles(vertices, faces):
    """Each triangle as its 3 corner positions in a canonical order, triangles sorted: [F, 9]."""
    corners = np.round(vertices[faces], 5)  # [F, 3, 3]
    canonical = np.stack([sorted_rows(c) for c in corners]) if len(faces) else corners
    return sorted_rows(canonical.reshape(len(faces), 9))


def test_surface_box_extraction_equals_the_whole_lattice():
    """Sampling only the box that holds the surface gives the mesh of the whole lattice: spheres, separate
    small parts, a surface clipped by the bounding sphere, an SDF far from a distance (10x too steep, so the
    coarse box is too tight and has to grow), and nothing at all."""
    from nerf.mesh import extract_surface, surface_box

    def two_spheres(x):
        return torch.minimum((x - torch.tensor([0.5, 0.0, 0.0])).norm(dim=-1),
                             (x - torch.tensor([-0.4, 0.3, 0.1])).norm(dim=-1)) - 0.15

    fields = {
        "sphere": lambda x: x.norm(dim=-1) - 0.3,
        "two spheres": two_spheres,
        "plane": lambda x: x[:, 2] - 0.1,
        "steep": lambda x: 10 * (x.norm(dim=-1) - 0.45),
        "empty": lambda x: torch.ones(x.shape[0]),
    }
    resolution = 96
    for name, sdf in fields.items():
        want_v, want_f = marching_cubes(sample_sdf_grid(sdf, resolution, 1.0, "cpu"), 1.0, resolution=resolution)
        got_v, got_f = extract_surface(sdf, resolution, 1.0, "cpu")
        assert len(got_f) == len(want_f) and len(got_v) == len(want_v), name
        assert np.allclose(sorted_rows(got_v), sorted_rows(want_v), atol=1e-6), name
        assert np.array_equal(triangles(got_v, got_f), triangles(want_v, want_f)), name
    box = surface_box(fields["sphere"], resolution, 1.0, "cpu")
    assert all(hi - lo < 0.5 * resolution for lo, hi in box)  # the point: far less than the whole lattice
    assert surface_box(fields["empty"], resolution, 1.0, "cpu") is None


def test_a_box_that_cuts_the_surface_grows_until_it_holds_it(monkeypatch):
    import nerf.mesh
    from nerf.mesh import extract_surface

    sdf = lambda x: x.norm(dim=-1) - 0.5  # noqa: E731
    boxes = []
    sample = nerf.mesh.sample_sdf_grid

    def recording_sample(*args, box=None, **kwargs):
        boxes.append(box)
        return sample(*args, box=box, **kwargs)

    monkeypatch.setattr(nerf.mesh, "surface_box", lambda *args, **kwargs: ((40, 50), (45, 60), (30, 50)))
    monkeypatch.setattr(nerf.mesh, "sample_sdf_grid", recording_sample)
    got_v, got_f = extract_surface(sdf, 96, 1.0, "cpu")
    want_v, want_f = marching_cubes(sample(sdf, 96, 1.0, "cpu"), 1.0, resolution=96)
    assert len(boxes) > 2  # it had to grow
    assert np.array_equal(triangles(got_v, got_f), triangles(want_v, want_f))


def test_marching_cubes_falls_back_to_pymcubes_when_the_gpu_is_full(monkeypatch):
    """A grid tensor whose kernel run finds no memory gives PyMCubes's mesh of it (host copy) instead of an error."""
    import nerf.mesh as mesh

    grid = mesh.sample_sdf_grid(lambda x: x.norm(dim=-1) - 0.5, 40, 1.0, "cpu", as_tensor=True)
    expected = mesh.marching_cubes(grid.numpy().copy(), 1.0, offset=(2, 0, 1))

    def out_of_memory(sdf, level=0.0):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(mesh.raymarching, "marching_cubes", out_of_memory)
    vertices, faces = mesh.marching_cubes(grid, 1.0, offset=(2, 0, 1))
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
