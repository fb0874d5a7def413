"""Multiresolution hash-grid encoding: the op `hash_encode` (CUDA kernels or PyTorch twin) and the module
`HashEncoder` that owns the embeddings and the level layout.

On CUDA the op is two autograd Functions, as in tiny-cuda-nn: `_HashEncode` (forward kernel) whose backward
applies `_HashEncodeGrad` (backward kernel), itself differentiable through the double-backward kernel. So
`torch.autograd.grad(sdf, x, create_graph=True)` followed by an Eikonal loss trains the embeddings through the
kernels instead of silently cutting the gradient.
"""
import contextlib
import math
import os

import torch
from torch import nn
from torch.autograd.function import once_differentiable

import cuda_build

from . import torch_impl
from .backend import get_backend

# Fill per-(point, level) kernel outputs with NaN before the kernels write them, so that a row a kernel forgets
# shows up in the tests (HASHENCODER_POISON=1 or set by tests/test_hashencoder.py).
_POISON_OUTPUTS = os.environ.get("HASHENCODER_POISON", "0") not in ("", "0")
# Table dtypes the op takes: float32 (the model's) and float64 (gradcheck).
_TABLE_DTYPES = (torch.float32, torch.float64)


class BackwardMode:
    """Read by the kernels' backward when it runs (not when the forward ran): `inputs_only` skips the table
    gradient of first-order backward passes, for passes that only want d(outputs)/d(inputs) (see
    `HashEncoder.input_gradients_only`). The table scatter is the most expensive part of the backward."""

    def __init__(self):
        self.inputs_only = False


def hash_encode(inputs, embeddings, offsets, resolutions, backward_mode=None):
    """Hash-encode points in [0, 1]: the CUDA kernels when the inputs are on a GPU and the extension is available
    (and INSTANT_NSR_TORCH_ONLY is not set), else the PyTorch twin `torch_impl.hash_encode`, which defines the
    exact semantics (cells, corner order, dense and hashed levels).

    Args:
        inputs: [N, D] float, D = 2 or 3, points in [0, 1] (outside, cells are clamped and weights extrapolate).
        embeddings: [offsets[-1], C] float32 or float64, all levels' tables stacked; C in {1, 2, 4, 8}.
        offsets: [L + 1] int, first row of each level in `embeddings`.
        resolutions: [L] int, grid vertices per axis of each level (>= 2).

    Returns:
        [N, L * C] of the embeddings' dtype, level-major: out[:, l * C + c].

    Differentiable twice: w.r.t. the embeddings and the inputs, and the input gradient again w.r.t. the
    embeddings, the upstream gradient and the inputs (analytic normals + Eikonal loss). On CUDA, positions are
    computed in the embeddings' dtype whatever the inputs' dtype. `backward_mode`: an optional
    `BackwardMode` (the twin needs none: autograd only runs the parts of its graph that a pass needs).
    """
    if inputs.dim() != 2 or inputs.shape[1] not in (2, 3):
        raise ValueError(f"hash_encode: inputs must be [N, 2] or [N, 3], got {list(inputs.shape)}")
    if embeddings.dim() != 2 or embeddings.shape[1] not in (1, 2, 4, 8):
        raise ValueError(f"hash_encode: embeddings must be [T, C] with C in 1, 2, 4, 8, got {list(embeddings.shape)}")
    if embeddings.dtype not in _TABLE_DTYPES:
        raise ValueError(
            f"hash_encode: embeddings must be float32 or float64, got {embeddings.dtype} {list(embeddings.shape)}"
        )
    if resolutions.dim() != 1 or offsets.shape != (resolutions.shape[0] + 1,):
        raise ValueError(
            f"hash_encode: expected resolutions [L] and offsets [L + 1], got {list(resolutions.shape)} and "
            f"{list(offsets.shape)}"
        )
    backend = _cuda_backend_for(inputs, embeddings)
    if backend is None:
        return torch_impl.hash_encode(inputs, embeddings, offsets, resolutions)
    return hash_encode_with_backend(inputs, embeddings, offsets, resolutions, backend, backward_mode)


def _cuda_backend_for(inputs, embeddings):
    """The compiled extension if these tensors can use it, else None (-> the twin)."""
    if not (inputs.is_cuda and embeddings.is_cuda) or cuda_build.torch_only():
        return None
    return get_backend()


def hash_encode_with_backend(inputs, embeddings, offsets, resolutions, backend, backward_mode=None):
    """`hash_encode` through the kernels of `backend` (the `_hashencoder_cuda` module, or a stand-in with its
    three functions, as the CPU tests use to check the autograd plumbing). The kernels compute positions,
    weights and gradients in the embeddings' dtype."""
    device = inputs.device
    return _HashEncode.apply(
        _aligned(inputs.to(embeddings.dtype)),
        _aligned(embeddings),
        offsets.to(device=device, dtype=torch.int32).contiguous(),
        resolutions.to(device=device, dtype=torch.int32).contiguous(),
        backend,
        backward_mode,
    )


def _aligned(t):
    """`t` contiguous and 16-byte aligned (the kernels move rows of C features as vectors)."""
    t = t.contiguous()
    return t if t.data_ptr() % 16 == 0 else t.clone()


def _new_features(num_points, num_levels, level_dim, like):
    """An output buffer of per-(point, level) features in the kernels' level-major layout [L, N, C] (coalesced
    writes; BENCHMARKS.md), NaN-filled when poisoning."""
    shape = (num_levels, num_points, level_dim)
    if _POISON_OUTPUTS:
        return torch.full(shape, float("nan"), dtype=like.dtype, device=like.device)
    return torch.empty(shape, dtype=like.dtype, device=like.device)


def _to_public_layout(features):
    """[L, N, C] kernel features -> [N, L * C]."""
    num_levels, num_points, level_dim = features.shape  # explicit: N may be 0 (a chunk with no samples)
    return features.permute(1, 0, 2).reshape(num_points, num_levels * level_dim)


def _to_kernel_layout(features, num_points, num_levels, level_dim):
    """Upstream gradient [N, L * C] -> [L, N, C], contiguous and aligned (the backward kernels read it
    coalesced; BENCHMARKS.md)."""
    return _aligned(features.reshape(num_points, num_levels, level_dim).permute(1, 0, 2))


class _HashEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inputs, embeddings, offsets, resolutions, backend, backward_mode):
        num_levels, level_dim = resolutions.shape[0], embeddings.shape[1]
        outputs = _new_features(inputs.shape[0], num_levels, level_dim, embeddings)
        backend.forward(inputs, embeddings, offsets, resolutions, outputs)
        ctx.save_for_backward(inputs, embeddings, offsets, resolutions)
        ctx.backend = backend
        ctx.backward_mode = backward_mode
        return _to_public_layout(outputs)

    @staticmethod
    def backward(ctx, grad_outputs):
        inputs, embeddings, offsets, resolutions = ctx.saved_tensors
        need_inputs, need_embeddings = ctx.needs_input_grad[:2]
        if ctx.backward_mode is not None and ctx.backward_mode.inputs_only:
            need_embeddings = False
        if not (need_inputs or need_embeddings):
            return None, None, None, None, None, None
        # An autograd Function of its own so that the gradients can be differentiated again (create_graph=True).
        grad_inputs, grad_embeddings = _HashEncodeGrad.apply(
            grad_outputs, inputs, embeddings, offsets, resolutions, ctx.backend, need_inputs, need_embeddings
        )
        return grad_inputs, grad_embeddings, None, None, None, None


class _HashEncodeGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad_outputs, inputs, embeddings, offsets, resolutions, backend, need_inputs, need_embeddings):
        num_points, num_levels, level_dim = inputs.shape[0], resolutions.shape[0], embeddings.shape[1]
        grad_outputs = _to_kernel_layout(grad_outputs, num_points, num_levels, level_dim)
        grad_embeddings = torch.zeros_like(embeddings) if need_embeddings else None
        grad_inputs = torch.zeros_like(inputs) if need_inputs else None
        backend.backward(grad_outputs, inputs, embeddings, offsets, resolutions, grad_embeddings, grad_inputs)
        ctx.save_for_backward(grad_outputs, inputs, embeddings, offsets, resolutions)
        ctx.backend = backend
        return grad_inputs, grad_embeddings

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_grad_inputs, grad_grad_embeddings):
        grad_outputs, inputs, embeddings, offsets, resolutions = ctx.saved_tensors
        need_grad_outputs, need_inputs, need_embeddings = ctx.needs_input_grad[:3]
        backend = ctx.backend
        num_points, num_levels, level_dim = inputs.shape[0], resolutions.shape[0], embeddings.shape[1]
        grad_grad_outputs = grad_inputs = grad_embeddings = None

        if grad_grad_inputs is not None and (need_grad_outputs or need_inputs or need_embeddings):
            if need_grad_outputs:
                grad_grad_outputs = _new_features(num_points, num_levels, level_dim, embeddings)
            if need_embeddings:
                grad_embeddings = torch.zeros_like(embeddings)
            if need_inputs:
                grad_inputs = torch.zeros_like(inputs)
            backend.double_backward(
                _aligned(grad_grad_inputs), grad_outputs, inputs, embeddings, offsets, resolutions,
                grad_grad_outputs, grad_embeddings, grad_inputs,
            )

        # grad_embeddings = J(x)^T grad_outputs is linear in grad_outputs with the forward's Jacobian J(x), so its
        # upstream gradient G goes through the first-order kernels with G in place of the embeddings:
        # d/d grad_outputs = J(x) G (forward), d/dx = input gradient of <J(x) G, grad_outputs> (backward).
        if grad_grad_embeddings is not None and (need_grad_outputs or need_inputs):
            table = _aligned(grad_grad_embeddings)
            if need_grad_outputs:
                jvp = _new_features(num_points, num_levels, level_dim, embeddings)
                backend.forward(inputs, table, offsets, resolutions, jvp)
                grad_grad_outputs = jvp if grad_grad_outputs is None else grad_grad_outputs + jvp
            if need_inputs:
                if grad_inputs is None:
                    grad_inputs = torch.zeros_like(inputs)
                backend.backward(grad_outputs, inputs, table, offsets, resolutions, None, grad_inputs)

        if grad_grad_outputs is not None:
            grad_grad_outputs = _to_public_layout(grad_grad_outputs)
        return grad_grad_outputs, grad_inputs, grad_embeddings, None, None, None, None, None


def level_layout(input_dim, num_levels, base_resolution, per_level_scale, log2_hashmap_size):
    """Per-level grid resolutions and table offsets.

    Level l has floor(base_resolution * per_level_scale^l) vertices per axis. Its table holds min(res^D,
    2^log2_hashmap_size) rows rounded up to a multiple of 8 (dense when all vertices fit, hashed otherwise).
    Returns (resolutions [L] list of int, offsets [L + 1] list of int).
    """
    resolutions, offsets = [], [0]
    for level in range(num_levels):
        res = int(math.floor(base_resolution * per_level_scale**level + 1e-6))
        res = max(res, 2)
        size = min(res**input_dim, 2**log2_hashmap_size)
        size = (size + 7) // 8 * 8
        resolutions.append(res)
        offsets.append(offsets[-1] + size)
    return resolutions, offsets


class HashEncoder(nn.Module):
    """Multiresolution hash encoding of points in [-bound, bound]^D (Instant-NGP).

    Args:
        input_dim: D, 2 or 3.
        num_levels: L levels.
        level_dim: C features per level (1, 2, 4 or 8).
        per_level_scale: growth factor of the resolution between levels; by default chosen so that the finest
            level has `desired_resolution` vertices per axis.
        base_resolution: vertices per axis of the coarsest level.
        log2_hashmap_size: log2 of the largest per-level table.
        desired_resolution: vertices per axis of the finest level (give it or per_level_scale).

    The embeddings are float32 (autocast does not cast them: `hash_encode` is no autocast op).

    forward(inputs [..., D], bound) -> [..., L * C]. Inputs outside [-bound, bound] are clamped to it.
    """

    def __init__(self, input_dim, num_levels, level_dim, base_resolution, log2_hashmap_size, desired_resolution=None,
                 per_level_scale=None):
        super().__init__()
        if input_dim not in (2, 3):
            raise ValueError(f"HashEncoder: input_dim must be 2 or 3, got {input_dim}")
        if level_dim not in (1, 2, 4, 8):
            raise ValueError(f"HashEncoder: level_dim must be 1, 2, 4 or 8, got {level_dim}")
        if (desired_resolution is None) == (per_level_scale is None):
            raise ValueError("HashEncoder: give one of desired_resolution and per_level_scale")
        if per_level_scale is None:
            per_level_scale = (desired_resolution / base_resolution) ** (1 / max(num_levels - 1, 1))
        self.input_dim = input_dim
        self.num_levels = num_levels
        self.level_dim = level_dim
        self.per_level_scale = per_level_scale
        self.output_dim = num_levels * level_dim
        resolutions, offsets = level_layout(input_dim, num_levels, base_resolution, per_level_scale, log2_hashmap_size)
        self.register_buffer("resolutions", torch.tensor(resolutions, dtype=torch.int32), persistent=False)
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.int32), persistent=False)
        # Small uniform init as in Instant-NGP: the network starts from (almost) the plain xyz input.
        self.embeddings = nn.Parameter(torch.empty(offsets[-1], level_dim).uniform_(-1e-4, 1e-4))
        self.backward_mode = BackwardMode()

    @contextlib.contextmanager
    def input_gradients_only(self):
        """Backward passes run inside this block compute no gradient for the embeddings (on CUDA they skip the
        table scatter). For `torch.autograd.grad(sdf, x, create_graph=True)` (analytic normals), whose table
        gradient autograd would throw away; the later `loss.backward()` must run outside the block."""
        self.backward_mode.inputs_only = True
        try:
            yield
        finally:
            self.backward_mode.inputs_only = False

    def extra_repr(self):
        res = self.resolutions.tolist()
        return (
            f"input_dim={self.input_dim}, levels={self.num_levels}x{self.level_dim}, "
            f"resolution {res[0]}..{res[-1]}, params={self.embeddings.shape[0] * self.level_dim}"
        )

    def forward(self, inputs: torch.Tensor, bound: float) -> torch.Tensor:
        if inputs.shape[-1] != self.input_dim:
            raise ValueError(f"HashEncoder: expected inputs [..., {self.input_dim}], got {list(inputs.shape)}")
        # NaN would index outside the tables (garbage in the twin, an illegal access in the kernel): encode it
        # at the origin instead; a NaN input still makes the loss NaN through the MLP, where training sees it.
        x = torch.nan_to_num((inputs + bound) / (2 * bound), nan=0.0).clamp(0.0, 1.0)
        out = hash_encode(x.reshape(-1, self.input_dim).contiguous(), self.embeddings, self.offsets, self.resolutions,
                          self.backward_mode)
        return out.reshape(*inputs.shape[:-1], self.output_dim)
