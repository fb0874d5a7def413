"""Occupancy grid over an aabb: per-cell values decayed and refreshed from a field, packed into a bitfield."""
import torch
import torch.nn.functional as F
from torch import nn

from .raymarching import march_rays_train, packbits


class OccupancyGrid(nn.Module):
    """R^3 grid of cells over `aabb` that tells the marcher where samples are worth taking.

    Cell (ix, iy, iz) covers aabb_min + [i, i + 1) * (aabb_max - aabb_min) / R per axis; its flat index is
    (ix * R + iy) * R + iz (C order), and it is bit (i % 8) of byte i // 8 of `bitfield` (LSB first).

    Buffers (saved in the state dict):
        aabb: (6,) float32. (xmin, ymin, zmin, xmax, ymax, zmax).
        occupancy: (R^3,) float32. Running per-cell value (e.g. the NeuS alpha of a cell), starts at 0.
        bitfield: (R^3 / 8,) uint8. Cells the marcher samples; starts all occupied (see `mark_all`).
        stop_bitfield: (R^3 / 8,) uint8. Cells where rays end (e.g. inside an opaque object); starts empty.

    Example (SDF: the caller turns the SDF into the alpha of a cell-sized step at the current inv_s)::

        grid = OccupancyGrid(aabb, resolution=128)
        if step % 16 == 0:
            grid.update(lambda x: cell_alpha(sdf(x)), threshold=1e-3)
        ray_indices, t_starts, t_ends, packed_info = grid.march(rays_o, rays_d, nears, fars, step_size, 1024)
    """

    def __init__(self, aabb, resolution: int = 128):
        super().__init__()
        if not (resolution > 0 and resolution**3 % 8 == 0):
            raise ValueError(f"OccupancyGrid: resolution^3 must be a positive multiple of 8, got {resolution}")
        aabb = torch.as_tensor(aabb, dtype=torch.float32).flatten()
        if not (aabb.shape == (6,) and bool((aabb[3:] > aabb[:3]).all())):
            raise ValueError(
                f"OccupancyGrid: aabb must be [6] (xmin, ymin, zmin, xmax, ymax, zmax) with max > min, got "
                f"{tuple(aabb.shape)} {aabb.tolist()}"
            )
        self.resolution = resolution
        self.register_buffer("aabb", aabb)
        self.register_buffer("occupancy", torch.zeros(resolution**3))
        self.register_buffer("bitfield", torch.full((resolution**3 // 8,), 255, dtype=torch.uint8))
        self.register_buffer("stop_bitfield", torch.zeros(resolution**3 // 8, dtype=torch.uint8))

    @torch.no_grad()
    def mark_all(self):
        """Mark every cell occupied and none as a stop (warm-up, before the field is meaningful); `occupancy` is
        left as is."""
        self.bitfield.fill_(255)
        self.stop_bitfield.zero_()

    @torch.no_grad()
    def cell_points(self, cells, jitter: bool = True):
        """Points in cells: (M,) int64 flat cell indices -> (M, 3) float32, uniform in the cell or its centre."""
        R = self.resolution
        ijk = torch.stack([cells // (R * R), (cells // R) % R, cells % R], -1).to(torch.float32)
        offset = torch.rand_like(ijk) if jitter else torch.full_like(ijk, 0.5)
        lo, hi = self.aabb[:3], self.aabb[3:]
        return lo + (ijk + offset) * ((hi - lo) / R)

    @torch.no_grad()
    def update(self, field_fn, decay: float = 0.95, threshold: float = 0.01, dilate: int = 1, chunk: int = 2**18):
        """Refresh the grid from a field.

        Args:
            field_fn: callable (M, 3) float32 points -> (M,) per-point value (e.g. alpha), or -> (values, stop)
                with stop (M,) bool marking cells where rays should end (replaced at every update, and never
                set on an occupied cell); called without grad, in chunks of at most `chunk` points, one
                jittered point per cell.
            decay: occupancy = max(occupancy * decay, value), so stale cells fade out.
            threshold: a cell is occupied iff its (dilated) occupancy > threshold.
            dilate: occupied cells also mark neighbours within this many cells (Chebyshev distance), so thin
                surfaces between two evaluated points are not lost; 0 disables.
            chunk: points per field_fn call.
        """
        n_cells = self.occupancy.numel()
        stop = None
        for start in range(0, n_cells, chunk):
            cells = torch.arange(start, min(start + chunk, n_cells), device=self.occupancy.device)
            values = field_fn(self.cell_points(cells))
            if isinstance(values, tuple):
                values, stop_chunk = values
                if stop is None:
                    stop = torch.zeros(n_cells, dtype=torch.bool, device=self.occupancy.device)
                stop[start : start + cells.numel()] = stop_chunk.reshape(-1)
            if values.numel() != cells.numel():
                raise ValueError(f"OccupancyGrid: field_fn must return [M] = [{cells.numel()}], got "
                                 f"{tuple(values.shape)}")
            values = values.reshape(-1).to(self.occupancy.dtype)
            current = self.occupancy[start : start + cells.numel()]
            current.copy_(torch.maximum(current * decay, values))
        occupied = self._dilated(self.occupancy, dilate)
        self.bitfield.copy_(packbits(occupied, threshold))
        if stop is not None:
            self.stop_bitfield.copy_(packbits((stop & (occupied <= threshold)).float(), 0.5))

    def _dilated(self, occupancy, dilate: int):
        # Max-pooling the values and thresholding equals thresholding and dilating the mask (max > t iff any > t).
        if dilate <= 0:
            return occupancy
        R = self.resolution
        grid = occupancy.view(1, 1, R, R, R)
        return F.max_pool3d(grid, kernel_size=2 * dilate + 1, stride=1, padding=dilate).reshape(-1)

    @torch.no_grad()
    def occupied_fraction(self) -> float:
        """Fraction of cells whose bit is set in `bitfield`."""
        shifts = torch.arange(8, device=self.bitfield.device, dtype=torch.int32)
        bits = (self.bitfield.to(torch.int32)[:, None] >> shifts) & 1
        return bits.sum().item() / self.occupancy.numel()

    def march(self, rays_o, rays_d, nears, fars, step_size: float, max_samples: int, jitter=None, capacity=None):
        """`march_rays_train` on this grid, with its stop cells (see there for arguments and outputs)."""
        return march_rays_train(rays_o, rays_d, nears, fars, self.bitfield, self.aabb, self.resolution, step_size,
                                max_samples, jitter, capacity, self.stop_bitfield)
