#!/usr/bin/env python
"""Score a reconstructed mesh against a ground-truth mesh: accuracy, completeness, Chamfer, precision, recall and
F-score at tau, in world units (the method is described in nerf/mesh_metrics.py).

    python scripts/eval_mesh.py PRED GT [--tau 2] [--json OUT.json]
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nerf.mesh_metrics import MeshReadError, evaluate_mesh  # noqa: E402


def format_row(name, m):
    """One line of the metrics dict `m` of mesh `name`."""
    return (f"{name} | acc {m['accuracy']:.4f} | comp {m['completeness']:.4f} | chamfer {m['chamfer']:.4f} "
            f"| P@{m['tau']:g} {m['precision']:.4f} | R@{m['tau']:g} {m['recall']:.4f} "
            f"| F@{m['tau']:g} {m['fscore']:.4f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Mesh accuracy/completeness/chamfer/F-score vs ground truth")
    parser.add_argument("pred", help="predicted mesh (ply/obj/...)")
    parser.add_argument("gt", help="ground-truth mesh")
    parser.add_argument("--n_points", type=int, default=200_000)
    parser.add_argument("--tau", type=float, default=2.0, help="F-score threshold in world units (mm)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--point_to_point", action="store_true",
                        help="nearest-sample distances (DTU style) instead of point-to-triangle")
    parser.add_argument("--json", default=None, help="write metrics here")
    args = parser.parse_args(argv)
    try:
        metrics = evaluate_mesh(args.pred, args.gt, n_points=args.n_points, tau=args.tau, seed=args.seed,
                                point_to_point=args.point_to_point)
    except MeshReadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_row(args.pred, metrics))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(metrics, pred=str(args.pred), gt=str(args.gt)), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
