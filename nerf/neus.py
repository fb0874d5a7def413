"""NeuS maths as pure functions: the discrete opacity of a ray section from SDF values, and cos annealing.

`neus_alpha` is the one place where the NeuS opacity is computed; up-sampling, rendering and the occupancy
grid all call it.
"""
import torch
import torch.nn.functional as F


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
