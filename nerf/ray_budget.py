"""How many rays a `--cuda_ray` training step draws, so that they about fill its fixed sample budget.

The march of a training step fills exactly `capacity` samples and drops the rays that do not fit; the number of
rays drawn follows the samples per ray of recent steps, read back without waiting for the GPU (a step or two
stale). The loop owns one of these: it records each step's samples per ray and asks for the next step's count.
"""
import math

import torch


class RayBudget:
    def __init__(self, capacity: int, num_rays: int, device):
        self.capacity = capacity  # samples per training step
        self.num_rays = num_rays  # rays before anything is measured; the cap is 16x this
        self.ray_count = None
        # Host memory, pinned on CUDA so that the device-to-host copy is asynchronous (and can be captured in a
        # CUDA graph with the rest of the step).
        self.samples_per_ray = torch.zeros((), pin_memory=torch.device(device).type == "cuda")

    def record(self, samples_per_ray):
        """samples_per_ray: 0-d device tensor of the step just rendered; copied without waiting."""
        self.samples_per_ray.copy_(samples_per_ray.clamp_min(1.0), non_blocking=True)

    def rays_per_step(self) -> int:
        """A power of two, so that it changes rarely (each new count is a new CUDA graph): the smallest one with
        25% more rays than should fit the budget (the budget fills up; the surplus costs only their marching),
        kept while it stays within 2.5x of that, between 256 and 16 * num_rays."""
        samples_per_ray = float(self.samples_per_ray)  # host memory: no wait (the copy may still be in flight)
        if samples_per_ray <= 0:
            return self.ray_count or self.num_rays
        wanted = 1.25 * self.capacity / samples_per_ray
        if not self.ray_count or wanted > self.ray_count or wanted * 2.5 < self.ray_count:
            self.ray_count = 2 ** math.ceil(math.log2(min(max(wanted, 256), 16 * self.num_rays)))
        return self.ray_count

    def state_dict(self):
        return {"samples_per_ray": float(self.samples_per_ray), "ray_count": self.ray_count}

    def load_state_dict(self, state):
        self.samples_per_ray.fill_(state["samples_per_ray"])
        self.ray_count = state["ray_count"]
