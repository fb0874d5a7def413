"""Ahead-of-time build of `_hashencoder_cuda`: `pip install --no-build-isolation ./hashencoder`."""
import os
import sys

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(PACKAGE_DIR))  # the repo root, home of cuda_build.py

from cuda_build import setup_extension  # noqa: E402
from hashencoder.backend import EXTENSION_NAME, SOURCES  # noqa: E402

setup_extension(PACKAGE_DIR, EXTENSION_NAME, SOURCES, "CUDA multiresolution hash-grid encoder for instant-nsr")
