"""NeuS volume rendering of an SDF: hierarchical sampling inside the unit sphere and compositing.

The one place where the NeuS opacity is computed from SDF values is `neus_alpha`; up-sampling, rendering and
the occupancy grid all call it. Compositing goes through `raymarching.composite_rays_train` (CUDA kernel on
GPU, its PyTorch twin on CPU), with the dense [rays, samples] layout packed as equal-length rays.
"""
import math

import torch
import torch.nn.functional as F

import raymarching

UPSAMPLE_PER_ROUND = 16  # NeuS: rounds of 16 importance samples at inv_s = 64 * 2^i


def neus_alpha(sdf, cos, dists, inv_s):
    """NeuS discrete opacity of a ray section of length `dists` whose middle has SDF `sdf` and whose SDF
    changes along the ray at rate `cos` (<= 0 when entering the surface).

    alpha = max((Phi(s_prev) - Phi(s_next)) / Phi(s_prev), 0) with Phi the sigmoid of slope inv_s and
    s_prev/next = sdf -/+ cos * dists / 2 (Wang et al. 2021, eq. 13). All arguments broadcast together.
    """
    prev_cdf = torch.sigmoid((sdf - cos * dists * 0.5) * inv_s)
    next_cdf = torch.sigmoid((sdf + cos * dists * 0.5) * inv_s)
    return ((prev_cdf - next_cdf + 1e-5) / (prev_cdf + 1e-5)).clamp(0.0, 1.0)


def annealed_cos(cos, ratio):
    """NeuS cos annealing: early in training treat every section as half-facing the ray, so that gradients
    reach surfaces seen at grazing angles; `ratio` goes 0 -> 1 (then this is -relu(-cos))."""
    return -(F.relu(-cos * 0.5 + 0.5) * (1.0 - ratio) + F.relu(-cos) * ratio)


def composite_dense(alphas, values):
    """Composite equal-length rays: alphas [R, S], values [R, S, C] -> weights [R, S], opacity [R], accum [R, C]."""
    n_rays, n_samples = alphas.shape
    starts = torch.arange(n_rays, device=alphas.device, dtype=torch.int32) * n_samples
    packed_info = torch.stack([starts, torch.full_like(starts, n_samples)], dim=-1)
    weights, opacity, accum = raymarching.composite_rays_train(
        alphas.reshape(-1).float(), values.reshape(n_rays * n_samples, -1).float(), packed_info)
    return weights.reshape(n_rays, n_samples), opacity, accum


def sample_pdf(bins, weights, n_samples, deterministic):
    """Inverse-CDF sampling: bins [R, S] (sorted), weights [R, S - 1] of the sections -> [R, n_samples]."""
    pdf = weights + 1e-5  # every section keeps a little mass, so empty rays still sample evenly
    pdf = pdf / pdf.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], -1)  # [R, S]
    if deterministic:
        u = torch.linspace(0.5 / n_samples, 1 - 0.5 / n_samples, n_samples, device=bins.device)
        u = u.expand(bins.shape[0], n_samples).contiguous()
    else:
        u = torch.rand(bins.shape[0], n_samples, device=bins.device).sort(-1).values
    above = torch.searchsorted(cdf, u, right=True).clamp(max=cdf.shape[1] - 1)
    below = (above - 1).clamp(min=0)
    cdf_below, cdf_above = cdf.gather(1, below), cdf.gather(1, above)
    bins_below, bins_above = bins.gather(1, below), bins.gather(1, above)
    span = cdf_above - cdf_below
    t = (u - cdf_below) / torch.where(span < 1e-5, torch.ones_like(span), span)
    return bins_below + t * (bins_above - bins_below)


def shade(model, pts, dirs, dists, create_graph):
    """The field at sample points: pts, dirs [M, 3] (dirs unit), dists [M] section lengths ->
    alpha [M], rgb [M, 3], normals [M, 3] (unit), gradient [M, 3] (raw SDF gradient, for the Eikonal loss)."""
    sdf, feature, gradient = model.sdf_and_gradient(pts, create_graph=create_graph)
    normals = F.normalize(gradient.float(), dim=-1)
    rgb = model.color(pts, normals, dirs, feature).float()
    cos = annealed_cos((dirs * gradient.float()).sum(-1), model.cos_anneal_ratio)
    alpha = neus_alpha(sdf.float(), cos, dists, model.inv_s())
    return alpha, rgb, normals, gradient


def finish(accum, opacity, bg_color):
    """Split composited [rgb, t, normal] into the renderer's outputs, with the background behind."""
    return {
        "rgb": accum[:, :3] + (1.0 - opacity[:, None]) * bg_color,
        "depth": accum[:, 3],
        "normal": accum[:, 4:],
        "opacity": opacity,
    }


class Renderer:
    """What the trainer needs of a renderer; subclasses implement `render`."""

    def to(self, device):
        return self

    def update_step(self, step: int, total_steps: int):
        """Step-dependent state (the occupancy grid); nothing by default."""

    def rays_per_step(self, num_rays: int) -> int:
        return num_rays

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass

    def render_chunked(self, rays_o, rays_d, bg_color, chunk=4096):
        """Render many rays without keeping graphs; returns rgb, depth, normal, opacity concatenated."""
        out = {k: [] for k in ("rgb", "depth", "normal", "opacity")}
        for i in range(0, rays_o.shape[0], chunk):
            with torch.no_grad():
                bg = bg_color if bg_color.dim() == 1 else bg_color[i : i + chunk]
                res = self.render(rays_o[i : i + chunk], rays_d[i : i + chunk], bg)
            for k in out:
                out[k].append(res[k].detach())
        return {k: torch.cat(v, 0) for k, v in out.items()}


class NeuSRenderer(Renderer):
    """Renders rays through a `NeuSModel` (see network_sdf.py).

    num_steps stratified samples between the unit sphere's near and far, then `upsample_steps` more in rounds
    of 16 importance samples drawn from the NeuS weights at inv_s = 64, 128, 256, ...
    """

    def __init__(self, model, num_steps=64, upsample_steps=64, radius=1.0):
        self.model = model
        self.num_steps = num_steps
        self.upsample_rounds = upsample_steps // UPSAMPLE_PER_ROUND
        self.radius = radius

    def _sdf(self, pts):
        return self.model.sdf(pts.reshape(-1, 3)).reshape(pts.shape[:-1]).float()

    @torch.no_grad()
    def _upsample(self, z, sdf, inv_s):
        """New sample depths [R, 16] from the NeuS weights of the sections between samples z [R, S]."""
        mid_sdf = (sdf[:, :-1] + sdf[:, 1:]) * 0.5
        dists = z[:, 1:] - z[:, :-1]
        cos = (sdf[:, 1:] - sdf[:, :-1]) / (dists + 1e-5)
        # Take the gentler of this and the previous section's slope (robust to a single noisy sample), and
        # never let a section count as leaving the surface.
        prev_cos = torch.cat([torch.zeros_like(cos[:, :1]), cos[:, :-1]], -1)
        cos = torch.minimum(cos, prev_cos).clamp(-1e3, 0.0)
        alpha = neus_alpha(mid_sdf, cos, dists, inv_s)
        weights, _, _ = composite_dense(alpha, z[:, :-1, None])
        return sample_pdf(z, weights, UPSAMPLE_PER_ROUND, deterministic=True)

    def render(self, rays_o, rays_d, bg_color, perturb=False, create_graph=False):
        """Render rays.

        Args:
            rays_o, rays_d: [R, 3] in normalised space (rays_d unit).
            bg_color: [R, 3] or [3], composited where the ray is not opaque.
            perturb: jitter the stratified samples (training).
            create_graph: keep normals differentiable (training).
        Returns a dict: rgb [R, 3], depth [R] (distance along the ray, normalised units, opacity-weighted),
            normal [R, 3] (world-space, opacity-weighted), opacity [R], gradient [R*S, 3] and inside [R*S]
            (SDF gradients at the samples and which lie in the sphere, for the Eikonal loss), weights [R, S].
        """
        model = self.model
        n_rays, device = rays_o.shape[0], rays_o.device
        nears, fars = raymarching.near_far_from_sphere(rays_o, rays_d, radius=self.radius)
        hit = (fars > nears).float()  # [R]

        steps = torch.arange(self.num_steps, device=device, dtype=torch.float32)
        offsets = torch.rand(n_rays, self.num_steps, device=device) if perturb else 0.5
        z = nears[:, None] + (fars - nears)[:, None] * (steps[None] + offsets) / self.num_steps  # [R, S]

        if self.upsample_rounds > 0:
            with torch.no_grad():
                sdf = self._sdf(rays_o[:, None] + rays_d[:, None] * z[..., None])
                for i in range(self.upsample_rounds):
                    new_z = self._upsample(z, sdf, 64.0 * 2**i)
                    new_sdf = self._sdf(rays_o[:, None] + rays_d[:, None] * new_z[..., None])
                    z, order = torch.cat([z, new_z], -1).sort(-1)
                    sdf = torch.cat([sdf, new_sdf], -1).gather(1, order)

        # Sections: from each sample to the next, the last one ends at the far bound.
        dists = torch.cat([z[:, 1:] - z[:, :-1], (fars[:, None] - z[:, -1:]).clamp_min(0)], -1)  # [R, S]
        mid_z = z + dists * 0.5
        n_samples = z.shape[1]
        pts = (rays_o[:, None] + rays_d[:, None] * mid_z[..., None]).reshape(-1, 3)
        dirs = rays_d[:, None].expand(n_rays, n_samples, 3).reshape(-1, 3)

        alpha, rgb, normals, gradient = shade(model, pts, dirs, dists.reshape(-1), create_graph)
        alpha = alpha * hit.repeat_interleave(n_samples)

        values = torch.cat([rgb, mid_z.reshape(-1, 1), normals], -1).reshape(n_rays, n_samples, 7)
        weights, opacity, accum = composite_dense(alpha.reshape(n_rays, n_samples), values)
        out = finish(accum, opacity, bg_color)
        out["weights"] = weights
        out["gradient"] = gradient
        out["inside"] = pts.detach().norm(dim=-1) < self.radius
        return out


class MarchingRenderer(Renderer):
    """`--cuda_ray`: samples at a fixed step (the box diagonal / `steps_per_diagonal`), only in occupied cells of
    an occupancy grid over the unit sphere's box, composited with the packed `raymarching` kernels (their twins on
    CPU).

    The grid holds, per cell, the NeuS alpha that a cell-diagonal section at the cell's |SDF| would have at the
    current inv_s (so only a shell around the surface, thinning as inv_s grows, stays occupied; cells under
    `threshold` are skipped), refreshed every `update_every` steps with decay, dilated by one cell so a thin
    surface between two evaluated points is never skipped. The defaults (step 2*sqrt(3)/1024, threshold 0.05)
    came from a sweep on DTU scan24 and a ground-truth scene (BENCHMARKS.md, 2026-11-22, session 3): against a
    step of 2/1024 and threshold 0.01 they fit 2-3x more rays into the same samples per step, which trains
    faster. Cells whose SDF is below -2 cell diagonals lie wholly inside the object (the SDF is ~1-Lipschitz):
    rays stop there, so the back of the object, which NeuS gives no weight (alpha is 0 where the SDF rises
    along the ray), costs no samples. During `warmup_steps` every cell is occupied and none stops rays.

    Training steps march into a fixed budget of `target_samples` samples, so that every step does the same work
    and nothing waits on the host: rays are taken in order while their samples fit, and the rest of the step's
    rays are dropped (`ray_valid` is False; the trainer leaves them out of the losses). The number of rays drawn
    per step follows the samples per ray of recent steps, read back without waiting (a step or two stale).
    """

    def __init__(self, model, radius=1.0, grid_resolution=128, steps_per_diagonal=1024, target_samples=2**18,
                 warmup_steps=256, update_every=16, threshold=0.05):
        self.model = model
        self.radius = radius
        self.grid = raymarching.OccupancyGrid([-radius] * 3 + [radius] * 3, resolution=grid_resolution)
        self.step_size = 2 * radius * 3**0.5 / steps_per_diagonal
        self.max_samples = steps_per_diagonal + 1
        self.cell_diagonal = 2 * radius / grid_resolution * 3**0.5
        self.target_samples = target_samples
        self.warmup_steps = warmup_steps
        self.update_every = update_every
        self.threshold = threshold
        self.samples_per_ray = torch.zeros(())  # of the last training step; pinned on CUDA for async copies
        self.ray_count = None

    def to(self, device):
        self.grid.to(device)
        if torch.device(device).type == "cuda":
            self.samples_per_ray = torch.zeros((), pin_memory=True)
        return self

    def state_dict(self):
        return {"grid": self.grid.state_dict(), "samples_per_ray": float(self.samples_per_ray),
                "ray_count": self.ray_count}

    def load_state_dict(self, state):
        self.grid.load_state_dict(state["grid"], strict=False)  # checkpoints before stop cells lack them
        self.samples_per_ray.fill_(state["samples_per_ray"] or 0.0)
        self.ray_count = state.get("ray_count")

    @torch.no_grad()
    def cell_alpha(self, x):
        """Points x [M, 3] -> (alpha [M] of a cell-diagonal section entered head-on at |sdf|, inside [M])."""
        sdf = self.model.sdf(x).float()
        alpha = neus_alpha(sdf.abs(), -1.0, self.cell_diagonal, self.model.inv_s().float())
        return alpha, sdf < -2 * self.cell_diagonal

    def update_step(self, step: int, total_steps: int):
        if step < self.warmup_steps:
            self.grid.mark_all()
        elif step % self.update_every == 0:
            self.grid.update(self.cell_alpha, decay=0.95, threshold=self.threshold, dilate=1)

    def rays_per_step(self, num_rays: int) -> int:
        """A power of two, so that it changes rarely (each new count is a new CUDA graph): the smallest one with
        25% more rays than should fit the budget (the budget fills up; the surplus costs only their marching),
        kept while it stays within 2.5x of that, between 256 and 16 * num_rays."""
        samples_per_ray = float(self.samples_per_ray)  # host memory: no wait (the copy may still be in flight)
        if samples_per_ray <= 0:
            return self.ray_count or num_rays
        wanted = 1.25 * self.target_samples / samples_per_ray
        if not self.ray_count or wanted > self.ray_count or wanted * 2.5 < self.ray_count:
            self.ray_count = 2 ** math.ceil(math.log2(min(max(wanted, 256), 16 * num_rays)))
        return self.ray_count

    def render(self, rays_o, rays_d, bg_color, perturb=False, create_graph=False):
        """Same inputs and outputs as `NeuSRenderer.render`, with packed samples: gradient [M, 3], inside [M]
        and weights [M] are per sample. Training (`perturb`) also returns ray_valid [R] (False: dropped)."""
        nears, fars = raymarching.near_far_from_sphere(rays_o, rays_d, radius=self.radius)
        jitter = torch.rand_like(nears) if perturb else None
        capacity = self.target_samples if perturb else None  # inference: every sample of every ray
        ray_indices, t_starts, t_ends, packed_info = self.grid.march(
            rays_o, rays_d, nears, fars, self.step_size, self.max_samples, jitter=jitter, capacity=capacity)
        real = t_ends > t_starts  # False on the padding rows of a fixed-size march
        mid = (t_starts + t_ends) * 0.5
        dirs = rays_d[ray_indices]
        pts = rays_o[ray_indices] + dirs * mid[:, None]
        alpha, rgb, normals, gradient = shade(self.model, pts, dirs, t_ends - t_starts, create_graph)
        values = torch.cat([rgb, mid[:, None], normals], -1)
        weights, opacity, accum = raymarching.composite_rays_train(alpha, values, packed_info)
        out = finish(accum, opacity, bg_color)
        out["weights"] = weights
        out["gradient"] = gradient
        out["inside"] = real
        if perturb:
            ray_valid = packed_info[:, 0] >= 0
            out["ray_valid"] = ray_valid
            samples_per_ray = real.sum() / ray_valid.sum().clamp_min(1)
            self.samples_per_ray.copy_(samples_per_ray.clamp_min(1.0), non_blocking=True)
        return out
