"""One run from launch to outputs: resolve the config (flags, device preset, checkpoint), load the scene, build
the model, renderer and trainer, train (or not, for `--test`), then write the mesh, and for `--test` the
held-out renders and metrics. Every problem with the input is found before anything is written."""
import os
import sys
import tempfile
import time

import numpy as np
import torch

from .checkpoint import CheckpointError, checkpoint_dir, load_checkpoint, load_latest_valid
from .config import SCENE_RADIUS, ConfigError, explicit_settings, override, resolve, restore
from .evaluation import view_background, write_test_results
from .files import write_json
from .logger import Logger
from .mesh import export_mesh, extract_mesh
from .network_sdf import build_model
from .provider import DatasetError, load_scene
from .renderer_sdf import build_renderer
from .trainer import Trainer, TrainingDiverged, TrainingInterrupted


class StageClock:
    """Wall seconds of each stage of a run (start-up, data, model, training, mesh...), for WORKSPACE/timings.json."""

    def __init__(self, start):
        self.last = start
        self.seconds = {}

    def lap(self, stage):
        now = time.time()
        self.seconds[stage] = round(now - self.last, 3)
        self.last = now


def pick_device(name):
    """The torch device for `--device` (default: cuda when present)."""
    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device: unknown device {name!r} (cuda, cuda:N or cpu)") from None
    if device.type == "cuda" and not (torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()):
        raise ConfigError(f"--device: {name} is not available on this machine")
    if device.type not in ("cuda", "cpu"):
        raise ConfigError(f"--device: {name} is not supported (cuda, cuda:N or cpu)")
    return name


def check_workspace(path):
    """The workspace must be a folder we can create and write, or one that exists and we can write; checked by
    creating (and removing) a probe file in the nearest existing folder, so nothing is left behind."""
    if not path:
        raise ConfigError("--workspace: empty path")
    if os.path.islink(path) and not os.path.exists(path):
        raise ConfigError(f"{path}: --workspace is a dangling symbolic link")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"{path}: --workspace is not a folder")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(f"{path}: --workspace cannot be created ({existing} is not a folder)")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise ConfigError(f"{path}: --workspace is not writable ({e.strerror} in {existing})") from None


def run_config(args, device):
    """(config, checkpoint path, checkpoint state) for the command line `args`: a new run's config from the
    flags and the device preset (path and state None), or the saved config of the checkpoint the run continues
    from (`restore`)."""
    check_workspace(args.workspace)
    explicit = explicit_settings(args)
    data = None if args.data is None else os.path.abspath(args.data)
    path = state = None
    if args.ckpt == "latest":  # the newest checkpoint that loads (a broken one is skipped with a warning)
        path, state = load_latest_valid(checkpoint_dir(args.workspace), device, lambda m: print(m, file=sys.stderr))
    elif args.ckpt != "scratch":
        if not os.path.isfile(args.ckpt):
            raise CheckpointError(f"{args.ckpt}: checkpoint not found")
        path, state = args.ckpt, load_checkpoint(args.ckpt, device)
    if state is None:
        if args.test:
            raise CheckpointError(f"{checkpoint_dir(args.workspace)}: no checkpoint to test; train first")
        if data is None:
            raise ConfigError("DATA: a scene folder is needed to train (no checkpoint in --workspace)")
        return resolve(explicit, device, data), None, None
    return restore(state["config"], explicit, data, testing=args.test), path, state


def build_trainer(config, scene, device, workspace, quiet=False):
    """Model, renderer and trainer for a resolved config and a loaded scene."""
    torch.manual_seed(config.train.seed)
    np.random.seed(config.train.seed)
    model = build_model(config.field, SCENE_RADIUS)
    renderer = build_renderer(config, model, SCENE_RADIUS)
    return Trainer(config, renderer, scene, workspace, device, Logger(workspace), quiet)


def prepare(args, device, clock):
    """Config, scene and trainer (with the checkpoint's state loaded); raises on bad input, writing nothing."""
    config, path, state = run_config(args, device)
    # Softplus(beta=100) underflows to denormals far from the surface, which are ~5x slower on CPUs.
    torch.set_flush_denormal(True)
    d = config.data
    scene = load_scene(d.path, holdout=d.holdout, downscale=d.downscale, device=device)
    clock.lap("data")
    if config.field.background is None:  # the one setting that depends on the scene
        config = override(config, {"background": "random" if scene.train.masks is not None else "white"})
    trainer = build_trainer(config, scene, device, args.workspace, args.quiet)
    if state is not None:
        trainer.load_state_dict(state)
        trainer.logger.log(f"continuing from step {trainer.step} of {path}")
    clock.lap("model")
    return config, scene, trainer


class EmptySurface(RuntimeError):
    pass


def write_mesh(config, scene, trainer, device, workspace):
    """Marching cubes of the trained SDF -> WORKSPACE/meshes/mesh.ply (world frame); returns (path, whether it
    replaced an earlier mesh). EmptySurface if there is no surface (nothing reconstructed: no file is written)."""
    mesh = extract_mesh(trainer.model, config.export.mc_resolution, scene.to_world, device, SCENE_RADIUS)
    if len(mesh.faces) == 0:
        raise EmptySurface(f"{workspace}: the reconstructed surface is empty (no mesh written); train longer or "
                           "check the scene's cameras and masks")
    path = os.path.join(workspace, "meshes", "mesh.ply")
    replaced = os.path.exists(path)
    export_mesh(mesh, path)
    trainer.logger.log(f"mesh: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces -> {path}")
    return path, replaced


def train_and_export(args, config, scene, trainer, device, clock):
    """Train (unless --test), write the mesh, and for --test the held-out renders and metrics; the stage
    seconds go to timings.json."""
    if not args.test:
        stats = trainer.train()
        clock.lap("training")
        summary = f"trained {stats['steps']} steps in {stats['seconds']:.1f} s ({stats['it_per_s']:.1f} it/s)"
        if trainer.last_validation:
            step, psnr = trainer.last_validation
            summary += f", validation PSNR {psnr:.2f} at step {step}"
        print(summary)
    mesh_path, replaced = write_mesh(config, scene, trainer, device, args.workspace)
    clock.lap("mesh")
    print(f"mesh: {mesh_path}" + (" (replaced the mesh that was there)" if replaced else ""))
    if args.test:
        results = os.path.join(args.workspace, "results")
        metrics = write_test_results(trainer.renderer, scene, view_background(config.field.background, device),
                                     config.export.eval_chunk, results, trainer.step, trainer.use_amp, args.quiet)
        clock.lap("test")
        trainer.logger.log(f"test: {len(metrics['views'])} views, PSNR {metrics['mean_psnr']}, "
                           f"SSIM {metrics['mean_ssim']}")
        print(f"held-out views: PSNR {metrics['mean_psnr']}, SSIM {metrics['mean_ssim']} -> "
              f"{os.path.join(results, 'metrics.json')}")
    clock.seconds["total"] = round(sum(clock.seconds.values()), 3)
    write_json(os.path.join(args.workspace, "timings_test.json" if args.test else "timings.json"), clock.seconds)
    trainer.logger.log("stage seconds: " + ", ".join(f"{k} {v}" for k, v in clock.seconds.items()))


def run(args, launch_time):
    """The whole run for parsed command-line `args`; returns the exit code: 2 bad input (nothing written),
    3 training failed (diverged, empty surface), 1 an output could not be written (full disk...), 130
    interrupted. Each failure is one line on stderr."""
    clock = StageClock(launch_time)
    try:
        device = pick_device(args.device)
        torch.empty(0, device=device)  # creates the CUDA context: start-up, not data loading
        clock.lap("start-up")
        config, scene, trainer = prepare(args, device, clock)
    except (ConfigError, DatasetError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        train_and_export(args, config, scene, trainer, device, clock)
    except (TrainingDiverged, EmptySurface) as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except TrainingInterrupted as e:
        print(f"interrupted at step {e.step}: checkpoint saved; run the same command to resume", file=sys.stderr)
        return 130
    except OSError as e:  # a full disk, a folder made read-only meanwhile...: the partial file is already gone
        print(f"error: {e.filename or args.workspace}: cannot write ({e.strerror or e})", file=sys.stderr)
        return 1
    finally:
        trainer.logger.close()
    return 0
