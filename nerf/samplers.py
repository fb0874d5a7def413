"""Where along each ray the field is evaluated. A sampler returns packed samples (as nerfacc's estimators do):
whatever its strategy, `render_packed` shades and composites them the same way.

* `NeuSSampler` (the PyTorch path): stratified samples between the sphere's near and far, then NeuS
  importance up-sampling in rounds at inv_s = 64 * 2^i; every ray gets the same number of samples.
* `OccupancySampler` (`--cuda_ray`): a fixed step, only in occupied cells of an occupancy grid that it owns and
  refreshes from the SDF (`update_step`), stopping rays in cells known to lie inside the object; with a
  `capacity` the march fills exactly that many samples (the training budget) and drops the rays that do not fit.
"""
import math
from dataclasses import dataclass

import torch
from torch import nn

import raymarching

from .neus import neus_alpha


@dataclass
class PackedSamples:
    """Ray sections, ray after ray.

    ray_indices: [M] int64, the ray of each sample.
    t_starts, t_ends: [M] float32, the section along the ray (distance from the origin); padding rows (a
        fixed-capacity march, or a ray that meets nothing) have t_ends == t_starts and no weight.
    packed_info: [R, 2] int32, (first sample, sample count) per ray; (-1, 0) for a ray dropped for lack of
        capacity.
    """

    ray_indices: torch.Tensor
    t_starts: torch.Tensor
    t_ends: torch.Tensor
    packed_info: torch.Tensor


def dense_packed_info(n_rays, n_samples, device):
    """packed_info [R, 2] int32 of R rays with S samples each, ray after ray."""
    first = torch.arange(n_rays, device=device, dtype=torch.int32) * n_samples
    return torch.stack([first, torch.full_like(first, n_samples)], dim=-1)


def pack_dense(starts, ends, keep=None):
    """Equal-length rays: starts, ends [R, S] -> PackedSamples with S samples per ray, or only the sections
    where keep [R, S] (bool) is True, ray after ray in order (a ray may keep none)."""
    n_rays, n_samples = starts.shape
    if keep is None:
        ray_indices = torch.arange(n_rays, device=starts.device).repeat_interleave(n_samples)
        return PackedSamples(ray_indices, starts.reshape(-1), ends.reshape(-1),
                             dense_packed_info(n_rays, n_samples, starts.device))
    counts = keep.sum(1)
    packed_info = torch.stack([torch.cumsum(counts, 0) - counts, counts], -1).int()
    return PackedSamples(keep.nonzero()[:, 0], starts[keep], ends[keep], packed_info)


def composite_dense(alphas, values):
    """Composite equal-length rays: alphas [R, S], values [R, S, C] -> weights [R, S], opacity [R], accum [R, C]."""
    n_rays, n_samples = alphas.shape
    weights, opacity, accum = raymarching.composite_rays_train(
        alphas.reshape(-1).float(), values.reshape(n_rays * n_samples, -1).float(),
        dense_packed_info(n_rays, n_samples, alphas.device))
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


class NeuSSampler(nn.Module):
    """`num_steps` stratified samples between near and far, then `upsample_steps` more in rounds of
    `per_round` importance samples drawn from the NeuS weights at inv_s = base_inv_s * 2^i (Wang et al. 2021)."""

    def __init__(self, num_steps: int, upsample_steps: int, per_round: int, base_inv_s: float):
        super().__init__()
        self.num_steps = num_steps
        self.upsample_rounds = upsample_steps // per_round
        self.per_round = per_round
        self.base_inv_s = base_inv_s

    def update_step(self, step: int, field):
        """Nothing depends on the step."""

    @torch.no_grad()
    def _upsample(self, z, sdf, inv_s):
        """New sample depths [R, per_round] from the NeuS weights of the sections between samples z [R, S]."""
        mid_sdf = (sdf[:, :-1] + sdf[:, 1:]) * 0.5
        dists = z[:, 1:] - z[:, :-1]
        cos = (sdf[:, 1:] - sdf[:, :-1]) / (dists + 1e-5)
        # Take the gentler of this and the previous section's slope (robust to a single noisy sample), and
        # never let a section count as leaving the surface.
        prev_cos = torch.cat([torch.zeros_like(cos[:, :1]), cos[:, :-1]], -1)
        cos = torch.minimum(cos, prev_cos).clamp(-1e3, 0.0)
        alpha = neus_alpha(mid_sdf, cos, dists, inv_s)
        weights, _, _ = composite_dense(alpha, z[:, :-1, None])
        return sample_pdf(z, weights, self.per_round, deterministic=True)

    @torch.no_grad()
    def sample(self, field, rays_o, rays_d, nears, fars, perturb: bool, capacity=None) -> PackedSamples:
        """rays_o, rays_d [R, 3], nears, fars [R] -> S = num_steps + upsample_steps samples per ray, the last
        section ending at far. `capacity` must be None: every ray gets its samples."""
        if capacity is not None:
            raise ValueError("NeuSSampler: a fixed sample capacity needs the occupancy sampler (--cuda_ray)")
        n_rays, device = rays_o.shape[0], rays_o.device
        steps = torch.arange(self.num_steps, device=device, dtype=torch.float32)
        offsets = torch.rand(n_rays, self.num_steps, device=device) if perturb else 0.5
        z = nears[:, None] + (fars - nears)[:, None] * (steps[None] + offsets) / self.num_steps  # [R, S]

        def sdf_at(depths):  # [R, K] -> [R, K]
            pts = rays_o[:, None] + rays_d[:, None] * depths[..., None]
            return field.sdf(pts.reshape(-1, 3)).reshape(depths.shape).float()

        if self.upsample_rounds > 0:
            sdf = sdf_at(z)
            for i in range(self.upsample_rounds):
                new_z = self._upsample(z, sdf, self.base_inv_s * 2**i)
                z, order = torch.cat([z, new_z], -1).sort(-1)
                sdf = torch.cat([sdf, sdf_at(new_z)], -1).gather(1, order)
        ends = torch.cat([z[:, 1:], torch.maximum(fars[:, None], z[:, -1:])], -1)
        if self.training or self.upsample_rounds == 0:
            return pack_dense(z, ends)
        return pack_dense(z, ends, keep=self._contributing(z, ends, sdf, field.inv_s()))

    @torch.no_grad()
    def _contributing(self, z, ends, sdf, inv_s):
        """Inference: of the sections z..ends [R, S] with the SDF at their starts `sdf` [R, S] (known from
        up-sampling), those that can carry weight. Dropped: sections whose two ends are well outside the
        surface (both SDFs above 12 / inv_s plus a quarter of the section, so alpha < 1e-5 even where the SDF
        dips between them), and sections behind the point where the transmittance, estimated from these SDFs,
        falls below a tenth of the compositor's stopping threshold. Rendering then shades about a fifth of
        the samples, with images equal to the full render to 1/500 (tests/test_renderer.py)."""
        sdf_end = torch.cat([sdf[:, 1:], sdf[:, -1:]], -1)
        dists = ends - z
        outside = torch.minimum(sdf, sdf_end) > 12.0 / inv_s + 0.25 * dists
        cos = ((sdf_end - sdf) / (dists + 1e-5)).clamp(max=0.0)
        alpha = neus_alpha((sdf + sdf_end) * 0.5, cos, dists, inv_s)
        trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha[:, :-1]], -1), -1)
        return ~outside & (trans > 1e-5)


class OccupancySampler(nn.Module):
    """Samples at a fixed step (the box diagonal / `steps_per_diagonal`) in occupied cells of an occupancy grid
    over the sphere's box, marched by the `raymarching` kernels (their twins on CPU).

    The grid holds, per cell, the NeuS alpha that a cell-diagonal section at the cell's |SDF| would have at the
    current inv_s (so only a shell around the surface, thinning as inv_s grows, stays occupied; cells under
    `threshold` are skipped), refreshed every `update_every` steps with `decay`, dilated by one cell so a thin
    surface between two evaluated points is never skipped. Cells whose SDF is below -`stop_diagonals` cell
    diagonals lie wholly inside the object (the SDF is ~1-Lipschitz): rays stop there, so the back of the
    object, which NeuS gives no weight, costs no samples. During `warmup` steps every cell is occupied and none
    stops rays: a cell that the early SDF calls empty would otherwise never be sampled again, so a part the SDF
    has not found yet (a thin plate, an unmasked table top) would stay lost. The defaults (config.SamplerConfig)
    came from sweeps on DTU scan24 and ground-truth scenes (BENCHMARKS.md, 2026-11-22 and 2026-12-06).
    """

    def __init__(self, radius: float, grid_resolution: int, steps_per_diagonal: int, warmup: int,
                 update_every: int, threshold: float, decay: float, stop_diagonals: float):
        super().__init__()
        self.grid = raymarching.OccupancyGrid([-radius] * 3 + [radius] * 3, resolution=grid_resolution)
        self.step_size = 2 * radius * math.sqrt(3) / steps_per_diagonal
        self.max_samples = steps_per_diagonal + 1
        self.cell_diagonal = 2 * radius / grid_resolution * math.sqrt(3)
        self.warmup = warmup
        self.update_every = update_every
        self.threshold = threshold
        self.decay = decay
        self.stop_sdf = -stop_diagonals * self.cell_diagonal if stop_diagonals > 0 else -math.inf

    @torch.no_grad()
    def cell_alpha(self, field, x):
        """Points x [M, 3] -> (alpha [M] of a cell-diagonal section entered head-on at |sdf|, stop [M] bool)."""
        sdf = field.sdf(x).float()
        alpha = neus_alpha(sdf.abs(), -1.0, self.cell_diagonal, field.inv_s().float())
        return alpha, sdf < self.stop_sdf

    def update_step(self, step: int, field):
        if step < self.warmup:
            self.grid.mark_all()
        elif step % self.update_every == 0:
            self.grid.update(lambda x: self.cell_alpha(field, x), decay=self.decay, threshold=self.threshold,
                             dilate=1)

    @torch.no_grad()
    def sample(self, field, rays_o, rays_d, nears, fars, perturb: bool, capacity=None) -> PackedSamples:
        """rays_o, rays_d [R, 3], nears, fars [R] -> the lattice samples in occupied cells (jittered per ray when
        `perturb`); with `capacity`, exactly that many rows (see `raymarching.march_rays_train`)."""
        jitter = torch.rand_like(nears) if perturb else None
        ray_indices, t_starts, t_ends, packed_info = self.grid.march(
            rays_o, rays_d, nears, fars, self.step_size, self.max_samples, jitter=jitter, capacity=capacity)
        return PackedSamples(ray_indices, t_starts, t_ends, packed_info)


def build_sampler(config, radius: float) -> nn.Module:
    """The sampler that `config.sampler` describes."""
    s = config.sampler
    if s.cuda_ray:
        warmup = round(s.grid_warmup_until * config.train.iters)
        return OccupancySampler(radius, s.grid_resolution, s.steps_per_diagonal, warmup, s.grid_update_every,
                                s.grid_threshold, s.grid_decay, s.stop_diagonals)
    return NeuSSampler(s.num_steps, s.upsample_steps, s.upsample_per_round, s.upsample_inv_s)
