"""How many rays a `--cuda_ray` training step draws, so that they about fill its fixed sample budget.

The march of a training step fills exactly `capacity` samples and drops the rays that do not fit; the number of
rays drawn follows the samples per ray of recent steps. The loop owns one of these: it records each step's
samples per ray (copied to the host without waiting for the GPU), and every `check_every` steps, right after the
wait on the GPU it makes anyway, it `refresh`es the counts from the latest record. So the counts depend on the
step alone, never on how far the host ran ahead of the GPU, and a resumed run draws what the uninterrupted one drew.
With error-guided rays (`error_map.py`) the guided share is one of the budget's samples, not of its rays: guided
rays hit the object and take several times the samples of a uniform ray (which often crosses empty space), so a
share of the rays says little about where the budget goes; drawn first, they are never the rays the march drops.
"""
import math

import torch


class RayBudget:
    def __init__(self, capacity: int, num_rays: int, device):
        self.capacity = capacity  # samples per training step
        self.num_rays = num_rays  # rays before anything is measured; the cap is 16x this
        self.ray_count = None
        # The latest record: host memory, pinned on CUDA so that the device-to-host copies are asynchronous (and
        # can be captured in a CUDA graph with the rest of the step). 0: nothing recorded yet.
        pinned = torch.device(device).type == "cuda"
        self.latest = torch.zeros(2, pin_memory=pinned)  # samples per kept ray, per kept guided ray
        self.measured = (0.0, 0.0)  # the same, as of the last refresh: what the counts follow

    def record(self, ray_samples, ray_valid, guided=None):
        """The step just rendered: each ray's real samples ray_samples [R] (0 for a dropped ray), which rays
        the march kept, ray_valid [R] bool, and with error-guided rays which were guided, guided [R] bool. The
        means are copied to the host without waiting."""
        samples_per_ray = ray_samples.sum() / ray_valid.sum().clamp_min(1)
        self.latest[0].copy_(samples_per_ray.clamp_min(1.0), non_blocking=True)
        if guided is not None:  # a kept guided ray that crosses nothing counts too: drawn, it costs 0 samples
            kept = guided & ray_valid
            self.latest[1].copy_((ray_samples * kept).sum() / kept.sum().clamp_min(1), non_blocking=True)

    def wait_for_latest(self):
        if self.latest.is_pinned():  # free right after the loop's own wait on the GPU
            torch.cuda.synchronize()

    def refresh(self):
        """The counts follow the latest record from now on (the copies are waited for)."""
        self.wait_for_latest()
        self.measured = tuple(self.latest.tolist())

    def rays_per_step(self) -> int:
        """A power of two, so that it changes rarely (each new count is a new CUDA graph): the smallest one with
        25% more rays than should fit the budget (the budget fills up; the surplus costs only their marching),
        kept while it stays within 2.5x of that, between 256 and 16 * num_rays."""
        samples_per_ray = self.measured[0]
        if samples_per_ray <= 0:
            return self.ray_count or self.num_rays
        wanted = 1.25 * self.capacity / samples_per_ray
        if not self.ray_count or wanted > self.ray_count or wanted * 2.5 < self.ray_count:
            self.ray_count = 2 ** math.ceil(math.log2(min(max(wanted, 256), 16 * self.num_rays)))
        return self.ray_count

    def guided_rays(self, share: float, ray_count: int) -> int:
        """How many of `ray_count` rays to draw guided, so that they fill `share` of the sample budget (drawn
        first, they are never the rays the march drops); before they are measured, `share` of the rays."""
        samples_per_guided_ray = self.measured[1]
        if samples_per_guided_ray <= 0:
            return round(share * ray_count)
        return min(ray_count, round(share * self.capacity / samples_per_guided_ray))

    def state_dict(self):
        self.wait_for_latest()
        return {"latest": self.latest.tolist(), "measured": list(self.measured), "ray_count": self.ray_count}

    def load_state_dict(self, state):
        if "latest" not in state:  # a checkpoint from before the guided share: one record, no refresh
            state = {"latest": [state["samples_per_ray"], 0.0], "measured": [state["samples_per_ray"], 0.0],
                     "ray_count": state["ray_count"]}
        self.latest.copy_(torch.tensor(state["latest"]))
        self.measured = tuple(state["measured"])
        self.ray_count = state["ray_count"]
