"""GPU training through our CUDA kernels (skipped without CUDA): the kernels follow the twins' loss curve, a
CUDA-graph step equals an eager one, --fp16 trains, a resume on GPU is exact, and the --cuda_ray path trains
without NaN to a mesh close to the truth."""
import os

import numpy as np
import pytest
import torch

from nerf.config import SCENE_RADIUS
from nerf.mesh import extract_mesh
from nerf.mesh_metrics import evaluate_mesh
from train_helpers import make_trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

GPU_FLAGS = ["--iters", "300", "--num_rays", "1024", "--warmup", "50", "--eval_every", "0", "--ckpt_every", "0",
             "--mc_resolution", "128"]


def gpu_trainer(root, workspace, *extra):
    return make_trainer(root, workspace, *GPU_FLAGS, *extra, device="cuda")[2]


def loss_curve(trainer, steps):
    return np.array([float(trainer.train_step()[0]) for _ in range(steps)])


def test_kernels_follow_the_twins_loss_curve(small_scene, tmp_path, monkeypatch):
    root, _ = small_scene
    with_kernels = loss_curve(gpu_trainer(root, str(tmp_path / "k")), 150)
    monkeypatch.setenv("INSTANT_NSR_TORCH_ONLY", "1")
    with_twins = loss_curve(gpu_trainer(root, str(tmp_path / "t")), 150)
    print("kernels", with_kernels[::15], "\ntwins", with_twins[::15])
    assert np.isfinite(with_kernels).all() and np.isfinite(with_twins).all()
    # Same seeds and batches: the first steps agree closely, and the curves stay together (atomics reorder sums).
    assert np.allclose(with_kernels[:5], with_twins[:5], rtol=1e-3)
    assert abs(with_kernels[-30:].mean() / with_twins[-30:].mean() - 1) < 0.1
    assert with_kernels[-30:].mean() < 0.5 * with_kernels[:10].mean()


@pytest.mark.parametrize("extra", [[], ["--lambda_smoothness", "0.1"], ["--error_sampling", "0.5"]],
                         ids=["plain", "smoothness", "error_map"])
def test_graph_steps_equal_eager_steps(small_scene, tmp_path, extra):
    """(The normal smoothness loss draws its jitter and picks its samples inside the graph; the error map is
    fed from the graph's output and steers the next batch outside it.)"""
    root, _ = small_scene
    graphed = gpu_trainer(root, str(tmp_path / "g"), *extra)
    eager = gpu_trainer(root, str(tmp_path / "e"), "--no_cuda_graph", *extra)
    assert graphed.graphed_step is not None and eager.graphed_step is None
    a, b = loss_curve(graphed, 60), loss_curve(eager, 60)
    assert graphed.graphed_step.enabled and graphed.graphed_step.captures == 1  # captured once, replayed since
    # Same batches: the first steps agree to float rounding; atomics reorder sums, so later ones differ a little.
    assert np.allclose(a[:3], b[:3], rtol=1e-4) and np.allclose(a[:10], b[:10], rtol=1e-3), (a[:10], b[:10])
    if graphed.error_map is None:
        assert np.allclose(a, b, rtol=0.05)  # atomics reorder sums: the curves drift apart only slowly
    else:
        # The guided draw is discontinuous in the tile errors: once rounding moves a tile past a draw, the two
        # runs see different rays, so only their levels compare; the map must have been fed by the graph.
        assert abs(a[-30:].mean() / b[-30:].mean() - 1) < 0.1, (a[-30:].mean(), b[-30:].mean())
        assert graphed.error_map.visited.float().mean() > 0.5
        assert torch.allclose(graphed.error_map.error.mean(), eager.error_map.error.mean(), rtol=0.2)


def test_graphs_are_captured_again_when_the_ray_count_changes(small_scene, tmp_path):
    """--cuda_ray: the ray count follows the samples per ray (fewer rays while every cell is occupied, more
    once the grid is carved), and each new count is a new graph; training stays finite throughout."""
    root, _ = small_scene
    trainer = gpu_trainer(root, str(tmp_path / "g"), "--cuda_ray", "--grid_warmup_until", "0.07")
    losses = loss_curve(trainer, 120)
    assert trainer.graphed_step.enabled and trainer.graphed_step.captures >= 2
    assert np.isfinite(losses).all() and losses[-20:].mean() < losses[:10].mean()


def test_fp16_trains(small_scene, tmp_path):
    root, _ = small_scene
    trainer = gpu_trainer(root, str(tmp_path / "h"), "--fp16", "--cuda_ray")
    assert trainer.use_amp
    losses = loss_curve(trainer, 200)
    assert np.isfinite(losses[-50:]).all()
    assert losses[-30:].mean() < 0.5 * losses[:10].mean()


def test_resume_on_gpu_continues_the_uninterrupted_run(small_scene, tmp_path):
    """After a resume on GPU the run draws the batches the uninterrupted run draws, and trains on through a
    fresh CUDA graph (fused capturable Adam state reloaded). On GPU the table-gradient atomics make two runs of
    the same config differ by a few % after 40 steps, so the losses are compared loosely; the CPU test of
    resuming compares the weights exactly."""
    root, _ = small_scene
    flags = ["--iters", "80", "--ckpt_every", "40"]
    straight = gpu_trainer(root, str(tmp_path / "a"), *flags)
    straight.train(until_step=40)
    gpu_trainer(root, str(tmp_path / "b"), *flags).train(until_step=40)
    resumed = gpu_trainer(root, str(tmp_path / "b"), *flags)
    assert resumed.step == 40
    a, b = straight.draw_batch(), resumed.draw_batch()
    for key in ("rays_o", "rays_d", "rgb", "mask", "bg"):
        assert torch.equal(a[key], b[key]), key
    after_straight, after_resume = loss_curve(straight, 5), loss_curve(resumed, 5)
    assert resumed.graphed_step.enabled and resumed.graphed_step.captures == 1
    assert np.allclose(after_resume, after_straight, rtol=0.15), (after_resume, after_straight)


def test_cuda_ray_trains_without_nan_to_the_shape(small_scene, tmp_path):
    root, _ = small_scene
    trainer = gpu_trainer(root, str(tmp_path / "c"), "--cuda_ray", "--iters", "600")
    losses = loss_curve(trainer, 600)
    assert np.isfinite(losses).all()
    assert trainer.renderer.sampler.grid.occupied_fraction() < 0.5  # the grid has carved out empty space
    mesh = extract_mesh(trainer.model, 128, trainer.scene.to_world, "cuda", SCENE_RADIUS)
    metrics = evaluate_mesh(mesh, os.path.join(root, "gt_mesh.ply"), n_points=30000, tau=5.0)
    print(metrics)
    assert metrics["chamfer"] < 6.0
