#!/usr/bin/env python
"""DTU MVS scores of a mesh: accuracy, completeness and overall in mm against the official reference of one scan
(protocol and file layout in nerf/dtu_eval.py). The mesh must be in the DTU frame (mm), as main_sdf.py writes
it for DTU data in the NeuS format.

    python scripts/eval_dtu.py MESH --scan N --dtu PATH [--data SCENE] [--out FILE.json] [--vis DIR]

--data SCENE culls the mesh first by the dilated masks of that NeuS-format scene (cameras_sphere.npz, mask/).
Bad input: one line `error: PATH: problem` on stderr, exit 2, nothing written.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nerf.cli import (OneLineParser, check_output_file, neus_scene_files, non_negative_int,  # noqa: E402
                      positive_float, positive_int, report)
from nerf.dtu_eval import (DOWNSAMPLE_MM, MAX_DILATION_PX, MAX_DIST_MM, VIS_FILES, evaluate_dtu,  # noqa: E402
                           load_mask_views, load_reference, reference_paths)
from nerf.files import write_json  # noqa: E402
from nerf.input_checks import DatasetError, check_file  # noqa: E402
from nerf.mesh_metrics import mesh_files  # noqa: E402


MIN_MM, MAX_MM = 1e-3, 1e4  # the bounds of --downsample and --max_dist


def check_vis_folder(path, inputs):
    """--vis must name a folder that can be made, and its files must not be `inputs`: caught before the
    evaluation runs."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise DatasetError(f"{path}: is a file (--vis names a folder)")
    for name in VIS_FILES:
        check_output_file(os.path.join(path, name), "--vis", inputs)


def input_files(args):
    """The files and file-only folders (nerf.cli.check_not_an_input) that the run reads."""
    inputs = [*mesh_files(args.mesh), *reference_paths(args.dtu, args.scan).values()]
    return inputs if args.data is None else inputs + neus_scene_files(args.data)


def main(argv=None):
    parser = OneLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mesh", help="mesh to score (ply/obj/...), DTU frame, mm")
    parser.add_argument("--scan", type=positive_int, required=True, help="DTU scan number (24, 37, ...)")
    parser.add_argument("--dtu", required=True,
                        help="DTU reference folder: Points/stl/stlNNN_total.ply, ObsMask/ObsMaskN_10.mat, "
                             "ObsMask/PlaneN.mat")
    parser.add_argument("--data", default=None, help="NeuS-format scene whose dilated masks cull the mesh first")
    parser.add_argument("--dilation", type=non_negative_int, default=None,
                        help="mask dilation radius in mask pixels (default: 12 at 1600 px wide, scaled)")
    parser.add_argument("--downsample", type=positive_float, default=DOWNSAMPLE_MM,
                        help="sampling step and thinning radius, mm")
    parser.add_argument("--max_dist", type=positive_float, default=MAX_DIST_MM,
                        help="distances at or beyond this (mm) are outliers, left out of the means")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the thinning's random order")
    parser.add_argument("--out", default=None, help="write the scores and counts here (JSON)")
    parser.add_argument("--vis", default=None,
                        help="write accuracy_points.ply and completeness_points.ply (coloured by distance) here")
    args = parser.parse_args(argv)
    for flag, value in (("--downsample", args.downsample), ("--max_dist", args.max_dist)):
        if not MIN_MM <= value <= MAX_MM:  # finer thinning runs out of memory; the scan is ~500 mm across
            parser.error(f"{flag}: {value:g} mm is not in {MIN_MM:g}..{MAX_MM:g} mm")
    if args.dilation is not None and args.dilation > MAX_DILATION_PX:
        parser.error(f"--dilation: {args.dilation} px is more than {MAX_DILATION_PX} px")
    try:
        inputs = input_files(args)
        if args.out is not None:
            check_output_file(args.out, "--out", inputs)
        if args.vis is not None:
            check_vis_folder(args.vis, inputs)
        # the quick checks first: the reference takes a while to read
        check_file(args.mesh, "a mesh")
        mask_views = None if args.data is None else load_mask_views(args.data)
        reference = load_reference(args.dtu, args.scan)
        scores = evaluate_dtu(args.mesh, reference, mask_views=mask_views, downsample=args.downsample,
                              max_dist=args.max_dist, dilation=args.dilation, seed=args.seed, vis_dir=args.vis)
    except DatasetError as err:
        report(err)
        return 2
    counts = scores["counts"]
    culled = f", {counts['culled_faces']} faces culled by masks" if "culled_faces" in counts else ""
    print(f"{args.mesh}: scan {args.scan}: accuracy {scores['accuracy']:.4f} mm, completeness "
          f"{scores['completeness']:.4f} mm, overall {scores['overall']:.4f} mm "
          f"({counts['accuracy_points']} mesh points, {counts['completeness_points']} reference points{culled})")
    if args.out:
        write_json(args.out, dict(scores, mesh=os.path.abspath(args.mesh), dtu=os.path.abspath(args.dtu),
                                  data=None if args.data is None else os.path.abspath(args.data)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
