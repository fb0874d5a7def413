#!/usr/bin/env python
"""Photos, a video or a COLMAP model -> a posed scene folder in the NeuS layout that main_sdf.py trains on.

    python scripts/colmap2neus.py INPUT OUT [--camera_model auto] [--matching auto] [--frame_step N]
                                            [--center x,y,z --radius r] [--overwrite]

INPUT: a folder of images (all one size), a video file, or a COLMAP model folder (PROJECT with sparse/0/ and
images/, or the sparse/0 folder itself). OUT gets image/, cameras_sphere.npz, points3D.ply, sparse/0/ and
posing.json; the method is described in nerf/posing/.
"""
import argparse
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def centre(text):
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not x,y,z") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"{text!r} is not three numbers x,y,z")
    return values


def main(argv=None):
    from nerf.interrupts import StartUpInterrupt

    with StartUpInterrupt() as held:  # Ctrl-C while the imports run is held until they end, as in main_sdf.py
        from nerf.cli import OneLineParser, report
        from nerf.config import join_dashed_values
        from nerf.input_checks import DatasetError
        from nerf.posing import CAMERA_MODELS, pose_images
    if held.requested:
        return held.report()
    parser = OneLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="folder of images, video file, or COLMAP model folder")
    parser.add_argument("out", help="output scene folder (NeuS layout)")
    parser.add_argument("--camera_model", default="auto", choices=CAMERA_MODELS,
                        help="shared camera model refined after mapping (auto: the simplest of PINHOLE, RADIAL, OPENCV "
                             "that fits)")
    parser.add_argument("--matching", default="auto", choices=("auto", "exhaustive", "sequential"),
                        help="auto: exhaustive for up to 300 images, sequential for videos and longer sequences")
    parser.add_argument("--frame_step", type=int, default=None,
                        help="video: keep the sharpest of every N frames (default: about --max_frames in all)")
    parser.add_argument("--max_frames", type=int, default=150,
                        help="video: at most this many frames (about this many when no --frame_step)")
    parser.add_argument("--blur_ratio", type=float, default=0.5,
                        help="video: drop frames less sharp than this x their neighbours' median")
    parser.add_argument("--center", type=centre, default=None, help="region of interest centre x,y,z (world units)")
    parser.add_argument("--radius", type=float, default=None, help="region of interest radius (world units)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--threads", type=int, default=-1, help="CPU threads for pycolmap (-1 or 0: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(join_dashed_values(parser, sys.argv[1:] if argv is None else argv))
    if args.frame_step is not None and args.frame_step < 1:
        parser.error(f"--frame_step: {args.frame_step} is not a positive number")
    if args.max_frames < 1:
        parser.error(f"--max_frames: {args.max_frames} is not a positive number")
    if not 0 <= args.blur_ratio < 1:
        parser.error(f"--blur_ratio: {args.blur_ratio} is not in [0, 1)")
    max_threads = 4 * (os.cpu_count() or 1)  # more is a typo, and COLMAP aborts when it cannot start them
    if not -1 <= args.threads <= max_threads:
        parser.error(f"--threads: {args.threads} is not in -1..{max_threads} (-1 or 0: all cores)")
    if not 0 <= args.seed < 2**31:  # COLMAP's random seeds are int
        parser.error(f"--seed: {args.seed} is not in 0..{2**31 - 1}")
    try:
        info = pose_images(args.input, args.out, camera_model=args.camera_model, matching=args.matching,
                           frame_step=args.frame_step, max_frames=args.max_frames, blur_ratio=args.blur_ratio,
                           center=args.center, radius=args.radius, overwrite=args.overwrite,
                           num_threads=args.threads, seed=args.seed)
    except DatasetError as err:
        report(err)
        return 2
    except KeyboardInterrupt as stop:  # Ctrl-C, or a stop signal (nerf/interrupts.py)
        print("interrupted; nothing written", file=sys.stderr)
        return 128 + getattr(stop, "signum", signal.SIGINT)
    camera = info["camera"]
    print(f"posed {info['registered']} of {info['total']} images: {camera['model']} camera, reprojection error "
          f"{info['reprojection_error_px']:.3f} px, {info['points']} sparse points, "
          f"{info['times']['wall_s']['total']:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
