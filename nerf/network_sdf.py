"""The fields: an SDF network on a hash grid, a colour network, and the NeuS variance (and, for unmasked
scenes, the background field of network_background.py outside the sphere).

SDF:    (x, hash(x)) -> 64-wide MLP (Softplus beta=100) -> (sdf, 15-d feature), geometric (sphere) init.
Colour: (x, normal, SH_4(view dir), feature) -> 64-wide MLP -> RGB (sigmoid).
Normals are the SDF's gradient, either analytic (autograd; the hash encoder has a true second derivative, so
the Eikonal loss trains the grid) or by central finite differences (Instant-NSR), 7 SDF evaluations a point.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hashencoder import HashEncoder
from shencoder import SHEncoder

from .network_background import build_background
from .progressive_levels import active_levels, fill_level_mask


def log_lerp(start, end, t):
    """Geometric interpolation start -> end for t in [0, 1]."""
    t = min(max(t, 0.0), 1.0)
    return float(np.exp(np.log(start) + t * (np.log(end) - np.log(start))))


class SDFNetwork(nn.Module):
    """sdf, feature = f(x) for x in [-bound, bound]^3 (the unit sphere's box)."""

    def __init__(self, num_levels, log2_hashmap_size, desired_resolution, base_resolution, hidden_dim, num_layers,
                 feature_dim, init_radius, bound):
        super().__init__()
        self.bound = bound
        self.encoder = HashEncoder(input_dim=3, num_levels=num_levels, level_dim=2, base_resolution=base_resolution,
                                   log2_hashmap_size=log2_hashmap_size, desired_resolution=desired_resolution)
        self.feature_dim = feature_dim
        in_dim = 3 + self.encoder.output_dim
        dims = [in_dim] + [hidden_dim] * num_layers + [1 + feature_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.activation = nn.Softplus(beta=100)
        self._geometric_init(init_radius)
        # Progressive levels: only the first `active_levels` contribute (coarse to fine, as in Neuralangelo).
        self.register_buffer("level_mask", torch.ones(self.encoder.output_dim))

    def _geometric_init(self, radius):
        """Start from sdf(x) ~ |x| - radius, the geometric initialisation of SAL (Atzmon & Lipman 2020), made
        deterministic: hidden unit j of the first layer sees relu(u_j . x) for u_j spread evenly over the
        sphere (Fibonacci lattice), later hidden layers pass it on (identity), and since relu(u . x) averages
        |x| / 4 over directions, the SDF output weighs each unit 4 / width. Random SAL weights leave a lumpy
        sphere at width 64 (errors up to ~0.4); this is within ~1% of it."""
        width = self.layers[0].weight.shape[0]
        k = torch.arange(width, dtype=torch.float32) + 0.5
        z = 1 - 2 * k / width
        phi = math.pi * (1 + math.sqrt(5)) * k
        directions = torch.stack([torch.sqrt(1 - z**2) * torch.cos(phi), torch.sqrt(1 - z**2) * torch.sin(phi), z], -1)
        with torch.no_grad():
            for i, layer in enumerate(self.layers):
                out_dim, in_dim = layer.weight.shape
                layer.bias.zero_()
                if i == 0:
                    layer.weight.zero_()  # hash features start switched off
                    layer.weight[:, :3] = directions
                elif i < len(self.layers) - 1:
                    layer.weight.copy_(torch.eye(out_dim, in_dim))
                else:
                    nn.init.normal_(layer.weight, 0.0, math.sqrt(2) / math.sqrt(in_dim))  # feature rows
                    layer.weight[0] = 4.0 / width
                    layer.bias[0] = -radius

    def set_active_levels(self, active: int):
        fill_level_mask(self.level_mask, active, self.encoder.level_dim)

    def forward(self, x):
        """x [N, 3] -> sdf [N], feature [N, F]."""
        h = torch.cat([x, self.encoder(x, bound=self.bound) * self.level_mask.to(x.dtype)], dim=-1)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = self.activation(h)
        return h[:, 0], h[:, 1:]

    def sdf(self, x):
        return self.forward(x)[0]


class ColorNetwork(nn.Module):
    def __init__(self, feature_dim, hidden_dim, num_layers, sh_degree):
        super().__init__()
        self.dir_encoder = SHEncoder(input_dim=3, degree=sh_degree)
        dims = [3 + 3 + self.dir_encoder.output_dim + feature_dim] + [hidden_dim] * num_layers + [3]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x, normals, dirs, features):
        """x, normals, dirs [N, 3] (dirs unit), features [N, F] -> rgb [N, 3] in (0, 1)."""
        h = torch.cat([x, normals, self.dir_encoder(dirs), features], dim=-1)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = F.relu(h)
        return torch.sigmoid(h)


class NeuSModel(nn.Module):
    """The SDF, colour and variance together, with the step-dependent knobs in one `update_step`."""

    def __init__(self, sdf_net: SDFNetwork, color_net: ColorNetwork, normals, init_variance, fd_eps,
                 progressive_levels, anneal_end, background=None, bg_progressive_levels=(1, 0.0)):
        super().__init__()
        if normals not in ("analytic", "fd"):
            raise ValueError(f"normals must be 'analytic' or 'fd', got {normals!r}")
        self.sdf_net = sdf_net
        self.color_net = color_net
        self.background = background  # BackgroundField (network_background.py) for unmasked scenes, or None
        self.variance = nn.Parameter(torch.tensor(float(init_variance)))
        self.normals = normals
        self.fd_eps_range = fd_eps
        self.progressive_levels = progressive_levels  # (levels at start, fraction of training to reach all)
        self.anneal_end = anneal_end
        self.bg_progressive_levels = bg_progressive_levels  # the same for the background field
        # Step-dependent values live in buffers, updated in place, so that a captured CUDA graph sees them.
        self.register_buffer("fd_eps", torch.tensor(float(fd_eps[0])), persistent=False)
        self.register_buffer("cos_anneal_ratio", torch.tensor(1.0), persistent=False)
        self.bound = sdf_net.bound

    def inv_s(self):
        """NeuS sharpness 1/s = exp(10 v), clamped to stay finite."""
        return torch.exp(self.variance * 10.0).clamp(1e-6, 1e6)

    def update_step(self, step: int, total_steps: int):
        progress = step / max(total_steps, 1)
        self.fd_eps.fill_(log_lerp(self.fd_eps_range[0], self.fd_eps_range[1], progress))
        self.cos_anneal_ratio.fill_(1.0 if self.anneal_end <= 0 else min(1.0, progress / self.anneal_end))
        start, fraction = self.progressive_levels
        self.sdf_net.set_active_levels(active_levels(start, fraction, self.sdf_net.encoder.num_levels, progress))
        if self.background is not None:
            start, fraction = self.bg_progressive_levels
            self.background.set_active_levels(active_levels(start, fraction, self.background.encoder.num_levels,
                                                            progress))

    def sdf(self, x):
        return self.sdf_net.sdf(x)

    def sdf_and_gradient(self, x, create_graph: bool):
        """x [N, 3] -> sdf [N], feature [N, F], gradient [N, 3] (d sdf / d x).

        `create_graph` keeps the gradient differentiable (training: the Eikonal loss and the colour network's
        normal input backpropagate through it)."""
        if self.normals == "fd":
            sdf, feature = self.sdf_net(x)
            eps = self.fd_eps
            offsets = torch.eye(3, device=x.device, dtype=x.dtype) * eps  # [3, 3]
            stencil = torch.cat([x[:, None] + offsets, x[:, None] - offsets], dim=1)  # [N, 6, 3]
            s = self.sdf_net.sdf(stencil.reshape(-1, 3)).reshape(-1, 6)
            gradient = (s[:, :3] - s[:, 3:]) / (2 * eps)
            if not create_graph:
                gradient = gradient.detach()
            return sdf, feature, gradient
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            sdf, feature = self.sdf_net(x)
            # Only d sdf / dx is wanted here; the embeddings get their gradient from the loss's backward.
            with self.sdf_net.encoder.input_gradients_only():
                (gradient,) = torch.autograd.grad(sdf, x, torch.ones_like(sdf), create_graph=create_graph)
        return sdf, feature, gradient

    def color(self, x, normals, dirs, features):
        return self.color_net(x, normals, dirs, features)


def build_model(field, radius: float) -> NeuSModel:
    """The model that `field` (config.FieldConfig) describes, over the sphere of `radius`."""
    sdf_net = SDFNetwork(num_levels=field.num_levels, log2_hashmap_size=field.log2_hashmap_size,
                         desired_resolution=field.desired_resolution, base_resolution=field.base_resolution,
                         hidden_dim=field.hidden_dim, num_layers=field.num_layers, feature_dim=field.feature_dim,
                         init_radius=field.init_radius, bound=radius)
    color_net = ColorNetwork(feature_dim=field.feature_dim, hidden_dim=field.hidden_dim,
                             num_layers=field.color_layers, sh_degree=field.sh_degree)
    return NeuSModel(sdf_net, color_net, normals=field.normals, init_variance=field.init_variance,
                     fd_eps=(field.fd_eps_start, field.fd_eps_end),
                     progressive_levels=(field.levels_start, field.levels_until),
                     anneal_end=field.anneal_end, background=build_background(field, radius),
                     bg_progressive_levels=(field.bg_levels_start, field.bg_levels_until))
