"""NeuS opacity, compositing and sampling on an exactly known SDF (a sphere)."""
import math

import pytest
import torch

from nerf.neus import annealed_cos, neus_alpha
from nerf.ray_budget import RayBudget
from nerf.renderer_sdf import Renderer
from nerf.samplers import NeuSSampler, OccupancySampler, composite_dense, sample_pdf


class SphereModel(torch.nn.Module):
    """A stand-in for NeuSModel: sdf = |x| - r, unit-norm gradient, constant colour, fixed inv_s."""

    background = None

    def __init__(self, radius=0.5, inv_s=2000.0):
        super().__init__()
        self.radius, self._inv_s, self.cos_anneal_ratio = radius, inv_s, 1.0

    def sdf(self, x):
        return x.norm(dim=-1) - self.radius

    def sdf_and_gradient(self, x, create_graph):
        return self.sdf(x), torch.zeros(x.shape[0], 15, device=x.device), torch.nn.functional.normalize(x, dim=-1)

    def color(self, x, normals, dirs, features):
        return torch.full_like(x, 0.25)

    def inv_s(self):
        return torch.tensor(self._inv_s)  # a 0-d CPU tensor broadcasts on any device

    def update_step(self, step, total_steps):
        pass


def neus_renderer(model, upsample_steps):
    return Renderer(model, NeuSSampler(64, upsample_steps, per_round=16, base_inv_s=64.0), radius=1.0, bg_samples=0)


def marching_renderer(model, steps_per_diagonal):
    sampler = OccupancySampler(1.0, grid_resolution=32, steps_per_diagonal=steps_per_diagonal, warmup=0,
                               update_every=16, threshold=0.05, decay=0.95, stop_diagonals=2.0)
    return Renderer(model, sampler, radius=1.0, bg_samples=0)


def test_alpha_is_an_opacity():
    sdf = torch.linspace(-1, 1, 101)
    for cos in (-1.0, -0.3, 0.0, 0.5):
        alpha = neus_alpha(sdf, torch.tensor(cos), torch.tensor(0.05), torch.tensor(100.0))
        assert (alpha >= 0).all() and (alpha <= 1).all()
    # Entering the surface head-on is opaque, moving away from it is transparent.
    assert neus_alpha(torch.tensor(0.0), torch.tensor(-1.0), torch.tensor(0.1), torch.tensor(1e3)) > 0.99
    assert neus_alpha(torch.tensor(0.0), torch.tensor(1.0), torch.tensor(0.1), torch.tensor(1e3)) < 1e-3


def test_alpha_matches_the_neus_formula():
    """alpha = (Phi(s_prev) - Phi(s_next)) / Phi(s_prev), written out independently."""
    sdf, cos, dist, inv_s = 0.013, -0.7, 0.02, 150.0
    phi = lambda s: 1 / (1 + math.exp(-s * inv_s))  # noqa: E731
    prev, nxt = phi(sdf - cos * dist / 2), phi(sdf + cos * dist / 2)
    expected = (prev - nxt + 1e-5) / (prev + 1e-5)
    got = neus_alpha(torch.tensor(sdf), torch.tensor(cos), torch.tensor(dist), torch.tensor(inv_s))
    assert abs(float(got) - expected) < 1e-6


def test_cos_annealing_ends_at_relu():
    cos = torch.linspace(-1, 1, 21)
    assert torch.allclose(annealed_cos(cos, 1.0), -torch.relu(-cos))
    assert (annealed_cos(cos, 0.0) <= 0).all()


def test_composite_weights_sum_to_opacity():
    torch.manual_seed(0)
    alphas = torch.rand(5, 9) * 0.5
    values = torch.rand(5, 9, 2)
    weights, opacity, accum = composite_dense(alphas, values)
    assert torch.allclose(weights.sum(-1), opacity, atol=1e-6)
    assert torch.allclose(opacity, 1 - torch.prod(1 - alphas, -1), atol=1e-5)
    assert torch.allclose(accum, (weights[..., None] * values).sum(1), atol=1e-6)


def test_sample_pdf_follows_the_weights():
    bins = torch.linspace(0, 1, 11).expand(2, 11)
    weights = torch.zeros(2, 10)
    weights[0, 3] = 1.0  # all mass in [0.3, 0.4]
    weights[1] = 1.0  # uniform
    samples = sample_pdf(bins, weights, 64, deterministic=True)
    assert (samples[0] >= 0.3 - 1e-4).float().mean() > 0.95 and (samples[0] <= 0.4 + 1e-4).float().mean() > 0.95
    assert torch.allclose(samples[1], torch.linspace(0.5 / 64, 1 - 0.5 / 64, 64), atol=1e-3)
    assert (samples[:, 1:] >= samples[:, :-1]).all()


@pytest.mark.parametrize("upsample_steps", [0, 32])
def test_render_sphere_depth_and_opacity(upsample_steps):
    """Rays at a sphere of radius 0.5 stop at the surface; rays that miss it are transparent."""
    renderer = neus_renderer(SphereModel(), upsample_steps)
    rays_o = torch.tensor([[0.0, 0.0, -3.0], [0.2, 0.1, -3.0], [0.0, 0.9, -3.0], [0.0, 2.0, -3.0]])
    rays_d = torch.tensor([[0.0, 0.0, 1.0]] * 4)
    out = renderer.render(rays_o, rays_d, torch.ones(3))
    hit_depth = 3.0 - torch.sqrt(0.25 - rays_o[:2, :2].pow(2).sum(-1))
    tol = 0.03 if upsample_steps == 0 else 0.01
    assert torch.allclose(out["depth"][:2] / out["opacity"][:2], hit_depth, atol=tol)
    assert (out["opacity"][:2] > 0.98).all() and (out["opacity"][2:] < 0.02).all()
    assert torch.allclose(out["rgb"][:2], torch.full((2, 3), 0.25), atol=0.02)  # object colour
    assert torch.allclose(out["rgb"][2:], torch.ones(2, 3), atol=0.02)  # background
    normal = out["normal"][0] / out["opacity"][0]
    assert torch.allclose(normal, torch.tensor([0.0, 0.0, -1.0]), atol=0.02)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def test_marching_renderer_finds_the_surface_and_survives_empty_chunks(device):
    """--cuda_ray path on an exact sphere: depth at the surface after the grid update; a chunk of rays that
    meets no occupied cell (no samples at all) renders as background instead of failing."""
    model = SphereModel(radius=0.5, inv_s=500.0)
    renderer = marching_renderer(model, steps_per_diagonal=887).to(device)
    renderer.update_step(0, 1)  # carve the grid from the SDF
    assert renderer.sampler.grid.occupied_fraction() < 0.3
    rays_o = torch.tensor([[0.0, 0.0, -3.0], [0.2, 0.1, -3.0]], device=device)
    rays_d = torch.tensor([[0.0, 0.0, 1.0]] * 2, device=device)
    out = renderer.render(rays_o, rays_d, torch.ones(3, device=device))
    hit_depth = 3.0 - torch.sqrt(0.25 - rays_o[:, :2].pow(2).sum(-1))
    assert torch.allclose(out["depth"] / out["opacity"], hit_depth, atol=0.01)
    assert (out["opacity"] > 0.98).all()
    miss = renderer.render_chunked(torch.tensor([[0.0, 0.95, -3.0]] * 3, device=device),
                                   torch.tensor([[0.0, 0.0, 1.0]] * 3, device=device), torch.ones(3, device=device), chunk=2)
    assert torch.equal(miss["opacity"], torch.zeros(3, device=device))
    assert torch.equal(miss["rgb"], torch.ones(3, 3, device=device))


def test_marching_renderer_training_budget_and_stop_cells():
    """Training steps march a fixed budget: whole rays in order, the rest flagged as dropped, and the kept rays
    render exactly as without a budget. Stop cells (inside the sphere) remove the samples behind the front
    surface and nothing else."""
    model = SphereModel(radius=0.6, inv_s=100.0)
    renderer = marching_renderer(model, steps_per_diagonal=443)
    renderer.update_step(0, 1)
    grid = renderer.sampler.grid
    assert grid.stop_bitfield.any()  # the sphere's core
    g = torch.Generator().manual_seed(0)
    n = 40
    rays_o = torch.cat([(torch.rand(n, 2, generator=g) - 0.5) * 0.8, torch.full((n, 1), -3.0)], -1)
    rays_d = torch.tensor([[0.0, 0.0, 1.0]]).expand(n, 3).contiguous()
    bg = torch.ones(n, 3)

    def render(budget, stop=True):
        saved = grid.stop_bitfield.clone()
        if not stop:
            grid.stop_bitfield.zero_()
        torch.manual_seed(1)  # same jitter for every call
        out = renderer.render(rays_o, rays_d, bg, perturb=True, capacity=budget)
        grid.stop_bitfield.copy_(saved)
        return out

    full, small = render(10**6), render(300)
    assert full["ray_valid"].all() and full["inside"].sum() > 300
    valid = small["ray_valid"]
    assert 0 < valid.sum() < n and valid.tolist() == sorted(valid.tolist(), reverse=True)  # a prefix of the rays
    assert small["inside"].shape == (300,) and small["inside"].sum() <= 300
    for key in ("rgb", "depth", "opacity"):
        assert torch.allclose(small[key][valid], full[key][valid], atol=1e-6), key
    assert (small["opacity"][~valid] == 0).all()

    no_stop = render(10**6, stop=False)
    assert full["inside"].sum() < 0.7 * no_stop["inside"].sum()  # the back half of each hit costs nothing now
    hit = full["opacity"] > 0.5
    assert hit.sum() > n // 2
    assert torch.allclose(full["depth"][hit], no_stop["depth"][hit], atol=1e-4)
    assert torch.allclose(full["opacity"], no_stop["opacity"], atol=1e-4)


def test_ray_budget_is_a_slowly_changing_power_of_two():
    budget = RayBudget(capacity=2**18, num_rays=4096, device="cpu")
    assert budget.rays_per_step() == 4096  # nothing measured yet
    counts = []
    for samples_per_ray in (1000.0, 200.0, 150.0, 120.0, 100.0, 60.0, 400.0, 10.0, 2.0):
        budget.record(torch.full((4,), samples_per_ray), torch.ones(4, dtype=torch.bool))
        assert budget.rays_per_step() == (counts[-1] if counts else 4096)  # records count from the next refresh
        budget.refresh()
        counts.append(budget.rays_per_step())
    # 1.25 * 2^18 / spr, rounded up to a power of two, kept until 2.5x too many, capped at 16 * 4096.
    assert counts == [512, 2048, 4096, 4096, 4096, 8192, 1024, 32768, 65536]


def test_guided_rays_fill_their_share_of_the_samples_not_of_the_rays():
    """Guided rays that take ~5x the samples of the others: half the budget's samples is an eighth of 4096 rays
    (half of the rays, 2048 x 64 samples, would not even fit the budget of 2^16). A guided ray the march keeps
    that crosses nothing costs no samples, and counts in the guided mean as such."""
    budget = RayBudget(capacity=2**16, num_rays=4096, device="cpu")
    assert budget.guided_rays(0.5, 4096) == 2048  # nothing measured yet: a share of the rays
    ray_samples = torch.cat([torch.full((512,), 80.0), torch.zeros(128), torch.full((2048,), 12.0),
                             torch.zeros(1408)])
    guided = torch.arange(4096) < 640  # 512 with 80 samples, 128 kept that cross nothing
    valid = torch.arange(4096) < 640 + 2048  # the last 1408 dropped by the march
    budget.record(ray_samples, valid, guided)
    budget.refresh()
    assert budget.measured == pytest.approx((2**16 / 2688, 64.0))  # 2^16 samples over 2688 kept rays; 64 a guided
    assert budget.guided_rays(0.5, 4096) == 512  # 0.5 * 2^16 / 64
    assert budget.guided_rays(1.0, 500) == 500  # never more than the step's rays
    assert budget.guided_rays(0.0, 4096) == 0
    state = budget.state_dict()
    resumed = RayBudget(capacity=2**16, num_rays=4096, device="cpu")
    resumed.load_state_dict(state)
    assert resumed.guided_rays(0.5, 4096) == 512


class ShellModel(SphereModel):
    """A thin shell (|  |x| - r | - thickness): two surfaces per ray, and colour varying with position."""

    def __init__(self, inv_s, thickness=0.02):
        super().__init__(inv_s=inv_s)
        self.thickness = thickness

    def sdf(self, x):
        return (x.norm(dim=-1) - self.radius).abs() - self.thickness

    def sdf_and_gradient(self, x, create_graph):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            sdf = self.sdf(x)
            gradient, = torch.autograd.grad(sdf.sum(), x)
        return sdf.detach(), torch.zeros(x.shape[0], 15), gradient

    def color(self, x, normals, dirs, features):
        return x * 0.5 + 0.5


@pytest.mark.parametrize("model", [SphereModel(inv_s=50.0), SphereModel(inv_s=2000.0), ShellModel(inv_s=30.0),
                                   ShellModel(inv_s=3000.0)], ids=["sphere-soft", "sphere-sharp", "shell-soft",
                                                                   "shell-sharp"])
def test_inference_shades_only_contributing_samples(model):
    """At inference the NeuS sampler drops sections that carry no weight: the image equals the full render
    (training mode, same samples) to < 1/500, for soft and sharp surfaces and for rays that cross two
    surfaces, and a sharp surface shades far fewer samples."""
    renderer = neus_renderer(model, 64)
    torch.manual_seed(0)
    rays_o = torch.randn(400, 3)
    rays_o = rays_o / rays_o.norm(dim=-1, keepdim=True) * 2.5
    rays_d = torch.nn.functional.normalize(torch.randn(400, 3) * 0.3 - rays_o, dim=-1)
    nears, fars = 0.5 * torch.ones(400), 4.5 * torch.ones(400)
    renderer.train()
    full = renderer.render(rays_o, rays_d, torch.ones(3))
    all_samples = renderer.sampler.sample(model, rays_o, rays_d, nears, fars, False).t_starts.numel()
    renderer.eval()
    pruned = renderer.render(rays_o, rays_d, torch.ones(3))
    kept = renderer.sampler.sample(model, rays_o, rays_d, nears, fars, False).t_starts.numel()
    # neus_alpha's 1e-5 guard gives every far-outside section alpha ~1e-5: 128 of them are the ~1e-3 of fog
    # that the full render has and the pruned one has not.
    for key in ("rgb", "opacity", "normal"):
        assert (pruned[key] - full[key]).abs().max() < 2e-3, key
    hit = full["opacity"] > 0.5
    depth = [out["depth"][hit] / out["opacity"][hit] for out in (pruned, full)]
    assert (depth[0] - depth[1]).abs().max() < 2e-3
    assert (full["opacity"] > 0.5).sum() > 100  # most rays hit the object
    if model.inv_s() > 1000:
        assert kept < 0.3 * all_samples, (kept, all_samples)


@pytest.mark.parametrize("preset", [None, "fast"])
def test_the_occupancy_grid_stays_open_for_a_share_of_the_run_then_culls(preset):
    """--grid_warmup_until is a fraction of the run (so --preset fast and --iters scale it): every cell is
    occupied until then, and the first refresh after it culls the space far from the surface."""
    from nerf import config as cfg
    from nerf.samplers import build_sampler

    config = cfg.resolve({"cuda_ray": True, "grid_resolution": 32, "preset": preset}, "cuda", "scene")
    sampler, model = build_sampler(config, 1.0), SphereModel(radius=0.5, inv_s=200.0)
    last_open = round(config.sampler.grid_warmup_until * config.train.iters) - 1
    assert last_open == {None: 1499, "fast": 449}[preset]
    sampler.update_step(last_open, model)
    assert sampler.grid.occupied_fraction() == 1.0
    sampler.update_step(last_open + 1 + (-(last_open + 1)) % config.sampler.grid_update_every, model)
    assert sampler.grid.occupied_fraction() < 0.5
