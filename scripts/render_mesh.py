"""Picture of a mesh seen from one of a NeuS-format scene's cameras: photo | shaded geometry | surface colours
(a texture's colours for a textured OBJ/GLB, else vertex colours; unshaded), and optionally the PSNR of those
colours against the photo.

    python scripts/render_mesh.py MESH DATA --view 0 [--out mesh.png] [--psnr] [--downscale 1]

The mesh must be in the scene's world frame (as main_sdf.py writes it). Rasterised on the CPU with the
generator's z-buffer (exact visibility at pixel centres); shading is a head-light Lambertian of face normals.
--psnr compares inside the scene's mask (pixels the mesh misses count as black) when the scene has masks,
else over the pixels the mesh covers; use a held-out view (index a multiple of --holdout, 8) to check a
reconstruction on a view it was not trained on.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nerf.cli import (OneLineParser, check_output_file, neus_scene_files, non_negative_int,  # noqa: E402
                      positive_int, report)
from nerf.files import save_png  # noqa: E402
from nerf.input_checks import DatasetError  # noqa: E402
from nerf.mesh_metrics import load_mesh, mesh_files  # noqa: E402
from nerf.mesh_render import load_neus_view, masked_psnr, render_colors, render_shaded  # noqa: E402


def main(argv=None):
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mesh", help="PLY / OBJ (+MTL, texture) / GLB in the scene's world frame")
    p.add_argument("data", help="NeuS-format scene folder (image/, optional mask/, cameras_sphere.npz)")
    p.add_argument("--view", type=non_negative_int, default=0)
    p.add_argument("--out", default=None, help="PNG to write: photo | shaded mesh | surface colours")
    p.add_argument("--psnr", action="store_true", help="print the PSNR of the surface colours against the photo")
    p.add_argument("--downscale", type=positive_int, default=1)
    opt = p.parse_args(argv)
    try:
        if opt.out is None and not opt.psnr:
            raise DatasetError(f"{opt.mesh}: nothing to do (give --out PNG and/or --psnr)")
        if opt.out is not None:
            check_output_file(opt.out, "--out", [*mesh_files(opt.mesh), *neus_scene_files(opt.data)])
            if not opt.out.lower().endswith(".png"):
                raise DatasetError(f"{opt.out}: --out must be a .png file")
        mesh = load_mesh(opt.mesh)
        view = load_neus_view(opt.data, opt.view, opt.downscale)
        width, height = view.size
        colors, covered = render_colors(mesh, view.K, view.w2c, width, height)
        if opt.psnr and colors is None:
            raise DatasetError(f"{opt.mesh}: the mesh has no colours (vertex colours or a texture) to compare")
    except DatasetError as e:
        report(e)
        return 2
    if opt.psnr:
        where = view.mask if view.mask is not None else covered
        region = "inside the mask" if view.mask is not None else "over the pixels the mesh covers"
        coverage = f", mesh covers {covered[view.mask].mean():.1%} of the mask" if view.mask is not None else ""
        print(f"psnr {masked_psnr(colors, view.image, where):.2f} dB {region} ({int(where.sum())} pixels{coverage}), "
              f"view {opt.view}, {mesh.visual.kind} colours")
    if opt.out is not None:
        shaded = render_shaded(mesh, view.K, view.w2c, width, height)
        # white background, as the shaded panel's
        panel = np.ones_like(shaded) if colors is None else np.where(covered[..., None], colors, 1.0)
        save_png(opt.out, np.concatenate([view.image, shaded, panel], axis=1))
        print(f"{opt.out}: photo | shaded mesh | {mesh.visual.kind or 'no'} colours, view {opt.view}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
