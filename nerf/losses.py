"""The training losses, as pure functions of a render and its targets (the normal smoothness loss also queries
the field at jittered points).

Rays that a fixed-budget march dropped carry weight 0 (`ray_weights`) and count for nothing.
"""
import torch
import torch.nn.functional as F


def masked_mean(x, weights):
    """Mean of x [R, ...] over rows with weight 1 (weights [R] float, or None for all rows); 0 if none."""
    if weights is None:
        return x.mean()
    per_row = x.reshape(x.shape[0], -1).mean(-1)
    return (per_row * weights).sum() / weights.sum().clamp_min(1)


def color_loss(rgb, target, ray_weights, delta: float):
    """Huber loss of rendered rgb [R, 3] against target [R, 3]: about L1 for errors above `delta`."""
    return masked_mean(F.huber_loss(rgb, target, delta=delta, reduction="none"), ray_weights)


def eikonal_loss(gradient, inside):
    """(|grad sdf| - 1)^2 over the samples inside the sphere: gradient [M, 3], inside [M] bool."""
    inside = inside.float()
    return (((gradient.float().norm(dim=-1) - 1) ** 2) * inside).sum() / inside.sum().clamp_min(1)


def normal_smoothness_loss(model, points, normals, weights, count: int, eps: float):
    """Mean squared difference, weighted by the samples' weights [M], between the unit normals [M, 3] at the
    `count` samples of highest weight (the surface the rays see) and the field's normals at points jittered by
    N(0, eps^2) per axis from them (points [M, 3]): bumps and hash-grid noise finer than eps cost, the photometric
    loss keeps what the images show. -> 0-d"""
    weights = weights.detach()
    top = weights.topk(min(count, weights.shape[0])).indices  # a fixed count: CUDA-graph safe
    w = weights[top]
    surface = points[top].detach()
    jittered = surface + torch.randn_like(surface) * eps
    _, _, gradient = model.sdf_and_gradient(jittered, create_graph=True)
    diff = (normals[top] - F.normalize(gradient.float(), dim=-1)).pow(2).sum(-1)
    return (w * diff).sum() / w.sum().clamp_min(1e-6)


def mask_loss(opacity, mask, ray_weights):
    """Binary cross-entropy of the rendered opacity [R] against the object mask [R] in [0, 1]. Written out
    rather than F.binary_cross_entropy, which raises on NaN instead of letting the divergence check see it."""
    opacity = opacity.clamp(1e-3, 1 - 1e-3)
    return masked_mean(-(mask * torch.log(opacity) + (1 - mask) * torch.log(1 - opacity)), ray_weights)


def mse(rgb, target, ray_weights):
    """Mean squared error (for the training PSNR)."""
    return masked_mean((rgb.detach() - target) ** 2, ray_weights)
