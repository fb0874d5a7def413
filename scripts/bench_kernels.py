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
A second table compares design choices at 2^20 points: per-level features (the forward's outputs, and
separately the upstream gradients the backward reads) as [N, L*C] (strided rows) or [L, N, C] (coalesced, plus a
transpose), and, for fp16 tables, table gradients accumulated in fp32 or with half2
atomics (with the error of the latter).
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


def make_problem(num_points, dtype=torch.float32, seed=0, points="uniform"):
    scale = (FINEST_RES / BASE_RES) ** (1 / (NUM_LEVELS - 1))
    resolutions, offsets = level_layout(INPUT_DIM, NUM_LEVELS, BASE_RES, scale, LOG2_TABLE)
    generator = torch.Generator(device="cuda").manual_seed(seed)
    if points == "rays":
        inputs = ray_points(num_points, generator)
    else:
        inputs = torch.rand(num_points, INPUT_DIM, device="cuda", generator=generator)
    return {
        "inputs": inputs,
        "embeddings": (torch.rand(offsets[-1], LEVEL_DIM, device="cuda", generator=generator) * 2 - 1).to(dtype),
        "offsets": torch.tensor(offsets, dtype=torch.int32, device="cuda"),
        "resolutions": torch.tensor(resolutions, dtype=torch.int32, device="cuda"),
        "grad_outputs": torch.randn(num_points, NUM_LEVELS * LEVEL_DIM, device="cuda", generator=generator).to(dtype),
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
    """Bytes the kernels of a pass must move at least (fp32 inputs, per-point features of the table dtype)."""
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


def bench_designs(repeats, backend, log2_points=20):
    """Layout of per-level features and fp16 gradient accumulation, at 2^20 points."""
    rows = []
    saved = (hashgrid._LEVEL_MAJOR, hashgrid._LEVEL_MAJOR_GRADS, hashgrid._FP16_GRAD_ACCUMULATION)
    for dtype in (torch.float32, torch.float16):
        problem = make_problem(2**log2_points, dtype=dtype)

        def cuda_encode(x, table, mode=None):
            return hash_encode_with_backend(x, table, problem["offsets"], problem["resolutions"], backend, mode)

        accumulations = ("fp32", "half2") if dtype == torch.float16 else ("fp32",)
        layouts = ((False, False), (True, False), (True, True))  # (features, upstream gradients) level-major
        for (level_major, level_major_grads), accumulation in [(lm, acc) for lm in layouts for acc in accumulations]:
            hashgrid._LEVEL_MAJOR, hashgrid._LEVEL_MAJOR_GRADS = level_major, level_major_grads
            hashgrid._FP16_GRAD_ACCUMULATION = accumulation
            row = {"dtype": str(dtype).replace("torch.", ""),
                   "layout": "[L, N, C]" if level_major else "[N, L*C]",
                   "grad layout": "[L, N, C]" if level_major_grads else "[N, L*C]", "grad accumulation": accumulation}
            for name in PASSES:
                row[name] = time_ms(make_pass(name, cuda_encode, problem), repeats)
            if dtype == torch.float16:
                # Error of the table gradient against a float64 reference computed with the twin.
                table = problem["embeddings"].detach().requires_grad_()
                (grad,) = torch.autograd.grad(cuda_encode(problem["inputs"], table), table, problem["grad_outputs"])
                table64 = problem["embeddings"].double().requires_grad_()
                out64 = torch_impl.hash_encode(problem["inputs"].double(), table64, problem["offsets"],
                                               problem["resolutions"])
                (grad64,) = torch.autograd.grad(out64, table64, problem["grad_outputs"].double())
                row["grad max err / max"] = ((grad.double() - grad64).abs().max() / grad64.abs().max()).item()
            rows.append(row)
            print(f"  {row}", flush=True)
    hashgrid._LEVEL_MAJOR, hashgrid._LEVEL_MAJOR_GRADS, hashgrid._FP16_GRAD_ACCUMULATION = saved
    return rows


def markdown_table(rows, columns, formats):
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [formats.get(c, "{}").format(row[c]) if c in row else "" for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[18, 20, 22], help="log2 of the point counts")
    parser.add_argument("--repeats", type=int, default=30, help="timed runs of the CUDA passes (median)")
    parser.add_argument("--twin-repeats", type=int, default=5, help="timed runs of the (slow) twin passes")
    parser.add_argument("--no-designs", action="store_true", help="skip the design-choice table")
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
    if not args.no_designs:
        results["designs"] = bench_designs(args.repeats, backend)
        print()
        print(markdown_table(
            results["designs"], ["dtype", "layout", "grad layout", "grad accumulation", *PASSES, "grad max err / max"],
            {**{p: "{:.3f}" for p in PASSES}, "grad max err / max": "{:.1e}"},
        ))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
