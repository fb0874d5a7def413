"""instant-nsr: posed photos -> NeuS on a hash grid -> a watertight coloured mesh.

    python main_sdf.py DATA --workspace OUT            # train, then write OUT/meshes/mesh.ply
    python main_sdf.py DATA --workspace OUT --test     # mesh + held-out renders + OUT/results/metrics.json
"""
import argparse
import os
import sys
import time

LAUNCH_TIME = time.time()  # before torch is imported: start-up counts in the stage times

# Flags whose default depends on the device: a GPU gets the full method, a CPU a lean variant that trains a
# small scene in minutes (fewer and coarser hash levels, fewer rays and samples, a coarser marching-cubes grid).
DEVICE_DEFAULTS = {
    #                    cuda    cpu
    "iters": (5000, 1000),
    "num_rays": (4096, 512),
    "num_steps": (64, 32),
    "upsample_steps": (64, 32),
    "num_levels": (16, 8),
    "log2_hashmap_size": (19, 16),
    "desired_resolution": (2048, 256),
    "levels_start": (4, 2),
    "mc_resolution": (512, 256),
    "eval_chunk": (16384, 4096),
    "eval_downscale": (2, 4),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="scene folder: NeuS (cameras_sphere.npz), NeRF-synthetic (transforms_train.json) "
                                "or instant-ngp (transforms.json)")
    p.add_argument("--workspace", required=True, help="output folder (checkpoints, logs, meshes, results)")
    p.add_argument("--test", action="store_true", help="no training: load the latest checkpoint, write the mesh, "
                                                      "held-out renders and results/metrics.json")
    g = p.add_argument_group("training")
    g.add_argument("--iters", type=int, help="training steps (default 5000 on GPU, 1000 on CPU)")
    g.add_argument("--num_rays", type=int, help="rays per step (default 4096 on GPU, 512 on CPU)")
    g.add_argument("--lr", type=float, default=1e-2, help="base learning rate (warm-up, then cosine decay)")
    g.add_argument("--warmup", type=int, default=500, help="learning-rate warm-up steps")
    g.add_argument("--fp16", action="store_true", help="mixed precision (autocast) on GPU")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--lambda_eikonal", type=float, default=0.1, help="weight of the Eikonal loss")
    g.add_argument("--lambda_mask", type=float, default=0.1, help="weight of the mask BCE loss (when masks exist)")
    g.add_argument("--background", choices=["random", "white", "black"],
                   help="background composited behind the object (default random with masks, else white)")
    g.add_argument("--ckpt", default="latest", help="latest (resume if a checkpoint exists) | scratch | PATH")
    g.add_argument("--ckpt_every", type=int, default=1000, help="steps between checkpoints")
    g.add_argument("--eval_every", type=int, default=2500, help="steps between validation renders (0: never)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--no_cuda_graph", dest="cuda_graph", action="store_false",
                   help="launch every kernel of a training step from Python instead of replaying a CUDA graph")
    g = p.add_argument_group("data")
    g.add_argument("--downscale", type=int, default=1, help="load images downscaled by this integer factor")
    g.add_argument("--holdout", type=int, default=8, help="hold out every N-th view for testing (0: none)")
    g = p.add_argument_group("model and rendering")
    g.add_argument("--num_steps", type=int, help="coarse samples per ray (default 64 on GPU, 32 on CPU)")
    g.add_argument("--upsample_steps", type=int, help="importance samples per ray, in rounds of 16 (64 / 32)")
    g.add_argument("--normals", choices=["analytic", "fd"], default="analytic",
                   help="SDF gradient by autograd double backward, or by central finite differences")
    g.add_argument("--num_levels", type=int, help="hash-grid levels (16 on GPU, 8 on CPU)")
    g.add_argument("--log2_hashmap_size", type=int, help="log2 of each level's table size (19 / 16)")
    g.add_argument("--desired_resolution", type=int, help="finest grid resolution (2048 / 256)")
    g.add_argument("--levels_start", type=int, help="hash levels active at the start (4 / 2)")
    g.add_argument("--no_progressive", dest="progressive", action="store_false",
                   help="all hash levels from the start (default: add levels until half-way through training)")
    g.add_argument("--hidden_dim", type=int, default=64, help="MLP width")
    g.add_argument("--num_layers", type=int, default=1, help="hidden layers of the SDF MLP")
    g.add_argument("--cuda_ray", action="store_true",
                   help="sample only in occupied cells of an occupancy grid, at a fixed step, with our raymarching "
                        "kernels, stopping rays inside the object; each step marches a fixed budget of "
                        "num_rays x num_steps samples")
    g = p.add_argument_group("outputs")
    g.add_argument("--mc_resolution", type=int, help="marching-cubes grid resolution (512 on GPU, 256 on CPU)")
    g.add_argument("--eval_downscale", type=int, help="validation renders downscaled by this factor (2 / 4)")
    g.add_argument("--eval_chunk", type=int, help="rays per chunk when rendering images")
    g.add_argument("--device", help="cuda, cuda:1, cpu... (default: cuda when present)")
    opt = p.parse_args(argv)

    import torch

    if opt.device is None:
        opt.device = "cuda" if torch.cuda.is_available() else "cpu"
    column = 0 if opt.device.startswith("cuda") else 1
    for name, values in DEVICE_DEFAULTS.items():
        if getattr(opt, name) is None:
            setattr(opt, name, values[column])
    return opt


class StageClock:
    """Wall seconds of each stage of a run (start-up, data, model, training, mesh...), for WORKSPACE/timings.json."""

    def __init__(self, start):
        self.last = start
        self.seconds = {}

    def lap(self, stage):
        now = time.time()
        self.seconds[stage] = round(now - self.last, 3)
        self.last = now


def build_trainer(opt, clock=None):
    """Scene, model, renderer and trainer for parsed options; raises DatasetError before writing anything."""
    import numpy as np
    import torch

    from nerf.network_sdf import build_model
    from nerf.provider import load_scene
    from nerf.renderer_sdf import MarchingRenderer, NeuSRenderer
    from nerf.trainer import Trainer

    torch.manual_seed(opt.seed)
    np.random.seed(opt.seed)
    # Softplus(beta=100) underflows to denormals far from the surface, which are ~5x slower on CPUs.
    torch.set_flush_denormal(True)
    scene = load_scene(opt.data, holdout=opt.holdout, downscale=opt.downscale, device=opt.device)
    if clock:
        clock.lap("data")
    if opt.background is None:
        opt.background = "random" if scene.train.masks is not None else "white"
    model = build_model(opt)
    if opt.cuda_ray:  # samples per step about those of the PyTorch path's coarse pass
        renderer = MarchingRenderer(model, target_samples=opt.num_rays * opt.num_steps)
    else:
        renderer = NeuSRenderer(model, opt.num_steps, opt.upsample_steps)
    return Trainer(opt, model, renderer, scene, opt.workspace, opt.device)


def main(argv=None):
    clock = StageClock(LAUNCH_TIME if argv is None else time.time())
    opt = parse_args(argv)
    from nerf.provider import DatasetError
    from nerf.trainer import TrainingDiverged, write_json
    import torch

    torch.empty(0, device=opt.device)  # creates the CUDA context: start-up, not data loading
    clock.lap("start-up")
    try:  # read and check everything before the workspace is touched
        trainer = build_trainer(opt, clock)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ckpt = trainer.latest_checkpoint() if opt.ckpt == "latest" else (None if opt.ckpt == "scratch" else opt.ckpt)
    if opt.ckpt not in ("latest", "scratch") and not os.path.isfile(opt.ckpt):
        print(f"error: {opt.ckpt}: checkpoint not found", file=sys.stderr)
        return 2
    if opt.test and ckpt is None:
        print(f"error: {trainer.ckpt_dir}: no checkpoint to test; train first", file=sys.stderr)
        return 2
    if ckpt is not None:
        trainer.load_checkpoint(ckpt)
    clock.lap("model")

    if not opt.test:
        try:
            trainer.train()
        except TrainingDiverged as e:
            print(f"error: {e}", file=sys.stderr)
            return 3
        except KeyboardInterrupt:
            print(f"interrupted at step {trainer.step}: checkpoint saved; run the same command to resume",
                  file=sys.stderr)
            return 130
        clock.lap("training")
    path = trainer.export_mesh()
    clock.lap("mesh")
    print(f"mesh: {path}")
    if opt.test:
        metrics = trainer.test()
        clock.lap("test")
        print(f"held-out views: PSNR {metrics['mean_psnr']}, SSIM {metrics['mean_ssim']} -> "
              f"{os.path.join(opt.workspace, 'results', 'metrics.json')}")
    clock.seconds["total"] = round(sum(clock.seconds.values()), 3)
    write_json(os.path.join(opt.workspace, "timings_test.json" if opt.test else "timings.json"), clock.seconds)
    trainer.log("stage seconds: " + ", ".join(f"{k} {v}" for k, v in clock.seconds.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
