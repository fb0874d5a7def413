#!/usr/bin/env python
"""Score a reconstructed mesh against a ground-truth mesh: accuracy, completeness, Chamfer, precision, recall and
F-score at tau, in world units, the mean normal-angle error in degrees and, where the truth has a thin part, its
recall at tau (the method is described in nerf/mesh_metrics.py).

    python scripts/eval_mesh.py PRED GT [--tau 2] [--thin auto|none|THIN.ply] [--thin_map] [--seen auto|none|SCENE]
        [--json OUT.json]

--thin auto (the default) scores the thin part when a gt_thin.ply lies beside GT (nerf.synthetic's blade and wire
scenes write one); --thin_map also prints that recall over a grid on the part's own plane (where it is lost).
--seen auto (the default) also scores what the scene's cameras see when GT lies in a NeuS-format scene folder
(cameras_sphere.npz beside it), as nerf.synthetic writes them.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nerf.cli import (OneLineParser, check_output_file, neus_scene_files, non_negative_int,  # noqa: E402
                      positive_float, positive_int, report)
from nerf.files import write_json  # noqa: E402
from nerf.input_checks import DatasetError  # noqa: E402
from nerf.mesh_metrics import evaluate_mesh, mesh_files, thin_part_beside  # noqa: E402
from nerf.seen_surface import neus_cameras  # noqa: E402


MAX_POINTS = 10**8  # samples a side; more would not fit in memory


def format_row(name, m):
    """One line of the metrics dict `m` of mesh `name` (thin-part recall only when scored)."""
    return (f"{name} | acc {m['accuracy']:.4f} | comp {m['completeness']:.4f} | chamfer {m['chamfer']:.4f} "
            f"| P@{m['tau']:g} {m['precision']:.4f} | R@{m['tau']:g} {m['recall']:.4f} "
            f"| F@{m['tau']:g} {m['fscore']:.4f} | normal {m['normal_error_deg']:.2f} deg"
            + ("" if m.get("thin_recall") is None else f" | thin R@{m['tau']:g} {m['thin_recall']:.4f}")
            + ("" if "seen_chamfer" not in m else f" | seen ({m['seen_fraction']:.1%}): chamfer {m['seen_chamfer']:.4f}"
               f" F@{m['tau']:g} {m['seen_fscore']:.4f}"))


def format_map(grid):
    """The thin part's recall map (nerf.mesh_metrics.recall_map) as text, a row a line ('-': too few samples)."""
    lines = ["thin recall over the part's own plane (columns: its longer axis; rows: the other, high end first):"]
    lines += ["  " + " ".join("  -  " if v is None else f"{v:.2f} " for v in row) for row in grid]
    return "\n".join(lines)


def thin_mesh_path(choice, gt):
    """The thin-part mesh to score (None for none) from --thin: 'auto' (gt_thin.ply beside GT, if any), 'none',
    or a path."""
    if choice == "auto":
        return thin_part_beside(gt)
    return None if choice == "none" else choice


def seen_scene(choice, gt):
    """The scene whose cameras score what they see (None for none) from --seen: 'auto' (the NeuS-format scene GT
    lies in, if it is one), 'none', or a scene folder."""
    if choice == "none":
        return None
    folder = os.path.dirname(os.path.abspath(gt)) if choice == "auto" else choice
    if choice == "auto" and not os.path.isfile(os.path.join(folder, "cameras_sphere.npz")):
        return None
    return folder


def main(argv=None):
    parser = OneLineParser(description="Mesh accuracy/completeness/chamfer/F-score vs ground truth")
    parser.add_argument("pred", help="predicted mesh (ply/obj/...)")
    parser.add_argument("gt", help="ground-truth mesh")
    parser.add_argument("--n_points", type=positive_int, default=200_000)
    parser.add_argument("--tau", type=positive_float, default=2.0, help="F-score threshold in world units (mm)")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--point_to_point", action="store_true",
                        help="nearest-sample distances (DTU style) instead of point-to-triangle")
    parser.add_argument("--thin", default="auto",
                        help="thin-part mesh for thin_recall: auto (gt_thin.ply beside GT, if any), none, or a path")
    parser.add_argument("--thin_map", action="store_true",
                        help="also print where the thin part is lost: its recall over a grid on its own plane")
    parser.add_argument("--seen", default="auto",
                        help="also score what a scene's cameras see: auto (GT's folder, if a NeuS scene), none, or a "
                             "scene folder")
    parser.add_argument("--json", default=None, help="write metrics here")
    args = parser.parse_args(argv)
    if args.n_points > MAX_POINTS:
        parser.error(f"--n_points: at most {MAX_POINTS}, got {args.n_points}")
    try:
        thin, scene = thin_mesh_path(args.thin, args.gt), seen_scene(args.seen, args.gt)
        if args.json is not None:
            scene_files = [] if scene is None else neus_scene_files(scene)
            inputs = [*mesh_files(args.pred), *mesh_files(args.gt), *mesh_files(thin), *scene_files]
            check_output_file(args.json, "--json", inputs)
        metrics = evaluate_mesh(args.pred, args.gt, n_points=args.n_points, tau=args.tau, seed=args.seed,
                                point_to_point=args.point_to_point, thin=thin,
                                cameras=None if scene is None else neus_cameras(scene))
    except DatasetError as err:  # MeshReadError among them
        report(err)
        return 2
    print(format_row(args.pred, metrics))
    if args.thin_map and metrics["thin_recall_map"] is not None:
        print(format_map(metrics["thin_recall_map"]))
    if args.json is not None:
        write_json(args.json, dict(metrics, pred=str(args.pred), gt=str(args.gt)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
