#!/usr/bin/env python
"""Ground-truth synthetic scene generator for NeuS-style surface reconstruction.

    python scripts/make_synthetic.py OUT --shape sphere|torus|blob|blade|wire|relief|checker|spot|bunny|PATH.obj
        [--views 32] ...

Writes OUT/image/, mask/, cameras_sphere.npz and/or transforms.json, gt_mesh.ply (and gt_thin.ply for the thin
shapes blade and wire) and scene.json; the scene, its cameras, its shapes and its conventions are described in
nerf/synthetic/__init__.py.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nerf.cli import OneLineParser, non_negative_int, positive_float, positive_int, report  # noqa: E402
from nerf.input_checks import DatasetError  # noqa: E402
from nerf.synthetic import make_scene  # noqa: E402
from nerf.synthetic.scene import BACKGROUNDS, FORMATS  # noqa: E402

# What one CPU renders and meshes in memory: views x width x height float images, a gt_resolution^3 SDF lattice.
LIMITS = {"views": 1000, "width": 8192, "height": 8192, "gt_resolution": 1024}


def main(argv=None):
    parser = OneLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="output folder")
    parser.add_argument("--shape", default="sphere",
                        help="sphere | torus | blob | blade | wire | relief | checker | spot | bunny | PATH.obj")
    parser.add_argument("--views", type=positive_int, default=32)
    parser.add_argument("--width", type=positive_int, default=400)
    parser.add_argument("--height", type=positive_int, default=300)
    parser.add_argument("--radius_mm", type=positive_float, default=200.0)
    parser.add_argument("--formats", default="neus,transforms",
                        help="comma list of: " + ", ".join(FORMATS))
    parser.add_argument("--holdout_jitter", action="store_true",
                        help="also render held-out views between the training poses into OUT/holdout/")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--background", choices=BACKGROUNDS, default="black",
                        help="behind the object: a colour, room (a textured floor and dome) or table (a white "
                             "table top through the unit sphere in a dark room, as DTU), for --no_masks")
    parser.add_argument("--gt_resolution", type=positive_int, default=256,
                        help="marching-cubes grid for analytic shapes (raised where a shape's finest feature needs it)")
    parser.add_argument("--texture", default=None, help="texture image for an OBJ with UVs")
    args = parser.parse_args(argv)
    for name, limit in LIMITS.items():
        if getattr(args, name) > limit:
            parser.error(f"--{name}: at most {limit}, got {getattr(args, name)}")
    try:
        make_scene(args.out, shape=args.shape, views=args.views, width=args.width, height=args.height,
                   radius_mm=args.radius_mm, formats=args.formats, seed=args.seed, background=args.background,
                   holdout_jitter=args.holdout_jitter, gt_resolution=args.gt_resolution, texture=args.texture,
                   verbose=True)
    except DatasetError as err:  # a bad --formats, --shape, --texture or OUT among them, refused before writing
        report(err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
