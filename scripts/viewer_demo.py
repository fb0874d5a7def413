"""Train with the live viewer (nerf/viewer.py) for a while, or measure what it costs.

    python scripts/viewer_demo.py [--data DATA] --workspace OUT [--port 8080] [--seconds 60] [training flags...]
    python scripts/viewer_demo.py [--data DATA] --workspace OUT --measure 40 [training flags...]

The first trains for --seconds with the viewer at http://HOST:PORT, then writes the mesh, shows it in the
viewer and keeps serving for --linger seconds. --measure trains rounds of STEPS steps each without the viewer,
with it but no page connected, and with a scripted page (`ViewerClient`) whose camera orbits the object, twice
over in turn, and prints the steps/s of each and the viewer's share of the time. Without --data a small synthetic
torus (16 views of 96x72) is made in OUT/scene. Training flags are those of main_sdf.py (e.g. --device,
--num_rays); --iters is set high so that the run never ends on its own.
"""
import math
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import main_sdf  # noqa: E402
from nerf.checkpoint import CheckpointError  # noqa: E402
from nerf.cli import (OneLineParser, non_negative_float, non_negative_int, positive_float, positive_int,  # noqa: E402
                      report)
from nerf.config import ConfigError  # noqa: E402
from nerf.provider import DatasetError  # noqa: E402
from nerf.run import (StageClock, check_viewer_host, check_workspace, denormals_flushed, pick_device,  # noqa: E402
                      prepare, write_mesh)
from nerf.viewer import Viewer, ViewerClient, fov_from_intrinsics  # noqa: E402


# The most --seconds and --linger: ~30 years; time.sleep overflows a little beyond
MAX_SECONDS = 1e9


def parse_args(argv):
    """(this script's flags, the training flags left for main_sdf's parser); a bad flag of ours exits with one line
    `error: --flag: problem`, code 2."""
    parser = OneLineParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="scene folder (default: a synthetic torus made in OUT/scene)")
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--port", type=non_negative_int, default=8080)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--max_share", type=positive_float, default=0.05, help="the viewer's most share of the time")
    parser.add_argument("--max_side", type=positive_int, default=256, help="longest side of a render, pixels")
    parser.add_argument("--refresh_every", type=positive_float, default=1.0,
                        help="seconds between renders of a still camera; sizes the renders (Viewer)")
    parser.add_argument("--seconds", type=non_negative_float, default=60.0, help="training time with the viewer")
    parser.add_argument("--linger", type=non_negative_float, default=0.0,
                        help="seconds to keep serving after the mesh")
    parser.add_argument("--measure", type=non_negative_int, default=0, metavar="STEPS",
                        help="measure rounds of STEPS steps (0: no measuring)")
    args, training_flags = parser.parse_known_args(argv)
    if not args.max_share <= 1:
        parser.error(f"--max_share: {args.max_share:g} is not in (0, 1]")
    if not args.port <= 65535:
        parser.error(f"--port: {args.port} is not a port (0..65535)")
    for flag, value in (("--seconds", args.seconds), ("--linger", args.linger)):
        if value > MAX_SECONDS:
            parser.error(f"{flag}: {value:g} s is more than {MAX_SECONDS:g} s")
    return args, training_flags


def orbit(port, host, c2w0, fov, stop):
    """A scripted page, run in its own process as a browser would be: its camera circles the object 5 times a
    second, starting from camera c2w0 [4, 4] (turning about that camera's up through the origin), until `stop`
    is set; what the server sends is read and dropped."""
    client = ViewerClient(port, host)
    up = -c2w0[:3, 1]
    cross = np.array([[0, -up[2], up[1]], [up[2], 0, -up[0]], [-up[1], up[0], 0]])
    angle = 0.0
    next_move = time.monotonic()
    while not stop.is_set():
        if time.monotonic() >= next_move:
            rotation = np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross  # Rodrigues
            c2w = np.eye(4)
            c2w[:3, :3], c2w[:3, 3] = rotation @ c2w0[:3, :3], rotation @ c2w0[:3, 3]
            client.send_camera(c2w, fov, 640, 480)
            angle, next_move = angle + 0.05, next_move + 0.2
        client.messages(timeout=0.05)
    client.close()


def train_steps(trainer, steps):
    """Steps/s of `steps` training steps (through Trainer.train, hooks and all)."""
    start = time.perf_counter()
    trainer.train(until_step=trainer.step + steps)
    return steps / (time.perf_counter() - start)


def measure(trainer, viewer, steps):
    """Steps/s without the viewer, with it and no page, and with an orbiting page, twice over in turn; and the
    time spent in the viewer's hook (which a noisy machine's steps/s cannot resolve)."""
    import multiprocessing

    views = trainer.scene.train
    c2w0 = views.c2w[0].double().cpu().numpy()
    fov = fov_from_intrinsics(views.intrinsics[0].cpu().numpy(), views.height)
    spawn = multiprocessing.get_context("spawn")
    hook_seconds = [0.0]

    def timed_viewer(trainer):
        start = time.perf_counter()
        viewer(trainer)
        hook_seconds[0] += time.perf_counter() - start

    def phase(name):
        hook_before, start = hook_seconds[0], time.perf_counter()
        rates[name].append(train_steps(trainer, steps))
        shares[name].append((hook_seconds[0] - hook_before) / (time.perf_counter() - start))

    train_steps(trainer, 5)  # warm-up
    names = ("no viewer", "viewer, no page", "viewer, page orbiting")
    rates, shares = {n: [] for n in names}, {n: [] for n in names}
    renders = 0
    for _ in range(2):
        phase("no viewer")
        trainer.step_hooks.append(timed_viewer)
        phase("viewer, no page")
        stop = spawn.Event()
        page = spawn.Process(target=orbit, args=(viewer.port, viewer.host, c2w0, fov, stop))
        page.start()
        while not viewer.requests:
            time.sleep(0.05)
        renders_before = viewer.renders
        phase("viewer, page orbiting")
        renders += viewer.renders - renders_before
        stop.set()
        page.join()
        while viewer.requests:
            time.sleep(0.05)
        trainer.step_hooks.remove(timed_viewer)
    for name in names:
        print(f"{name:>22}: " + ", ".join(f"{v:.2f}" for v in rates[name]) + " steps/s; in the hook "
              + ", ".join(f"{100 * v:.2f}" for v in shares[name]) + " % of the time")
    size = viewer.last_render_size
    print(f"with the page: {renders} renders" + (f", the last {size[0]}x{size[1]} px" if size else ""))


def main(argv=None):
    args, training_flags = parse_args(sys.argv[1:] if argv is None else argv)
    flags = ["--iters", "1000000", "--eval_every", "0", "--ckpt_every", "0", "--quiet", *training_flags]
    made_workspace = not os.path.lexists(args.workspace)
    made_scene = trainer = None
    try:
        check_viewer_host(args.host, "--host")
        check_workspace(args.workspace)
        data = args.data if args.data is not None else os.path.join(args.workspace, "scene")
        # the training flags are checked before the synthetic scene is made
        run_args = main_sdf.parse_args([data, "--workspace", args.workspace, *flags])
        device = pick_device(run_args.device)
        if args.data is None and not os.path.isfile(os.path.join(data, "cameras_sphere.npz")):
            from nerf.synthetic import make_scene

            made_scene = None if os.path.lexists(data) else data
            make_scene(data, shape="torus", views=16, width=96, height=72, gt_resolution=96, seed=1)
        config, scene, trainer = prepare(run_args, device, StageClock(time.time()))
        viewer = Viewer(trainer, args.port, max_share=args.max_share, host=args.host, max_side=args.max_side,
                        refresh_every=args.refresh_every)
    except (ConfigError, DatasetError, CheckpointError, main_sdf.UsageError) as e:
        report(e)
        if trainer is not None:  # the viewer failed to start
            trainer.logger.close()
        # nothing written: what the set-up made goes (the workspace, if this run made it, else the scene)
        made = args.workspace if made_workspace else made_scene
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        return 2
    try:
        if args.measure:
            measure(trainer, viewer, args.measure)
            return 0
        print(f"viewer: {viewer.url}", flush=True)
        trainer.step_hooks.append(viewer)
        end = time.time() + args.seconds
        with denormals_flushed():
            while time.time() < end:
                trainer.train(until_step=trainer.step + 20)
        trainer.step_hooks.remove(viewer)
        paths, _, mesh = write_mesh(config, scene, trainer, device, args.workspace)
        viewer.show_mesh(mesh.vertices, mesh.faces, mesh.visual.vertex_colors)
        print(f"mesh: {paths[0]}; serving for {args.linger:g} s more", flush=True)
        time.sleep(args.linger)
    finally:
        viewer.close()
        trainer.logger.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
