"""Timings of the raymarching kernels (CUDA events, median over runs) on a synthetic scene.

    python scripts/bench_raymarching.py --rays 4096 --resolution 128
    python scripts/bench_raymarching.py --marching-cubes 256,512,1024   # our kernel against the PyMCubes twin
"""
import argparse
import functools
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import raymarching  # noqa: E402
from raymarching import torch_impl  # noqa: E402


def median_ms(fn, runs: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def rippled_sphere(resolution, device):
    """[R, R, R] SDF-like grid over [-1, 1]^3: a sphere of radius 0.6 with ripples (a surface of the size and
    detail of a trained object's), filled slice by slice (no [R^3, 3] point array)."""
    lin = torch.linspace(-1, 1, resolution, device=device)
    y, z = torch.meshgrid(lin, lin, indexing="ij")
    grid = torch.empty((resolution,) * 3, device=device)
    for i, x in enumerate(lin):
        grid[i] = (x * x + y * y + z * z).sqrt() - 0.6 + 0.02 * (12 * x).sin() * (12 * y).sin() * (12 * z).sin()
    return grid


def bench_marching_cubes(resolutions, runs, twin_runs):
    """Marching cubes of `rippled_sphere` grids: the kernel (CUDA events, median of `runs`) against the twin
    (PyMCubes on the CPU, including the copy of the grid to the host; median of `twin_runs` wall-clock runs)."""
    for resolution in resolutions:
        sdf = rippled_sphere(resolution, "cuda")
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        vertices, faces = raymarching.marching_cubes(sdf)
        extra_gb = (torch.cuda.max_memory_allocated() - base) / 2**30
        kernel_ms = median_ms(functools.partial(raymarching.marching_cubes, sdf), runs)
        twin_s = []
        for _ in range(twin_runs):
            start = time.perf_counter()
            twin_vertices, twin_faces = torch_impl.marching_cubes(sdf)
            twin_s.append(time.perf_counter() - start)
        twin_ms = 1e3 * sorted(twin_s)[len(twin_s) // 2]
        same = len(twin_vertices) == len(vertices) and len(twin_faces) == len(faces)
        print(f"marching_cubes {resolution:4d}^3  V {len(vertices):9d}  F {len(faces):9d}  kernel {kernel_ms:9.2f} ms"
              f"  (+{extra_gb:.2f} GB)  twin {twin_ms:10.1f} ms  x{twin_ms / kernel_ms:7.1f}"
              f"  {'same counts' if same else 'COUNTS DIFFER'}")
        del sdf, vertices, faces, twin_vertices, twin_faces  # before the next, larger grid


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rays", type=int, default=4096)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--max-samples", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--marching-cubes", default="",
                        help="comma-separated grid sizes (e.g. 256,512,1024): time marching cubes there instead")
    parser.add_argument("--twin-runs", type=int, default=1, help="runs of the PyMCubes twin per size")
    args = parser.parse_args()
    assert torch.cuda.is_available(), "needs a CUDA device"
    if args.marching_cubes:
        bench_marching_cubes([int(r) for r in args.marching_cubes.split(",")], args.runs, args.twin_runs)
        return
    device = "cuda"
    R = args.resolution
    aabb = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0], device=device)
    step = 2 * 3**0.5 / args.max_samples

    # A sphere shell of radius 0.6 as the occupied region, rays from a camera ring looking at the origin.
    grid = raymarching.OccupancyGrid(aabb, resolution=R).to(device)
    grid.update(lambda p: ((p.norm(dim=-1) - 0.6).abs() < 0.05).float(), threshold=0.5, dilate=1)
    angle = torch.rand(args.rays, device=device) * 6.2832
    rays_o = torch.stack([2.5 * angle.cos(), 2.5 * angle.sin(), torch.zeros_like(angle)], -1)
    target = (torch.rand(args.rays, 3, device=device) * 2 - 1) * 0.8
    rays_d = torch.nn.functional.normalize(target - rays_o, dim=-1)
    nears, fars = raymarching.near_far_from_aabb(rays_o, rays_d, aabb)
    jitter = torch.rand(args.rays, device=device)

    def march():
        return raymarching.march_rays_train(rays_o, rays_d, nears, fars, grid.bitfield, aabb, R, step,
                                            args.max_samples, jitter)

    ray_indices, t_starts, t_ends, packed_info = march()
    n_samples = t_starts.numel()
    alphas = (torch.rand(n_samples, device=device) * 0.3).requires_grad_()
    values = torch.rand(n_samples, 4, device=device, requires_grad=True)

    def composite_forward_backward():
        weights, opacity, accum = raymarching.composite_rays_train(alphas, values, packed_info)
        (opacity.sum() + accum.sum()).backward()

    print(f"rays {args.rays}  grid {R}^3 ({grid.occupied_fraction():.3f} occupied)  samples {n_samples}")
    timed = {
        "near_far_from_aabb": lambda: raymarching.near_far_from_aabb(rays_o, rays_d, aabb),
        "packbits": lambda: raymarching.packbits(grid.occupancy, 0.5),
        "march_rays_train": march,
        "composite_rays_train fw+bw": composite_forward_backward,
    }
    for name, fn in timed.items():
        print(f"{name:28s} {median_ms(fn, args.runs):8.3f} ms")


if __name__ == "__main__":
    main()
