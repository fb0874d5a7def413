"""Spherical-harmonics encoding of unit directions: the public op `sh_encode` and the module `SHEncoder`.

`sh_encode` runs the CUDA kernel for float32/float16 CUDA tensors when the extension is available and
INSTANT_NSR_TORCH_ONLY is not set, and the PyTorch twin (`torch_impl.sh_encode`) otherwise. Both compute the
same basis, described in torch_impl.py.
"""
import torch
from torch import nn
from torch.autograd.function import once_differentiable

import cuda_build

from . import torch_impl
from .backend import get_backend

MAX_DEGREE = torch_impl.MAX_DEGREE
_KERNEL_DTYPES = (torch.float32, torch.float16)


class _SHEncodeCUDA(torch.autograd.Function):
    """The CUDA kernels as an autograd op on flat, contiguous [N, 3] float32/float16 CUDA tensors."""

    @staticmethod
    def forward(ctx, dirs, degree):
        outputs = torch.empty(dirs.shape[0], degree * degree, dtype=dirs.dtype, device=dirs.device)
        get_backend().sh_forward(dirs, outputs, degree)
        ctx.degree = degree
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(dirs)
        return outputs

    @staticmethod
    @once_differentiable  # no second-order kernel: differentiating twice raises instead of silently giving 0
    def backward(ctx, grad_outputs):
        if not ctx.needs_input_grad[0]:
            return None, None
        (dirs,) = ctx.saved_tensors
        grad_dirs = torch.empty_like(dirs)
        get_backend().sh_backward(grad_outputs.to(dirs.dtype).contiguous(), dirs, grad_dirs, ctx.degree)
        return grad_dirs, None


def _uses_kernel(dirs: torch.Tensor) -> bool:
    return (
        dirs.is_cuda
        and dirs.dtype in _KERNEL_DTYPES
        and not cuda_build.torch_only()
        and get_backend() is not None
    )


def sh_encode(dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """Real spherical harmonics (tiny-cuda-nn basis) of unit directions.

    .. math:: \\text{out}[..., l^2 + l + m] = Y_{l,m}(\\text{dirs}), \\quad 0 \\le l < \\text{degree},\\ -l \\le m \\le l

    Args:
        dirs: unit direction vectors, [..., 3], float. They are *not* normalised here: the basis is a set of
            polynomials in (x, y, z) that equal the spherical harmonics only on the unit sphere, so normalise
            beforehand (ray directions usually already are). Float32/float16 CUDA tensors use the kernel
            (float32 arithmetic); anything else, e.g. float64 for gradcheck, uses the PyTorch twin.
        degree: number of SH bands, 1..8; the encoding has degree**2 values (4 bands -> 16).

    Returns:
        [..., degree**2], dtype and device of `dirs`. Band l is at l*l .. l*l+2l, ordered m = -l..l; e.g.
        degree 2 gives [0.2821, -0.4886 y, 0.4886 z, -0.4886 x]. Differentiable with respect to `dirs`
        (once on the CUDA path; to any order on the twin).

    >>> sh_encode(torch.tensor([[0.6, 0.8, 0.0]]), degree=2)
    tensor([[ 0.2821, -0.3909,  0.0000, -0.2932]])
    """
    if isinstance(degree, bool) or not isinstance(degree, int) or not 1 <= degree <= MAX_DEGREE:
        raise ValueError(f"degree must be an int in 1..{MAX_DEGREE}, got {degree!r}")
    if dirs.dim() < 1 or dirs.shape[-1] != 3:
        raise ValueError(f"dirs must have shape [..., 3], got {tuple(dirs.shape)}")
    if not dirs.is_floating_point():
        raise ValueError(f"dirs must be a float tensor, got {dirs.dtype}")
    if not _uses_kernel(dirs):
        return torch_impl.sh_encode(dirs, degree)
    flat = dirs.reshape(-1, 3).contiguous()
    outputs = _SHEncodeCUDA.apply(flat, degree)
    return outputs.reshape(*dirs.shape[:-1], degree * degree)


class SHEncoder(nn.Module):
    """Encodes unit view directions [..., 3] as `degree` bands of real spherical harmonics [..., degree**2].

    Stateless; see `sh_encode` for the basis, dtypes and the unit-length requirement.
    """

    def __init__(self, input_dim: int = 3, degree: int = 4):
        super().__init__()
        if input_dim != 3:
            raise ValueError(f"SHEncoder encodes 3D directions, got input_dim={input_dim}")
        if isinstance(degree, bool) or not isinstance(degree, int) or not 1 <= degree <= MAX_DEGREE:
            raise ValueError(f"degree must be an int in 1..{MAX_DEGREE}, got {degree!r}")
        self.input_dim = input_dim
        self.degree = degree
        self.output_dim = degree * degree

    def forward(self, dirs: torch.Tensor) -> torch.Tensor:
        """dirs: unit vectors [..., 3] -> [..., degree**2]."""
        return sh_encode(dirs, self.degree)

    def extra_repr(self) -> str:
        return f"input_dim={self.input_dim}, degree={self.degree}, output_dim={self.output_dim}"
