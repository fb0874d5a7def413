"""Build settings shared by our CUDA extensions (hashencoder, shencoder, raymarching).

The top-level `setup.py` (`pip install --no-build-isolation .`: everything), each package's own `setup.py`
(`pip install --no-build-isolation ./hashencoder`: that extension alone) and each package's `backend.py`
(just-in-time fallback) take their flags from here, and the extension's name and sources from that `backend.py`,
so the prebuilt and JIT builds cannot drift apart. The compiled module is a top-level module (e.g.
`_hashencoder_cuda`), not part of the package, so the package can be imported from the source tree while the
binary lives in site-packages or in the JIT cache.
"""
import importlib
import importlib.util
import os
import warnings

VERSION = "0.1.0"  # of every distribution our setup.py files make

# The C++ standard is left to torch (C++17 up to torch 2.13, C++20 from 2.14: a flag of ours would override it).
CXX_FLAGS = ["-O3"]
# No --use_fast_math: the kernels are tested against their PyTorch twins at fp32 tolerance.
NVCC_FLAGS = [
    "-O3",
    "-U__CUDA_NO_HALF_OPERATORS__",
    "-U__CUDA_NO_HALF_CONVERSIONS__",
    "-U__CUDA_NO_HALF2_OPERATORS__",
]


def torch_only() -> bool:
    """True when the user asked for the PyTorch twins everywhere (INSTANT_NSR_TORCH_ONLY=1)."""
    return os.environ.get("INSTANT_NSR_TORCH_ONLY", "0") not in ("", "0")


def read_backend(package_dir: str):
    """(EXTENSION_NAME, SOURCES) of the kernel package in `package_dir`, from its backend.py loaded on its own (the
    package's __init__, which imports the whole package, is not run)."""
    path = os.path.join(package_dir, "backend.py")
    spec = importlib.util.spec_from_file_location(f"_{os.path.basename(package_dir)}_backend", path)
    backend = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(backend)
    return backend.EXTENSION_NAME, backend.SOURCES


def cuda_extension(package_dir: str, setup_dir: str):
    """The setuptools CUDAExtension of the kernel package in `package_dir`, for the setup.py in `setup_dir`
    (setuptools wants source paths relative to it)."""
    from torch.utils.cpp_extension import CUDAExtension

    name, sources = read_backend(package_dir)
    source_dir = os.path.relpath(os.path.join(package_dir, "src"), setup_dir)
    return CUDAExtension(
        name=name,
        sources=[os.path.join(source_dir, s) for s in sources],
        extra_compile_args={"cxx": CXX_FLAGS, "nvcc": NVCC_FLAGS},
    )


def load_extension(name: str, package_dir: str, sources: list, verbose: bool = False):
    """The compiled module `name`: the prebuilt one if installed, else built now with torch's JIT loader.

    The JIT build honours TORCH_CUDA_ARCH_LIST; left unset, torch builds for the local GPU. Builds are cached
    under $INSTANT_NSR_BUILD_DIR (default ~/.cache/instant_nsr/<name>) so only the first call compiles.
    """
    try:
        return importlib.import_module(name)
    except ImportError:
        pass
    from torch.utils.cpp_extension import load

    build_root = os.environ.get("INSTANT_NSR_BUILD_DIR", os.path.expanduser("~/.cache/instant_nsr"))
    build_dir = os.path.join(build_root, name)
    os.makedirs(build_dir, exist_ok=True)
    return load(
        name=name,
        sources=[os.path.join(package_dir, "src", s) for s in sources],
        extra_cflags=CXX_FLAGS,
        extra_cuda_cflags=NVCC_FLAGS,
        build_directory=build_dir,
        verbose=verbose,
    )


class LazyExtension:
    """A compiled extension loaded on first use: importing a package never compiles.

    `get()` returns the module (prebuilt, or JIT-built now and cached), or None when CUDA is unavailable or
    the build fails; a failure is reported once as a warning and callers fall back to the PyTorch twins.
    """

    def __init__(self, name: str, package_dir: str, sources: list):
        self.name, self.package_dir, self.sources = name, package_dir, sources
        self._module = None
        self._tried = False

    def get(self):
        if not self._tried:
            self._tried = True
            import torch

            if torch.cuda.is_available():
                try:
                    self._module = load_extension(self.name, self.package_dir, self.sources)
                except Exception as error:  # no compiler, no toolkit...: training must still run on the twins
                    warnings.warn(f"{self.name}: CUDA extension unavailable, using the PyTorch twin ({error})")
        return self._module


def setup_extension(package_dir: str, description: str):
    """`setup()` for a kernel package's own setup.py: installs only its compiled module (the Python package is
    used from the source tree, or installed by the top-level setup.py)."""
    from setuptools import setup
    from torch.utils.cpp_extension import BuildExtension

    setup(
        name=f"instant-nsr-{os.path.basename(package_dir)}",
        version=VERSION,
        description=description,
        packages=[],
        ext_modules=[cuda_extension(package_dir, package_dir)],
        cmdclass={"build_ext": BuildExtension},
    )
