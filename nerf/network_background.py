"""The background field: radiance of everything the SDF does not hold (the room around the object, and inside the
unit sphere what the SDF leaves transparent, such as the table under it), so that an unmasked capture's walls and
floor are explained by a volume behind the SDF instead of becoming SDF surface.

Space is contracted as in Mip-NeRF 360 (Barron et al. 2022): a point x outside the sphere of `radius` maps to
(2 - radius / |x|) x / |x| (times radius), so the unbounded outside fills the shell between radius and 2 radius
and infinity lies on its outer sphere. A hash grid (our `hashencoder`) over that shell's box feeds a small
density MLP; colour comes from its feature and the view direction (SH, our `shencoder`), as in NeRF.
"""
import torch
import torch.nn.functional as F
from torch import nn

from hashencoder import HashEncoder
from shencoder import SHEncoder

from .progressive_levels import fill_level_mask


def contract(x, radius: float):
    """x [N, 3] -> [N, 3] inside the ball of 2 radius: the identity inside the sphere of `radius`, outside it
    (2 - radius / |x|) radius x / |x|."""
    norm = x.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    return torch.where(norm <= radius, x, (2.0 - radius / norm) * radius * x / norm)


class BackgroundField(nn.Module):
    """density, rgb = f(x, view direction) for points x anywhere (normalised space; the hash grid covers the
    contracted ball of 2 radius)."""

    def __init__(self, radius, num_levels, log2_hashmap_size, desired_resolution, hidden_dim, sh_degree,
                 feature_dim=15):
        super().__init__()
        self.radius = radius
        self.encoder = HashEncoder(input_dim=3, num_levels=num_levels, level_dim=2, base_resolution=16,
                                   log2_hashmap_size=log2_hashmap_size, desired_resolution=desired_resolution)
        self.dir_encoder = SHEncoder(input_dim=3, degree=sh_degree)
        self.density_net = nn.Sequential(nn.Linear(self.encoder.output_dim, hidden_dim), nn.ReLU(),
                                         nn.Linear(hidden_dim, 1 + feature_dim))
        self.color_net = nn.Sequential(nn.Linear(feature_dim + self.dir_encoder.output_dim, hidden_dim), nn.ReLU(),
                                       nn.Linear(hidden_dim, 3))
        # Coarse to fine (--bg_levels_until): recomputed from the step, so not saved.
        self.register_buffer("level_mask", torch.ones(self.encoder.output_dim), persistent=False)

    def set_active_levels(self, active: int):
        fill_level_mask(self.level_mask, active, self.encoder.level_dim)

    def forward(self, x, dirs):
        """x [N, 3], dirs [N, 3] unit -> density [N] >= 0 (per unit length of the
        contracted space), rgb [N, 3] in (0, 1)."""
        features = self.encoder(contract(x, self.radius), bound=2.0 * self.radius)  # [N, levels * 2]
        h = self.density_net(features * self.level_mask.to(x.dtype))
        density = F.softplus(h[:, 0] - 1.0)  # starts nearly transparent (softplus(-1) = 0.31)
        rgb = torch.sigmoid(self.color_net(torch.cat([h[:, 1:], self.dir_encoder(dirs)], -1)))
        return density, rgb


def build_background(field, radius: float):
    """The background field that `field` (config.FieldConfig) describes, or None unless background is 'nerf'."""
    if field.background != "nerf":
        return None
    return BackgroundField(radius, num_levels=field.bg_num_levels, log2_hashmap_size=field.bg_log2_hashmap_size,
                           desired_resolution=field.bg_desired_resolution, hidden_dim=field.bg_hidden_dim,
                           sh_degree=field.bg_sh_degree)
