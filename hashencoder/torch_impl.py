"""PyTorch twin of the hash-grid encoding kernels: the reference the CUDA kernels are tested against, and what
runs on CPU.

All levels are gathered at once (one gather of N·L·2^D rows), which is what makes the CPU path usable.
Derivatives of every order come from autograd: the encoding is trilinear in the inputs and linear in the
embeddings, so d(enc)/dx, its gradient w.r.t. the embeddings (double backward, used by the Eikonal loss through
analytic normals) and the mixed second derivatives w.r.t. x are all exact.
"""
import torch

# Spatial-hash primes of Instant-NGP (Müller et al. 2022); the first is 1 for better cache coherence.
PRIMES = (1, 2654435761, 805459861, 3674653429)


def corner_weights(frac: torch.Tensor) -> torch.Tensor:
    """D-linear weights [..., 2^D] of a cell's corners from frac [..., D]; corner k sits at offset
    bit (D - 1 - d) of k along axis d (axis 0 varies slowest).

    Built as an outer product of per-axis (1 - f, f) pairs: plain multiplications differentiate much faster
    on CPU than a `prod` over a gathered axis."""
    w = None
    for d in range(frac.shape[-1]):
        f = frac[..., d]
        pair = torch.stack([1 - f, f], dim=-1)  # [..., 2]
        w = pair if w is None else (w[..., :, None] * pair[..., None, :]).flatten(-2)
    return w


def hash_encode(
    inputs: torch.Tensor,  # [N, D] float, in [0, 1] (the module maps [-bound, bound] here and clamps)
    embeddings: torch.Tensor,  # [offsets[-1], C] float, all levels' tables stacked
    offsets: torch.Tensor,  # [L + 1] int, first row of each level in `embeddings`
    resolutions: torch.Tensor,  # [L] int, grid vertices per axis of each level (>= 2)
) -> torch.Tensor:  # [N, L * C], level-major: out[:, l * C + c]
    """Multiresolution hash encoding (Instant-NGP), interpolated D-linearly.

    Level l has `resolutions[l]` vertices per axis spanning [0, 1] exactly: x is mapped to
    pos = x * (res - 1), its cell is floor(pos) clamped to [0, res - 2] (so x = 1 lies in the last cell with
    fraction 1) and the cell's 2^D corner features are blended with weights prod_d (frac_d or 1 - frac_d).
    A level whose res^D vertices fit its table (offsets[l+1] - offsets[l] >= res^D) indexes densely,
    index = sum_d c_d res^d; otherwise it hashes, index = (xor_d c_d * PRIMES[d] mod 2^32) mod table_size
    (hashed tables always have 2^log2_hashmap_size rows).
    """
    n, dim = inputs.shape
    num_levels = resolutions.shape[0]
    channels = embeddings.shape[1]
    device = inputs.device
    res = resolutions.to(device=device, dtype=torch.int64)  # [L]
    offsets = offsets.to(device=device, dtype=torch.int64)
    sizes = offsets[1:] - offsets[:-1]  # [L]

    # D-linear weights in float32 at least (fp16 inputs would round positions at fine levels).
    compute_dtype = torch.promote_types(inputs.dtype, torch.float32)
    pos = inputs.to(compute_dtype)[:, None, :] * (res - 1).to(compute_dtype)[None, :, None]  # [N, L, D]
    cell = torch.minimum(pos.detach().floor().clamp_min(0), (res - 2).to(compute_dtype)[None, :, None])
    frac = pos - cell  # [N, L, D], differentiable in inputs
    cell = cell.long()

    w = corner_weights(frac)  # [N, L, K], K = 2^D

    # Each corner's table row. Per-axis terms of the cell's two corners along that axis, [N, l, D, 2], are
    # combined over axes as an outer sum (dense levels) or outer xor (hashed levels), like the weights.
    axis_coords = torch.stack([cell, cell + 1], dim=-1)  # [N, L, D, 2]
    dense = [r**dim <= size for r, size in zip(res.tolist(), sizes.tolist())]
    index = torch.empty(n, num_levels, 2**dim, dtype=torch.int64, device=device)
    for is_dense in (True, False):
        levels = [l for l in range(num_levels) if dense[l] == is_dense]
        if not levels:
            continue
        sel = torch.tensor(levels, device=device)
        coords = axis_coords[:, sel]  # [N, l, D, 2]
        if is_dense:
            strides = res[sel, None] ** torch.arange(dim, device=device)[None, :]  # [l, D]
            terms = coords * strides[None, :, :, None]
        else:  # uint32 products as in the kernel; hashed tables have 2^k rows, so mod is a mask
            primes = torch.tensor(PRIMES[:dim], device=device)
            terms = (coords * primes[None, None, :, None]) & 0xFFFFFFFF
        level_index = terms[:, :, 0]
        for d in range(1, dim):
            pair = (level_index[..., :, None], terms[:, :, d, None, :])
            level_index = (pair[0] + pair[1] if is_dense else pair[0] ^ pair[1]).flatten(-2)
        if not is_dense:
            level_index = level_index & (sizes[sel] - 1)[None, :, None]
        index[:, sel] = level_index + offsets[sel][None, :, None]

    feats = embeddings.index_select(0, index.reshape(-1)).reshape(n * num_levels, 2**dim, channels)  # [N*L, K, C]
    # Blend the corners with a batched matmul, accumulating in fp32 (its backward is cheap on CPU too).
    out = torch.bmm(w.reshape(n * num_levels, 1, 2**dim), feats.to(compute_dtype))  # [N*L, 1, C]
    return out.reshape(n, num_levels * channels).to(embeddings.dtype)
