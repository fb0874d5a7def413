"""Lazy access to the compiled CUDA extension `_shencoder_cuda` (see cuda_build.LazyExtension): prebuilt by
`pip install --no-build-isolation ./shencoder`, else JIT-built on first use.
"""
import os

import cuda_build

# Relative to shencoder/src; also used by setup.py so the prebuilt and JIT builds cannot drift apart.
SOURCES = ["shencoder.cu", "bindings.cpp"]
EXTENSION_NAME = "_shencoder_cuda"

_extension = cuda_build.LazyExtension(EXTENSION_NAME, os.path.dirname(os.path.abspath(__file__)), SOURCES)
get_backend = _extension.get
