"""`pip install --no-build-isolation .`: instant-nsr's Python packages (nerf, hashencoder, shencoder, raymarching),
the modules cuda_build and main_sdf, the command `instant-nsr` (= python main_sdf.py) and, when a CUDA toolkit is
found, our three CUDA extensions, built against the torch already installed (hence --no-build-isolation).

`pip install --no-build-isolation ./hashencoder` (or ./shencoder, ./raymarching) builds one extension alone.
"""
import os
import sys

from setuptools import find_namespace_packages, setup

import cuda_build  # beside this file: pip and `python setup.py` run setup.py with its folder on sys.path

ROOT = os.path.dirname(os.path.abspath(__file__))
KERNEL_PACKAGES = ["hashencoder", "shencoder", "raymarching"]


def requirements():
    """requirements.txt without comments and without the test runner."""
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        names = [line.split("#")[0].strip() for line in f]
    return [name for name in names if name and name != "pytest"]


def extension_options():
    """setup() options that build the three CUDA extensions, or none (said in one line) without a CUDA toolkit."""
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension

    if CUDA_HOME is None:
        print("instant-nsr: no CUDA toolkit found (CUDA_HOME, nvcc): CUDA extensions not built, the PyTorch twins "
              "will run", file=sys.stderr)
        return {}
    extensions = [cuda_build.cuda_extension(os.path.join(ROOT, package), ROOT) for package in KERNEL_PACKAGES]
    return {"ext_modules": extensions, "cmdclass": {"build_ext": BuildExtension}}


setup(
    name="instant-nsr",
    version=cuda_build.VERSION,
    description="NeuS surface reconstruction on a multiresolution hash grid, with our own CUDA kernels",
    # nerf has no __init__.py (a namespace package); kernel sources ship too, for a later just-in-time build
    packages=find_namespace_packages(include=["nerf", "nerf.*", *KERNEL_PACKAGES], exclude=["*.__pycache__"]),
    package_data={package: ["src/*"] for package in KERNEL_PACKAGES},
    py_modules=["cuda_build", "main_sdf"],
    install_requires=requirements(),
    entry_points={"console_scripts": ["instant-nsr = main_sdf:cli"]},
    **extension_options(),
)
