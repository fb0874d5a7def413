#!/usr/bin/env python
"""Posed cameras vs reference cameras (both NeuS folders): rotation and camera-centre errors after a similarity
alignment on the camera centres, focal length and principal point errors, region-of-interest agreement.

    python scripts/eval_poses.py POSED REFERENCE [--json OUT.json]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nerf.cli import OneLineParser, check_output_file, neus_scene_files, report  # noqa: E402
from nerf.files import write_json  # noqa: E402
from nerf.input_checks import DatasetError  # noqa: E402
from nerf.posing import compare_poses, format_comparison  # noqa: E402


def main(argv=None):
    parser = OneLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("posed", help="posed scene folder (scripts/colmap2neus.py's OUT)")
    parser.add_argument("reference", help="scene folder with the reference cameras (cameras_sphere.npz)")
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    try:
        if args.json is not None:
            inputs = [os.path.join(args.posed, "posing.json"), *neus_scene_files(args.posed),
                      *neus_scene_files(args.reference)]
            check_output_file(args.json, "--json", inputs)
        result = compare_poses(args.posed, args.reference)
    except DatasetError as err:
        report(err)
        return 2
    print(format_comparison(result))
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
