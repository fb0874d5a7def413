"""Lazy access to the compiled CUDA extension `_raymarching_cuda` (see cuda_build.LazyExtension): prebuilt by
`pip install --no-build-isolation ./raymarching`, else JIT-built on first use.
"""
import os

import torch

import cuda_build

# Relative to raymarching/src; also used by setup.py so the prebuilt and JIT builds cannot drift apart.
SOURCES = ["bindings.cpp", "near_far.cu", "march.cu", "composite.cu", "marching_cubes.cu"]
EXTENSION_NAME = "_raymarching_cuda"

_extension = cuda_build.LazyExtension(EXTENSION_NAME, os.path.dirname(os.path.abspath(__file__)), SOURCES)
get_backend = _extension.get


def cuda_backend_for(*tensors):
    """The compiled module if these tensors should go to the kernels, else None (use the PyTorch twin).

    Kernels take CUDA tensors with float32 floating-point data; anything else (CPU, float64 for gradcheck,
    INSTANT_NSR_TORCH_ONLY=1) runs the twin.
    """
    if cuda_build.torch_only():
        return None
    for t in tensors:
        if not t.is_cuda or (t.is_floating_point() and t.dtype != torch.float32):
            return None
    return get_backend()
