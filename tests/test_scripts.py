"""Tests of the synthetic scene generator (nerf.synthetic) and the mesh evaluator (nerf.mesh_metrics), and of
their command lines in scripts/.

The scene tests check the written cameras against the written images, i.e.
the properties a loader relies on: world_mat projects the true surface into
the masks, the mask is exactly the silhouette sampled at pixel centres,
scale_mat's unit sphere encloses the object, and transforms.json describes
the same cameras as cameras_sphere.npz.
"""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import trimesh

from nerf.mesh_metrics import evaluate_mesh
from nerf.synthetic import make_scene, shared_mesh_dirs

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

VIEWS, WIDTH, HEIGHT = 12, 80, 60


def _have_spot():
    return any(os.path.isfile(os.path.join(d, "spot", "spot_triangulated.obj"))
               for d in shared_mesh_dirs())


SHAPES = ["sphere", "torus",
          pytest.param("spot", marks=pytest.mark.skipif(
              not _have_spot(), reason="shared/data/meshes/spot not present"))]


@pytest.fixture(scope="module", params=SHAPES)
def scene(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    # spot has thin horns and ears: a few more pixels keep sub-pixel
    # features from dominating the vertex-in-mask statistics
    scale = 2 if request.param == "spot" else 1
    info = make_scene(str(out), shape=request.param, views=VIEWS,
                      width=WIDTH * scale, height=HEIGHT * scale,
                      radius_mm=200.0, seed=3, gt_resolution=96)
    return out, info


def _cameras(out):
    cams = np.load(os.path.join(out, "cameras_sphere.npz"))
    n = len([k for k in cams.files if k.startswith("world_mat_")])
    return [cams[f"world_mat_{i}"] for i in range(n)], \
        [cams[f"scale_mat_{i}"] for i in range(n)]


def _mask(out, i):
    m = cv2.imread(os.path.join(out, "mask", f"{i:03d}.png"),
                   cv2.IMREAD_GRAYSCALE)
    assert m is not None and set(np.unique(m)) <= {0, 255}
    return m > 127


def test_layout(scene):
    out, info = scene
    world_mats, scale_mats = _cameras(out)
    assert len(world_mats) == VIEWS
    for i in range(VIEWS):
        img = cv2.imread(os.path.join(out, "image", f"{i:06d}.png"))
        assert img.shape == (info["height"], info["width"], 3)
        assert img.dtype == np.uint8
        mask = _mask(out, i)
        assert 0.05 < mask.mean() < 0.8
        # background is black, object is lit and textured
        assert img[~mask].max() == 0
        assert img[mask].mean() > 20 and img[mask].std() > 5
    with open(os.path.join(out, "scene.json")) as f:
        meta = json.load(f)
    assert meta["world_units"] == "mm" and meta["views"] == VIEWS
    assert trimesh.load(os.path.join(out, "gt_mesh.ply")).faces.shape[0] > 100


def test_gt_vertices_project_into_masks(scene):
    out, info = scene
    world_mats, _ = _cameras(out)
    verts = np.asarray(trimesh.load(os.path.join(out, "gt_mesh.ply")).vertices)
    homog = np.c_[verts, np.ones(len(verts))]
    kernel = np.ones((3, 3), np.uint8)
    for i, wm in enumerate(world_mats):
        proj = homog @ wm.T
        assert (proj[:, 2] > 0).all()
        # pixel centres are at integer coordinates: nearest pixel = round
        uv = np.round(proj[:, :2] / proj[:, 2:3]).astype(int)
        inside_img = ((uv[:, 0] >= 0) & (uv[:, 0] < info["width"])
                      & (uv[:, 1] >= 0) & (uv[:, 1] < info["height"]))
        assert inside_img.all(), f"view {i}: object leaves the frame"
        mask = _mask(out, i)
        # the silhouette is sampled at pixel centres, so a vertex on the
        # outline may round to a background pixel next to it: allow 1 px
        grown = cv2.dilate(mask.astype(np.uint8), kernel) > 0
        hit_grown = grown[uv[:, 1], uv[:, 0]].mean()
        hit_strict = mask[uv[:, 1], uv[:, 0]].mean()
        assert hit_grown >= 0.99, (i, hit_grown)
        assert hit_strict >= 0.85, (i, hit_strict)


def _pixel_rays(world_mat, width, height):
    """Rays straight from world_mat = K [R|t]: centre and directions."""
    P = world_mat[:3, :4]
    M_inv = np.linalg.inv(P[:, :3])
    centre = -M_inv @ P[:, 3]
    u, v = np.meshgrid(np.arange(width), np.arange(height))
    pix = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], 1)
    dirs = pix @ M_inv.T
    return centre, dirs / np.linalg.norm(dirs, axis=1, keepdims=True)


def _sphere_hits(centre_cam, dirs, centre, radius):
    oc = centre_cam - centre
    b = dirs @ oc
    return b * b - (oc @ oc - radius ** 2) > 0


def test_sphere_mask_is_exact_silhouette(scene):
    """Pixel-centre rays from world_mat hit the sphere exactly where the mask
    is set; the same rays shifted by half a pixel do not (the test can tell
    a half-pixel convention error)."""
    out, info = scene
    if info["shape"] != "sphere":
        pytest.skip("analytic silhouette only for the sphere")
    world_mats, _ = _cameras(out)
    centre, radius = np.array(info["object_centre"]), info["object_radius"]
    for i, wm in enumerate(world_mats):
        mask = _mask(out, i).ravel()
        cam, dirs = _pixel_rays(wm, info["width"], info["height"])
        exact = _sphere_hits(cam, dirs, centre, radius)
        assert (exact != mask).mean() <= 0.001
        # K' = [[1, 0, .5], [0, 1, .5], [0, 0, 1]] K: pixel centres at +0.5
        shift = np.eye(4)
        shift[:2, 2] = 0.5
        cam, dirs = _pixel_rays(shift @ wm, info["width"], info["height"])
        shifted = _sphere_hits(cam, dirs, centre, radius)
        assert (shifted != mask).mean() > 0.01


def test_scale_mat_encloses_object(scene):
    out, info = scene
    _, scale_mats = _cameras(out)
    for sm in scale_mats[1:]:
        np.testing.assert_array_equal(sm, scale_mats[0])
    sm = scale_mats[0]
    verts = np.asarray(trimesh.load(os.path.join(out, "gt_mesh.ply")).vertices)
    unit = (np.c_[verts, np.ones(len(verts))] @ np.linalg.inv(sm).T)[:, :3]
    r = np.linalg.norm(unit, axis=1)
    assert r.max() < 1.0
    assert r.max() > 0.75  # tight enough to use the normalised space well
    # the object is deliberately off the world origin
    assert np.linalg.norm(sm[:3, 3]) > 0.04 * info["object_radius"]
    # cameras outside the unit sphere
    world_mats, _ = _cameras(out)
    for wm in world_mats:
        P = (wm @ sm)[:3, :4]
        cam_unit = -np.linalg.inv(P[:, :3]) @ P[:, 3]
        assert 2.0 < np.linalg.norm(cam_unit) < 3.0


def test_transforms_json_matches_world_mat(scene):
    out, info = scene
    world_mats, _ = _cameras(out)
    with open(os.path.join(out, "transforms.json")) as f:
        meta = json.load(f)
    assert (meta["w"], meta["h"]) == (info["width"], info["height"])
    K = np.array([[meta["fl_x"], 0, meta["cx"] - 0.5],
                  [0, meta["fl_y"], meta["cy"] - 0.5], [0, 0, 1]])
    assert len(meta["frames"]) == VIEWS
    for frame, wm in zip(meta["frames"], world_mats):
        assert os.path.isfile(os.path.join(out, frame["file_path"]))
        c2w_gl = np.array(frame["transform_matrix"])
        c2w_cv = c2w_gl @ np.diag([1.0, -1.0, -1.0, 1.0])
        w2c = np.linalg.inv(c2w_cv)
        P = K @ w2c[:3]
        np.testing.assert_allclose(P, wm[:3], rtol=1e-9, atol=1e-6)
        # OpenGL camera looks down -z: the object centre is in front
        centre = np.r_[info["object_centre"], 1.0]
        assert (np.linalg.inv(c2w_gl) @ centre)[2] < 0


def test_deterministic(tmp_path):
    a = make_scene(str(tmp_path / "a"), shape="torus", views=3, width=40,
                   height=30, seed=5, gt_resolution=48, formats=("neus",))
    b = make_scene(str(tmp_path / "b"), shape="torus", views=3, width=40,
                   height=30, seed=5, gt_resolution=48, formats=("neus",))
    c = make_scene(str(tmp_path / "c"), shape="torus", views=3, width=40,
                   height=30, seed=6, gt_resolution=48, formats=("neus",))
    assert a["object_centre"] == b["object_centre"] != c["object_centre"]
    ca = np.load(tmp_path / "a" / "cameras_sphere.npz")
    cb = np.load(tmp_path / "b" / "cameras_sphere.npz")
    for k in ca.files:
        np.testing.assert_array_equal(ca[k], cb[k])
    for i in range(3):
        ia = cv2.imread(str(tmp_path / "a" / "image" / f"{i:06d}.png"))
        ib = cv2.imread(str(tmp_path / "b" / "image" / f"{i:06d}.png"))
        np.testing.assert_array_equal(ia, ib)
    assert not (tmp_path / "a" / "transforms.json").exists()


def test_cli_holdout_and_formats(tmp_path):
    out = tmp_path / "blob"
    res = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "scripts", "make_synthetic.py"),
         str(out), "--shape", "blob", "--views", "4", "--width", "40",
         "--height", "30", "--formats", "transforms", "--holdout_jitter",
         "--background", "white", "--gt_resolution", "48"],
        capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert (out / "transforms.json").exists()
    assert not (out / "cameras_sphere.npz").exists()
    hold = json.loads((out / "holdout" / "transforms.json").read_text())
    assert len(hold["frames"]) == 2
    assert (out / "holdout" / hold["frames"][0]["file_path"]).exists()
    img = cv2.imread(str(out / "image" / "000000.png"))
    mask = cv2.imread(str(out / "mask" / "000.png"), cv2.IMREAD_GRAYSCALE) > 0
    assert (img[~mask] == 255).all()
    res = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "scripts", "make_synthetic.py"),
         str(tmp_path / "x"), "--shape", str(tmp_path / "missing.obj")],
        capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.startswith(f"error: {tmp_path / 'missing.obj'}: ")
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------
# mesh_metrics and eval_mesh.py
# --------------------------------------------------------------------------

N_EVAL = 30_000


@pytest.fixture(scope="module")
def sphere_mesh():
    return trimesh.creation.icosphere(subdivisions=4, radius=100.0)


def test_eval_self_is_zero(sphere_mesh):
    m = evaluate_mesh(sphere_mesh, sphere_mesh.copy(), n_points=N_EVAL, tau=1.0)
    assert m["chamfer"] < 0.01  # 1e-4 of the radius
    assert m["fscore"] == 1.0


def test_eval_plane_translated_along_normal():
    """A plate moved by d along its normal: every distance is exactly d."""
    plate = trimesh.Trimesh([[0, 0, 0], [100, 0, 0], [100, 100, 0], [0, 100, 0]],
                            [[0, 1, 2], [0, 2, 3]])
    d = 3.0
    moved = plate.copy()
    moved.apply_translation([0, 0, d])
    m = evaluate_mesh(moved, plate, n_points=N_EVAL, tau=2.0)
    assert abs(m["chamfer"] - d) < 0.1 * d
    assert abs(m["accuracy"] - d) < 0.1 * d
    assert m["fscore"] == 0.0
    m = evaluate_mesh(moved, plate, n_points=N_EVAL, tau=3.5)
    assert m["fscore"] == 1.0


def test_eval_concentric_spheres(sphere_mesh):
    d = 4.0
    bigger = trimesh.creation.icosphere(subdivisions=4, radius=100.0 + d)
    m = evaluate_mesh(bigger, sphere_mesh, n_points=N_EVAL, tau=3.0)
    assert abs(m["chamfer"] - d) < 0.1 * d
    assert m["precision"] < 0.01 and m["recall"] < 0.01 and m["fscore"] < 0.01
    m = evaluate_mesh(bigger, sphere_mesh, n_points=N_EVAL, tau=5.0)
    assert m["fscore"] > 0.99


def test_eval_translated_sphere(sphere_mesh):
    """A sphere shifted by d (d << radius) sits |d cos(theta)| from the
    original, so chamfer = d * mean|cos| = d/2, and the fraction of samples
    within tau is tau/d (uniform |cos| on a sphere)."""
    d = 5.0
    moved = sphere_mesh.copy()
    moved.apply_translation([0.0, d, 0.0])
    m = evaluate_mesh(moved, sphere_mesh, n_points=N_EVAL, tau=2.0)
    assert abs(m["chamfer"] - d / 2) < 0.1 * d / 2
    assert abs(m["fscore"] - 2.0 / d) < 0.03
    assert m["precision"] == pytest.approx(m["recall"], abs=0.03)


def test_eval_point_to_point_is_biased_up(sphere_mesh):
    m = evaluate_mesh(sphere_mesh, sphere_mesh.copy(), n_points=5000,
                      point_to_point=True)
    assert m["chamfer"] > 0.3  # half the sample spacing, roughly


def test_eval_cli(tmp_path, sphere_mesh):
    script = os.path.join(REPO_ROOT, "scripts", "eval_mesh.py")
    gt = tmp_path / "gt.ply"
    sphere_mesh.export(gt)
    out_json = tmp_path / "m.json"
    res = subprocess.run([sys.executable, script, str(gt), str(gt),
                          "--n_points", "5000", "--json", str(out_json)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.strip().splitlines()) == 1
    assert "chamfer" in res.stdout
    assert json.loads(out_json.read_text())["fscore"] == 1.0

    bad = tmp_path / "bad.ply"
    bad.write_text("not a mesh at all\n")
    empty = tmp_path / "empty.obj"
    empty.write_text("")
    for broken in (bad, empty, tmp_path / "missing.ply"):
        res = subprocess.run([sys.executable, script, str(broken), str(gt)],
                             capture_output=True, text=True)
        assert res.returncode == 2
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {broken}: "), lines


def test_bench_runs_variants_one_after_another_and_reports_medians(tmp_path):
    """scripts/bench.py --variants: each variant trains the same scene with its own flags (after --extra, so they
    win), in its own workspace; every row has its held-out PSNR per view and its mesh score; a median table
    follows."""
    from train_helpers import TINY_MODEL

    out = tmp_path / "bench"
    extra = " ".join(TINY_MODEL + ["--device", "cpu", "--mc_resolution", "32", "--iters", "4"])
    res = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "scripts", "bench.py"), "--out", str(out),
                          "--synthetic", "sphere", "--views", "9", "--width", "48", "--height", "36", "--paths",
                          "torch", f"--extra={extra}", "--variants", "four=;three=--iters 3"],
                         capture_output=True, text=True, cwd=REPO_ROOT)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    rows = json.loads((out / "bench.json").read_text())["rows"]
    assert [(r["variant"], r["exit"]) for r in rows] == [("four", 0), ("three", 0)]
    for row, steps in zip(rows, (4, 3)):
        workspace = out / f"ws_sphere_torch_{row['variant']}"
        assert json.loads((workspace / "train_stats.json").read_text())["steps"] == steps
        assert list(row["psnr_per_view"]) == ["000000", "000008"] and np.isfinite(row["psnr"])
        assert row["chamfer_mm"] > 0
    assert "| sphere | torch | three (median of 1) |" in res.stdout


def test_bench_skips_the_runs_its_budget_leaves_no_time_for(tmp_path):
    """--budget: a run that would end past the budget is not started; its row says so, in bench.json too."""
    out = tmp_path / "bench"
    res = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "scripts", "bench.py"), "--out", str(out),
                          "--synthetic", "sphere", "--views", "9", "--width", "48", "--height", "36", "--paths",
                          "torch,cuda_ray", "--budget", "0.001"], capture_output=True, text=True, cwd=REPO_ROOT)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    rows = json.loads((out / "bench.json").read_text())["rows"]
    assert [(r["path"], r["exit"]) for r in rows] == [("torch", None), ("cuda_ray", None)]
    assert all(r["skipped"].startswith("--budget 0.001 s") for r in rows)
    assert not any(name.startswith("ws_") for name in os.listdir(out))  # nothing trained


def test_profile_mesh_times_every_part_and_leaves_the_workspace_alone(tmp_path, small_scene):
    """scripts/profile_mesh.py: every part of the mesh stage gets a row (nested parts within the whole stage), and
    the workspace's own mesh is not rewritten; a missing workspace or a bad flag is one error line, exit code 2."""
    from train_helpers import TINY_MODEL

    workspace = tmp_path / "ws"
    res = subprocess.run([sys.executable, "main_sdf.py", small_scene[0], "--workspace", str(workspace), "--device",
                          "cpu", "--quiet", "--iters", "2", "--mc_resolution", "32", *TINY_MODEL],
                         capture_output=True, text=True, cwd=REPO_ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    mesh = workspace / "meshes" / "mesh.ply"
    before = (mesh.stat().st_mtime_ns, mesh.read_bytes())
    res = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "scripts", "profile_mesh.py"), "--workspace",
                          str(workspace), "--device", "cpu", "--repeat", "2", "--mc_resolution", "48", "--unseen",
                          "membrane"],
                         capture_output=True, text=True, cwd=REPO_ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "48^3 lattice" in res.stdout
    seconds = {line.split()[0]: float(line.split()[1]) for line in res.stdout.splitlines()[1:]}
    parts = ["block_corners", "surface_blocks", "upsample", "fill_blocks", "restore_thin_parts", "weld_lattice_points",
             "marching_cubes",
             "extract_surface", "extract_mesh", "component_labels", "drop_unseen", "relax_unseen_part",
             "write_mesh_files", "write_mesh"]
    assert set(parts) <= set(seconds), res.stdout
    assert seconds["write_mesh"] >= max(seconds[p] for p in parts) > 0
    assert seconds["extract_surface"] >= (seconds["fill_blocks"] + seconds["restore_thin_parts"]
                                          + seconds["marching_cubes"])
    assert (mesh.stat().st_mtime_ns, mesh.read_bytes()) == before
    for flags, message in ((["--workspace", str(tmp_path / "none")], "no checkpoint to test"),
                           (["--workspace", str(workspace), "--mc_resolution", "1"], "--mc_resolution: "),
                           (["--workspace", str(workspace), "--repeat", "0"], "--repeat: ")):
        res = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "scripts", "profile_mesh.py"), *flags],
                             capture_output=True, text=True, cwd=REPO_ROOT)
        assert res.returncode == 2 and res.stderr.count("\n") == 1 and res.stderr.startswith("error: "), res.stderr
        assert message in res.stderr
    assert not (tmp_path / "none").exists()


# --------------------------------------------------------------------------
# setup.py files (metadata only: nothing is compiled)
# --------------------------------------------------------------------------

KERNEL_PACKAGES = ["hashencoder", "shencoder", "raymarching"]


@pytest.mark.parametrize("folder, name", [(".", "instant-nsr")]
                         + [(p, f"instant-nsr-{p}") for p in KERNEL_PACKAGES])
def test_setup_files_load(folder, name):
    """Each setup.py finds cuda_build.py and the package's backend.py from its own folder (as pip runs it)."""
    res = subprocess.run([sys.executable, "setup.py", "--name"], cwd=os.path.join(REPO_ROOT, folder),
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == name


@pytest.mark.parametrize("package", KERNEL_PACKAGES)
def test_extension_sources_come_from_backend(package):
    """The prebuilt extension has the JIT build's name, sources and flags."""
    import importlib

    import cuda_build

    backend = importlib.import_module(f"{package}.backend")
    for setup_dir in (REPO_ROOT, os.path.join(REPO_ROOT, package)):
        ext = cuda_build.cuda_extension(os.path.join(REPO_ROOT, package), setup_dir)
        assert ext.name == backend.EXTENSION_NAME
        assert [os.path.basename(s) for s in ext.sources] == backend.SOURCES
        assert all(os.path.isfile(os.path.join(setup_dir, s)) for s in ext.sources)
        assert ext.extra_compile_args == {"cxx": cuda_build.CXX_FLAGS, "nvcc": cuda_build.NVCC_FLAGS}


def run_script(name, argv, capfd):
    """scripts/NAME.py's main(argv) in this process -> (exit code, stdout, stderr lines); a flag argparse refuses
    exits from within. capfd: what native libraries write to file descriptor 2 counts too."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{name}_script", os.path.join(REPO_ROOT, "scripts", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        code = module.main(argv)
    except SystemExit as stop:
        code = stop.code
    out, err = capfd.readouterr()
    return code, out, err.splitlines()


HUGE_OBJ = "v 1e300 0 0\nv 0 1e300 0\nv 0 0 1e300\nf 1 2 3\n"


def bad_scene(scene, folder, world_mat):
    """A copy of the NeuS scene `scene` in `folder` with `world_mat` as its world_mat_0 -> its cameras file."""
    import shutil

    shutil.copytree(scene, folder)
    path = os.path.join(folder, "cameras_sphere.npz")
    with np.load(path) as cams:
        arrays = {key: cams[key] for key in cams.files}
    np.savez(path, **dict(arrays, world_mat_0=world_mat))
    return path


# render_mesh.py arguments ({mesh}, {scene}, {tmp}; --out {tmp}/r.png is added unless given) -> start of the error
RENDER_BAD_ARGUMENTS = {
    "view not a number": (["{mesh}", "{scene}", "--view", "abc"], "--view: invalid non-negative integer"),
    "view negative": (["{mesh}", "{scene}", "--view", "-1"], "--view: invalid non-negative integer"),
    "no arguments": ([], "the following arguments are required: mesh, data"),
    "downscale zero": (["{mesh}", "{scene}", "--downscale", "0"], "--downscale: invalid positive integer"),
    "downscale past the image": (["{mesh}", "{scene}", "--downscale", "1000"],
                                 "{scene}/image/000000.png: 96x72 pixels, too few to downscale by 1000"),
    "out a folder": (["{mesh}", "{scene}", "--out", "{tmp}/x.png"], "{tmp}/x.png: is a folder (--out"),
    "out under a file": (["{mesh}", "{scene}", "--out", "{tmp}/afile/r.png"],
                         "{tmp}/afile/r.png: cannot be written ({tmp}/afile is a file)"),
    "huge vertices": (["{tmp}/huge.obj", "{scene}"], "{tmp}/huge.obj: the mesh has a vertex coordinate of 1e+300"),
    "infinite world_mat": (["{mesh}", "{tmp}/inf"], "{tmp}/inf/cameras_sphere.npz: world_mat_0 contains NaN or Inf"),
    "singular world_mat": (["{mesh}", "{tmp}/singular"],
                           "{tmp}/singular/cameras_sphere.npz: world_mat_0 is singular"),
}


@pytest.mark.parametrize("case", RENDER_BAD_ARGUMENTS)
def test_render_mesh_refuses_bad_input_with_one_line(case, small_scene, tmp_path, capfd):
    """One error line naming the flag or file, exit code 2, no PSNR printed and no picture written."""
    scene = small_scene[0]
    argv, start = RENDER_BAD_ARGUMENTS[case]
    (tmp_path / "x.png").mkdir()
    (tmp_path / "afile").write_text("")
    (tmp_path / "huge.obj").write_text(HUGE_OBJ)
    with np.load(os.path.join(scene, "cameras_sphere.npz")) as cams:
        singular = cams["world_mat_0"].copy()
    singular[1, :3] = 0.0  # the rank of K R drops: a zero focal length
    bad_scene(scene, tmp_path / "inf", np.full((4, 4), np.inf))
    bad_scene(scene, tmp_path / "singular", singular)
    fill = {"mesh": os.path.join(scene, "gt_mesh.ply"), "scene": scene, "tmp": str(tmp_path)}
    argv = [arg.format(**fill) for arg in argv] + ([] if "--out" in argv or not argv else
                                                   ["--out", str(tmp_path / "r.png"), "--psnr"])
    code, out, err = run_script("render_mesh", argv, capfd)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: " + start.format(**fill)), err
    assert out == "" and not (tmp_path / "r.png").exists() and not any((tmp_path / "x.png").iterdir())
    assert not (tmp_path / "afile").read_text()


def test_render_mesh_draws_a_downscaled_view(small_scene, tmp_path, capfd):
    """The valid counterpart of the cases above: the same flags, within bounds, render."""
    scene = small_scene[0]
    out_png = tmp_path / "sub" / "r.png"
    argv = [os.path.join(scene, "gt_mesh.ply"), scene, "--view", "1", "--downscale", "2", "--out", str(out_png)]
    code, out, err = run_script("render_mesh", argv, capfd)
    assert (code, err) == (0, []) and out.startswith(f"{out_png}: ")
    assert cv2.imread(str(out_png)).shape == (36, 3 * 48, 3)


# a textured tetrahedron (UVs; the texture comes from --texture)
UV_OBJ = ("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nvt 0 0\nvt 1 0\nvt 0 1\nvt 1 1\n"
          "f 1/1 3/3 2/2\nf 1/1 2/2 4/4\nf 1/1 4/4 3/3\nf 2/2 3/3 4/4\n")
TINY_SCENE = ["--views", "1", "--width", "8", "--height", "6", "--gt_resolution", "8", "--formats", "neus"]
# make_synthetic.py arguments after OUT ({tmp}: the test's folder) -> the start of the one error line
SYNTHETIC_BAD_ARGUMENTS = {
    "views not a number": (["--views", "abc"], "--views: invalid positive integer"),
    "views zero": (["--views", "0"], "--views: invalid positive integer"),
    "views negative": (["--views", "-3"], "--views: invalid positive integer"),
    "width zero": (["--width", "0"], "--width: invalid positive integer"),
    "height negative": (["--height", "-5"], "--height: invalid positive integer"),
    "radius zero": (["--radius_mm", "0"], "--radius_mm: invalid positive number"),
    "radius negative": (["--radius_mm", "-1"], "--radius_mm: invalid positive number"),
    "radius infinite": (["--radius_mm", "inf"], "--radius_mm: invalid positive number"),
    "radius NaN": (["--radius_mm", "nan"], "--radius_mm: invalid positive number"),
    "seed negative": (["--seed", "-1"], "--seed: invalid non-negative integer"),
    "gt_resolution zero": (["--gt_resolution", "0"], "--gt_resolution: invalid positive integer"),
    "gt_resolution negative": (["--gt_resolution", "-2"], "--gt_resolution: invalid positive integer"),
    "gt_resolution huge": (["--gt_resolution", "100000"], "--gt_resolution: at most 1024, got 100000"),
    "width huge": (["--width", "1000000"], "--width: at most 8192, got 1000000"),
    "height huge": (["--height", "1000000"], "--height: at most 8192, got 1000000"),
    "views huge": (["--views", "100000000"], "--views: at most 1000, got 100000000"),
    "background unknown": (["--background", "bogus"], "--background: invalid choice: 'bogus'"),
    "formats unknown": (["--formats", "neus,bogus"], "--formats: bogus given, expected a comma list of neus"),
    "formats empty": (["--formats", ""], "--formats: none given, expected a comma list of neus"),
    "shape unknown": (["--shape", "bogus"], "bogus: --shape is neither a shape name nor a mesh file"),
    "shape not a mesh": (["--shape", "{tmp}/garbage.ply"], "{tmp}/garbage.ply: unreadable --shape mesh"),
    "shape points only": (["--shape", "{tmp}/points.ply"], "{tmp}/points.ply: the --shape mesh has no triangles"),
    "shape huge": (["--shape", "{tmp}/huge.obj"], "{tmp}/huge.obj: the --shape mesh has a vertex coordinate"),
    "texture missing": (["--shape", "{tmp}/uv.obj", "--texture", "{tmp}/nope.png"],
                        "{tmp}/nope.png: no such file (a --texture image)"),
    "texture damaged": (["--shape", "{tmp}/uv.obj", "--texture", "{tmp}/bad.png"],
                        "{tmp}/bad.png: unreadable texture"),
}


@pytest.mark.parametrize("case", SYNTHETIC_BAD_ARGUMENTS)
def test_make_synthetic_refuses_bad_input_before_writing(case, tmp_path, capfd):
    """One error line naming the flag or file (no decoder message before it), exit code 2, and no OUT left."""
    argv, start = SYNTHETIC_BAD_ARGUMENTS[case]
    (tmp_path / "garbage.ply").write_text("garbage\n")
    (tmp_path / "points.ply").write_text("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\n"
                                         "property float y\nproperty float z\nend_header\n0 0 0\n1 0 0\n0 1 0\n")
    (tmp_path / "huge.obj").write_text(HUGE_OBJ)
    (tmp_path / "uv.obj").write_text(UV_OBJ)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n damaged")
    out_dir = tmp_path / "out" / "scene"
    fill = {"tmp": str(tmp_path)}
    code, out, err = run_script("make_synthetic", [str(out_dir), *TINY_SCENE, *[a.format(**fill) for a in argv]],
                                capfd)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: " + start.format(**fill)), err
    assert out == "" and not (tmp_path / "out").exists()


@pytest.mark.parametrize("out", ["afile", "afile/scene"])
def test_make_synthetic_refuses_an_out_that_is_or_lies_under_a_file(out, tmp_path, capfd):
    (tmp_path / "afile").write_text("kept")
    code, stdout, err = run_script("make_synthetic", [str(tmp_path / out), *TINY_SCENE], capfd)
    assert code == 2 and err == [f"error: {tmp_path / out}/scene.json: cannot be written ({tmp_path}/afile is a "
                                 f"file)"], err
    assert stdout == "" and (tmp_path / "afile").read_text() == "kept"


def test_make_synthetic_makes_a_tiny_textured_scene(tmp_path, capfd):
    """The valid counterpart of the cases above: the tetrahedron with a readable --texture is rendered."""
    (tmp_path / "uv.obj").write_text(UV_OBJ)
    cv2.imwrite(str(tmp_path / "tex.png"), np.full((4, 4, 3), 200, np.uint8))
    code, out, err = run_script("make_synthetic", [str(tmp_path / "out"), *TINY_SCENE, "--shape",
                                                   str(tmp_path / "uv.obj"), "--texture", str(tmp_path / "tex.png")],
                                capfd)
    assert (code, err) == (0, [])
    assert json.loads((tmp_path / "out" / "scene.json").read_text())["textured_by"] == "uv_texture"


def test_make_scene_removes_the_out_it_made_when_writing_fails(tmp_path, monkeypatch):
    """A failure after OUT was created (here: writing the ground-truth mesh) leaves no half-written scene."""
    import nerf.synthetic.scene as scene_module

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(scene_module, "write_gt_meshes", fail)
    with pytest.raises(OSError, match="disk full"):
        make_scene(str(tmp_path / "new" / "out"), views=1, width=8, height=6, gt_resolution=8, formats=("neus",))
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------------------
# Broken NeuS cameras files, scale_mats and posing records (eval_poses, render_mesh, eval_mesh --seen)


def neus_arrays(scene):
    with np.load(os.path.join(scene, "cameras_sphere.npz")) as cams:
        return {key: cams[key] for key in cams.files}


def npz_bytes(tmp_path, **arrays):
    np.savez(tmp_path / "tmp.npz", **arrays)
    data = (tmp_path / "tmp.npz").read_bytes()
    os.remove(tmp_path / "tmp.npz")
    return data


def npy_bytes(tmp_path, array):
    np.save(tmp_path / "tmp.npy", array)
    data = (tmp_path / "tmp.npy").read_bytes()
    os.remove(tmp_path / "tmp.npy")
    return data


def scaled(m, factor):
    m = m.copy()
    m[:3, :3] *= factor
    return m


# what replaces a scene's cameras_sphere.npz: f(tmp_path, arrays of the scene's file) -> bytes, or None for a
# 12 GB sparse file; -> the problem the error line names
BROKEN_CAMERA_FILES = {
    "text": (lambda t, a: b"not a zip\n", "unreadable cameras file (not an .npz archive)"),
    "truncated": (lambda t, a: npz_bytes(t, **a)[:1000], "unreadable cameras file (BadZipFile)"),
    "lone .npy": (lambda t, a: npy_bytes(t, np.eye(4)), "a single .npy array, expected an .npz archive"),
    "12 GB of zeros": (None, "unreadable cameras file (not an .npz archive)"),
    "pickled world_mat": (lambda t, a: npz_bytes(t, **dict(a, world_mat_0=np.array([[1, "x"]], dtype=object))),
                          "world_mat_0 is an array of Python objects (pickled)"),
}
# scale_mat_0 of the reference of eval_poses: f(the scene's) -> the problem
BAD_SCALE_MATS = {
    "zero": (lambda m: np.zeros((4, 4)), "scale_mat_0 is singular"),
    "1e-300 scale": (lambda m: scaled(m, 1e-300), "scale_mat_0 is singular"),
    "1e-150 scale": (lambda m: scaled(m, 1e-150), "scale_mat_0 radius: 0.0 is not a number from 1e-09"),
    "sheared": (lambda m: m @ np.diag([1.0, 3.0, 1.0, 1.0]), "scale_mat_0 is not a similarity"),
    "projective": (lambda m: np.vstack([m[:3], [0.0, 0.0, 0.01, 1.0]]), "scale_mat_0 has bottom row"),
}


def write_cameras(folder, content):
    """content (bytes) as folder/cameras_sphere.npz; None: a 12 GB sparse file (no disk used)."""
    path = folder / "cameras_sphere.npz"
    if content is None:
        with open(path, "wb") as f:
            f.truncate(12 << 30)
    else:
        path.write_bytes(content)
    return path


def reference_folder(scene, folder):
    """A NeuS folder with the images of `scene` (a link) and its cameras file, for eval_poses."""
    folder.mkdir()
    os.symlink(os.path.join(scene, "image"), folder / "image")
    write_cameras(folder, open(os.path.join(scene, "cameras_sphere.npz"), "rb").read())
    return folder


def assert_refused(code, out, err, start, *kept):
    """Exit code 2, one line `error: START...`, nothing printed, and the files `kept` (path, bytes) unchanged."""
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {start}"), err
    assert out == ""
    for path, data in kept:
        assert open(path, "rb").read() == data


@pytest.mark.parametrize("case", BROKEN_CAMERA_FILES)
def test_eval_poses_refuses_a_broken_reference_cameras_file(case, small_scene, tmp_path, capfd):
    make, problem = BROKEN_CAMERA_FILES[case]
    ref = reference_folder(small_scene[0], tmp_path / "ref")
    path = write_cameras(ref, None if make is None else make(tmp_path, neus_arrays(small_scene[0])))
    code, out, err = run_script("eval_poses", [small_scene[0], str(ref), "--json", str(tmp_path / "r.json")], capfd)
    assert_refused(code, out, err, f"{path}: {problem}")
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("case", BAD_SCALE_MATS)
def test_eval_poses_refuses_a_reference_scale_mat_that_is_no_similarity(case, small_scene, tmp_path, capfd):
    change, problem = BAD_SCALE_MATS[case]
    arrays = neus_arrays(small_scene[0])
    ref = reference_folder(small_scene[0], tmp_path / "ref")
    path = write_cameras(ref, npz_bytes(tmp_path, **dict(arrays, scale_mat_0=change(arrays["scale_mat_0"]))))
    code, out, err = run_script("eval_poses", [small_scene[0], str(ref)], capfd)
    assert_refused(code, out, err, f"{path}: {problem}")


def test_eval_poses_refuses_a_huge_posing_record(small_scene, tmp_path, capfd):
    """Read whole, a 12 GB posing.json would exhaust the memory: one just over the bound stands for it."""
    from nerf.posing.compare import MAX_POSING_RECORD_BYTES

    posed = reference_folder(small_scene[0], tmp_path / "posed")
    with open(posed / "posing.json", "wb") as f:
        f.truncate(MAX_POSING_RECORD_BYTES + 1)  # sparse: no disk used
    code, out, err = run_script("eval_poses", [str(posed), small_scene[0]], capfd)
    assert_refused(code, out, err, f"{posed / 'posing.json'}: {MAX_POSING_RECORD_BYTES + 1} bytes, too large for a "
                                   f"posing record")


@pytest.mark.parametrize("case", ["truncated", "lone .npy", "pickled world_mat"])
@pytest.mark.parametrize("script", ["render_mesh", "eval_mesh"])
def test_mesh_tools_refuse_a_broken_scene_cameras_file(script, case, small_scene, tmp_path, capfd):
    """render_mesh's scene, and eval_mesh's --seen auto (the scene GT lies in)."""
    import shutil

    make, problem = BROKEN_CAMERA_FILES[case]
    scene = tmp_path / "scene"
    shutil.copytree(small_scene[0], scene)
    path = write_cameras(scene, make(tmp_path, neus_arrays(small_scene[0])))
    gt = str(scene / "gt_mesh.ply")
    argv = ([gt, str(scene), "--out", str(tmp_path / "r.png")] if script == "render_mesh" else
            [gt, gt, "--n_points", "1000", "--json", str(tmp_path / "m.json")])
    code, out, err = run_script(script, argv, capfd)
    assert_refused(code, out, err, f"{path}: {problem}")
    assert sorted(os.listdir(tmp_path)) == ["scene"]


# ----------------------------------------------------------------------------------------------------------
# eval_dtu: --dilation and the ObsMask's Res and BB bounded


def dtu_obs_mask(folder, bb, res):
    """A DTU reference folder holding only ObsMask1_10.mat, with BB and Res as given: what is read first."""
    from scipy.io import savemat

    (folder / "ObsMask").mkdir(parents=True)
    savemat(folder / "ObsMask" / "ObsMask1_10.mat", {"ObsMask": np.ones((2, 2, 2), bool), "BB": np.array(bb, float),
                                                     "Res": np.array([[res]])})
    return folder / "ObsMask" / "ObsMask1_10.mat"


@pytest.mark.parametrize("bb, res, problem", [
    ([[0, 0, 0], [1e300] * 3], 1e-300, "variable BB has a coordinate of 1e+300, beyond +-1e+12 mm"),
    ([[0, 0, 0], [1, 1, 1]], 1e-300, "variable Res is 1e-300 mm, expected a voxel size from 0.001 to 10000 mm"),
    ([[0, 0, 0], [1, 1, 1]], 1e300, "variable Res is 1e+300 mm, expected a voxel size"),
], ids=["BB 1e300", "Res 1e-300", "Res 1e300"])
def test_eval_dtu_refuses_an_obs_mask_beyond_the_arithmetic(bb, res, problem, small_scene, tmp_path, capfd):
    path = dtu_obs_mask(tmp_path / "dtu", bb, res)
    mesh = os.path.join(small_scene[0], "gt_mesh.ply")
    code, out, err = run_script("eval_dtu", [mesh, "--scan", "1", "--dtu", str(tmp_path / "dtu")], capfd)
    assert_refused(code, out, err, f"{path}: {problem}")


@pytest.mark.parametrize("dilation", ["101", "100000", str(10**12)])
def test_eval_dtu_bounds_the_dilation(dilation, small_scene, tmp_path, capfd):
    """Refused before anything is read: a huge disk runs out of memory, or takes minutes a view."""
    mesh = os.path.join(small_scene[0], "gt_mesh.ply")
    code, out, err = run_script("eval_dtu", [mesh, "--scan", "1", "--dtu", str(tmp_path), "--data", small_scene[0],
                                             "--dilation", dilation], capfd)
    assert_refused(code, out, err, f"--dilation: {dilation} px is more than 100 px")


# ----------------------------------------------------------------------------------------------------------
# viewer_demo: one error line for its flags and the training flags, before anything is made


VIEWER_DEMO_BAD_FLAGS = {
    "port not a number": (["--port", "abc"], "--port: invalid non-negative integer value: 'abc'"),
    "linger negative": (["--linger", "-1"], "--linger: invalid non-negative number value: '-1'"),
    "linger NaN": (["--linger", "nan"], "--linger: invalid non-negative number value: 'nan'"),
    "linger huge": (["--linger", "1e300"], "--linger: 1e+300 s is more than 1e+09 s"),
    "seconds NaN": (["--seconds", "nan"], "--seconds: invalid non-negative number value: 'nan'"),
    "measure negative": (["--measure", "-5"], "--measure: invalid non-negative integer value: '-5'"),
    "max_share zero": (["--max_share", "0"], "--max_share: invalid positive number value: '0'"),
    "max_share above 1": (["--max_share", "2"], "--max_share: 2 is not in (0, 1]"),
    # an address no machine has (TEST-NET-1, RFC 5737): viser would wait forever to listen on it
    "host not of this machine": (["--host", "192.0.2.1"], "--host: cannot listen on '192.0.2.1'"),
    "training flag not a number": (["--num_rays", "abc"], "--num_rays: invalid int value: 'abc'"),
    "unknown flag": (["--bogus"], "unrecognized arguments: --bogus"),
}


TRAINING_FLAG_CASES = ["training flag not a number", "unknown flag"]


@pytest.mark.parametrize("case, data", [(case, "given") for case in VIEWER_DEMO_BAD_FLAGS] +
                         [(case, "synthetic") for case in TRAINING_FLAG_CASES])
def test_viewer_demo_refuses_bad_flags_before_anything_is_made(case, data, tmp_path, capfd):
    """With a scene that does not exist the error must still be the flag's (it is checked first), and without one
    a bad training flag must be found before the synthetic scene is made (or the workspace)."""
    argv, start = VIEWER_DEMO_BAD_FLAGS[case]
    scene = ["--data", str(tmp_path / "nowhere")] if data == "given" else []
    code, out, err = run_script("viewer_demo", ["--workspace", str(tmp_path / "ws"), "--device", "cpu", *scene,
                                                *argv], capfd)
    assert_refused(code, out, err, start)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("workspace", ["new", "existing"])
def test_viewer_demo_removes_the_synthetic_scene_when_the_set_up_fails(workspace, tmp_path, capfd):
    """A setting refused once the scene is made (a region of interest no camera sees) leaves nothing behind: not
    the workspace the run made, nor the scene in a workspace that was there."""
    if workspace == "existing":
        (tmp_path / "ws").mkdir()
    code, out, err = run_script("viewer_demo", ["--workspace", str(tmp_path / "ws"), "--device", "cpu",
                                                "--center", "1e6,1e6,1e6", "--radius", "1"], capfd)
    assert_refused(code, out, err, "--center: no training camera sees the region of interest")
    assert os.listdir(tmp_path) == ([] if workspace == "new" else ["ws"])
    assert workspace == "new" or os.listdir(tmp_path / "ws") == []


# ----------------------------------------------------------------------------------------------------------
# An output flag that names an input: refused before the run destroys it


def test_check_not_an_input_knows_a_file_by_any_of_its_names(tmp_path):
    from nerf.cli import check_not_an_input
    from nerf.input_checks import DatasetError

    (tmp_path / "image").mkdir()
    (tmp_path / "image" / "0.png").write_bytes(b"photo")
    (tmp_path / "mesh.ply").write_text("mesh")
    (tmp_path / "other.json").write_text("{}")
    os.symlink(tmp_path / "mesh.ply", tmp_path / "link.ply")
    inputs = [str(tmp_path / "mesh.ply"), str(tmp_path / "image"), None, str(tmp_path / "missing.npz")]
    for output in ("link.ply", "mesh.ply", "image/../mesh.ply", "image/0.png"):
        with pytest.raises(DatasetError, match=r"--out names an input \("):
            check_not_an_input(str(tmp_path / output), "--out", inputs)
    for output in ("other.json", "new.json", "image/new.png"):  # another file, or none yet
        check_not_an_input(str(tmp_path / output), "--out", inputs)


def posed_copy(scene, folder):
    """A posed folder of `scene` for eval_poses: its images (a link), cameras file and a posing.json."""
    reference_folder(scene, folder)
    names = sorted(os.listdir(os.path.join(scene, "image")))
    (folder / "posing.json").write_text(json.dumps({"views": [{"source": name} for name in names]}))
    return folder


# script, its arguments ({scene}: a copy of the small scene, {tmp}: the test's folder), the output flag, the input
# it names
OUTPUT_IS_INPUT = {
    "eval_poses --json the posing record": (
        "eval_poses", ["{tmp}/posed", "{scene}", "--json", "{tmp}/posed/posing.json"], "--json",
        "{tmp}/posed/posing.json"),
    "eval_poses --json the reference cameras": (
        "eval_poses", ["{tmp}/posed", "{scene}", "--json", "{scene}/cameras_sphere.npz"], "--json",
        "{scene}/cameras_sphere.npz"),
    "eval_mesh --json the GT mesh": (
        "eval_mesh", ["{scene}/gt_mesh.ply", "{scene}/gt_mesh.ply", "--n_points", "1000", "--json",
                      "{scene}/gt_mesh.ply"], "--json", "{scene}/gt_mesh.ply"),
    "render_mesh --out a photo of the scene": (
        "render_mesh", ["{scene}/gt_mesh.ply", "{scene}", "--out", "{scene}/image/000000.png"], "--out",
        "{scene}/image"),
    "render_mesh --out an OBJ's texture": (
        "render_mesh", ["{tmp}/tex/mesh.obj", "{scene}", "--out", "{tmp}/tex/tex.png"], "--out", "{tmp}/tex/tex.png"),
    "eval_mesh --json an OBJ's material library": (
        "eval_mesh", ["{scene}/gt_mesh.ply", "{tmp}/tex/mesh.obj", "--n_points", "1000", "--json",
                      "{tmp}/tex/mesh.mtl"], "--json", "{tmp}/tex/mesh.mtl"),
    "eval_mesh --json an OBJ's second material library on one line": (
        "eval_mesh", ["{scene}/gt_mesh.ply", "{tmp}/tex/mesh.obj", "--n_points", "1000", "--json",
                      "{tmp}/tex/more.mtl"], "--json", "{tmp}/tex/more.mtl"),
    "eval_dtu --out the mesh": (
        "eval_dtu", ["{scene}/gt_mesh.ply", "--scan", "1", "--dtu", "{tmp}/dtu", "--out", "{scene}/gt_mesh.ply"],
        "--out", "{scene}/gt_mesh.ply"),
    "eval_dtu --out the ObsMask": (
        "eval_dtu", ["{scene}/gt_mesh.ply", "--scan", "1", "--dtu", "{tmp}/dtu", "--out",
                     "{tmp}/dtu/ObsMask/ObsMask1_10.mat"], "--out", "{tmp}/dtu/ObsMask/ObsMask1_10.mat"),
    "eval_dtu --vis the mesh's folder": (
        "eval_dtu", ["{tmp}/m/accuracy_points.ply", "--scan", "1", "--dtu", "{tmp}/dtu", "--vis", "{tmp}/m"],
        "--vis", "{tmp}/m/accuracy_points.ply"),
}


@pytest.mark.parametrize("case", OUTPUT_IS_INPUT)
def test_an_output_that_is_an_input_is_refused(case, small_scene, tmp_path, capfd):
    import shutil

    script, argv, flag, source = OUTPUT_IS_INPUT[case]
    scene = tmp_path / "scene"
    shutil.copytree(small_scene[0], scene)
    posed_copy(small_scene[0], tmp_path / "posed")
    dtu_obs_mask(tmp_path / "dtu", [[0, 0, 0], [1, 1, 1]], 1.0)
    (tmp_path / "m").mkdir()
    shutil.copy(scene / "gt_mesh.ply", tmp_path / "m" / "accuracy_points.ply")
    (tmp_path / "tex").mkdir()  # a textured OBJ: its MTL and texture are read with it
    (tmp_path / "tex" / "mesh.obj").write_text("mtllib mesh.mtl more.mtl\nusemtl m\n" + UV_OBJ)
    (tmp_path / "tex" / "mesh.mtl").write_text("newmtl m\nKd 1 1 1\nmap_Kd tex.png\n")
    (tmp_path / "tex" / "more.mtl").write_text("newmtl n\nKd 1 0 0\n")
    cv2.imwrite(str(tmp_path / "tex" / "tex.png"), np.full((4, 4, 3), 200, np.uint8))
    fill = {"scene": str(scene), "tmp": str(tmp_path)}
    argv = [a.format(**fill) for a in argv]
    output = (argv[argv.index(flag) + 1] + ("/accuracy_points.ply" if flag == "--vis" else ""))
    before = open(output, "rb").read()
    code, out, err = run_script(script, argv, capfd)
    assert_refused(code, out, err, f"{output}: {flag} names an input ({source.format(**fill)})", (output, before))
