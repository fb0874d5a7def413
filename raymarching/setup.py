"""Ahead-of-time build of `_raymarching_cuda` alone: `pip install --no-build-isolation ./raymarching`."""
import importlib.util
import os
import sys

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# The shared build settings are the repo root's cuda_build.py, which is not on sys.path here: load it by its path
# (registered as "cuda_build", so that backend.py's `import cuda_build` finds this same module).
spec = importlib.util.spec_from_file_location("cuda_build", os.path.join(os.path.dirname(PACKAGE_DIR), "cuda_build.py"))
cuda_build = sys.modules["cuda_build"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cuda_build)

cuda_build.setup_extension(PACKAGE_DIR, "CUDA ray marching and compositing for instant-nsr")
