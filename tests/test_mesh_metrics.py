"""Tests of nerf.mesh_metrics' normal-angle error and thin-part recall, and of their output in scripts/eval_mesh.py
(the distance metrics are tested in test_scripts.py)."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import trimesh

from nerf.mesh_metrics import THIN_MESH_FILE, evaluate_mesh

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_EVAL = 20_000


@pytest.fixture(scope="module")
def sphere():
    return trimesh.creation.icosphere(subdivisions=5, radius=100.0)


def bumped(sphere, amplitude, wavelength=40.0):
    """The sphere with its vertices moved along the radius by amplitude * sin(2 pi z / wavelength) (mm)."""
    v = sphere.vertices
    radial = v / np.linalg.norm(v, axis=1, keepdims=True)
    return trimesh.Trimesh(v + radial * amplitude * np.sin(2 * np.pi * v[:, 2] / wavelength)[:, None],
                           sphere.faces, process=False)


def flipped(mesh):
    out = mesh.copy()
    out.invert()
    return out


def plate_on_base():
    """(the whole, the base, the plate): a 200 x 200 x 40 mm box with a 1 mm thin, 30 mm wide, 60 mm high plate
    standing on its top."""
    base = trimesh.creation.box(extents=[200.0, 200.0, 40.0])
    plate = trimesh.creation.box(extents=[30.0, 1.0, 60.0])
    plate.apply_translation([0.0, 0.0, 20.0 + 30.0])
    return trimesh.util.concatenate([base, plate]), base, plate


def test_a_mesh_against_itself_has_no_normal_error_and_full_thin_recall(sphere):
    m = evaluate_mesh(sphere, sphere.copy(), n_points=N_EVAL, tau=1.0, thin=sphere.copy())
    assert m["normal_error_deg"] < 0.2
    assert m["thin_recall"] == 1.0 and m["thin_n_points"] >= 2000


def test_normal_error_grows_with_the_bumps(sphere):
    errors = [evaluate_mesh(bumped(sphere, a), sphere, n_points=N_EVAL)["normal_error_deg"] for a in (0.5, 1.5)]
    # slope of the bumps: atan(2 pi a / wavelength) = 4.5 and 13 degrees at the steepest
    assert 1.0 < errors[0] < errors[1] < 13.0
    assert errors[1] > 2.0 * errors[0]


def test_normal_error_ignores_winding(sphere):
    """Flipping either mesh's faces turns its normals round: the error is between lines, so it stays the same."""
    rough = bumped(sphere, 1.0)
    reference = evaluate_mesh(rough, sphere, n_points=N_EVAL)
    for pred, gt in ((flipped(rough), sphere), (rough, flipped(sphere)), (flipped(rough), flipped(sphere))):
        m = evaluate_mesh(pred, gt, n_points=N_EVAL)
        assert m["normal_error_deg"] == pytest.approx(reference["normal_error_deg"], rel=0.05)
    assert evaluate_mesh(flipped(sphere), sphere, n_points=N_EVAL)["normal_error_deg"] < 0.2


def test_normal_error_both_ways():
    """A plate tilted by 10 degrees: every normal is 10 degrees off, both ways."""
    plate = trimesh.Trimesh([[0, 0, 0], [100, 0, 0], [100, 100, 0], [0, 100, 0]], [[0, 1, 2], [0, 2, 3]])
    tilted = plate.copy()
    tilted.apply_transform(trimesh.transformations.rotation_matrix(np.radians(10.0), [1, 0, 0], [50, 50, 0]))
    m = evaluate_mesh(tilted, plate, n_points=5000)
    for key in ("normal_error_deg", "normal_error_pred_to_gt_deg", "normal_error_gt_to_pred_deg"):
        assert m[key] == pytest.approx(10.0, abs=1e-6)


def test_a_prediction_missing_the_plate_has_thin_recall_near_zero():
    whole, base, plate = plate_on_base()
    missing = evaluate_mesh(base, whole, n_points=N_EVAL, tau=2.0, thin=plate)
    # only the plate's foot (2 of its 60 mm) is within tau of the base
    assert missing["thin_recall"] < 0.06
    # while the overall scores hardly notice: the plate is 3 % of the surface
    assert missing["recall"] > 0.95 and missing["fscore"] > 0.97 and missing["chamfer"] < 1.0
    assert evaluate_mesh(whole, whole, n_points=N_EVAL, tau=2.0, thin=plate)["thin_recall"] == 1.0
    assert missing["thin_recall"] is not None and evaluate_mesh(base, whole, n_points=5000)["thin_recall"] is None


def test_the_thin_recall_map_shows_which_part_of_the_plate_is_lost():
    """The plate (30 mm wide along x, 60 mm high along z) predicted only where x < 0: the map's columns run up the
    plate (its longer axis), its rows across it from +x down; the rows of x > 5 mm are lost (but at the plate's
    foot, within tau of the base), the rows of x < 0 kept."""
    whole, base, plate = plate_on_base()
    half = trimesh.creation.box(extents=[15.0, 1.0, 60.0])
    half.apply_translation([-7.5, 0.0, 50.0])
    m = evaluate_mesh(trimesh.util.concatenate([base, half]), whole, n_points=N_EVAL, tau=2.0, thin=plate)
    grid = np.array(m["thin_recall_map"], dtype=float)
    assert grid.shape == (6, 6)
    assert (grid[:2, 1:] < 0.05).all() and (grid[:2, 0] > 0.05).all(), grid  # x in 5..15 mm; the foot column
    assert (grid[3:] > 0.95).all(), grid  # x in -15..0 mm
    assert evaluate_mesh(base, whole, n_points=5000)["thin_recall_map"] is None


def row_keys(rows):
    """One hashable key [N] per row of rows [N, 3] (float64), equal for bit-identical rows."""
    rows = np.ascontiguousarray(rows, dtype=np.float64)
    return rows.view(np.dtype((np.void, rows.itemsize * rows.shape[1]))).ravel()


def test_the_blade_scene_without_its_plate_loses_the_thin_recall(blade_scene):
    root, info = blade_scene
    gt = trimesh.load(os.path.join(root, "gt_mesh.ply"), process=False)
    thin = os.path.join(root, THIN_MESH_FILE)
    # the gt mesh less the faces gt_thin.ply took from it (the same corners, bit for bit): the base with a slot
    # where the plate stood
    plate = trimesh.load(thin, process=False)
    on_plate = np.isin(row_keys(gt.triangles_center), row_keys(plate.triangles_center))
    assert on_plate.sum() == len(plate.faces)
    base = gt.submesh([np.nonzero(~on_plate)[0]], append=True)
    # few samples: the truth has ~1.5M faces (the plate's resolution floor), and the k-d tree search from the lost
    # plate to the base, far from it, is slow (~4 ms a point)
    missing = evaluate_mesh(base, gt, n_points=2000, tau=2.0, thin=thin)
    assert missing["thin_recall"] < 0.05
    assert missing["precision"] == 1.0


def load_script(name):
    """scripts/NAME.py as a module (its main() runs in this process: no interpreter start-up per case)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{name}_script", os.path.join(REPO_ROOT, "scripts", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_eval_cli_reports_normals_and_finds_the_thin_part(tmp_path, capsys):
    whole, base, plate = plate_on_base()
    gt_path, pred_path, out_json = tmp_path / "gt_mesh.ply", tmp_path / "pred.ply", tmp_path / "m.json"
    whole.export(gt_path)
    base.export(pred_path)
    eval_mesh = load_script("eval_mesh")

    def run(*flags):
        assert eval_mesh.main([str(pred_path), str(gt_path), "--n_points", "5000", "--json", str(out_json),
                               *flags]) == 0
        return capsys.readouterr().out.strip(), json.loads(out_json.read_text())

    line, m = run()
    assert "normal" in line and "thin" not in line and m["thin_recall"] is None
    assert m["normal_error_deg"] >= 0.0 and "chamfer" in m
    plate.export(tmp_path / THIN_MESH_FILE)
    line, m = run()  # --thin auto: the gt_thin.ply beside GT
    assert len(line.splitlines()) == 1 and "thin R@2" in line and m["thin_recall"] < 0.1
    lines, _ = run("--thin_map")  # the map's header and its 6 rows after the line: lost but at the foot
    assert len(lines.splitlines()) == 8
    assert all(row.split()[1:] == ["0.00"] * 5 for row in lines.splitlines()[2:]), lines
    line, m = run("--thin", "none")
    assert m["thin_recall"] is None
    line, m = run("--thin", str(gt_path))
    assert m["thin_recall"] > 0.9
    # as a command: an unreadable thin-part mesh is one error line and exit code 2
    res = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "scripts", "eval_mesh.py"), str(pred_path),
                          str(gt_path), "--thin", str(tmp_path / "no.ply")], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.startswith(f"error: {tmp_path / 'no.ply'}: ")


def looking_at_origin(distance, width=160, height=120, focal=150.0, axis=(0.0, 0.0, 1.0)):
    """A Camera at `distance` along `axis` from the origin, looking at it (OpenCV axes)."""
    from nerf.seen_surface import Camera

    back = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    z = -back  # viewing direction
    x = np.cross(z, [0.0, 1.0, 0.0] if abs(z[1]) < 0.9 else [1.0, 0.0, 0.0])
    x /= np.linalg.norm(x)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([x, np.cross(z, x), z], 1)
    c2w[:3, 3] = back * distance
    K = np.array([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1.0]])
    return Camera(K, np.linalg.inv(c2w), width, height)


def test_seen_points_are_the_near_side_and_what_floats_in_front(sphere):
    """One camera on +z: the sphere's +z cap is seen, its -z side is not; a point between the camera and the
    sphere (a floater) is seen, one hidden behind the sphere or outside the image is not."""
    from nerf.seen_surface import first_surfaces, seen_points

    def seen_points_of(points, cameras):
        return seen_points(points, cameras, first_surfaces(sphere, cameras))

    camera = looking_at_origin(400.0)
    points, _ = trimesh.sample.sample_surface(sphere, 4000, seed=np.random.default_rng(0))
    seen = seen_points_of(points, [camera])
    assert seen[points[:, 2] > 40].all()  # well inside the visible cap (the limb is at z = 100^2 / 400 = 25)
    assert not seen[points[:, 2] < 10].any()
    extra = np.array([[0.0, 0.0, 250.0], [0.0, 0.0, -150.0], [900.0, 0.0, 0.0]])
    assert seen_points_of(extra, [camera]).tolist() == [True, False, False]
    behind = looking_at_origin(400.0, axis=(0.0, 0.0, -1.0))
    # two opposite cameras: the two caps beyond the limbs, 37.5 % of the sphere each
    assert 0.70 < seen_points_of(points, [camera, behind]).mean() < 0.80


def test_seen_scores_leave_out_an_error_no_camera_sees(sphere):
    """A prediction off by 4 mm only on the sphere's far side: the whole-surface score sees the error, the score
    over what the one camera sees does not."""
    v = sphere.vertices.copy()
    far = v[:, 2] < -30
    v[far] *= 1.04
    pred = trimesh.Trimesh(v, sphere.faces, process=False)
    m = evaluate_mesh(pred, sphere, n_points=N_EVAL, cameras=[looking_at_origin(400.0)])
    assert m["chamfer"] > 0.5 and m["fscore"] < 0.9
    assert m["seen_chamfer"] < 0.05 and m["seen_fscore"] > 0.999
    assert 0.3 < m["seen_fraction"] < 0.45  # the cap beyond the limb, z > 25 of a radius-100 sphere: 37.5 %
    assert "seen_chamfer" not in evaluate_mesh(pred, sphere, n_points=N_EVAL)


def test_eval_cli_scores_what_the_scene_cameras_see(tmp_path, capsys):
    """GT in a NeuS-format scene folder: --seen auto adds the scores over what its cameras see; none leaves them
    out; a folder that is no scene is one error line naming its cameras file, exit code 2."""
    from nerf.synthetic import make_scene

    scene = tmp_path / "scene"
    make_scene(str(scene), shape="sphere", views=6, width=64, height=48, formats=("neus",))
    gt_path, out_json = scene / "gt_mesh.ply", tmp_path / "m.json"
    eval_mesh = load_script("eval_mesh")
    assert eval_mesh.main([str(gt_path), str(gt_path), "--n_points", "5000", "--json", str(out_json)]) == 0
    line, m = capsys.readouterr().out.strip(), json.loads(out_json.read_text())
    assert "seen (" in line and m["seen_chamfer"] < 0.5 and 0.3 < m["seen_fraction"] < 1.0
    assert eval_mesh.main([str(gt_path), str(gt_path), "--n_points", "5000", "--json", str(out_json),
                           "--seen", "none"]) == 0
    assert "seen_chamfer" not in json.loads(out_json.read_text())
    res = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "scripts", "eval_mesh.py"), str(gt_path),
                          str(gt_path), "--seen", str(tmp_path)], capture_output=True, text=True)
    missing = tmp_path / "cameras_sphere.npz"
    assert res.returncode == 2 and res.stderr == f"error: {missing}: missing (not a NeuS-format scene)\n"


@pytest.fixture(scope="module")
def small_scene(tmp_path_factory):
    """A NeuS-format sphere scene of 4 views, 32 x 24 pixels, with its gt_mesh.ply."""
    from nerf.synthetic import make_scene

    scene = tmp_path_factory.mktemp("eval") / "scene"
    make_scene(str(scene), shape="sphere", views=4, width=32, height=24, formats=("neus",), gt_resolution=32)
    return scene


def run_eval(argv, capsys):
    """scripts/eval_mesh.py's main(argv) in this process -> (exit code, stdout, stderr lines); a flag argparse
    refuses exits from within."""
    try:
        code = load_script("eval_mesh").main(argv)
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err.splitlines()


# eval_mesh.py arguments (placeholders: {gt} a mesh, {tmp} the test's folder) -> the start of the one error line
EVAL_BAD_ARGUMENTS = {
    "n_points negative": (["{gt}", "{gt}", "--n_points", "-5"], "--n_points: "),
    "n_points zero": (["{gt}", "{gt}", "--n_points", "0"], "--n_points: "),
    "n_points huge": (["{gt}", "{gt}", "--n_points", "99999999999999999"], "--n_points: at most"),
    "tau subnormal": (["{gt}", "{gt}", "--tau", "1e-320"], "--tau: "),
    "tau negative": (["{gt}", "{gt}", "--tau", "-1"], "--tau: "),
    "tau NaN": (["{gt}", "{gt}", "--tau", "nan"], "--tau: "),
    "tau infinite": (["{gt}", "{gt}", "--tau", "inf"], "--tau: "),
    "seed negative": (["{gt}", "{gt}", "--seed", "-1"], "--seed: "),
    "json empty": (["{gt}", "{gt}", "--json", ""], "--json: "),
    "json under a file": (["{gt}", "{gt}", "--json", "{gt}/m.json"], "{gt}/m.json: cannot be written"),
    "json a folder": (["{gt}", "{gt}", "--json", "{tmp}"], "{tmp}: "),
    "unknown flag": (["{gt}", "{gt}", "--bogus"], "unrecognized arguments: --bogus"),
    "no meshes": ([], "the following arguments are required: pred, gt"),
}


@pytest.mark.parametrize("case", EVAL_BAD_ARGUMENTS)
def test_eval_cli_refuses_bad_arguments_before_scoring(case, tmp_path, capsys):
    """One error line naming the flag or file, exit code 2, no metrics printed and no --json file written."""
    argv, start = EVAL_BAD_ARGUMENTS[case]
    gt = tmp_path / "gt.ply"
    trimesh.creation.icosphere(subdivisions=2, radius=100.0).export(gt)
    out_json = tmp_path / "m.json"
    fill = {"gt": str(gt), "tmp": str(tmp_path)}
    argv = [arg.format(**fill) for arg in argv] + ([] if "--json" in argv else ["--json", str(out_json)])
    code, out, err = run_eval(argv, capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: " + start.format(**fill)), err
    assert out == "" and not out_json.exists()


# world_mat_1 of the scene beside GT (--seen auto) -> the start of the problem in the error line
BAD_WORLD_MATS = {
    "zero": (np.zeros((4, 4)), "world_mat_1 is singular"),
    "rank 2": (np.diag([100.0, 100.0, 0.0, 1.0]), "world_mat_1 is singular"),
    "huge entries": (np.full((4, 4), 1e308), "world_mat_1 is singular"),
    "NaN": (np.full((4, 4), np.nan), "world_mat_1 contains NaN or Inf"),
    "wrong shape": (np.ones((2, 2)), "world_mat_1 has shape (2, 2)"),
}


def scene_with_world_mat(scene, folder, world_mat):
    """A copy of `scene` in `folder` with `world_mat` as its world_mat_1 and no scale_mats (scoring needs
    none: the world_mats place the cameras in GT's frame) -> the copy's cameras file."""
    shutil.copytree(scene, folder)
    path = folder / "cameras_sphere.npz"
    with np.load(path) as cams:
        world_mats = {key: cams[key] for key in cams.files if key.startswith("world_mat_")}
    np.savez(path, **dict(world_mats, world_mat_1=world_mat))
    return path


@pytest.mark.parametrize("case", BAD_WORLD_MATS)
def test_eval_cli_refuses_a_scene_camera_that_is_no_projection(case, small_scene, tmp_path, capsys):
    world_mat, problem = BAD_WORLD_MATS[case]
    cameras = scene_with_world_mat(small_scene, tmp_path / "scene", world_mat)
    gt, out_json = str(tmp_path / "scene" / "gt_mesh.ply"), tmp_path / "m.json"
    code, out, err = run_eval([gt, gt, "--json", str(out_json)], capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {cameras}: {problem}"), err
    assert out == "" and not out_json.exists()


def test_eval_cli_takes_a_scaled_world_mat_for_the_same_camera(small_scene, tmp_path, capsys):
    """A projection is defined up to scale: world_mat_1 times 1e300 (whose products overflow) is the same camera,
    and the scene's cameras need no scale_mats."""
    gt, out_json = str(small_scene / "gt_mesh.ply"), tmp_path / "m.json"
    argv = ["--n_points", "2000", "--json", str(out_json)]
    assert run_eval([gt, gt, *argv], capsys)[::2] == (0, [])
    reference = json.loads(out_json.read_text())
    with np.load(small_scene / "cameras_sphere.npz") as cams:
        scaled = cams["world_mat_1"] * 1e300
    scene_with_world_mat(small_scene, tmp_path / "scaled", scaled)
    gt = str(tmp_path / "scaled" / "gt_mesh.ply")
    assert run_eval([gt, gt, *argv], capsys)[::2] == (0, [])
    assert json.loads(out_json.read_text())["seen_fraction"] == reference["seen_fraction"]


@pytest.mark.parametrize("where", ["pred", "gt", "--thin"])
def test_eval_cli_refuses_a_mesh_with_huge_vertices(where, tmp_path, capsys):
    """Finite vertices whose area overflows (1e300) are refused by the loader, as one line: no overflow warning
    or traceback while scoring, no --json written."""
    huge = tmp_path / "huge.obj"
    huge.write_text("v 1e300 0 0\nv 0 1e300 0\nv 0 0 1e300\nf 1 2 3\n")
    mesh = tmp_path / "gt.ply"
    trimesh.creation.icosphere(subdivisions=2, radius=100.0).export(mesh)
    out_json = tmp_path / "m.json"
    pred, gt = (huge, mesh) if where == "pred" else (mesh, huge) if where == "gt" else (mesh, mesh)
    thin = ["--thin", str(huge)] if where == "--thin" else []
    code, out, err = run_eval([str(pred), str(gt), "--n_points", "2000", *thin, "--json", str(out_json)], capsys)
    label = {"pred": "predicted mesh", "gt": "ground-truth mesh", "--thin": "thin-part mesh"}[where]
    assert code == 2 and err == [f"error: {huge}: the {label} has a vertex coordinate of 1e+300, beyond 1e+12 "
                                 f"(in any unit)"], err
    assert out == "" and not out_json.exists()
