"""Ahead-of-time build of the `_hashencoder_cuda` extension: `pip install --no-build-isolation ./hashencoder`.

Only the compiled module is installed; the Python package is used from the source tree. Flags and the
source list come from cuda_build.py and backend.py so the JIT and prebuilt binaries are built alike.
"""
import os
import sys

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(PACKAGE_DIR))  # the repo root, home of cuda_build.py

from cuda_build import cuda_extension  # noqa: E402
from hashencoder.backend import EXTENSION_NAME, SOURCES  # noqa: E402

setup(
    name="instant-nsr-hashencoder",
    version="0.1.0",
    description="CUDA multiresolution hash-grid encoder for instant-nsr",
    ext_modules=[cuda_extension(EXTENSION_NAME, PACKAGE_DIR, SOURCES)],
    cmdclass={"build_ext": BuildExtension},
)
