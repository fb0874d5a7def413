"""Lazy access to the compiled CUDA extension `_shencoder_cuda`.

Importing this module compiles nothing: the first `get_backend()` call imports the module prebuilt by
`pip install --no-build-isolation ./shencoder`, or else builds it with torch's JIT loader (cached, so only once).
"""
import os
import warnings

import torch

import cuda_build

# Relative to shencoder/src; also used by setup.py so the two builds cannot drift apart.
SOURCES = ["shencoder.cu", "bindings.cpp"]
EXTENSION_NAME = "_shencoder_cuda"
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

_backend = None
_tried = False


def get_backend():
    """The compiled `_shencoder_cuda` module, or None when CUDA is unavailable or the build failed.

    The first call may take a minute (JIT build); later calls return the cached result. A failed build is
    reported once as a warning and callers fall back to the PyTorch twin.
    """
    global _backend, _tried
    if _tried:
        return _backend
    _tried = True
    if not torch.cuda.is_available():
        return None
    try:
        _backend = cuda_build.load_extension(EXTENSION_NAME, _PACKAGE_DIR, SOURCES)
    except Exception as error:  # a compiler or loader failure must not stop training; the twin still works
        warnings.warn(f"shencoder: CUDA extension unavailable, using the PyTorch implementation ({error})")
    return _backend
