"""Tests of the DTU evaluation (nerf/dtu_eval.py, scripts/eval_dtu.py) on a synthetic stand-in for the DTU
reference, in the release's file layout: a sphere of radius 10 mm from a nerf.synthetic scene (8 views, 80x60,
with masks), its reference points sampled on it (plus a disc of table points under the plane), ObsMask voxel
grids and a plane below it, written with scipy.io.savemat.

Scans of the stand-in (one folder, as the release): scan 1: ObsMask = the voxels within 5 mm of the sphere's
surface, uncompressed .mat; scan 2: every voxel observed, compressed .mat (MATLAB v7 style).
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import trimesh
from scipy.io import savemat

from nerf.dtu_eval import (dilation_radius, evaluate_dtu, load_mask_views, load_reference, reference_paths,
                           sample_surface, thin_points)
from nerf.input_checks import DatasetError
from nerf.synthetic import make_scene

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO_ROOT, "scripts", "eval_dtu.py")

RADIUS = 10.0  # mm, the sphere
STL_POINTS = 60_000  # reference points on the sphere: ~48 per mm^2 (the real ones are ~0.2 mm apart)
RES = 1.0  # ObsMask voxel size, mm
BOX_MARGIN = 35.0  # BB = sphere centre +- (RADIUS + BOX_MARGIN): room for floaters up to 30 mm out
PLANE_BELOW = 2.0  # the plane lies this far below the sphere's bottom, the table disc 3 mm further down

# Bounds, each with its reason:
# the true surface: its thinned points (>= 0.2 mm apart, every surface point within ~0.2 mm of one) are ~0.1 mm
# from the nearest reference point on average, and the reference points ~0.1 mm from the nearest thinned point
GT_BOUND = 0.15
# an offset of d: the distances are sqrt(d^2 + s^2) with s the sideways gap to the nearest point (~0.1 mm):
# ~0.005 mm above d at d = 1
OFFSET_TOLERANCE = 0.03


def sphere(centre, radius=RADIUS):
    """Icosphere (5120 faces, edges ~0.7 mm, chord sag < 0.01 mm) centred at centre [3]."""
    mesh = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    mesh.apply_translation(centre)
    return mesh


def plate(centre, size):
    """Square of side `size` mm at centre [3], facing x (two triangles)."""
    h = size / 2
    corners = np.array([[0, -h, -h], [0, h, -h], [0, h, h], [0, -h, h]]) + centre
    return trimesh.Trimesh(corners, [[0, 1, 2], [0, 2, 3]], process=False)


def with_floater(mesh, floater):
    return trimesh.util.concatenate([mesh, floater])


def write_dtu_stand_in(root, scan, stl, bb, res, obs_mask, plane, compress=False):
    """The DTU reference files of `scan` under root: stl points [S, 3], ObsMask [X, Y, Z] bool with BB [2, 3] and
    Res, plane P [4]; the layout of nerf/dtu_eval.py."""
    paths = reference_paths(root, scan)
    for path in paths.values():
        os.makedirs(os.path.dirname(path), exist_ok=True)
    trimesh.PointCloud(stl).export(paths["stl"])
    savemat(paths["obs_mask"], {"ObsMask": obs_mask, "BB": bb, "Res": np.array([[res]])}, do_compression=compress)
    savemat(paths["plane"], {"P": np.asarray(plane, dtype=np.float64).reshape(4, 1)}, do_compression=compress)
    return paths


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    """(scene folder, DTU folder, sphere centre [3], number of reference points on the sphere)."""
    scene = str(tmp_path_factory.mktemp("scene"))
    info = make_scene(scene, shape="sphere", views=8, width=80, height=60, radius_mm=RADIUS, gt_resolution=32,
                      formats=("neus",), seed=0)
    centre = np.array(info["object_centre"])
    assert info["object_radius"] == RADIUS
    rng = np.random.default_rng(1)
    on_sphere, _ = trimesh.sample.sample_surface(sphere(centre), STL_POINTS, seed=rng)
    # table points under the plane: half of all reference points, >= 5 mm from the sphere
    angle, r = rng.uniform(0, 2 * np.pi, STL_POINTS), 15 * np.sqrt(rng.uniform(0, 1, STL_POINTS))
    disc = centre + np.stack([r * np.cos(angle), r * np.sin(angle),
                              np.full(STL_POINTS, -RADIUS - PLANE_BELOW - 3)], axis=1)
    stl = np.concatenate([on_sphere, disc])
    bb = np.stack([centre - RADIUS - BOX_MARGIN, centre + RADIUS + BOX_MARGIN])
    shape = tuple(np.ceil((bb[1] - bb[0]) / RES).astype(int) + 1)
    voxel_centres = bb[0] + RES * np.stack(np.indices(shape), axis=-1)
    near_surface = np.abs(np.linalg.norm(voxel_centres - centre, axis=-1) - RADIUS) < 5
    plane = [0, 0, 1, -(centre[2] - RADIUS - PLANE_BELOW)]  # z above the plane
    dtu = str(tmp_path_factory.mktemp("dtu"))
    write_dtu_stand_in(dtu, 1, stl, bb, RES, near_surface, plane)
    write_dtu_stand_in(dtu, 2, stl, bb, RES, np.ones(shape, dtype=bool), plane, compress=True)
    return scene, dtu, centre, len(on_sphere)


@pytest.fixture(scope="module")
def references(stand_in):
    _, dtu, _, _ = stand_in
    return {scan: load_reference(dtu, scan) for scan in (1, 2)}


@pytest.fixture(scope="module")
def gt_scores(stand_in, references):
    """Scores of the true sphere against scans 1 and 2."""
    centre = stand_in[2]
    return {scan: evaluate_dtu(sphere(centre), ref) for scan, ref in references.items()}


def test_thinning_is_the_sequential_greedy_rule():
    points = np.random.default_rng(2).uniform(0, 1.5, size=(3000, 3))
    radius = 0.2
    thinned = thin_points(points, radius, np.random.default_rng(3))
    # the rule run point by point in the same random order
    rank = np.random.default_rng(3).permutation(len(points))
    removed = np.zeros(len(points), dtype=bool)
    expected = np.zeros(len(points), dtype=bool)
    for i in np.argsort(rank):
        if not removed[i]:
            expected[i] = True
            removed |= np.linalg.norm(points - points[i], axis=1) <= radius
    np.testing.assert_array_equal(thinned, points[expected])
    assert 50 < len(thinned) < len(points) / 2  # the test thins for real


def test_sampling_steps_are_the_downsample_step():
    # right triangle with legs of 10 mm: 50 x 50 grid cells of 0.2 mm, those inside: 49 * 50 / 2 = 1225
    vertices = np.array([[0.0, 0, 0], [10, 0, 0], [0, 10, 0]])
    points = sample_surface(vertices, np.array([[0, 1, 2]]), 0.2)
    assert len(points) == 3 + 1225
    assert np.allclose(points[3], [0.1, 0.1, 0])


def test_dilation_radius_is_12_px_at_1600_wide():
    assert [dilation_radius(w) for w in (1600, 800, 80)] == [12, 6, 1]


def test_ground_truth_scores_near_zero(gt_scores, stand_in):
    n_sphere_stl = stand_in[3]
    for scores in gt_scores.values():
        assert scores["accuracy"] < GT_BOUND
        # the table disc (half the reference points, >= 5 mm off) is under the plane: left out
        assert scores["completeness"] < GT_BOUND
        assert scores["counts"]["stl_above_plane"] == n_sphere_stl
        assert scores["counts"]["completeness_points"] == n_sphere_stl
        # every point of the sphere is in scan 1's shell of observed voxels too
        assert scores["counts"]["accuracy_points"] == scores["counts"]["thinned_points"]


@pytest.mark.parametrize("offset", [0.5, 1.0])
def test_offset_mesh_scores_the_offset(stand_in, references, offset):
    scores = evaluate_dtu(sphere(stand_in[2], RADIUS + offset), references[1])
    assert abs(scores["accuracy"] - offset) < OFFSET_TOLERANCE
    assert abs(scores["completeness"] - offset) < OFFSET_TOLERANCE
    assert abs(scores["overall"] - offset) < OFFSET_TOLERANCE


def test_points_outside_the_observation_mask_do_not_count(stand_in, references, gt_scores):
    centre = stand_in[2]
    # 10 mm out: outside scan 1's 5 mm shell of observed voxels, within the 20 mm of max_dist
    mesh = with_floater(sphere(centre), plate(centre + [RADIUS + 10, 0, 0], 10))
    scan1 = evaluate_dtu(mesh, references[1])
    assert abs(scan1["accuracy"] - gt_scores[1]["accuracy"]) < 0.01
    assert scan1["counts"]["data_in_mask"] < scan1["counts"]["thinned_points"]
    # the same floater where it is observed (scan 2): ~100 mm^2 of points 10 mm off in ~1360 mm^2
    scan2 = evaluate_dtu(mesh, references[2])
    assert scan2["accuracy"] > gt_scores[2]["accuracy"] + 0.5


def test_distances_of_max_dist_and_beyond_are_left_out(stand_in, references, gt_scores):
    centre = stand_in[2]
    mesh = with_floater(sphere(centre), plate(centre + [RADIUS + 30, 0, 0], 10))  # 30 mm out, observed
    scores = evaluate_dtu(mesh, references[2])
    assert abs(scores["accuracy"] - gt_scores[2]["accuracy"]) < 0.01
    assert scores["counts"]["accuracy_points"] < scores["counts"]["data_in_mask"]
    # with a larger max_dist the floater counts: 30 mm for ~7% of the points
    assert evaluate_dtu(mesh, references[2], max_dist=40)["accuracy"] > gt_scores[2]["accuracy"] + 1.5


def test_mask_culling_removes_a_floater_outside_the_masks(stand_in, references, gt_scores):
    scene, _, centre, _ = stand_in
    mesh = with_floater(sphere(centre), plate(centre + [1.4 * RADIUS, 0, 0], 2))
    culled = evaluate_dtu(mesh, references[2], mask_views=load_mask_views(scene), dilation=2)
    assert culled["counts"]["culled_faces"] == 2 and culled["counts"]["culled_vertices"] == 4
    assert culled["counts"]["cull_views"] == 8
    # what is left is the sphere, every vertex of which projects into every mask: the sphere's own scores
    assert culled["accuracy"] == pytest.approx(gt_scores[2]["accuracy"], abs=1e-12)
    assert culled["completeness"] == pytest.approx(gt_scores[2]["completeness"], abs=1e-12)
    assert evaluate_dtu(mesh, references[2])["accuracy"] > gt_scores[2]["accuracy"] + 0.01


def test_a_mesh_in_the_normalised_space_is_refused(references):
    with pytest.raises(DatasetError, match="none of its .* points lies in the observation mask"):
        evaluate_dtu(trimesh.creation.icosphere(subdivisions=2), references[1])


# ----------------------------------------------------------------------------------------------------------
# Bad input to the script: exit 2, one line `error: PATH: problem`, nothing written. The cases marked
# SUBPROCESS run the script as a command (one or two per kind of input); the others call its main() in this
# process (a command costs ~1 s of imports each).


def run_script(args, subprocess_run, capsys):
    """(exit code, stdout, stderr) of scripts/eval_dtu.py with `args`, as a command or through its main()."""
    args = [str(a) for a in args]
    if subprocess_run:
        result = subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True)
        return result.returncode, result.stdout, result.stderr
    spec = importlib.util.spec_from_file_location("eval_dtu_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    capsys.readouterr()
    try:
        rc = script.main(args)
    except SystemExit as stop:  # argparse's errors
        rc = stop.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def assert_one_error_line(result, expected_start, out):
    rc, stdout, stderr = result
    assert rc == 2 and stdout == "", (rc, stdout, stderr)
    assert stderr.startswith(f"error: {expected_start}") and stderr.count("\n") == 1, stderr
    assert not os.path.exists(out)


def test_script_scores_and_writes_json(stand_in, tmp_path, capsys):
    scene, dtu, centre, _ = stand_in
    mesh_path = tmp_path / "mesh.ply"
    with_floater(sphere(centre), plate(centre + [1.4 * RADIUS, 0, 0], 2)).export(mesh_path)
    out = tmp_path / "scores" / "dtu.json"
    rc, stdout, stderr = run_script([mesh_path, "--scan", 2, "--dtu", dtu, "--data", scene, "--dilation", 2,
                                     "--out", out, "--vis", tmp_path / "vis"], True, capsys)
    assert rc == 0, stderr
    assert "scan 2: accuracy" in stdout and "2 faces culled by masks" in stdout
    scores = json.loads(out.read_text())
    assert scores["accuracy"] < GT_BOUND and scores["counts"]["culled_faces"] == 2
    vis = trimesh.load(tmp_path / "vis" / "accuracy_points.ply")
    assert len(vis.vertices) == scores["counts"]["data_in_mask"]
    assert sorted(os.listdir(tmp_path / "vis")) == ["accuracy_points.ply", "completeness_points.ply"]


def mat_bytes(tmp_path, variables):
    path = tmp_path / "v.mat"
    savemat(path, variables)
    return path.read_bytes()


# A MATLAB v7.3 file is HDF5 behind a 128-byte MATLAB header: version 0x0200 at byte 124
V73_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(116) + b"\0" * 8 + b"\x00\x02IM"
SUBPROCESS = "subprocess"

BAD_REFERENCES = [
    # (reference file, its content (bytes, MATLAB variables, or None: absent), the problem, run as a command?)
    ("stl", None, "no such file (a point cloud)", False),
    ("stl", b"ply\nformat binary_little_endian 1.0\nelement vertex 1000\nproperty float x\nend_header\n",
     "unreadable point cloud", SUBPROCESS),
    ("obs_mask", None, "no such file (a MATLAB file)", False),
    ("obs_mask", b"not a MATLAB file at all" * 10, "unreadable MATLAB file", SUBPROCESS),
    ("obs_mask", V73_HEADER + b"\0" * 512, "a MATLAB v7.3 (HDF5) file", SUBPROCESS),
    ("obs_mask", {"ObsMask": np.ones((4, 4, 4)), "Res": 1.0}, "variable BB missing", False),
    ("obs_mask", {"ObsMask": np.ones((4, 4, 4)), "BB": np.zeros((3, 2)), "Res": 1.0},
     "variable BB has shape (3, 2), expected 2x3", False),
    ("obs_mask", {"ObsMask": np.ones((4, 4)), "BB": [[0, 0, 0], [1, 1, 1]], "Res": 1.0},
     "variable ObsMask is an array of float64 of shape (4, 4), expected a 3-D array", False),
    ("obs_mask", {"ObsMask": np.ones((4, 4, 4)), "BB": [[0, 0, 0], [1, 1, 1]], "Res": -1.0},
     "variable Res is [-1.0], expected one positive number", False),
    ("plane", None, "no such file (a MATLAB file)", SUBPROCESS),
    ("plane", {"P": "up"}, "variable P is an array of strings, expected numbers", False),
    ("plane", {"P": [0.0, 0.0, 0.0, 1.0]}, "variable P has 4 values, expected a plane (a, b, c, d) with a non-zero",
     False),
]


@pytest.mark.parametrize("name, content, problem, as_command", BAD_REFERENCES,
                         ids=[f"{n}-{p.split(' ')[0]}-{i}" for i, (n, _, p, _) in enumerate(BAD_REFERENCES)])
def test_script_bad_reference_file(stand_in, tmp_path, capsys, name, content, problem, as_command):
    _, dtu, centre, _ = stand_in
    root = tmp_path / "dtu"
    shutil.copytree(dtu, root)
    path = reference_paths(str(root), 1)[name]
    os.remove(path)
    if content is not None:
        with open(path, "wb") as f:
            f.write(mat_bytes(tmp_path, content) if isinstance(content, dict) else content)
    mesh_path = tmp_path / "mesh.ply"
    sphere(centre).export(mesh_path)
    out = tmp_path / "out.json"
    result = run_script([mesh_path, "--scan", 1, "--dtu", root, "--out", out], as_command, capsys)
    assert_one_error_line(result, f"{path}: {problem}", out)


BAD_MESHES_AND_SCENES = [
    # (what is wrong with the MESH argument or the --data scene, the problem, run as a command?)
    ("missing_mesh", "no such file (a mesh)", SUBPROCESS),
    ("garbled_mesh", "unreadable mesh", SUBPROCESS),
    ("empty_mesh", "empty file (0 bytes), expected a mesh", False),
    ("normalised_mesh", "none of its", False),
    ("missing_scene", "no such folder (the scene whose masks cull the mesh)", False),
    ("scene_without_masks", "mask folder missing", False),
    ("scene_missing_a_mask", "7 masks for 8 cameras", False),
    ("scene_garbled_cameras", "unreadable cameras file", SUBPROCESS),
]


@pytest.mark.parametrize("case, problem, as_command", BAD_MESHES_AND_SCENES,
                         ids=[c for c, _, _ in BAD_MESHES_AND_SCENES])
def test_script_bad_mesh_or_scene(stand_in, tmp_path, capsys, case, problem, as_command):
    scene, dtu, centre, _ = stand_in
    mesh_path = bad_path = tmp_path / "mesh.ply"
    sphere(centre).export(mesh_path)
    data = []
    if case == "missing_mesh":
        mesh_path = bad_path = tmp_path / "nowhere.ply"
    elif case == "garbled_mesh":
        mesh_path.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nend_header\n1\n")
    elif case == "empty_mesh":
        mesh_path.write_bytes(b"")
    elif case == "normalised_mesh":
        trimesh.creation.icosphere(subdivisions=2).export(mesh_path)
    elif case == "missing_scene":
        bad_path = tmp_path / "no_scene"
        data = ["--data", bad_path]
    else:
        root = tmp_path / "scene"
        shutil.copytree(scene, root)
        data = ["--data", root]
        if case == "scene_without_masks":
            shutil.rmtree(root / "mask")
            bad_path = root / "mask"
        elif case == "scene_missing_a_mask":
            os.remove(root / "mask" / "007.png")
            bad_path = root / "mask"
        else:
            bad_path = root / "cameras_sphere.npz"
            bad_path.write_bytes(b"PK\x03\x04 truncated")
    out = tmp_path / "out.json"
    result = run_script([mesh_path, "--scan", 1, "--dtu", dtu, *data, "--out", out], as_command, capsys)
    assert_one_error_line(result, f"{bad_path}: {problem}", out)


@pytest.mark.parametrize("args, problem, as_command", [
    (["--scan", "0", "--dtu", "DTU"], "--scan: invalid positive integer value: '0'", SUBPROCESS),
    (["--scan", "1", "--dtu", "DTU", "--max_dist", "-1"], "--max_dist: invalid positive number value: '-1'",
     False),
    (["--scan", "1", "--dtu", "DTU", "--out", "{tmp}"], "{tmp}: is a folder (--out names a file)", False),
    (["--scan", "1", "--dtu", "DTU", "--downsample", "1e11"], "--downsample: 1e+11 mm is not in", False),
    (["--scan", "1"], "the following arguments are required: --dtu", False),
    (["--scan", "1", "--dtu", "{tmp}/none"], "{tmp}/none: no such folder (the DTU reference", False),
], ids=["scan", "max_dist", "out_folder", "downsample_huge", "missing_dtu", "dtu_not_a_folder"])
def test_script_bad_flag(stand_in, tmp_path, capsys, args, problem, as_command):
    _, dtu, centre, _ = stand_in
    mesh_path = tmp_path / "mesh.ply"
    sphere(centre).export(mesh_path)
    args = [dtu if a == "DTU" else a.format(tmp=tmp_path) for a in args]
    result = run_script([mesh_path, *args], as_command, capsys)
    assert_one_error_line(result, problem.format(tmp=tmp_path), tmp_path / "out.json")
