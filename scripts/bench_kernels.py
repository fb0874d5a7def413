"""Benchmark of the hash-grid kernels against the PyTorch twin on one GPU.

    python scripts/bench_kernels.py [--sizes 18 20 22] [--repeats 20] [--points uniform|rays] [--json PATH]

Encoder: 3-D points, 16 levels x 2 features, 2^19-row tables, resolution 16..2048, fp32 (as in training).
Passes timed (CUDA events, after warm-up; median):
  fwd          outputs only
  fwd+bwd      outputs, then gradients w.r.t. the embeddings
  fwd+bwd+dx   ... and w.r.t. the inputs
  eikonal      outputs, input gradients with create_graph=True (analytic normals; no table scatter in that
               pass, as in training: HashEncoder.input_gradients_only), then the gradients of
               <outputs, g> + <grad_inputs, v> w.r.t. the embeddings and the upstream gradient: what a training
               step with an Eikonal loss on analytic normals runs (first backward, double backward, and the
               first-order backward of the SDF loss)
  bwdbwd       the double backward alone: gradients of <grad_inputs, v> w.r.t. the embeddings and the upstream
               gradient, on a graph built once (JVP + table scatter + mixed second derivatives)
Effective bandwidth counts the bytes the kernels must move: 2^D corner rows gathered (or scattered) per point and
level, plus the per-point inputs, outputs and gradients, over the time.
(The layout and fp16 A/B tables of earlier versions are in BENCHMARKS.md and git history; the winners, level-major
[L, N, C] features and float32 tables, are the only code path now.)
"""
import argparse
import json
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hashencoder import hashgrid, torch_impl  # noqa: E402
from hashencoder.backend import get_backend  # noqa: E402
from hashencoder.hashgrid import hash_encode_with_backend, level_layout  # noqa: E402

INPUT_DIM, NUM_LEVELS, LEVEL_DIM, LOG2_TABLE = 3, 16, 2, 19
BASE_RES, FINEST_RES = 16, 2048
PASSES = ("fwd", "fwd+bwd", "fwd+bwd+dx", "bwdbwd", "eikonal")


def ray_points(num_points, generator, samples_per_ray=128):
    """Points as a training step orders them: `samples_per_ray` consecutive samples along each of
    num_points / samples_per_ray random rays through the unit cube (in [0, 1]^3)."""
    n_rays = num_points // samples_per_ray
    origins = torch.randn(n_rays, 3, device="cuda", generator=generator)
    origins = origins / origins.norm(dim=-1, keepdim=True) * 1.7
    targets = (torch.rand(n_rays, 3, device="cuda", generator=generator) - 0.5) * 0.8
    dirs = targets - origins
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    t = torch.linspace(0.7, 2.7, samples_per_ray, device="cuda")
    points = (origins[:, None] + dirs[:, None] * t[None, :, None]).reshape(-1, 3) * 0.5 + 0.5
    return points.clamp(0, 1).contiguous()


def make_problem(num_points, seed=0, points="uniform"):
    scale = (FINEST_RES / BASE_RES) ** (1 / (NUM_LEVELS - 1))
    resolutions, offsets = level_layout(INPUT_DIM, NUM_LEVELS, BASE_RES, scale, LOG2_TABLE)
    generator = torch.Generator(device="cuda").manual_seed(seed)
    if points == "rays":
        inputs = ray_points(num_points, generator)
    else:
        inputs = torch.rand(num_points, INPUT_DIM, device="cuda", generator=generator)
    return {
        "inputs": inputs,
        "embeddings": torch.rand(offsets[-1], LEVEL_DIM, device="cuda", generator=generator) * 2 - 1,
        "offsets": torch.tensor(offsets, dtype=torch.int32, device="cuda"),
        "resolutions": torch.tensor(resolutions, dtype=torch.int32, device="cuda"),
        "grad_outputs": torch.randn(num_points, NUM_LEVELS * LEVEL_DIM, device="cuda", generator=generator),
        "grad_grad_inputs": torch.randn(num_points, INPUT_DIM, device="cuda", generator=generator),
    }


def make_pass(name, encode, problem):
    """A closure running one pass of `name` with `encode(inputs, embeddings)`."""
    x, table = problem["inputs"], problem["embeddings"]
    g, v = problem["grad_outputs"], problem["grad_grad_inputs"]

    if name == "fwd":
        def run():
            with torch.no_grad():
                return encode(x, table)
    elif name == "fwd+bwd":
        table_leaf = table.detach().requires_grad_()

        def run():
            return torch.autograd.grad(encode(x, table_leaf), table_leaf, g)
    elif name == "fwd+bwd+dx":
        x_leaf, table_leaf = x.detach().requires_grad_(), table.detach().requires_grad_()

        def run():
            return torch.autograd.grad(encode(x_leaf, table_leaf), (x_leaf, table_leaf), g)
    elif name == "bwdbwd":
        x_leaf, table_leaf = x.detach().requires_grad_(), table.detach().requires_grad_()
        g_leaf = g.detach().requires_grad_()
        (normals,) = torch.autograd.grad(encode(x_leaf, table_leaf), x_leaf, g_leaf, create_graph=True)

        def run():
            return torch.autograd.grad(normals, (table_leaf, g_leaf), v, retain_graph=True)
    elif name == "eikonal":
        x_leaf, table_leaf = x.detach().requires_grad_(), table.detach().requires_grad_()
        g_leaf = g.detach().requires_grad_()  # in training it comes from the MLP and requires grad
        mode = hashgrid.BackwardMode()  # as NeuSModel.sdf_and_gradient: no table scatter in the normals pass

        def run():
            out = encode(x_leaf, table_leaf, mode)
            mode.inputs_only = True
            (normals,) = torch.autograd.grad(out, x_leaf, g_leaf, create_graph=True)
            mode.inputs_only = False
            return torch.autograd.grad((out, normals), (table_leaf, g_leaf), (g, v))
    else:
        raise ValueError(name)
    return run


def time_ms(run, repeats, warmup=3):
    """Median milliseconds of `run` over `repeats` calls, each between CUDA events."""
    for _ in range(warmup):
        run()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def pass_bytes(name, num_points, table_bytes_per_row):
    """Bytes the kernels of a pass must move at least (fp32 inputs, tables and per-point features)."""
    corners = num_points * NUM_LEVELS * 2**INPUT_DIM * table_bytes_per_row  # one sweep over the corner rows
    features = num_points * NUM_LEVELS * table_bytes_per_row  # [N, L * C] outputs or upstream gradients
    points = num_points * INPUT_DIM * 4  # [N, D] inputs or input gradients
    forward = points + corners + features
    backward = points + features + corners  # read inputs, gradients, scatter
    backward_dx = backward + corners + points  # gather again for the input gradient, write it
    double = 2 * points + features + 2 * corners + features + points  # read x, v, g; scatter, gather; write jvp, dx
    return {
        "fwd": forward,
        "fwd+bwd": forward + backward,
        "fwd+bwd+dx": forward + backward_dx,
        "bwdbwd": double,
        "eikonal": forward + (backward_dx - corners) + double + backward,  # normals pass: no scatter
    }[name]


def bench_main(sizes, repeats, twin_repeats, backend, points):
    rows = []
    for log2_points in sizes:
        num_points = 2**log2_points
        problem = make_problem(num_points, points=points)

        def cuda_encode(x, table, mode=None):
            return hash_encode_with_backend(x, table, problem["offsets"], problem["resolutions"], backend, mode)

        def twin_encode(x, table, mode=None):
            return torch_impl.hash_encode(x, table, problem["offsets"], problem["resolutions"])

        for name in PASSES:
            cuda_ms = time_ms(make_pass(name, cuda_encode, problem), repeats)
            try:
                twin_ms = time_ms(make_pass(name, twin_encode, problem), twin_repeats, warmup=1)
            except torch.cuda.OutOfMemoryError:
                twin_ms = float("nan")
            torch.cuda.empty_cache()
            gbytes = pass_bytes(name, num_points, LEVEL_DIM * 4) / 1e9
            rows.append({
                "points": f"2^{log2_points}", "pass": name, "cuda_ms": cuda_ms, "cuda_GBps": gbytes / cuda_ms * 1e3,
                "twin_ms": twin_ms, "twin_GBps": gbytes / twin_ms * 1e3, "speedup": twin_ms / cuda_ms,
            })
            print(f"  {rows[-1]['points']} {name}: cuda {cuda_ms:.3f} ms, twin {twin_ms:.2f} ms", flush=True)
    return rows


def markdown_table(rows, columns, formats):
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [formats.get(c, "{}").format(row[c]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[18, 20, 22], help="log2 of the point counts")
    parser.add_argument("--repeats", type=int, default=30, help="timed runs of the CUDA passes (median)")
    parser.add_argument("--twin-repeats", type=int, default=5, help="timed runs of the (slow) twin passes")
    parser.add_argument("--json", help="also save the results here")
    parser.add_argument("--points", choices=["uniform", "rays"], default="uniform",
                        help="uniform random points, or 128 consecutive samples along each random ray (the order "
                             "of a training step, where neighbouring threads share cells)")
    args = parser.parse_args()

    if not torch.cuda.is_available():
        sys.exit("bench_kernels: needs a CUDA device")
    backend = get_backend()
    if backend is None:
        sys.exit("bench_kernels: the _hashencoder_cuda extension is unavailable")
    device = torch.cuda.get_device_name()
    print(f"# hash-grid kernels on {device} (torch {torch.__version__}, CUDA {torch.version.cuda})")
    print(f"# {INPUT_DIM}-D, {NUM_LEVELS} levels x {LEVEL_DIM}, 2^{LOG2_TABLE} table, res {BASE_RES}..{FINEST_RES}")

    print(f"# points: {args.points}")
    results = {"device": device, "torch": torch.__version__, "points": args.points,
               "main": bench_main(args.sizes, args.repeats, args.twin_repeats, backend, args.points)}
    print()
    print(markdown_table(
        results["main"], ["points", "pass", "cuda_ms", "cuda_GBps", "twin_ms", "twin_GBps", "speedup"],
        {"cuda_ms": "{:.3f}", "cuda_GBps": "{:.0f}", "twin_ms": "{:.2f}", "twin_GBps": "{:.0f}", "speedup": "{:.1f}x"},
    ))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
