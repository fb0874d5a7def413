"""Tests of the evaluation shapes of nerf.synthetic made for thin parts, fine relief and sharp texture (blade, wire,
relief, checker): each renders a tiny scene, and its gt_mesh.ply (and gt_thin.ply) keeps the feature it is for."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import trimesh

from nerf.synthetic import SHAPES, make_scene
from nerf.synthetic import relief, wire
from nerf.synthetic.analytic import unit_shape
from nerf.synthetic.scene import place_object

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RADIUS = 200.0
VIEWS, WIDTH, HEIGHT, SEED = 4, 64, 48, 0
NEW_SHAPES = ("blade", "wire", "relief", "checker")


def scene_of(shape, root):
    """(folder, scene.json, gt mesh, the placed object replayed from make_scene's draws) of a tiny scene."""
    info = make_scene(root, shape=shape, views=VIEWS, width=WIDTH, height=HEIGHT, gt_resolution=64, seed=SEED,
                      formats=("neus",))
    obj, _ = place_object(shape, RADIUS, None, np.random.default_rng(SEED))
    return root, info, trimesh.load(os.path.join(root, "gt_mesh.ply"), process=False), obj


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, blade_scene):
    """Lazily made scenes by shape name (the blade's is conftest's, shared with the metric tests)."""
    made = {}

    def get(shape):
        if shape not in made:
            if shape == "blade":
                root = blade_scene[0]
                made[shape] = (root, blade_scene[1], trimesh.load(os.path.join(root, "gt_mesh.ply"), process=False),
                               place_object(shape, RADIUS, None, np.random.default_rng(SEED))[0])
            else:
                made[shape] = scene_of(shape, str(tmp_path_factory.mktemp(shape)))
        return made[shape]

    return get


def test_the_new_shapes_are_listed():
    assert set(NEW_SHAPES) <= set(SHAPES)


@pytest.mark.parametrize("shape", NEW_SHAPES)
def test_sdf_is_1_lipschitz(shape):
    """Sphere tracing steps by the SDF value: a gradient norm above 1 anywhere could step through the surface."""
    spec = unit_shape(shape)
    rng = np.random.default_rng(4)
    q = spec.centre + rng.uniform(-1.0, 1.0, size=(20000, 3)) * spec.radius
    h = 1e-6
    grad = np.stack([(spec.sdf(q + h * e) - spec.sdf(q - h * e)) / (2 * h) for e in np.eye(3)], axis=1)
    assert np.linalg.norm(grad, axis=1).max() <= 1.0 + 1e-4


@pytest.mark.parametrize("shape", NEW_SHAPES)
def test_renders_masks_and_a_closed_truth_within_the_radius(scenes, shape):
    root, info, gt, obj = scenes(shape)
    for i in range(VIEWS):
        mask = cv2.imread(os.path.join(root, "mask", f"{i:03d}.png"), cv2.IMREAD_GRAYSCALE)
        assert mask.shape == (HEIGHT, WIDTH) and (mask > 127).sum() > 20
    assert gt.is_watertight
    dist = np.linalg.norm(gt.vertices - np.array(info["object_centre"]), axis=1)
    # scaled to the object radius: inside it, and reaching out to it
    assert dist.max() <= 1.005 * RADIUS and dist.max() > 0.9 * RADIUS
    assert json.load(open(os.path.join(root, "scene.json")))["shape"] == shape


def test_blade_truth_keeps_a_plate_thinner_than_1_2_percent(scenes):
    root, info, gt, obj = scenes("blade")
    thin = info["thin_part"]
    assert thin["kind"] == "blade" and thin["file"] == "gt_thin.ply"
    assert thin["thickness_mm"] <= 0.01 * RADIUS + 1e-9
    # the lattice has >= 3 cells across the plate
    assert 2 * 1.03 * RADIUS / (info["gt_mesh"]["marching_cubes_resolution"] - 1) <= thin["thickness_mm"] / 3
    plate = trimesh.load(os.path.join(root, "gt_thin.ply"), process=False)
    assert len(plate.faces) == thin["faces"] > 1000
    # the plate's extent along its thinnest principal axis is its thickness: both faces are there, 1 % apart
    centred = plate.vertices - plate.vertices.mean(0)
    thinnest = np.linalg.svd(centred, full_matrices=False)[2][-1]
    across = centred @ thinnest
    assert 0.008 * RADIUS < across.max() - across.min() < 0.012 * RADIUS
    # two faces of the plate: the thin part is most of the area, and all of it is the plate (none of the base)
    assert thin["area_fraction"] > 0.4
    assert np.abs(obj.to_unit(plate.vertices)[:, 1]).max() * obj.scale < 0.51 * thin["thickness_mm"]


def test_sphere_tracing_hits_the_plate_at_a_grazing_angle():
    """A ray that closes in on the blade's face at 0.2 degrees needs ~1 700 steps (each shrinks its distance by
    only 0.95 sin 0.2°): it must still hit the face where the plane meets it, not count as background (a few
    hundred steps rendered such rays in near edge-on views as empty)."""
    obj, _ = place_object("blade", RADIUS, None, np.random.default_rng(SEED))
    half = 0.5 * obj.spec.thin_part.size  # the faces are at unit y = -half and +half
    angle = np.radians(0.2)
    start = np.array([-0.5, -half - 0.0025, 0.3])  # beside the plate's edge, just off its -y face
    direction = np.array([np.cos(angle), np.sin(angle), 0.0])
    expected = start + direction * 0.0025 / np.sin(angle)  # where the ray meets the face's plane
    assert -0.45 < expected[0] < 0.45  # on the plate

    def world(q):  # the inverse of obj.to_unit
        return obj.offset + obj.scale * obj.rot @ q

    origin = world(start)
    dirs = (world(start + direction) - origin)[None] / obj.scale
    t_hit = obj.sphere_trace(origin, dirs)
    assert np.isfinite(t_hit[0])
    hit = obj.to_unit(origin + t_hit[0] * dirs[0])
    # on the face (the trace stops within 1e-5 radii of it, which at 0.2° is up to 0.003 short along the ray)
    assert abs(hit[1] + half) < 1e-4 and abs(hit[2] - expected[2]) < 1e-6
    assert expected[0] - 0.005 < hit[0] <= expected[0] + 1e-6


def test_wire_truth_is_one_loop_of_tube_radius_1_percent(scenes):
    root, info, gt, obj = scenes("wire")
    # a ball with one handle: genus 1
    assert gt.euler_number == 0
    loop = trimesh.load(os.path.join(root, "gt_thin.ply"), process=False)
    q = obj.to_unit(loop.vertices)
    from_core = np.hypot(np.hypot(q[:, 0], q[:, 2] - wire.LOOP_CENTRE_Z) - wire.LOOP_RADIUS, q[:, 1]) * obj.scale
    tube = info["thin_part"]["tube_radius_mm"]
    assert tube == pytest.approx(0.01 * RADIUS, rel=0.05)
    assert np.abs(from_core - tube).max() < 0.1 * tube


def test_relief_truth_keeps_the_ridges(scenes):
    root, info, gt, obj = scenes("relief")
    q = obj.to_unit(gt.vertices)
    wavenumber = 2 * np.pi / relief.RIDGE_WAVELENGTH
    ridges = np.linalg.norm(q, axis=1) - 1.0
    expected = relief.RIDGE_AMPLITUDE * np.sin(wavenumber * q[:, 2])
    assert np.abs(ridges - expected).max() < 0.1 * relief.RIDGE_AMPLITUDE
    # peak to valley ~1 % of the radius
    assert ridges.max() - ridges.min() > 0.9 * 2 * relief.RIDGE_AMPLITUDE
    assert 2 * relief.RIDGE_AMPLITUDE * obj.scale == pytest.approx(0.01 * RADIUS, rel=0.02)


def test_checker_is_a_plain_sphere_with_high_contrast_albedo(scenes):
    root, info, gt, obj = scenes("checker")
    assert info["textured_by"] == "checker"
    dist = np.linalg.norm(gt.vertices - obj.centre, axis=1)
    assert np.abs(dist - RADIUS).max() < 0.002 * RADIUS
    albedo = obj.albedo_fn()(gt.vertices).mean(1)
    bright = albedo > 0.5
    assert 0.35 < bright.mean() < 0.65
    assert albedo[bright].min() - albedo[~bright].max() > 0.8
    # and the images show it: dark and bright pixels inside the mask
    image = cv2.imread(os.path.join(root, "image", "000000.png"), cv2.IMREAD_GRAYSCALE)
    inside = image[cv2.imread(os.path.join(root, "mask", "000.png"), cv2.IMREAD_GRAYSCALE) > 127]
    assert (inside < 40).mean() > 0.1 and (inside > 150).mean() > 0.1


def test_shapes_without_a_thin_part_write_none(scenes):
    root, info, _, _ = scenes("checker")
    assert info["thin_part"] is None and not os.path.exists(os.path.join(root, "gt_thin.ply"))


def test_cli_makes_a_checker_scene(tmp_path):
    (tmp_path / "gt_thin.ply").write_text("left by an earlier blade scene")
    res = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "scripts", "make_synthetic.py"), str(tmp_path),
                          "--shape", "checker", "--views", "2", "--width", "32", "--height", "24",
                          "--gt_resolution", "24", "--formats", "neus"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert json.load(open(tmp_path / "scene.json"))["textured_by"] == "checker"
    assert not (tmp_path / "gt_thin.ply").exists()
