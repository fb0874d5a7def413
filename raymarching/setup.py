"""Ahead-of-time build of `_raymarching_cuda`: `pip install --no-build-isolation ./raymarching`."""
import os
import sys

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension

package_dir = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(package_dir))  # the repo root, for the shared cuda_build flags
from cuda_build import cuda_extension  # noqa: E402

from raymarching.backend import SOURCES  # noqa: E402

setup(
    name="raymarching-cuda",
    version="0.1.0",
    ext_modules=[cuda_extension("_raymarching_cuda", package_dir, SOURCES)],
    cmdclass={"build_ext": BuildExtension},
)
