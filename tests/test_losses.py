"""The training losses of nerf/losses.py on fields whose answer is known."""
import torch
from torch import nn

from nerf.losses import normal_smoothness_loss


class BumpySphere(nn.Module):
    """SDF of a sphere of radius 0.5 with bumps of height `amplitude` (a parameter) and wavelength ~0.16."""

    def __init__(self, amplitude):
        super().__init__()
        self.amplitude = nn.Parameter(torch.tensor(float(amplitude), dtype=torch.float64))

    def sdf_and_gradient(self, x, create_graph):
        with torch.enable_grad():
            x = x.detach().requires_grad_(True) if not x.requires_grad else x
            bumps = torch.sin(40 * x).prod(-1)
            sdf = x.norm(dim=-1) - 0.5 + self.amplitude * bumps
            (gradient,) = torch.autograd.grad(sdf.sum(), x, create_graph=create_graph)
        return sdf, None, gradient


def surface_samples(model, count):
    """`count` points on the sphere, their unit normals from `model`, and random weights in (0, 1)."""
    points = torch.nn.functional.normalize(torch.randn(count, 3, dtype=torch.float64), dim=-1) * 0.5
    _, _, gradient = model.sdf_and_gradient(points, create_graph=True)
    return points, torch.nn.functional.normalize(gradient, dim=-1), torch.rand(count, dtype=torch.float64)


def test_normal_smoothness_is_small_on_a_sphere_and_large_on_bumps_and_pulls_bumps_flat():
    eps = 0.01
    smooth = BumpySphere(0.0)
    loss_smooth = normal_smoothness_loss(smooth, *surface_samples(smooth, 512), count=256, eps=eps)
    # A sphere's normal turns by |tangential jitter| / radius: E = 2 eps^2 / 0.5^2 = 8 eps^2.
    assert 4 * eps**2 < float(loss_smooth.detach()) < 16 * eps**2
    bumpy = BumpySphere(0.01)
    loss_bumpy = normal_smoothness_loss(bumpy, *surface_samples(bumpy, 512), count=256, eps=eps)
    assert float(loss_bumpy.detach()) > 10 * float(loss_smooth.detach())
    loss_bumpy.backward()
    assert bumpy.amplitude.grad > 0  # descending the loss lowers the bumps


def test_normal_smoothness_looks_only_at_the_samples_of_highest_weight():
    model = BumpySphere(0.02)
    points, normals, weights = surface_samples(model, 64)
    flat = torch.nn.functional.normalize(points, dim=-1)  # the sphere's own normals: no bump anywhere
    torch.manual_seed(1)
    everywhere_bumpy = normal_smoothness_loss(model, points, normals, weights, count=8, eps=1e-4)
    # The 8 heaviest samples have the bumpy normals, the rest the sphere's: the loss sees only the heaviest.
    heaviest = weights.topk(8).indices
    mixed = flat.clone()
    mixed[heaviest] = normals[heaviest]
    torch.manual_seed(1)
    assert torch.isclose(normal_smoothness_loss(model, points, mixed, weights, count=8, eps=1e-4), everywhere_bumpy)
    mixed[heaviest] = flat[heaviest]
    torch.manual_seed(1)
    assert normal_smoothness_loss(model, points, mixed, weights, count=8, eps=1e-4) > 10 * everywhere_bumpy
