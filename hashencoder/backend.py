"""Lazy access to the compiled CUDA extension `_hashencoder_cuda` (see cuda_build.LazyExtension): prebuilt by
`pip install --no-build-isolation ./hashencoder`, else JIT-built on first use.
"""
import os

import cuda_build

# Relative to hashencoder/src; also used by setup.py so the prebuilt and JIT builds cannot drift apart. One .cu per
# kernel so that ninja compiles them in parallel.
SOURCES = ["hashencoder_fwd.cu", "hashencoder_bwd.cu", "hashencoder_bwdbwd.cu", "bindings.cpp"]
EXTENSION_NAME = "_hashencoder_cuda"

_extension = cuda_build.LazyExtension(EXTENSION_NAME, os.path.dirname(os.path.abspath(__file__)), SOURCES)
get_backend = _extension.get
