"""Where a training step's time goes: GPU kernels, host-side (Python and launch) time, and synchronisations.

    python scripts/profile_training.py DATA [--cuda_ray] [--skip 1000] [--steps 50] [main_sdf.py flags...]

Trains `--skip` steps (untimed, so the occupancy grid and progressive levels are in their usual state), then
runs `--steps` steps under `torch.profiler` and prints: wall time per step, GPU busy time per step (sum of kernel
times; the rest of the wall time the GPU waits for the host), kernel launches and host-device synchronisations
per step, and the kernels taking the most GPU time.
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import main_sdf  # noqa: E402
from nerf.run import StageClock, prepare  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--skip", type=int, default=1000, help="steps trained before profiling")
    p.add_argument("--steps", type=int, default=50, help="steps profiled")
    p.add_argument("--top", type=int, default=25, help="kernels listed")
    p.add_argument("--trace", help="also write a Chrome trace here")
    args, rest = p.parse_known_args()
    if not torch.cuda.is_available():
        sys.exit("profile_training: needs a CUDA device")
    opt = main_sdf.parse_args(rest + ["--workspace", "/tmp/profile_training", "--quiet", "--eval_every", "0",
                                      "--ckpt_every", "0", "--ckpt", "scratch", "--device", "cuda"])
    config, _, trainer = prepare(opt, "cuda", StageClock(time.time()))
    for _ in range(args.skip):  # the loop's own bookkeeping is left out: only steps are compared
        trainer.train_step()
    torch.cuda.synchronize()

    samples_before, rays_before = int(trainer.samples_seen), int(trainer.rays_seen)
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step()
        torch.cuda.synchronize()
        wall = (time.perf_counter() - start) / args.steps

    events = prof.key_averages()
    # Kernels only: not the GPU-side ranges of annotations such as "Optimizer.step#Adam.step".
    kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA and "#" not in e.key
               and not getattr(e, "is_user_annotation", False)]
    gpu_us = sum(e.self_device_time_total for e in kernels) / args.steps
    launches = sum(e.count for e in kernels) / args.steps
    samples = (int(trainer.samples_seen) - samples_before) / args.steps
    rays = (int(trainer.rays_seen) - rays_before) / args.steps  # rendered (dropped rays left out), as trained
    syncs = sum(e.count for e in events if e.key in ("cudaStreamSynchronize", "cudaDeviceSynchronize",
                                                       "cudaMemcpyAsync", "cudaEventSynchronize")) / args.steps
    path = "--cuda_ray" if config.sampler.cuda_ray else "PyTorch path"
    print(f"# {config.data.path} {path}, steps {args.skip}..{args.skip + args.steps}, {torch.cuda.get_device_name()}")
    print(f"wall per step {wall * 1e3:.2f} ms | GPU busy {gpu_us / 1e3:.2f} ms ({gpu_us / 1e4 / wall:.0f}%) | "
          f"kernels/step {launches:.0f} | memcpy+sync calls/step {syncs:.1f} | samples/step {samples:.0f} | "
          f"rays/step {rays:.0f}")
    print(events.table(sort_by="self_device_time_total", row_limit=args.top, max_name_column_width=70))
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=70))
    if args.trace:
        prof.export_chrome_trace(args.trace)


if __name__ == "__main__":
    main()
