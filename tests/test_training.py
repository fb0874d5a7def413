"""End to end on CPU: a short training reconstructs a known shape; resume is exact; divergence is caught;
--test writes its outputs in world units."""
import json
import os

import numpy as np
import pytest
import torch
import trimesh

import main_sdf
from nerf.trainer import TrainingDiverged
from scripts.eval_mesh import evaluate_mesh

# The short training below, and the bound its mesh must meet (torus of radius 200 mm, 16 views of 96x72).
TRAIN_ARGS = ["--iters", "400", "--num_rays", "256", "--warmup", "50", "--mc_resolution", "128",
              "--eval_every", "200", "--ckpt_every", "200", "--device", "cpu", "--quiet"]
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
    assert list(timings) == ["start-up", "data", "model", "training", "mesh", "total"]
    assert timings["training"] > 0 and abs(sum(timings.values()) - 2 * timings["total"]) < 0.01


def test_test_mode_writes_results_in_world_units(trained, capsys):
    root, info, workspace = trained
    assert main_sdf.main([root, "--workspace", workspace, "--test"] + TRAIN_ARGS) == 0
    results = os.path.join(workspace, "results")
    metrics = json.load(open(os.path.join(results, "metrics.json")))
    assert len(metrics["views"]) == 2 and metrics["mean_psnr"] > 18 and metrics["mean_ssim"] > 0.5
    for name in metrics["views"]:
        for kind in ("rgb", "normal", "depth"):
            assert os.path.isfile(os.path.join(results, f"{name}_{kind}.png"))
    # Depth is in mm: the object's surface lies between (camera distance - radius) and (camera distance + radius).
    cams = np.load(os.path.join(root, "cameras_sphere.npz"))
    name = sorted(metrics["views"])[0]
    depth = np.load(os.path.join(results, f"{name}_depth.npy"))
    index = int(name)
    import cv2

    _, rotation, centre = cv2.decomposeProjectionMatrix(cams[f"world_mat_{index}"][:3])[:3]
    camera = (centre[:3] / centre[3])[:, 0]
    distance = np.linalg.norm(camera - np.array(info["object_centre"]))
    valid = depth[np.isfinite(depth)]
    assert valid.size > 100
    assert distance - info["object_radius"] - 5 < np.median(valid) < distance + 5
    # The mesh is in mm too, around the object's centre.
    mesh = trimesh.load(os.path.join(workspace, "meshes", "mesh.ply"))
    assert np.linalg.norm(mesh.vertices - np.array(info["object_centre"]), axis=1).max() < info["object_radius"] * 1.1


def make_trainer(root, workspace, iters=20, extra=()):
    opt = main_sdf.parse_args([root, "--workspace", workspace, "--iters", str(iters), "--num_rays", "64",
                               "--num_levels", "4", "--log2_hashmap_size", "12", "--desired_resolution", "64",
                               "--num_steps", "16", "--upsample_steps", "16", "--warmup", "5",
                               "--eval_every", "0", "--ckpt_every", "10", "--device", "cpu", "--quiet", *extra])
    return main_sdf.build_trainer(opt)


def test_resume_after_interrupt_matches_an_uninterrupted_run(small_scene, tmp_path):
    root, _ = small_scene
    straight = make_trainer(root, str(tmp_path / "a"))
    straight.train()
    interrupted = make_trainer(root, str(tmp_path / "b"))
    interrupted.train(until_step=10)
    resumed = make_trainer(root, str(tmp_path / "b"))
    resumed.load_checkpoint(resumed.latest_checkpoint())
    assert resumed.step == 10
    resumed.train()
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    # The checkpoint folder holds only complete files.
    assert all(f.endswith(".pth") and ".tmp" not in f for f in os.listdir(tmp_path / "b" / "checkpoints"))


def test_divergence_recovers_from_the_last_checkpoint(small_scene, tmp_path):
    root, _ = small_scene
    trainer = make_trainer(root, str(tmp_path / "w"))
    trainer.train(until_step=10)
    with torch.no_grad():
        trainer.model.sdf_net.encoder.embeddings.fill_(float("nan"))
    trainer.train()
    assert trainer.step == 20 and trainer.recoveries == 1 and trainer.lr_scale == 0.5
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_divergence_that_persists_stops_with_a_clear_message(small_scene, tmp_path, monkeypatch):
    root, _ = small_scene
    trainer = make_trainer(root, str(tmp_path / "w"))
    trainer.train(until_step=10)
    sdf_forward = trainer.model.sdf_net.forward
    monkeypatch.setattr(trainer.model.sdf_net, "forward",
                        lambda x: tuple(t * float("nan") for t in sdf_forward(x)))
    with pytest.raises(TrainingDiverged, match="training diverged at step 10"):
        trainer.train()
