"""Lazy loader of the compiled kernels: importing the package never compiles, the first CUDA call does."""
import os
import sys
import warnings

import torch

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
if os.path.dirname(_PACKAGE_DIR) not in sys.path:  # the repo root holds the shared cuda_build module
    sys.path.insert(0, os.path.dirname(_PACKAGE_DIR))
from cuda_build import load_extension, torch_only  # noqa: E402

SOURCES = ["bindings.cpp", "near_far.cu", "march.cu", "composite.cu"]

_backend = None
_tried = False


def get_backend():
    """The compiled module `_raymarching_cuda` (prebuilt or JIT-built now), or None if it cannot be built."""
    global _backend, _tried
    if not _tried:
        _tried = True
        try:
            _backend = load_extension("_raymarching_cuda", _PACKAGE_DIR, SOURCES)
        except Exception as error:  # no compiler, no CUDA toolkit, ...: fall back to the PyTorch twins
            warnings.warn(f"raymarching: CUDA kernels unavailable, using the PyTorch twins ({error})")
    return _backend


def cuda_backend_for(*tensors):
    """The compiled module if these tensors should go to the kernels, else None (use the PyTorch twin).

    Kernels take CUDA tensors with float32 floating-point data; anything else (CPU, float64 for gradcheck,
    INSTANT_NSR_TORCH_ONLY=1) runs the twin.
    """
    if torch_only():
        return None
    for t in tensors:
        if not t.is_cuda or (t.is_floating_point() and t.dtype != torch.float32):
            return None
    return get_backend()
