"""The surface no camera sees, relaxed to the membrane the seen part spans (nerf/unseen_surface.py): visibility
by a z-buffer of the vertices, the membrane, and an object whose unseen underside the field left bulging."""
import dataclasses
import os

import mcubes
import numpy as np
import pytest
import torch
import trimesh

from nerf.config import ExportConfig
from nerf.mesh_export import component_labels, export_meshes
from nerf.synthetic.cameras import make_cameras, make_intrinsics
from nerf.unseen_surface import membrane, relax_unseen, unoccluded_vertices

WIDTH, HEIGHT = 200, 150
RADIUS = 1.0  # of the objects' bounding sphere at the origin


def cap_cameras(n=24, seed=0):
    """intrinsics [n, 3, 3], c2w [n, 4, 4] of cameras on the synthetic scenes' cap (elevation 10-60 degrees)
    around the unit sphere, and the image size."""
    K = make_intrinsics(WIDTH, HEIGHT)
    c2w = []
    for R, t in make_cameras(n, np.zeros(3), RADIUS, np.random.default_rng(seed)):
        pose = np.eye(4)
        pose[:3, :3], pose[:3, 3] = R.T, -R.T @ t
        c2w.append(pose)
    return np.repeat(K[None], n, 0), np.stack(c2w), (HEIGHT, WIDTH)


def sdf_mesh(sdf, resolution=96, bound=1.1):
    """Marching cubes of sdf(points [..., 3]) on a resolution^3 lattice over [-bound, bound]^3 -> (vertices
    [V, 3], faces [F, 3])."""
    axis = np.linspace(-bound, bound, resolution)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1)
    vertices, faces = mcubes.marching_cubes(-sdf(grid), 0.0)
    return vertices * (2 * bound / (resolution - 1)) - bound, faces.astype(np.int64)


def sphere_mesh(radius):
    return sdf_mesh(lambda p: np.linalg.norm(p, axis=-1) - radius)


def puck(points, bulge=0.0):
    """A cylinder of radius 0.6 from z = -0.3 to 0.3 (the SDF's max of the two slabs' distances) whose flat
    base bulges down by `bulge` times the cone that cameras 10 degrees up cannot see into (the visual hull's
    underside, 0.6 tan 10 = 0.106 deep in the middle), as a field may leave an underside no camera saw."""
    radial = np.linalg.norm(points[..., :2], axis=-1)
    bottom = -0.3 - bulge * np.clip(0.6 - radial, 0, None) * np.tan(np.radians(10.0))
    return np.maximum.reduce([radial - 0.6, points[..., 2] - 0.3, bottom - points[..., 2]])


def test_the_cap_sees_the_top_and_not_the_underside():
    vertices, faces = sphere_mesh(0.5)
    seen = unoccluded_vertices(vertices, *cap_cameras(), pixel_size=0.05)
    z = vertices[:, 2] / 0.5
    assert seen[z > -0.5].all()
    # a camera at elevation e and distance 2.6 sees the sphere's points whose normal is within 90 - asin(0.5 /
    # 2.6) = 79 degrees of its direction: the lowest (e = 10) leaves a cap of ~21 degrees about the bottom pole
    # (z < -0.93) that no camera sees
    assert not seen[z < -0.97].any() and seen[z < -0.9].mean() < 0.5


def test_a_vertex_behind_another_surface_is_not_seen():
    # two nested spheres: the inner one is hidden from every camera
    outer, inner = sphere_mesh(0.6), sphere_mesh(0.3)
    vertices = np.concatenate([outer[0], inner[0]])
    seen = unoccluded_vertices(vertices, *cap_cameras(), pixel_size=0.05)
    assert not seen[len(outer[0]):].any() and seen[: len(outer[0])].mean() > 0.5


def test_the_membrane_of_a_flat_rim_is_flat():
    # a disc's interior vertices pushed off its plane at random come back to it: z is harmonic, 0 on the rim
    vertices, faces = sdf_mesh(puck, resolution=48)
    top = np.flatnonzero(np.isclose(vertices[:, 2], vertices[:, 2].max(), atol=1e-3))
    interior = top[np.linalg.norm(vertices[top, :2], axis=-1) < 0.45]
    free = np.zeros(len(vertices), bool)
    free[interior] = True
    lifted = vertices.copy()
    lifted[interior, 2] += np.random.default_rng(0).uniform(-0.1, 0.1, len(interior))
    assert np.allclose(membrane(lifted, faces, free)[interior, 2], vertices[interior, 2], atol=1e-9)


def test_an_unseen_bulging_underside_comes_out_flat():
    """A puck whose base the field left bulging down into the cone no camera sees (0.09 deep in the middle): it
    is relaxed onto the membrane of the seen rim, which is the true flat base."""
    vertices, faces = sdf_mesh(lambda p: puck(p, bulge=0.9))
    labels = component_labels(faces, len(vertices))
    relaxed, moved = relax_unseen(vertices, faces, labels, *cap_cameras())
    base = (np.linalg.norm(vertices[:, :2], axis=-1) < 0.4) & (vertices[:, 2] < -0.31)  # the middle underneath
    assert base.sum() > 50 and moved[base].all()
    assert np.abs(vertices[base, 2] + 0.3).mean() > 0.04  # before: the bulge
    after = np.abs(relaxed[base, 2] + 0.3)  # on the true base, within a lattice cell (0.023)
    assert after.max() < 0.02 and after.mean() < 0.25 * np.abs(vertices[base, 2] + 0.3).mean(), after.mean()
    top = vertices[:, 2] > 0.25
    assert not moved[top].any() and np.array_equal(relaxed[top], vertices[top])


def test_a_component_no_camera_sees_is_left_as_it_is():
    outer, inner = sphere_mesh(0.6), sphere_mesh(0.3)
    vertices = np.concatenate([outer[0], inner[0]])
    faces = np.concatenate([outer[1], inner[1] + len(outer[0])])
    relaxed, moved = relax_unseen(vertices, faces, component_labels(faces, len(vertices)), *cap_cameras())
    assert not moved[len(outer[0]):].any() and np.array_equal(relaxed[len(outer[0]):], inner[0])
    assert moved[: len(outer[0])].any()  # the outer sphere's underside is relaxed


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="needs a CUDA device"))]


@pytest.mark.parametrize("device", DEVICES)
def test_the_membrane_is_scipys_direct_solution(device):
    """The conjugate gradients against scipy's sparse LU of the same system (the graph Laplacian on the free
    vertices, uniform weights): a sphere's lower half free and jolted at random, an odd-sized system."""
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    vertices, faces = sphere_mesh(0.5)
    free = vertices[:, 2] < -0.1 * np.random.default_rng(1).uniform(0.5, 1.5)
    jolted = vertices + np.random.default_rng(0).normal(0, 0.05, vertices.shape) * free[:, None]
    n = len(vertices)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    adjacency = sp.coo_matrix((np.ones(2 * len(edges)), tuple(np.concatenate([edges, edges[:, ::-1]]).T)),
                              shape=(n, n)).tocsr()
    adjacency.data[:] = 1.0
    laplacian = (sp.diags(np.asarray(adjacency.sum(1)).ravel()) - adjacency).tocsr()
    moved, fixed = np.flatnonzero(free), np.flatnonzero(~free)
    expected = spla.spsolve(laplacian[moved][:, moved].tocsc(), -(laplacian[moved][:, fixed] @ vertices[fixed]))
    relaxed = membrane(jolted, faces, free, device=device)
    assert np.abs(relaxed[moved] - expected).max() < 1e-5  # of a radius 0.5
    assert np.array_equal(relaxed[fixed], vertices[fixed])
    assert np.abs(jolted[moved] - expected).max() > 0.1  # the start was far from it


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_visibility_on_the_gpu_is_the_cpus():
    vertices, _ = sdf_mesh(lambda p: puck(p, bulge=0.9), resolution=64)
    cameras = cap_cameras()
    on_cpu = unoccluded_vertices(vertices, *cameras, pixel_size=0.05)
    # float32 on either: a vertex within rounding of a buffer pixel's edge may land in the next pixel
    assert (unoccluded_vertices(vertices, *cameras, pixel_size=0.05, device="cuda") == on_cpu).mean() > 0.999


@pytest.mark.parametrize("unseen", ["membrane", "keep"])
def test_the_export_relaxes_the_unseen_base_and_recolours_it(unseen, tmp_path):
    """The export stage (--unseen): the bulging base of the puck comes out flat in the written file, its moved
    vertices coloured by the colour field at their new place; with 'keep' the file holds the field's guess."""
    vertices, faces = sdf_mesh(lambda p: puck(p, bulge=0.9))
    mesh = trimesh.Trimesh(vertices, faces, vertex_colors=np.full((len(vertices), 4), 255, np.uint8), process=False)
    red_below = lambda points: np.where(points[:, 2:] < -0.29, [1.0, 0.0, 0.0], [0.0, 0.0, 1.0])  # noqa: E731
    export = dataclasses.replace(ExportConfig(), unseen=unseen)
    _, written = export_meshes(mesh, red_below, export, str(tmp_path / "mesh"), cameras=cap_cameras())
    assert os.path.isfile(tmp_path / "mesh.ply")
    base = (np.linalg.norm(vertices[:, :2], axis=-1) < 0.4) & (vertices[:, 2] < -0.31)
    written_base = np.asarray(written.vertices)[base]  # the same vertex order: nothing was dropped
    if unseen == "keep":
        assert np.array_equal(written_base, vertices[base])
        assert (np.asarray(written.visual.vertex_colors)[base] == 255).all()
    else:
        assert np.abs(written_base[:, 2] + 0.3).max() < 0.02
        assert (np.asarray(written.visual.vertex_colors)[base, :3] == [255, 0, 0]).all()
