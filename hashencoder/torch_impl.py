"""PyTorch twin of the hash-grid encoding kernels: the reference the CUDA kernels are tested against, and what
runs on CPU.

All levels are gathered at once (one gather of N·L·2^D rows) and blended by D successive lerps, which is what
makes the CPU path usable. Derivatives of every order come from autograd: the encoding is D-linear in the
inputs and linear in the embeddings, so d(enc)/dx, its gradient w.r.t. the embeddings (double backward, used by
the Eikonal loss through analytic normals) and the mixed second derivatives w.r.t. x are all exact.
"""
import torch

# Spatial-hash primes of Instant-NGP (Müller et al. 2022); the first is 1 for better cache coherence.
PRIMES = (1, 2654435761, 805459861, 3674653429)


def _corner_index(terms: torch.Tensor, combine) -> torch.Tensor:
    """Per-axis index terms [l, N, D, 2] (of the cell's lower / upper corner along each axis) -> the 2^D
    corners' indices [l, N, 2^D], corner k at offset bit (D - 1 - d) of k along axis d (axis 0 slowest)."""
    index = terms[:, :, 0]
    for d in range(1, terms.shape[2]):
        index = combine(index[..., :, None], terms[:, :, d, None, :]).flatten(-2)
    return index


def hash_encode(
    inputs: torch.Tensor,  # [N, D] float, in [0, 1] (the module maps [-bound, bound] here and clamps)
    embeddings: torch.Tensor,  # [offsets[-1], C] float, all levels' tables stacked
    offsets: torch.Tensor,  # [L + 1] int, first row of each level in `embeddings`
    resolutions: torch.Tensor,  # [L] int, grid vertices per axis of each level (>= 2), non-decreasing
) -> torch.Tensor:  # [N, L * C], level-major: out[:, l * C + c]
    """Multiresolution hash encoding (Instant-NGP), interpolated D-linearly.

    Level l has `resolutions[l]` vertices per axis spanning [0, 1] exactly: x is mapped to
    pos = x * (res - 1), its cell is floor(pos) clamped to [0, res - 2] (so x = 1 lies in the last cell with
    fraction 1) and the cell's 2^D corner features are blended with weights prod_d (frac_d or 1 - frac_d).
    A level whose res^D vertices fit its table (offsets[l+1] - offsets[l] >= res^D) indexes densely,
    index = sum_d c_d res^d; otherwise it hashes, index = (xor_d c_d * PRIMES[d] mod 2^32) mod table_size
    (hashed tables always have a power-of-two number of rows). Values accumulate in fp32; the output has the
    embeddings' dtype.
    """
    n, dim = inputs.shape
    num_levels = resolutions.shape[0]
    channels = embeddings.shape[1]
    device = inputs.device
    res_list = resolutions.tolist()
    offset_list = offsets.tolist()
    sizes = [b - a for a, b in zip(offset_list[:-1], offset_list[1:])]
    # Resolutions grow with the level, so the dense levels come first.
    num_dense = sum(r**dim <= s for r, s in zip(res_list, sizes))

    # D-linear weights in float32 at least (fp16 inputs would round positions at fine levels). Level-major
    # layout [L, N, ...] keeps each level's rows contiguous.
    compute_dtype = torch.promote_types(inputs.dtype, torch.float32)
    scale = torch.tensor(res_list, device=device, dtype=compute_dtype) - 1  # [L]
    pos = inputs.to(compute_dtype)[None] * scale[:, None, None]  # [L, N, D]
    cell = torch.minimum(pos.detach().floor().clamp_min(0), (scale - 1)[:, None, None])
    frac = pos - cell  # [L, N, D], differentiable in inputs
    # Index arithmetic in int32 where nothing can overflow (twice as fast on CPU as int64).
    fits_int32 = max(res_list) * max(sizes) < 2**31 and offset_list[-1] < 2**31
    itype = torch.int32 if fits_int32 else torch.int64
    cell = cell.to(itype)
    axis_coords = torch.stack([cell, cell + 1], dim=-1)  # [L, N, D, 2]

    parts = []
    if num_dense > 0:
        res = torch.tensor(res_list[:num_dense], device=device, dtype=itype)
        strides = res[:, None] ** torch.arange(dim, device=device, dtype=itype)[None, :]  # [l, D]
        terms = axis_coords[:num_dense] * strides[:, None, :, None]
        base = torch.tensor(offset_list[:num_dense], device=device, dtype=itype)
        parts.append(_corner_index(terms, torch.add) + base[:, None, None])
    if num_dense < num_levels:
        # Only the low log2(size) bits survive the mod, and (c * p) mod 2^k = (c * (p mod 2^k)) mod 2^k, so the
        # uint32 products of the kernel are reproduced exactly without overflow.
        hashed_sizes = sizes[num_dense:]
        if any(size & (size - 1) for size in hashed_sizes):
            raise ValueError(f"hash_encode: hashed tables must have a power-of-two number of rows, got {hashed_sizes}")
        mask = torch.tensor(hashed_sizes, device=device, dtype=itype) - 1  # [l]
        primes = torch.tensor([p & (max(hashed_sizes) - 1) for p in PRIMES[:dim]], device=device, dtype=itype)
        terms = axis_coords[num_dense:] * primes[None, None, :, None]
        base = torch.tensor(offset_list[num_dense:-1], device=device, dtype=itype)
        parts.append((_corner_index(terms, torch.bitwise_xor) & mask[:, None, None]) + base[:, None, None])
    index = torch.cat(parts, 0) if len(parts) > 1 else parts[0]  # [L, N, 2^D]

    # int64 rows: with them the gather's backward is a scatter_add, ~4x faster on CPU than int32's index_add.
    feats = embeddings.index_select(0, index.reshape(-1).long()).to(compute_dtype)  # [L * N * 2^D, C]
    feats = feats.reshape(num_levels, n, *([2] * dim), channels)  # [L, N, 2, ..., 2, C]
    # Blend axis by axis: D lerps, each halving the corners (cheaper, and cheaper to differentiate, than
    # forming the 2^D weights).
    for d in range(dim):
        weight = frac[:, :, d].reshape(num_levels, n, *([1] * (dim - d)))
        feats = torch.lerp(feats[:, :, 0], feats[:, :, 1], weight)
    return feats.permute(1, 0, 2).reshape(n, num_levels * channels).to(embeddings.dtype)
