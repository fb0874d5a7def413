"""The SDF network: sphere initialisation, analytic vs finite-difference normals, training knobs."""
import torch

from nerf.config import SCENE_RADIUS, FieldConfig
from nerf.network_sdf import build_model


def small_model(normals="analytic"):
    field = FieldConfig(num_levels=4, log2_hashmap_size=12, desired_resolution=64, hidden_dim=32, num_layers=1,
                        normals=normals, levels_start=2)
    torch.manual_seed(0)
    return build_model(field, SCENE_RADIUS)


def test_geometric_init_is_a_sphere():
    model = small_model()
    x = torch.nn.functional.normalize(torch.randn(200, 3), dim=-1) * torch.rand(200, 1) * 0.9
    assert torch.allclose(model.sdf(x), x.norm(dim=-1) - 0.5, atol=0.03)


def test_fd_and_analytic_normals_agree_on_a_smooth_field():
    analytic = small_model("analytic")
    fd = small_model("fd")
    fd.load_state_dict(analytic.state_dict())
    # Give the hash grid content so the field is not just the init sphere; smooth at fd's scale.
    with torch.no_grad():
        for m in (analytic, fd):
            m.sdf_net.encoder.embeddings.copy_(torch.linspace(-0.05, 0.05, m.sdf_net.encoder.embeddings.numel())
                                                .reshape_as(m.sdf_net.encoder.embeddings))
            m.update_step(10**6, 1)  # all levels on, smallest fd step
    x = torch.rand(300, 3) * 1.2 - 0.6
    _, _, g_analytic = analytic.sdf_and_gradient(x, create_graph=False)
    _, _, g_fd = fd.sdf_and_gradient(x, create_graph=False)
    cos = torch.nn.functional.cosine_similarity(g_analytic, g_fd, dim=-1)
    assert cos.median() > 0.999 and (g_analytic - g_fd).norm(dim=-1).median() < 0.02


def test_eikonal_through_analytic_normals_trains_the_grid():
    model = small_model("analytic")
    model.update_step(10**6, 1)
    with torch.no_grad():  # the init switches the hash features off; one optimiser step would switch them on
        model.sdf_net.layers[0].weight[:, 3:].normal_(0, 0.1)
    x = torch.rand(500, 3) * 2 - 1
    _, _, grad = model.sdf_and_gradient(x, create_graph=True)
    ((grad.norm(dim=-1) - 1) ** 2).mean().backward()
    assert model.sdf_net.encoder.embeddings.grad.abs().sum() > 0


def test_update_step_schedules():
    model = small_model("fd")
    model.update_step(0, 100)
    assert abs(model.fd_eps - 5e-3) < 1e-12 and model.sdf_net.level_mask.sum() == 2 * 2 and model.cos_anneal_ratio == 0
    model.update_step(100, 100)
    assert abs(model.fd_eps - 5e-4) < 1e-9 and model.sdf_net.level_mask.sum() == 4 * 2
    assert model.cos_anneal_ratio == 1.0
