"""Ray marching for NeuS on an occupancy grid: ray/volume intervals, lattice sampling, alpha compositing; and
marching cubes of an SDF grid (the mesh export).

Each op runs as a CUDA kernel on CUDA tensors (built on first use, see `backend.py`) and as its PyTorch twin
(`torch_impl.py`) otherwise or when INSTANT_NSR_TORCH_ONLY=1.
"""
from .occupancy import OccupancyGrid
from .raymarching import (
    composite_rays_train,
    march_rays_train,
    marching_cubes,
    near_far_from_aabb,
    near_far_from_sphere,
    packbits,
)

__all__ = [
    "OccupancyGrid",
    "composite_rays_train",
    "march_rays_train",
    "marching_cubes",
    "near_far_from_aabb",
    "near_far_from_sphere",
    "packbits",
]
