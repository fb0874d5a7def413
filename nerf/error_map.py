"""Where a training step's rays go: some of them to the image tiles the model still renders worst (as many as
fill the loop's share of the step's samples: `ray_budget.py` under --cuda_ray), the rest uniformly over every
pixel, so that no tile is starved (the idea of instant-ngp's error map, per tile rather than per pixel). Each
tile keeps a running mean of its rays' colour error; a tile no ray has visited yet counts as the worst, so every
tile is looked at early.
"""
import torch

from .provider import Views, pixel_batch, uniform_pixels

TILE = 16  # pixels a tile's side: ~2k tiles an 800x600 view, each visited every few dozen steps at 4k rays a step
UNSEEN = 1.0  # a tile's error before its first ray: the largest a colour error in [0, 1] can be


class ErrorMap:
    """Per-tile colour error of the training views [V * rows * cols], and the draws it guides."""

    def __init__(self, views: Views, device):
        self.rows, self.cols = -(-views.height // TILE), -(-views.width // TILE)
        self.error = torch.full((len(views) * self.rows * self.cols,), UNSEEN, device=device)
        self.visited = torch.zeros_like(self.error, dtype=torch.bool)

    def tile_of(self, view, row, col):
        """Tile index [R] of the pixels (view, row, col) [R]."""
        return (view * self.rows + row // TILE) * self.cols + col // TILE

    def draw(self, views: Views, num_rays: int, num_guided: int, generator: torch.Generator):
        """A training batch (as `provider.sample_rays`) of num_rays rays, plus "tile" [R] and "guided" [R] bool:
        first num_guided rays in tiles drawn in proportion to their error, at a uniform pixel of the tile (first,
        so that a fixed-budget march drops uniform rays, never these), then uniform ones over all pixels."""
        device = self.error.device
        # A floor: a map of zeros (a scene rendered perfectly) is no distribution to draw from.
        weights = self.error.clamp_min(1e-8)
        tile = (torch.multinomial(weights, num_guided, replacement=True, generator=generator) if num_guided
                else torch.zeros(0, dtype=torch.long, device=device))  # (multinomial refuses to draw none)
        per_view = self.rows * self.cols
        top, left = tile % per_view // self.cols * TILE, tile % per_view % self.cols * TILE
        # Tiles on the right and bottom edges may be cut short by the image's border.
        height = (views.height - top).clamp(max=TILE)
        width = (views.width - left).clamp(max=TILE)
        offsets = torch.rand(2, num_guided, generator=generator, device=device)
        view, row, col = uniform_pixels(views, num_rays - num_guided, generator)
        view = torch.cat([tile // per_view, view])
        row = torch.cat([top + (offsets[0] * height).long().clamp(max=height - 1), row])
        col = torch.cat([left + (offsets[1] * width).long().clamp(max=width - 1), col])
        batch = pixel_batch(views, view, row, col)
        batch["tile"] = self.tile_of(view, row, col)
        batch["guided"] = torch.arange(num_rays, device=device) < num_guided
        return batch

    def update(self, tile, ray_error):
        """Folds a step's per-ray colour errors ray_error [R] (negative: a ray that does not count) into their
        tiles tile [R]: the first visit sets a tile's error, later ones average with it (no host wait)."""
        counted = ray_error >= 0  # False for NaN too: a diverging step leaves the map as it was
        values = torch.where(counted, ray_error, 0).to(self.error.dtype)
        sums = torch.zeros_like(self.error).index_add_(0, tile, values)
        counts = torch.zeros_like(self.error).index_add_(0, tile, counted.to(self.error.dtype))
        mean = sums / counts.clamp_min(1)
        hit = counts > 0
        self.error = torch.where(hit, torch.where(self.visited, 0.5 * (self.error + mean), mean), self.error)
        self.visited |= hit

    def state_dict(self):
        return {"error": self.error, "visited": self.visited}

    def load_state_dict(self, state):
        self.error = state["error"].to(self.error.device)
        self.visited = state["visited"].to(self.visited.device)
