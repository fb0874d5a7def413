"""End to end on CPU: a short training reconstructs a known shape; `--test` needs no flags repeated and refuses
flags that would change the model; resume is exact; divergence is caught."""
import json
import os

import numpy as np
import pytest
import torch
import trimesh

import main_sdf
from nerf.checkpoint import latest_checkpoint, list_checkpoints
from nerf.mesh_metrics import evaluate_mesh
from nerf.trainer import TrainingDiverged
from train_helpers import TINY_MODEL, make_trainer

# The short training below, and the bound its mesh must meet (torus of radius 200 mm, 16 views of 96x72).
TRAIN_ARGS = ["--iters", "400", "--num_rays", "256", "--warmup", "50", "--mc_resolution", "96", "--num_levels", "6",
              "--log2_hashmap_size", "14", "--desired_resolution", "128", "--num_steps", "24", "--upsample_steps", "16",
              "--hidden_dim", "32", "--eval_every", "200", "--ckpt_every", "200", "--device", "cpu", "--quiet"]
CHAMFER_BOUND_MM = 6.0


@pytest.fixture(scope="module")
def trained(small_scene, tmp_path_factory):
    root, info = small_scene
    workspace = str(tmp_path_factory.mktemp("ws"))
    assert main_sdf.main([root, "--workspace", workspace] + TRAIN_ARGS) == 0
    return root, info, workspace


def test_short_training_reconstructs_the_shape(trained):
    root, info, workspace = trained
    mesh_path = os.path.join(workspace, "meshes", "mesh.ply")
    metrics = evaluate_mesh(mesh_path, os.path.join(root, "gt_mesh.ply"), n_points=30000, tau=5.0)
    print(metrics)
    assert metrics["chamfer"] < CHAMFER_BOUND_MM
    assert metrics["fscore"] > 0.8
    mesh = trimesh.load(mesh_path)
    assert mesh.is_watertight
    assert mesh.visual.vertex_colors.shape[0] == len(mesh.vertices)
    timings = json.load(open(os.path.join(workspace, "timings.json")))
    stages = ["start-up", "data", "model", "training", "mesh"]
    assert list(timings) == stages + ["total", "peak_gpu_mib", "peak_cpu_mib"]
    assert timings["training"] > 0 and abs(sum(timings[s] for s in stages) - timings["total"]) < 0.01
    assert timings["peak_gpu_mib"] == {} and 100 < timings["peak_cpu_mib"] < 24 * 1024  # a CPU run
    assert sorted(os.listdir(os.path.join(workspace, "validation"))) == ["step_0000200.png"]


def test_test_mode_needs_no_flags_and_writes_results_in_world_units(trained):
    root, info, workspace = trained
    # No DATA and no training flags: the checkpoint knows the scene and the model.
    assert main_sdf.main(["--workspace", workspace, "--test", "--device", "cpu", "--quiet"]) == 0
    results = os.path.join(workspace, "results")
    metrics = json.load(open(os.path.join(results, "metrics.json")))
    assert len(metrics["views"]) == 2 and metrics["mean_psnr"] > 18 and metrics["mean_ssim"] > 0.5
    assert metrics["step"] == 400
    for name in metrics["views"]:
        for kind in ("rgb", "normal", "depth"):
            assert os.path.isfile(os.path.join(results, f"{name}_{kind}.png"))
    # The orbit video of the CPU preset: 24 frames of RGB | normals at a quarter of the 96x72 views (made even).
    imageio = pytest.importorskip("imageio.v2")
    pytest.importorskip("imageio_ffmpeg")
    frames = imageio.mimread(os.path.join(results, "orbit.mp4"), memtest=False)
    assert len(frames) == 24 and frames[0].shape == (18, 48, 3)
    # Depth is in mm: the object's surface lies between (camera distance - radius) and (camera distance + radius).
    cams = np.load(os.path.join(root, "cameras_sphere.npz"))
    name = sorted(metrics["views"])[0]
    depth = np.load(os.path.join(results, f"{name}_depth.npy"))
    import cv2

    _, rotation, centre = cv2.decomposeProjectionMatrix(cams[f"world_mat_{int(name)}"][:3])[:3]
    distance = np.linalg.norm((centre[:3] / centre[3])[:, 0] - np.array(info["object_centre"]))
    valid = depth[np.isfinite(depth)]
    assert valid.size > 100
    assert distance - info["object_radius"] - 5 < np.median(valid) < distance + 5
    # The mesh is in mm too, around the object's centre.
    mesh = trimesh.load(os.path.join(workspace, "meshes", "mesh.ply"))
    assert np.linalg.norm(mesh.vertices - np.array(info["object_centre"]), axis=1).max() < info["object_radius"] * 1.1
    # The same training flags again are no change, and eval-only flags are allowed.
    assert main_sdf.main([root, "--workspace", workspace, "--test", "--eval_chunk", "1000"] + TRAIN_ARGS) == 0


def test_cameras_without_an_up_direction_leave_out_only_the_orbit_video(trained, tmp_path, capsys, monkeypatch):
    """Cameras rolled different ways give the orbit no axis: a warning line, the rest of --test written, exit 0
    (before: a traceback after the mesh)."""
    pytest.importorskip("imageio_ffmpeg")
    import shutil

    import nerf.orbit

    def no_axis(c2w):
        raise nerf.orbit.NoOrbitAxis("the cameras' up vectors cancel out")

    monkeypatch.setattr(nerf.orbit, "orbit_axis", no_axis)
    copy = str(tmp_path / "ws")
    shutil.copytree(trained[2], copy)
    shutil.rmtree(os.path.join(copy, "results"), ignore_errors=True)
    assert main_sdf.main(["--workspace", copy, "--test", "--device", "cpu", "--quiet"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["warning: no orbit video: the cameras' up vectors cancel out"], err
    assert os.path.isfile(os.path.join(copy, "results", "metrics.json"))
    assert not os.path.exists(os.path.join(copy, "results", "orbit.mp4"))


@pytest.mark.parametrize("flag", [["--num_levels", "16"], ["--cuda_ray"], ["--hidden_dim", "64"], ["--iters", "9"]])
def test_test_mode_refuses_flags_that_change_the_model(trained, flag, capsys, tmp_path):
    _, _, workspace = trained
    before = {p: os.path.getmtime(os.path.join(d, p)) for d, _, files in os.walk(workspace) for p in files}
    assert main_sdf.main(["--workspace", workspace, "--test", "--device", "cpu", "--quiet"] + flag) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {flag[0]}: the checkpoint was trained with"), err
    after = {p: os.path.getmtime(os.path.join(d, p)) for d, _, files in os.walk(workspace) for p in files}
    assert after == before  # nothing written


def test_export_settings_write_decimated_and_textured_meshes(trained, tmp_path):
    """--test with export settings only: OBJ + MTL + PNG and GLB with a baked texture, decimated, in world
    units; the checkpoint's workspace is copied so that the other tests keep their mesh."""
    pytest.importorskip("xatlas")
    pytest.importorskip("fast_simplification")
    import shutil

    root, info, workspace = trained
    copy = str(tmp_path / "ws")
    shutil.copytree(workspace, copy)
    assert main_sdf.main(["--workspace", copy, "--test", "--device", "cpu", "--quiet", "--video_frames", "0",
                          "--mesh_format", "ply,obj,glb", "--mesh_faces", "800", "--texture", "128",
                          "--mesh_clean", "0.05"]) == 0
    meshes = os.path.join(copy, "meshes")
    assert sorted(os.listdir(meshes)) == ["mesh.glb", "mesh.mtl", "mesh.obj", "mesh.ply", "mesh.png"]
    for name in ("mesh.ply", "mesh.obj", "mesh.glb"):
        mesh = trimesh.load(os.path.join(meshes, name), force="mesh", process=False)
        assert 600 < len(mesh.faces) <= 880, (name, len(mesh.faces))
        distance = np.linalg.norm(mesh.vertices - np.array(info["object_centre"]), axis=1)
        assert distance.max() < 1.2 * info["object_radius"]  # world units (mm), around the object
    textured = trimesh.load(os.path.join(meshes, "mesh.obj"), force="mesh", process=False)
    assert textured.visual.kind == "texture" and textured.visual.material.image.size == (128, 128)


def test_train_step_advances_the_step(small_scene, tmp_path):
    root, _ = small_scene
    _, _, trainer = make_trainer(root, str(tmp_path / "w"), "--iters", "5", *TINY_MODEL)
    trainer.train_step()
    trainer.train_step()
    assert trainer.step == 2


@pytest.mark.parametrize("extra", [[], ["--error_sampling", "0.5"], ["--error_sampling", "0.5", "--cuda_ray"]],
                         ids=["uniform", "error_map", "error_map_cuda_ray"])
def test_resume_after_interrupt_matches_an_uninterrupted_run(small_scene, tmp_path, extra):
    """(With --error_sampling the error map travels in the checkpoint, and under --cuda_ray the guided rays'
    samples: the resumed run draws the same rays.)"""
    root, _ = small_scene
    flags = ["--iters", "20", "--ckpt_every", "10", *TINY_MODEL, *extra]
    _, _, straight = make_trainer(root, str(tmp_path / "a"), *flags)
    straight.train()
    _, _, interrupted = make_trainer(root, str(tmp_path / "b"), *flags)
    interrupted.train(until_step=10)
    # A half-written checkpoint from a killed save never counts as the latest one.
    open(tmp_path / "b" / "checkpoints" / ".tmp-ckpt_0000015.pth", "wb").close()
    assert latest_checkpoint(str(tmp_path / "b" / "checkpoints")).endswith("ckpt_0000010.pth")
    _, _, resumed = make_trainer(root, str(tmp_path / "b"), *flags)  # resumes the latest checkpoint
    assert resumed.step == 10
    resumed.train()
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert [os.path.basename(p) for p in list_checkpoints(str(tmp_path / "b" / "checkpoints"))] == [
        "ckpt_0000010.pth", "ckpt_0000020.pth"]


def test_divergence_recovers_from_the_last_checkpoint(small_scene, tmp_path):
    root, _ = small_scene
    _, _, trainer = make_trainer(root, str(tmp_path / "w"), "--iters", "20", "--ckpt_every", "10", *TINY_MODEL)
    trainer.train(until_step=10)
    with torch.no_grad():
        trainer.model.sdf_net.encoder.embeddings.fill_(float("nan"))
    trainer.train()
    assert trainer.step == 20 and trainer.recoveries == 1 and trainer.lr_scale == 0.5
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_divergence_that_persists_stops_with_a_clear_message(small_scene, tmp_path, monkeypatch):
    root, _ = small_scene
    _, _, trainer = make_trainer(root, str(tmp_path / "w"), "--iters", "20", "--ckpt_every", "10", *TINY_MODEL)
    trainer.train(until_step=10)
    sdf_forward = trainer.model.sdf_net.forward
    monkeypatch.setattr(trainer.model.sdf_net, "forward",
                        lambda x: tuple(t * float("nan") for t in sdf_forward(x)))
    with pytest.raises(TrainingDiverged, match="training diverged at step 10"):
        trainer.train()
    # No checkpoint holds the non-finite weights.
    assert [os.path.basename(p) for p in list_checkpoints(trainer.ckpt_dir)] == ["ckpt_0000010.pth"]


@pytest.mark.parametrize("variant", [["--cuda_ray", "--grid_warmup_until", "0.3", "--grid_update_every", "4"],
                                     ["--normals", "fd"]])
def test_cuda_ray_and_fd_normals_train_end_to_end_on_cpu(small_scene, tmp_path, variant):
    """The --cuda_ray sampler (the kernels' twins on CPU) and finite-difference normals through the whole CLI,
    then --test from the checkpoint alone."""
    root, _ = small_scene
    workspace = str(tmp_path / "w")
    flags = ["--iters", "12", "--ckpt_every", "6", "--mc_resolution", "32", "--device", "cpu", "--quiet",
             *TINY_MODEL, *variant]
    assert main_sdf.main([root, "--workspace", workspace] + flags) == 0
    stats = json.load(open(os.path.join(workspace, "train_stats.json")))
    assert stats["steps"] == 12 and 0 < stats["samples_per_step"] <= 64 * 32
    assert 10 < stats["inv_s"] < 40  # the sharpness it ended at: 12 steps from exp(10 * 0.3) = 20
    assert main_sdf.main(["--workspace", workspace, "--test", "--device", "cpu", "--quiet"]) == 0
    assert os.path.isfile(os.path.join(workspace, "results", "metrics.json"))


def test_a_short_run_validates_once_and_prints_a_summary(small_scene, tmp_path, capsys):
    """--eval_every larger than the run (the CPU demo's case) still gives one validation image, at half-way;
    the run ends with a summary line; a second mesh says that it replaced the first."""
    root, _ = small_scene
    workspace = tmp_path / "w"
    args = [root, "--workspace", str(workspace), "--iters", "8", "--mc_resolution", "32", "--device", "cpu",
            "--quiet", *TINY_MODEL, "--eval_every", "2500"]
    assert main_sdf.main(args) == 0
    assert sorted(os.listdir(workspace / "validation")) == ["step_0000004.png"]
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("trained 8 steps in ") and ", validation PSNR " in out[0] and out[0].endswith("step 4")
    assert out[1] == f"mesh: {workspace / 'meshes' / 'mesh.ply'}"
    assert main_sdf.main(["--workspace", str(workspace), "--test", "--device", "cpu", "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("(replaced the mesh that was there)")


def test_the_mesh_stage_modules_are_imported_while_training(small_scene, tmp_path, monkeypatch):
    """trimesh and friends are loaded by a background thread during training, not by the mesh stage."""
    import sys

    import nerf.run

    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "probe_mesh_stage_import.py").write_text(
        "import threading\nTHREAD = threading.current_thread().name\n")
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    monkeypatch.setattr(nerf.run, "MESH_STAGE_MODULES", ("probe_mesh_stage_import",))
    monkeypatch.delitem(sys.modules, "probe_mesh_stage_import", raising=False)
    root, _ = small_scene
    args = [root, "--workspace", str(tmp_path / "w"), "--iters", "4", "--mc_resolution", "32", "--device", "cpu",
            "--quiet", *TINY_MODEL]
    assert main_sdf.main(args) == 0
    import probe_mesh_stage_import

    assert probe_mesh_stage_import.THREAD == "import probe_mesh_stage_import"


def denormals_flushed_now():
    return (torch.tensor([1e-40]) * 1.0).item() == 0.0


def test_denormals_are_flushed_while_training_and_kept_in_the_mesh_export(small_scene, tmp_path, monkeypatch):
    """Flushed denormals speed the field up on CPUs (Softplus underflows far from the surface), but scipy's
    cKDTree can crash in that mode (a segfault over a marching-cubes mesh): the mesh export, which uses it, runs
    with denormals kept, and so does whatever follows a run."""
    import nerf.mesh_export
    from nerf.trainer import Trainer

    seen = {}
    train_step, export_meshes = Trainer.train_step, nerf.mesh_export.export_meshes

    def recording_step(self):
        seen.setdefault("training", denormals_flushed_now())
        return train_step(self)

    def recording_export(*args, **kwargs):
        seen["export"] = denormals_flushed_now()
        return export_meshes(*args, **kwargs)

    monkeypatch.setattr(Trainer, "train_step", recording_step)
    monkeypatch.setattr(nerf.mesh_export, "export_meshes", recording_export)
    root, _ = small_scene
    args = [root, "--workspace", str(tmp_path / "w"), "--iters", "4", "--mc_resolution", "32", "--device", "cpu",
            "--quiet", *TINY_MODEL]
    assert main_sdf.main(args) == 0
    assert seen == {"training": True, "export": False} and not denormals_flushed_now()
