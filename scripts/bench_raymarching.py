"""Timings of the raymarching kernels (CUDA events, median over runs) on a synthetic scene.

    python scripts/bench_raymarching.py --rays 4096 --resolution 128
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import raymarching  # noqa: E402


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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rays", type=int, default=4096)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--max-samples", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    assert torch.cuda.is_available(), "needs a CUDA device"
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
