"""Spherical-harmonics encoding of view directions (tiny-cuda-nn basis), CUDA kernel with a PyTorch twin."""
from .sphere_harmonics import SHEncoder, sh_encode

__all__ = ["SHEncoder", "sh_encode"]
