"""nerf/error_map.py: rays go to the tiles with the largest colour error, tiles cut by the image border
included, and the running error follows what the steps report."""
import torch

from nerf.error_map import TILE, ErrorMap
from nerf.provider import Views

HEIGHT, WIDTH = 2 * TILE + 5, 3 * TILE - 7  # tiles cut short by the bottom and right borders


def tile_coded_views(count=2):
    """Views whose every pixel's red value is its tile's index within the view (so a ray's colour says its
    tile) and green its view."""
    rows, cols = torch.meshgrid(torch.arange(HEIGHT), torch.arange(WIDTH), indexing="ij")
    per_view = -(-WIDTH // TILE)
    tile = (rows // TILE) * per_view + cols // TILE
    images = torch.stack([torch.stack([tile, torch.full_like(tile, v), torch.zeros_like(tile)], -1)
                          for v in range(count)]).to(torch.uint8)
    intrinsics = torch.tensor([[50.0, 0, WIDTH / 2], [0, 50.0, HEIGHT / 2], [0, 0, 1]]).expand(count, 3, 3)
    return Views(images, None, intrinsics.contiguous(), torch.eye(4).expand(count, 4, 4).contiguous(),
                 [str(v) for v in range(count)])


def tiles_of(batch):
    """The tile index (over all views) each ray's colour encodes."""
    rgb = (batch["rgb"] * 255).round().long()
    per_view = -(-HEIGHT // TILE) * -(-WIDTH // TILE)
    return rgb[:, 1] * per_view + rgb[:, 0]


def test_guided_rays_land_in_the_worst_tile_even_where_the_border_cuts_it():
    views = tile_coded_views()
    error_map = ErrorMap(views, device="cpu")
    assert error_map.error.numel() == 2 * 3 * 3
    generator = torch.Generator().manual_seed(0)
    for worst in range(error_map.error.numel()):  # every tile, the cut ones too
        error_map.error.zero_()
        error_map.error[worst] = 0.5
        batch = error_map.draw(views, 200, 200, generator)
        assert (tiles_of(batch) == worst).all() and (batch["tile"] == worst).all() and batch["guided"].all()


def test_the_uniform_share_reaches_every_tile():
    views = tile_coded_views()
    error_map = ErrorMap(views, device="cpu")
    error_map.error.zero_()
    error_map.error[4] = 1.0
    batch = error_map.draw(views, 4000, 1000, torch.Generator().manual_seed(1))
    tiles = tiles_of(batch)
    assert torch.equal(tiles, batch["tile"])
    assert (tiles[:1000] == 4).all()  # the guided rays come first (a fixed-budget march drops the last rays)
    assert batch["guided"][:1000].all() and not batch["guided"][1000:].any()
    assert set(tiles[1000:].tolist()) == set(range(18))


def test_the_running_error_follows_the_reports_and_steers_the_draws():
    """A model wrong in two tiles only: once every tile has been seen, the guided rays go there."""
    views = tile_coded_views()
    error_map = ErrorMap(views, device="cpu")
    wrong = torch.tensor([2, 13])
    generator = torch.Generator().manual_seed(2)
    for _ in range(20):
        batch = error_map.draw(views, 256, 128, generator)
        ray_error = torch.where(torch.isin(batch["tile"], wrong), 0.3, 0.001)
        ray_error[:3] = float("nan")  # a diverging ray, and a dropped one below: neither counts
        ray_error[3] = -1.0
        error_map.update(batch["tile"], ray_error)
    assert error_map.visited.all()
    assert torch.allclose(error_map.error[wrong], torch.tensor(0.3))
    others = torch.ones(18, dtype=torch.bool)
    others[wrong] = False
    assert torch.allclose(error_map.error[others], torch.tensor(0.001))
    guided = error_map.draw(views, 1000, 500, generator)["tile"][:500]
    assert torch.isin(guided, wrong).float().mean() > 0.9  # 0.6 of the error mass of 0.616


def test_a_map_of_zeros_still_draws():
    views = tile_coded_views(1)
    error_map = ErrorMap(views, device="cpu")
    error_map.error.zero_()
    assert len(error_map.draw(views, 64, 64, torch.Generator().manual_seed(3))["tile"]) == 64


def test_first_visit_sets_a_tile_and_later_ones_average():
    views = tile_coded_views(1)
    error_map = ErrorMap(views, device="cpu")
    tile = torch.tensor([0, 0, 5])
    error_map.update(tile, torch.tensor([0.2, 0.4, 0.1]))
    assert torch.allclose(error_map.error[[0, 5, 1]], torch.tensor([0.3, 0.1, 1.0]))  # 1: never seen
    error_map.update(torch.tensor([0]), torch.tensor([0.1]))
    assert torch.isclose(error_map.error[0], torch.tensor(0.2))
