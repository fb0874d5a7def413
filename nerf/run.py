"""One run from launch to outputs: resolve the config (flags, device preset, checkpoint), load the scene, build
the model, renderer and trainer, train (or not, for `--test`), then write the mesh, and for `--test` the
held-out renders and metrics. Every problem with the input is found before anything is written."""
import contextlib
import importlib.util
import os
import resource
import shutil
import socket
import sys
import tempfile
import textwrap
import threading
import time

import numpy as np
import torch

from .camera_geometry import in_image, lattice, project_points, renormalise
from .checkpoint import CheckpointError, checkpoint_dir, list_checkpoints, load_checkpoint, load_latest_valid
from .cli import report
from .config import (AUTO_DOWNSCALE_SIDE, MESH_FORMATS, SCENE_RADIUS, ConfigError, explicit_settings, override,
                     region_of_interest, resolve, restore)
from .evaluation import view_background, write_test_results
from .files import overlong_name, write_json
from .logger import Logger
from .network_sdf import build_model
from .orbit import NoOrbitAxis, render_orbit
from .provider import CAMERA_FILES, DatasetError, has_cameras_file, load_scene
from .renderer_sdf import build_renderer
from .trainer import Trainer, TrainingDiverged, TrainingInterrupted, views_shape

# What a run writes in the workspace: these folders, and these files (of a fixed name) in it.
WORKSPACE_FOLDERS = ("checkpoints", "meshes", "results", "run", "validation", "posing")
WORKSPACE_FILES = ("log.txt", "train_stats.json", "timings.json", "timings_test.json", "results/metrics.json",
                   *(f"meshes/mesh.{fmt}" for fmt in MESH_FORMATS))


class StageClock:
    """Wall seconds and peak GPU memory of each stage of a run (start-up, data, model, training, mesh...), and
    the process's peak CPU memory, for WORKSPACE/timings.json."""

    def __init__(self, start):
        self.last = start
        self.seconds = {}
        self.peak_gpu_mib = {}

    def lap(self, stage):
        now = time.time()
        self.seconds[stage] = round(now - self.last, 3)
        self.last = now
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            self.peak_gpu_mib[stage] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            torch.cuda.reset_peak_memory_stats()

    def report(self):
        """{stage: seconds, "total": seconds, "peak_gpu_mib": {stage: MiB}, "peak_cpu_mib": MiB}."""
        peak_cpu_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        return {**self.seconds, "total": round(sum(self.seconds.values()), 3), "peak_gpu_mib": self.peak_gpu_mib,
                "peak_cpu_mib": round(peak_cpu_kib / 1024, 1)}


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
    overlong = overlong_name(path, existing)
    if overlong:
        raise ConfigError(f"{path}: --workspace has a name of {overlong[1]} bytes, the file system allows "
                          f"{overlong[2]}")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise ConfigError(f"{path}: --workspace is not writable ({e.strerror} in {existing})") from None
    check_workspace_entries(path)


def check_workspace_entries(path):
    """What the run writes in the workspace must be absent or of its kind: a file where it makes a folder (or
    the reverse) would fail only once the run gets there, after training perhaps."""
    for name in WORKSPACE_FOLDERS:
        entry = os.path.join(path, name)
        if os.path.lexists(entry) and not os.path.isdir(entry):
            raise ConfigError(f"{entry}: not a folder (the run writes into it; move it away)")
    for name in WORKSPACE_FILES:
        entry = os.path.join(path, name)
        if os.path.lexists(entry) and not os.path.isfile(entry):
            raise ConfigError(f"{entry}: not a file (the run writes it; move it away)")
    # (a folder would stop the removal of old checkpoints in the middle of training)
    folder = next((p for p in list_checkpoints(checkpoint_dir(path)) if os.path.isdir(p)), None)
    if folder is not None:
        raise ConfigError(f"{folder}: a folder where a checkpoint file belongs")


def out_of_memory(args, stage):
    """The one line for memory that ran out (host or GPU): the settings that size it are the user's to lower."""
    return (f"{args.workspace}: out of memory {stage} (lower --num_rays, --mc_resolution, --texture, the model's "
            f"size or the images' with --downscale)")


def resume_hint(args):
    """How to go on after an interrupt: the same command resumes from the latest checkpoint, unless --ckpt
    named one (or scratch), which it would start from again."""
    if args.ckpt == "latest":
        return "run the same command to resume"
    return "run the same command without --ckpt to resume"


def check_viewer_host(host, flag="--viewer_host"):
    """ConfigError unless the live viewer can listen on `host`: viser waits forever on an address that is not
    this machine's or a name that does not resolve. Tried on any free port: viser moves on from a busy one."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.bind(address)
    except OSError as e:  # socket.gaierror too
        raise ConfigError(f"{flag}: cannot listen on {host!r} ({e.strerror or e})") from None


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


def scene_folder(data, workspace, quiet):
    """DATA as a folder the loaders read: DATA itself when it holds a cameras file (or is missing: the loader
    says so), else a folder of photos, a video or a COLMAP model, posed by structure from motion into
    WORKSPACE/posing/posed (nerf/posing: posed once, reused while its files are unchanged). A failed posing
    leaves no workspace behind that it created."""
    if not os.path.exists(data) or (os.path.isdir(data) and has_cameras_file(data)):
        return data
    from .posing import PosingError, pose_folder_cached
    from .posing.inputs import UnreadablePhotos, classify_input

    try:
        classify_input(data)
    except UnreadablePhotos:
        raise
    except PosingError:  # nothing to pose either: the loader's "no cameras file" says best what is missing
        return data
    created = not os.path.exists(workspace)
    try:
        return pose_folder_cached(data, os.path.join(workspace, "posing"), progress=not quiet)
    except BaseException:
        if created:
            shutil.rmtree(workspace, ignore_errors=True)
        raise


def check_region_seen(scene, flags_roi):
    """ConfigError (naming --center, when `flags_roi` says it came from there) or DatasetError (naming the
    scene's cameras file) unless some point of the region of interest (the unit sphere of the scene's
    normalised space) lies in front of a training camera and inside its image: else the training sees only
    background, and the mesh of the region would be dropped whole as unseen."""
    points, _ = lattice(-np.ones(3), np.ones(3), 17)
    points = points[np.linalg.norm(points, axis=1) <= SCENE_RADIUS]
    views = scene.train
    size = (views.height, views.width)
    for k, c2w in zip(views.intrinsics.cpu().double().numpy(), views.c2w.cpu().double().numpy()):
        if in_image(*project_points(points, k, np.linalg.inv(c2w)), size).any():
            return
    if flags_roi:
        raise ConfigError("--center: no training camera sees the region of interest that --center and --radius "
                          "give")
    cameras = next(os.path.join(scene.root, n) for n in CAMERA_FILES if os.path.exists(os.path.join(scene.root, n)))
    raise DatasetError(f"{cameras}: no training camera sees the region of interest (the sphere around its aabb)")


def check_same_views(scene, state):
    """ConfigError naming the scene folder when resuming on views of another count or size than the checkpoint's (the error
    map's state is per tile of each view); a checkpoint from before they were saved is taken as it is."""
    saved, now = state.get("views"), views_shape(scene.train)
    if saved is not None and saved != now:
        raise ConfigError(f"{scene.root}: the checkpoint was trained on {saved}, this scene has {now}")


def prepare(args, device, clock):
    """Config, scene and trainer (with the checkpoint's state loaded); raises on bad input, writing nothing."""
    config, path, state = run_config(args, device)
    d = config.data
    roi = region_of_interest(d)
    scene = load_scene(scene_folder(d.path, args.workspace, args.quiet), holdout=d.holdout, downscale=d.downscale,
                       use_masks=not d.no_masks, roi=roi, device=device, max_side=AUTO_DOWNSCALE_SIDE)
    check_region_seen(scene, flags_roi=roi is not None)
    if state is not None and not args.test:  # (--test may load the scene at another --downscale)
        check_same_views(scene, state)
    clock.lap("data")
    if config.field.background is None:  # the settings that depend on the scene
        config = override(config, {"background": "random" if scene.train.masks is not None else "nerf"})
    config = override(config, {"downscale": scene.downscale})  # (0, auto, resolved: the checkpoint holds the factor)
    trainer = build_trainer(config, scene, device, args.workspace, args.quiet)
    if state is not None:
        try:
            trainer.load_state_dict(state)
        except Exception as e:  # whatever the file holds that does not fit this model (shapes, states...)
            raise CheckpointError(f"{path}: checkpoint's state does not load ({type(e).__name__}: "
                                  f"{textwrap.shorten(str(e), 200)})") from None
        trainer.logger.log(f"continuing from step {trainer.step} of {path}")
    clock.lap("model")
    return config, scene, trainer


class EmptySurface(RuntimeError):
    pass


def write_mesh(config, scene, trainer, device, workspace):
    """Marching cubes of the trained SDF -> WORKSPACE/meshes/mesh.{ply,obj,glb} in the world frame, without the
    parts no training camera sees, cleaned, decimated and textured as the export settings say; returns (paths,
    whether they replaced an earlier mesh, the mesh as written). EmptySurface if there is no surface (no file is
    written)."""
    # Imported here, at the mesh stage: trimesh takes ~0.75 s to import, which start-up need not wait for.
    from .mesh import extract_mesh, surface_color_fn
    from .mesh_export import EmptyMesh, export_meshes
    from .texture import color_fn_in_frame

    with denormals_flushed():
        mesh = extract_mesh(trainer.model, config.export.mc_resolution, scene.to_world, device, SCENE_RADIUS)
    if len(mesh.faces) == 0:
        raise EmptySurface(f"{workspace}: the reconstructed surface is empty (no mesh written); train longer or "
                           "check the scene's cameras and masks")
    stem = os.path.join(workspace, "meshes", "mesh")
    replaced = any(os.path.exists(f"{stem}.{f}") for f in MESH_FORMATS)
    views = scene.train
    c2w = renormalise(views.c2w.cpu().double().numpy(), scene.to_world, np.eye(4))  # the cameras in the world
    color_fn = color_fn_in_frame(surface_color_fn(trainer.model, device), scene.to_world)
    cameras = (views.intrinsics.cpu().numpy(), c2w, (views.height, views.width))
    try:
        paths, mesh = export_meshes(mesh, color_fn, config.export, stem, cameras=cameras, device=device)
    except EmptyMesh:
        raise EmptySurface(f"{workspace}: no training camera sees any part of the reconstructed surface (no mesh "
                           "written); check the region of interest and the cameras") from None
    trainer.logger.log(f"mesh: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces -> {', '.join(paths)}")
    return paths, replaced, mesh


@contextlib.contextmanager
def denormals_flushed():
    """Denormal floats flushed to zero inside, for the stages that evaluate the field: Softplus(beta=100)
    underflows to denormals far from the surface, which are ~5x slower on CPUs. Only there, and restored after
    (the default is off): scipy's cKDTree can crash in that mode (a segfault building a tree over the vertices
    of a marching-cubes mesh, on two machines), and what may follow uses it (the mesh scores, the decimation's
    colour fallback, a test or a notebook after a run)."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


# What the mesh stage imports (trimesh alone takes 0.5-0.75 s on a 2-core CPU): loaded while training runs, so
# that neither start-up nor the mesh stage waits for it.
MESH_STAGE_MODULES = (f"{__package__}.mesh", f"{__package__}.mesh_export", f"{__package__}.texture")


def import_in_background(names):
    """Import the modules `names` in a daemon thread. A module that fails to import is left for its real import,
    which reports the failure where it is needed."""

    def load():
        for name in names:
            try:
                importlib.import_module(name)
            except Exception:
                pass

    threading.Thread(target=load, name="import " + ", ".join(names), daemon=True).start()


def train_and_export(args, config, scene, trainer, device, clock, viewer=None):
    """Train (unless --test), write the mesh (shown in the live viewer, if any), and for --test the held-out
    renders, metrics and orbit video; the stage seconds go to timings.json."""
    if not args.test:
        import_in_background(MESH_STAGE_MODULES)
        with denormals_flushed():
            stats = trainer.train()
        clock.lap("training")
        summary = f"trained {stats['steps']} steps in {stats['seconds']:.1f} s ({stats['it_per_s']:.1f} it/s)"
        if trainer.last_validation:
            step, psnr = trainer.last_validation
            summary += f", validation PSNR {psnr:.2f} at step {step}"
        print(summary)
    mesh_paths, replaced, mesh = write_mesh(config, scene, trainer, device, args.workspace)
    clock.lap("mesh")
    if viewer is not None:
        viewer.show_mesh(mesh.vertices, mesh.faces, mesh.visual.vertex_colors)
    print(f"mesh: {', '.join(mesh_paths)}" + (" (replaced the mesh that was there)" if replaced else ""))
    if args.test:
        results = os.path.join(args.workspace, "results")
        with denormals_flushed():
            metrics = write_test_results(trainer.renderer, scene, view_background(config.field.background, device),
                                         config.export.eval_chunk, results, trainer.step, trainer.use_amp,
                                         args.quiet)
        clock.lap("test")
        regions = "".join(f", {label} {metrics[key]:.2f}" for key, label in
                          (("mean_psnr_object", "on the object"), ("mean_psnr_backdrop", "on the backdrop"))
                          if key in metrics)
        trainer.logger.log(f"test: {len(metrics['views'])} views, PSNR {metrics['mean_psnr']}{regions}, "
                           f"SSIM {metrics['mean_ssim']}")
        print(f"held-out views: PSNR {metrics['mean_psnr']}{regions}, SSIM {metrics['mean_ssim']} -> "
              f"{os.path.join(results, 'metrics.json')}")
        e = config.export
        if e.video_frames and importlib.util.find_spec("imageio_ffmpeg") is None:
            print("warning: no orbit video: imageio-ffmpeg is not installed (pip install -r requirements.txt)",
                  file=sys.stderr)
        elif e.video_frames:
            try:
                with denormals_flushed():
                    video = render_orbit(trainer.renderer, scene.train,
                                         view_background(config.field.background, device), e.video_frames,
                                         e.video_downscale, e.eval_chunk, os.path.join(results, "orbit.mp4"),
                                         use_amp=trainer.use_amp, quiet=args.quiet)
                clock.lap("video")
                print(f"orbit video: {video}")
            except NoOrbitAxis as err:  # the mesh and the renders are written: the video alone is left out
                print(f"warning: no orbit video: {err}", file=sys.stderr)
    report = clock.report()
    write_json(os.path.join(args.workspace, "timings_test.json" if args.test else "timings.json"), report)
    trainer.logger.log("stage seconds: " + ", ".join(f"{k} {v}" for k, v in clock.seconds.items()) +
                       f"; peak memory: CPU {report['peak_cpu_mib']} MiB, GPU {report['peak_gpu_mib']} MiB")


def run(args, launch_time):
    """The whole run for parsed command-line `args`; returns the exit code: 2 bad input (nothing written),
    3 training failed (diverged, empty surface), 1 an output could not be written (full disk...), 130
    interrupted. Each failure is one line on stderr."""
    clock = StageClock(launch_time)
    try:
        device = pick_device(args.device)
        torch.empty(0, device=device)  # creates the CUDA context: start-up, not data loading
        clock.lap("start-up")
        if not 0 <= args.viewer <= 65535:
            raise ConfigError(f"--viewer: a port from 1 to 65535 (0: no viewer), got {args.viewer}")
        if args.viewer and not args.test:
            check_viewer_host(args.viewer_host)
        config, scene, trainer = prepare(args, device, clock)
        viewer = None
        if args.viewer and not args.test:
            from .viewer import Viewer  # viser: only the viewer needs it

            viewer = Viewer(trainer, args.viewer, host=args.viewer_host)
            trainer.step_hooks.append(viewer)
            print(f"viewer: {viewer.url}")
    except (ConfigError, DatasetError, CheckpointError) as e:
        report(e)
        return 2
    except (MemoryError, torch.OutOfMemoryError):
        report(out_of_memory(args, "loading the scene and building the model"))
        return 1
    code = 0
    try:
        train_and_export(args, config, scene, trainer, device, clock, viewer)
    except (TrainingDiverged, EmptySurface) as e:
        report(e)
        code = 3
    except TrainingInterrupted as e:
        print(f"interrupted at step {e.step}: checkpoint saved; {resume_hint(args)}", file=sys.stderr)
        code = 130
    except (MemoryError, torch.OutOfMemoryError):
        report(out_of_memory(args, "testing" if args.test else "training or exporting"))
        code = 1
    except OSError as e:  # a full disk, a folder made read-only meanwhile...: the partial file is already gone
        report(f"{e.filename or args.workspace}: cannot write ({e.strerror or e})")
        code = 1
    finally:
        trainer.logger.close()
        if viewer is not None:
            viewer.close()
    lost = trainer.logger.events_lost
    if lost is not None and code != 1:  # after a write failure the error line has said it
        print(f"warning: {os.path.join(args.workspace, 'run')}: tensorboard events not all written "
              f"({lost.strerror or lost})", file=sys.stderr)
    return code
