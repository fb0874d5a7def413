"""Time-to-mesh benchmark: the PyTorch path and `--cuda_ray`, on the same scenes, in one run.

    python scripts/bench.py --out bench_out [--dtu PATH] [--synthetic spot,blob] [--iters N] [--paths torch,cuda_ray]
                            [--variants "base=;warm=--grid_warmup_until 0.5"] [--repeat N] [--budget S]

For each scene and path it launches `main_sdf.py` as a fresh process (so the wall time covers start-up, data
loading, training and meshing: launch to mesh written), then `--test` (no model flags: the checkpoint holds them;
no orbit video) for the held-out PSNR, and for the ground-truth scenes scores the mesh with
`scripts/eval_mesh.py`. `--variants` runs each scene and path once per named set of flags (an A/B in one run,
one after another, so the times compare), `--repeat N` N times with seeds 0..N-1; the table then ends with each
group's medians. `--budget S` skips the runs that would end more than S seconds after launch (for a machine lent
by the minute); bench.json is rewritten after every run. Synthetic scenes are rendered first with
`scripts/make_synthetic.py` (49 views, DTU-like camera cap, 800x600 by default); their meshes are scored over the
whole true surface and over the part the cameras see (nerf/seen_surface.py). Prints a markdown table and writes
OUT/bench.json, whose rows also hold main_sdf.py's seconds per stage (start-up, data, model, training, mesh), the
NeuS sharpness (inv_s) the training ended at and the held-out PSNR of each view (and on the object and the backdrop
apart, where the scene has masks).
"""
import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def run(cmd, log_path):
    start = time.time()
    with open(log_path, "w") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    return code, time.time() - start


def main():
    start = time.time()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for scenes, workspaces, logs and bench.json")
    p.add_argument("--dtu", help="a NeuS-format real scene (e.g. shared/data/dtu_scan24)")
    p.add_argument("--synthetic", default="spot,blob", help="shapes for make_synthetic.py ('' for none)")
    p.add_argument("--views", type=int, default=49)
    p.add_argument("--width", type=int, default=800)
    p.add_argument("--height", type=int, default=600)
    p.add_argument("--iters", type=int, default=None, help="training steps (default: main_sdf.py's, or a --preset's)")
    p.add_argument("--paths", default="torch,cuda_ray", help="torch, cuda_ray, or both")
    p.add_argument("--tau", type=float, default=2.0, help="F-score threshold (mm)")
    p.add_argument("--extra", default="", help="more flags for main_sdf.py, e.g. '--fp16'")
    p.add_argument("--variants", default="", help="NAME=FLAGS;NAME=FLAGS...: each scene and path once per variant, "
                                                  "its flags after --extra (e.g. 'base=;warm=--grid_warmup_until 0.5')")
    p.add_argument("--repeat", type=int, default=1, help="runs of each scene, path and variant (seeds 0..N-1)")
    p.add_argument("--budget", type=float, default=0, help="seconds: start no run that would end past this many "
                                                           "seconds after launch, going by the longest run of "
                                                           "the scene and variant so far (else of the scene, "
                                                           "else of any scene); "
                                                           "its row says 'skipped' (0: no limit)")
    opt = p.parse_args()
    variants = parse_variants(opt.variants)
    os.makedirs(opt.out, exist_ok=True)

    from nerf.files import write_json
    from nerf.mesh_metrics import evaluate_mesh
    from nerf.synthetic import make_scene

    scenes = []
    if opt.dtu:
        scenes.append(("dtu", opt.dtu, None))
    for shape in filter(None, opt.synthetic.split(",")):
        root = os.path.join(opt.out, f"scene_{shape}")
        if not os.path.isfile(os.path.join(root, "cameras_sphere.npz")):
            make_scene(root, shape=shape, views=opt.views, width=opt.width, height=opt.height, formats=("neus",))
        scenes.append((shape, root, os.path.join(root, "gt_mesh.ply")))

    rows, longest = [], {}
    for name, root, gt in scenes:
        for path in opt.paths.split(","):
            for seed in range(opt.repeat):  # variants innermost: an A/B's runs sit next to each other in time
                for variant, flags in variants:
                    # This variant's own time on this scene once known (a preset may take half the time of the
                    # base), else the scene's longest run, else the longest run so far.
                    estimate = longest.get((name, variant), longest.get(name, max(longest.values(), default=0.0)))
                    if opt.budget and time.time() - start + estimate > opt.budget:
                        rows.append({"scene": name, "path": path, "variant": variant, "seed": seed, "exit": None,
                                     "skipped": f"--budget {opt.budget:g} s: a run takes ~{estimate:.0f} s"})
                    else:
                        run_start = time.time()
                        rows.append(bench_run(opt, name, root, gt, path, evaluate_mesh, variant, flags, seed))
                        seconds = time.time() - run_start
                        longest[name] = max(longest.get(name, 0.0), seconds)
                        longest[(name, variant)] = max(longest.get((name, variant), 0.0), seconds)
                    print(json.dumps(rows[-1]), flush=True)
                    # After every run, so that a bench stopped from outside still leaves its rows.
                    write_json(os.path.join(opt.out, "bench.json"), {
                        "iters": opt.iters, "extra": opt.extra, "variants": dict(variants), "repeat": opt.repeat,
                        "rows": rows})
    print_table(rows)
    if len(variants) > 1 or opt.repeat > 1:
        print_table(median_rows(rows))


def parse_variants(text):
    """'base=;warm=--grid_warmup_until 0.5' -> [('base', []), ('warm', ['--grid_warmup_until', '0.5'])]; '' -> one
    unnamed variant without flags."""
    if not text.strip():
        return [("", [])]
    variants = []
    for part in filter(str.strip, text.split(";")):
        name, sep, flags = part.partition("=")
        if not sep or not name.strip() or name.strip() in dict(variants):
            raise SystemExit(f"error: --variants: {part!r} is not NAME=FLAGS with a new NAME")
        variants.append((name.strip(), flags.split()))
    return variants


def median_rows(rows):
    """One row per scene, path and variant: the median of each number over its runs (failed runs left out)."""
    import numpy as np

    groups = {}
    for row in rows:
        if row["exit"] == 0:
            groups.setdefault((row["scene"], row["path"], row["variant"]), []).append(row)
    medians = []
    for (scene, path, variant), group in groups.items():
        row = {"scene": scene, "path": path, "variant": f"{variant} (median of {len(group)})"}
        for key in group[0]:
            values = [r.get(key) for r in group]
            numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            if key not in row and key not in ("seed", "exit") and numbers:
                row[key] = float(np.median(values))
        medians.append(row)
    return medians


def bench_run(opt, name, root, gt, path, evaluate_mesh, variant="", variant_flags=(), seed=0):
    """Train one scene on one path (with a variant's flags and a seed) as a fresh process, then `--test` (no model
    flags repeated: the checkpoint holds them; no orbit video) and, with a true mesh `gt`, score the mesh; returns
    the row."""
    tag = "_".join([name, path] + ([variant] if variant else []) + ([f"seed{seed}"] if opt.repeat > 1 else []))
    workspace = os.path.join(opt.out, f"ws_{tag}")
    flags = [root, "--workspace", workspace, "--ckpt", "scratch", "--quiet", "--eval_every", "0"]
    flags += (["--iters", str(opt.iters)] if opt.iters else []) + (["--cuda_ray"] if path == "cuda_ray" else [])
    flags += opt.extra.split() + list(variant_flags) + (["--seed", str(seed)] if opt.repeat > 1 else [])
    code, wall = run([sys.executable, "main_sdf.py"] + flags, os.path.join(opt.out, f"{tag}.log"))
    row = {"scene": name, "path": path, "variant": variant, "seed": seed, "exit": code, "launch_to_mesh_s": wall}
    if code != 0:
        return row
    stats = json.load(open(os.path.join(workspace, "train_stats.json")))
    row.update(it_per_s=stats["it_per_s"], samples_per_s=stats["samples_per_s"], rays_per_step=stats["rays_per_step"],
               inv_s=stats.get("inv_s"))
    timings = json.load(open(os.path.join(workspace, "timings.json")))  # main_sdf's stage seconds
    row.update({f"{stage}_s": seconds for stage, seconds in timings.items()
                if stage != "total" and not stage.startswith("peak_")})
    row.update(peak_cpu_mib=timings["peak_cpu_mib"], peak_gpu_mib=max(timings["peak_gpu_mib"].values(), default=None))
    test_log = os.path.join(opt.out, f"{tag}_test.log")
    test_cmd = [sys.executable, "main_sdf.py", "--workspace", workspace, "--test", "--quiet", "--video_frames", "0"]
    test_code, _ = run(test_cmd, test_log)
    metrics_path = os.path.join(workspace, "results", "metrics.json")
    if test_code == 0 and os.path.isfile(metrics_path):
        metrics = json.load(open(metrics_path))
        row["psnr"] = metrics["mean_psnr"]
        # on the object and on the backdrop apart, where the scene has masks (an unmasked run's too: see --no_masks)
        row.update({k[len("mean_"):]: metrics[k] for k in ("mean_psnr_object", "mean_psnr_backdrop") if k in metrics})
        row["psnr_per_view"] = {view: round(v["psnr"], 2) for view, v in metrics["views"].items()}
    else:
        print(f"--test failed ({test_code}):", open(test_log).read()[-2000:], flush=True)
    if gt:
        from nerf.mesh_metrics import thin_part_beside  # the thin blade's / wire's gt_thin.ply, if any

        from nerf.seen_surface import neus_cameras  # scores over what the scene's cameras see, too

        m = evaluate_mesh(os.path.join(workspace, "meshes", "mesh.ply"), gt, tau=opt.tau, thin=thin_part_beside(gt),
                          cameras=neus_cameras(root))
        row.update(chamfer_mm=m["chamfer"], accuracy_mm=m["accuracy"], completeness_mm=m["completeness"],
                   fscore=m["fscore"], normal_error_deg=m["normal_error_deg"], thin_recall=m["thin_recall"],
                   thin_recall_map=m["thin_recall_map"],
                   seen_chamfer_mm=m.get("seen_chamfer"), seen_fscore=m.get("seen_fscore"),
                   seen_fraction=m["seen_fraction"])
    return row


def print_table(rows):
    cols = ["scene", "path", "variant", "launch_to_mesh_s", "training_s", "it_per_s", "rays_per_step", "psnr",
            "psnr_object", "psnr_backdrop", "chamfer_mm", "fscore", "seen_chamfer_mm", "seen_fscore"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        cells = [f"{row.get(c, ''):.4g}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in cols]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
