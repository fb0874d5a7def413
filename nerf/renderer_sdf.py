"""NeuS volume rendering of an SDF: a sampler places samples along the rays (see samplers.py), the field
shades them, and `render_packed` composites them through `raymarching.composite_rays_train` (CUDA kernel on
GPU, its PyTorch twin on CPU). Every sampler's samples go through this one path. Behind the sphere, a
background field (unmasked scenes) is rendered as a NeRF volume and becomes each ray's background colour.
"""
import torch
import torch.nn.functional as F
from torch import nn

import raymarching

from .neus import annealed_cos, neus_alpha
from .network_background import contract
from .samplers import PackedSamples, build_sampler, composite_dense


def shade(model, pts, dirs, dists, create_graph):
    """The field at sample points: pts, dirs [M, 3] (dirs unit), dists [M] section lengths ->
    alpha [M], rgb [M, 3], normals [M, 3] (unit), gradient [M, 3] (raw SDF gradient, for the Eikonal loss)."""
    sdf, feature, gradient = model.sdf_and_gradient(pts, create_graph=create_graph)
    normals = F.normalize(gradient.float(), dim=-1)
    rgb = model.color(pts, normals, dirs, feature).float()
    cos = annealed_cos((dirs * gradient.float()).sum(-1), model.cos_anneal_ratio)
    alpha = neus_alpha(sdf.float(), cos, dists, model.inv_s())
    return alpha, rgb, normals, gradient


def render_packed(model, rays_o, rays_d, samples: PackedSamples, bg_color, create_graph: bool, radius: float):
    """Shade and composite packed samples.

    Args:
        rays_o, rays_d: [R, 3] in normalised space (rays_d unit).
        samples: the rays' sections (padding rows, t_ends == t_starts, get no weight).
        bg_color: [R, 3] or [3], composited where the ray is not opaque.
        create_graph: keep normals differentiable (training).
    Returns a dict: rgb [R, 3], depth [R] (distance along the ray, normalised units, opacity-weighted), normal
        [R, 3] (world axes, opacity-weighted), opacity [R]; per sample gradient [M, 3] and inside [M] (real
        samples inside the sphere: where the Eikonal loss applies), points [M, 3], normals [M, 3] (unit) and
        weights [M] (for the normal smoothness loss); ray_valid [R] (False: dropped by a
        fixed-capacity march) and ray_samples [R] (real samples of each ray; 0 for a dropped one).
    """
    real = samples.t_ends > samples.t_starts
    mid = (samples.t_starts + samples.t_ends) * 0.5
    dirs = rays_d[samples.ray_indices]
    pts = rays_o[samples.ray_indices] + dirs * mid[:, None]
    alpha, rgb, normals, gradient = shade(model, pts, dirs, samples.t_ends - samples.t_starts, create_graph)
    alpha = alpha * real
    values = torch.cat([rgb, mid[:, None], normals], -1)
    weights, opacity, accum = raymarching.composite_rays_train(alpha, values, samples.packed_info)
    ray_valid = samples.packed_info[:, 0] >= 0
    return {
        "rgb": accum[:, :3] + (1.0 - opacity[:, None]) * bg_color,
        "depth": accum[:, 3],
        "normal": accum[:, 4:],
        "opacity": opacity,
        "gradient": gradient,
        "points": pts,
        "normals": normals,
        "weights": weights,
        "inside": real & (pts.detach().norm(dim=-1) < radius),
        "ray_valid": ray_valid,
        "ray_samples": torch.zeros(len(ray_valid), device=real.device).index_add_(0, samples.ray_indices,
                                                                               real.float()),
    }


def render_background(field, rays_o, rays_d, starts, bg_color, num_samples: int, perturb: bool):
    """The background field's colour along each ray from `starts` [R] (where it enters the sphere, or leaves it
    for checkpoints of older versions; for a ray that misses it, its closest approach) to infinity -> [R, 3],
    over `bg_color` [R, 3] or [3]. The caller composites it behind the SDF: inside the sphere it paints only
    what the SDF leaves transparent.

    rays_o, rays_d [R, 3] (rays_d unit). Samples are uniform in disparity, t = start / s for s in (0, 1), so
    that they thin out with distance as the contracted space does; a section's opacity is
    1 - exp(-density * its length in the contracted space), and the last section reaches infinity and is
    opaque, so the background field explains every pixel that the object does not."""
    n_rays = rays_o.shape[0]
    steps = torch.arange(num_samples, device=rays_o.device, dtype=torch.float32)
    offsets = torch.rand(n_rays, num_samples, device=rays_o.device) if perturb else 0.5
    s = 1.0 - (steps + offsets) / num_samples  # [R, S], decreasing in (0, 1)
    t = starts.clamp_min(1e-3)[:, None] / s  # [R, S]
    pts = rays_o[:, None] + rays_d[:, None] * t[..., None]  # [R, S, 3]
    dirs = rays_d[:, None].expand(-1, num_samples, -1)
    density, rgb = field(pts.reshape(-1, 3), dirs.reshape(-1, 3))
    contracted = contract(pts, field.radius)
    lengths = (contracted[:, 1:] - contracted[:, :-1]).norm(dim=-1)  # [R, S - 1]
    alpha = 1.0 - torch.exp(-density.float().reshape(n_rays, num_samples)[:, :-1] * lengths)
    alpha = torch.cat([alpha, torch.ones_like(alpha[:, :1])], -1)  # the last section: to infinity, opaque
    _, opacity, accum = composite_dense(alpha, rgb.float().reshape(n_rays, num_samples, 3))
    return accum + (1.0 - opacity[:, None]) * bg_color


class Renderer(nn.Module):
    """A field (`NeuSModel`) and a sampler inside the sphere of `radius`, and the model's background field (if
    it has one) behind it, from where each ray enters the sphere (`bg_from_entry`) or leaves it; `update_step`
    reaches both schedules."""

    def __init__(self, model, sampler, radius: float, bg_samples: int, bg_from_entry: bool = True):
        super().__init__()
        self.bg_from_entry = bg_from_entry
        self.model = model
        self.sampler = sampler
        self.radius = radius
        self.bg_samples = bg_samples

    def update_step(self, step: int, total_steps: int):
        self.model.update_step(step, total_steps)
        self.sampler.update_step(step, self.model)

    def render(self, rays_o, rays_d, bg_color, perturb=False, create_graph=False, capacity=None):
        """`render_packed` of the sampler's samples inside the sphere; `perturb` jitters them (training),
        `capacity` fixes their number (the `--cuda_ray` training budget)."""
        nears, fars = raymarching.near_far_from_sphere(rays_o, rays_d, radius=self.radius)
        if self.model.background is not None:
            starts = nears if self.bg_from_entry else fars
            bg_color = render_background(self.model.background, rays_o, rays_d, starts, bg_color, self.bg_samples,
                                         perturb)
        samples = self.sampler.sample(self.model, rays_o, rays_d, nears, fars, perturb, capacity)
        return render_packed(self.model, rays_o, rays_d, samples, bg_color, create_graph, self.radius)

    @torch.no_grad()
    def render_chunked(self, rays_o, rays_d, bg_color, chunk: int):
        """Render many rays [N, 3] in chunks without graphs -> rgb [N, 3], depth [N], normal [N, 3], opacity [N]."""
        out = {k: [] for k in ("rgb", "depth", "normal", "opacity")}
        for i in range(0, rays_o.shape[0], chunk):
            bg = bg_color if bg_color.dim() == 1 else bg_color[i : i + chunk]
            res = self.render(rays_o[i : i + chunk], rays_d[i : i + chunk], bg)
            for k in out:
                out[k].append(res[k])
        return {k: torch.cat(v, 0) for k, v in out.items()}


def build_renderer(config, model, radius: float) -> Renderer:
    return Renderer(model, build_sampler(config, radius), radius, config.sampler.bg_samples,
                    config.sampler.bg_from_entry)
