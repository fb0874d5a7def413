"""instant-nsr: posed photos -> NeuS on a hash grid -> a watertight coloured mesh.

    python main_sdf.py DATA --workspace OUT            # train (resuming OUT's latest checkpoint), then the mesh
    python main_sdf.py --workspace OUT --test          # mesh + held-out renders + OUT/results/metrics.json

Every setting below is a field of nerf/config.py; GPU defaults are shown (a CPU run gets a lean preset). A run
that continues from a checkpoint (resume, --test) takes its settings from the checkpoint: flags that would
change its model are refused; DATA defaults to the checkpoint's scene.
"""
import argparse
import sys
import time

LAUNCH_TIME = time.time()  # before torch is imported: start-up counts in the stage times


class UsageError(Exception):
    pass


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line `error: --flag: problem` (no usage block), exit code 2."""

    def error(self, message):
        raise UsageError(message.replace("argument ", "", 1))


def parse_args(argv=None):
    from nerf.config import add_arguments, join_dashed_values

    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", nargs="?", help="scene folder: NeuS (cameras_sphere.npz), NeRF-synthetic "
                                           "(transforms_train.json) or instant-ngp (transforms.json)")
    p.add_argument("--workspace", required=True, help="output folder (checkpoints, logs, meshes, results)")
    p.add_argument("--test", action="store_true", help="no training: load the latest checkpoint, write the mesh, "
                                                      "held-out renders and results/metrics.json")
    p.add_argument("--ckpt", default="latest", help="latest (resume if a checkpoint exists) | scratch | PATH")
    p.add_argument("--device", help="cuda, cuda:1, cpu... (default: cuda when present)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--viewer", type=int, default=0, metavar="PORT",
                   help="serve a live viewer (viser) on this port while training: the render from a camera you "
                        "drag, the loss and PSNR curves, the mesh when written (0: off)")
    p.add_argument("--viewer_host", default="127.0.0.1", help="address the viewer listens on (0.0.0.0: all)")
    add_arguments(p)
    args = p.parse_args(join_dashed_values(p, sys.argv[1:] if argv is None else argv))
    for name, value in (("DATA", args.data), ("--workspace", args.workspace), ("--ckpt", args.ckpt)):
        if value == "":  # (an empty DATA would be read as the current folder)
            p.error(f"{name}: empty path")
    return args


def main(argv=None):
    launch_time = LAUNCH_TIME if argv is None else time.time()
    from nerf.interrupts import StartUpInterrupt

    # Ctrl-C while the heavy imports run is held until they end: some dependency imports catch BaseException,
    # which would swallow it and let the run go on.
    try:
        with StartUpInterrupt() as held:
            args = parse_args(argv)
            from nerf.run import run
    except UsageError as e:
        from nerf.cli import report

        report(e)
        return 2
    if held.requested:
        return held.report()
    try:
        return run(args, launch_time)
    except KeyboardInterrupt:  # outside the training loop, which saves and reports by itself
        from nerf.run import resume_hint

        print(f"interrupted; checkpoints already written are kept ({resume_hint(args)})", file=sys.stderr)
        return 130


def cli():
    """The `instant-nsr` console command."""
    from nerf.bytecode_cache import use_own_cache_if_needed

    use_own_cache_if_needed("torch")  # before torch is imported
    sys.exit(main())


if __name__ == "__main__":
    cli()
