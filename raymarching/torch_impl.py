"""PyTorch twins of the CUDA kernels in `src/`: same names, same arguments, same semantics.

The twins *define* the semantics: the kernels are tested against them (floats at fp32 tolerance, integers
exactly). They are vectorised over rays and samples and run on any device; on CPU they are what runs. The twin of
`marching_cubes` is PyMCubes (the CPU path), run on the host.

Sampling lattice of `march_rays_train`: along ray r, sample k (k = 0, 1, ...) covers
[t_k, t_k + step) with t_k = near_r + (k + jitter_r) * step and midpoint m_k = t_k + step / 2. Sample k is
*kept* iff m_k < far_r, the point o_r + m_k d_r lies in the closed aabb and its grid cell is occupied.
The float operations below are written in the order the kernels use (no fused multiply-add), so both compute
bit-identical midpoints, cells and therefore identical kept samples.
"""
import numpy as np
import torch

# Shared with the kernels: samples are compared in float32.
_F32 = torch.float32


def near_far_from_sphere(rays_o, rays_d, radius: float, min_near: float = 0.0):
    """Entry/exit distances of rays through the sphere of `radius` centred at the origin (see raymarching.py)."""
    b = (rays_o * rays_d).sum(-1)  # o.d, for unit d
    c = (rays_o * rays_o).sum(-1) - radius * radius
    disc = b * b - c
    hit = disc > 0
    root = torch.sqrt(disc.clamp(min=0.0))
    # A miss gets an empty interval at the ray's closest approach to the centre (never NaN).
    miss_t = (-b).clamp(min=min_near)
    nears = torch.where(hit, (-b - root).clamp(min=min_near), miss_t)
    fars = torch.where(hit, torch.maximum(-b + root, nears), miss_t)
    return nears, fars


def near_far_from_aabb(rays_o, rays_d, aabb, min_near: float = 0.0):
    """Entry/exit distances of rays through an axis-aligned box (slab test; see raymarching.py)."""
    lo, hi = aabb[:3], aabb[3:]
    d_zero = rays_d == 0
    safe_d = torch.where(d_zero, torch.ones_like(rays_d), rays_d)
    t_lo = (lo - rays_o) / safe_d
    t_hi = (hi - rays_o) / safe_d
    t_in = torch.minimum(t_lo, t_hi)
    t_out = torch.maximum(t_lo, t_hi)
    # A ray parallel to a slab is inside it for all t or for none (avoids 0 * inf = NaN).
    in_slab = (rays_o >= lo) & (rays_o <= hi)
    inf = torch.full_like(t_in, float("inf"))
    t_in = torch.where(d_zero, torch.where(in_slab, -inf, inf), t_in)
    t_out = torch.where(d_zero, torch.where(in_slab, inf, -inf), t_out)
    t_enter = t_in.amax(-1)
    t_exit = t_out.amin(-1)
    hit = t_enter < t_exit
    miss_t = (-(rays_o * rays_d).sum(-1)).clamp(min=min_near)
    nears = torch.where(hit, t_enter.clamp(min=min_near), miss_t)
    fars = torch.where(hit, torch.maximum(t_exit, nears), miss_t)
    return nears, fars


def packbits(values, threshold: float):
    """Bitfield [R^3 / 8] uint8 of `values > threshold`; cell i is bit (i % 8) of byte i // 8, LSB first."""
    if values.numel() % 8 != 0:
        raise ValueError(f"packbits needs a multiple of 8 values, got shape {tuple(values.shape)}")
    bits = (values.reshape(-1, 8) > threshold).to(torch.int32)
    place = 1 << torch.arange(8, device=values.device, dtype=torch.int32)
    return (bits * place).sum(-1).to(torch.uint8)


def _occupied(bitfield, cells):
    """Bit of each cell index in `cells` [M] int64 -> bool [M]."""
    return ((bitfield[cells >> 3].to(torch.int32) >> (cells & 7).to(torch.int32)) & 1).bool()


def _exclusive_cumsum(x):
    return torch.cumsum(x, 0) - x


def _segment_arange(counts):
    """For segments of `counts` [S]: (segment id [sum], position inside the segment [sum]), both int64."""
    total = int(counts.sum())
    seg = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts, output_size=total)
    pos = torch.arange(total, device=counts.device) - torch.repeat_interleave(
        _exclusive_cumsum(counts), counts, output_size=total
    )
    return seg, pos


def _march_lattice(rays_o, rays_d, nears, fars, jitter, bitfield, aabb, resolution, step_size, max_samples,
                   stop_bitfield=None):
    """The first `max_samples` kept lattice samples of each ray, packed ray after ray; a ray ends at its first
    sample (before `far`, in the box) whose cell is set in `stop_bitfield`.

    All per-ray inputs are [N] (rays_o/rays_d [N, 3]). Returns (ray [S] int64 ray index, t_starts [S],
    t_ends [S]) in ray order, then increasing k.
    """
    device = rays_o.device
    step = torch.tensor(step_size, dtype=_F32, device=device)
    half = step * 0.5
    # Candidates: 0 up to a bound safely past `far` (the exact `mid < far` test is below).
    span = ((fars - nears) / step - jitter - 0.5).nan_to_num(0.0).clamp(-1.0, 2.0**30)
    n_cand = (torch.ceil(span).long() + 2).clamp(min=0)
    ray, k = _segment_arange(n_cand)
    t = (k.to(_F32) + jitter[ray]) * step + nears[ray]
    mid = t + half
    points = rays_o[ray] + rays_d[ray] * mid[:, None]
    lo, hi = aabb[:3], aabb[3:]
    inside = ((points >= lo) & (points <= hi)).all(-1)
    scale = torch.full_like(lo, float(resolution)) / (hi - lo)  # tensor / tensor, as the kernel divides
    ijk = torch.floor((points - lo) * scale).clamp(0, resolution - 1).long()
    cells = (ijk[:, 0] * resolution + ijk[:, 1]) * resolution + ijk[:, 2]
    keep = (mid < fars[ray]) & inside & _occupied(bitfield, cells)
    if stop_bitfield is not None:
        stop = ((mid < fars[ray]) & inside & _occupied(stop_bitfield, cells)).long()
        stops_per_ray = torch.zeros_like(n_cand).index_add(0, ray, stop)
        stops_so_far = torch.cumsum(stop, 0) - _exclusive_cumsum(stops_per_ray)[ray]  # inclusive, within the ray
        keep &= stops_so_far == 0
    # Rank of each kept sample within its ray; only the first max_samples survive.
    keep_i = keep.long()
    kept_per_ray = torch.zeros_like(n_cand).index_add(0, ray, keep_i)
    rank = _exclusive_cumsum(keep_i) - _exclusive_cumsum(kept_per_ray)[ray]
    keep &= rank < max_samples
    return ray[keep], t[keep], t[keep] + step


def march_rays_train(rays_o, rays_d, nears, fars, bitfield, aabb, resolution: int, step_size: float,
                     max_samples: int, jitter=None, capacity=None, stop_bitfield=None):
    """Packed training samples on the lattice (see raymarching.py)."""
    n_rays = rays_o.shape[0]
    if jitter is None:
        jitter = torch.zeros_like(nears)
    ray, t_starts, t_ends = _march_lattice(
        rays_o, rays_d, nears, fars, jitter, bitfield, aabb, resolution, step_size, max_samples, stop_bitfield
    )
    counts = torch.bincount(ray, minlength=n_rays)
    if capacity is None:
        packed_info = torch.stack([_exclusive_cumsum(counts), counts], -1).int()
        return ray, t_starts, t_ends, packed_info
    # The prefix of rays whose samples fit keeps them; the others are dropped (start -1, count 0); zero padding.
    ends = torch.cumsum(counts, 0)
    kept = ends <= capacity
    packed_info = torch.stack([torch.where(kept, ends - counts, -1), torch.where(kept, counts, 0)], -1).int()
    n_kept = int(ends[kept][-1]) if bool(kept.any()) else 0

    def padded(x):
        out = torch.zeros(capacity, dtype=x.dtype, device=x.device)
        out[:n_kept] = x[:n_kept]
        return out

    return padded(ray), padded(t_starts), padded(t_ends), packed_info


def _packed_to_dense(packed_info):
    """Index maps for a padded [N, L] view of packed samples: (ray [S], slot [S], sample [S]) int64."""
    starts, counts = packed_info[:, 0].long(), packed_info[:, 1].long()
    ray, slot = _segment_arange(counts)
    return ray, slot, starts[ray] + slot


def composite_rays_train(alphas, values, packed_info, T_thresh: float = 1e-4):
    """Front-to-back alpha compositing of packed samples with early termination (see raymarching.py)."""
    n_rays = packed_info.shape[0]
    ray, slot, sample = _packed_to_dense(packed_info)
    width = int(packed_info[:, 1].max()) if n_rays else 0
    alpha_dense = alphas.new_zeros(n_rays, width + 1).index_put((ray, slot + 1), alphas[sample])
    # Exclusive cumprod: transmittance before each sample, multiplied in sample order as the kernel does.
    survive = torch.cat([alphas.new_ones(n_rays, 1), 1.0 - alpha_dense[:, 1:]], 1)
    trans = torch.cumprod(survive, 1)[:, :-1]
    # A sample is active while the transmittance before it and before every earlier sample is >= T_thresh.
    active = torch.cumsum((trans < T_thresh).int(), 1) == 0
    weights_dense = alpha_dense[:, 1:] * trans * active
    w = weights_dense[ray, slot]
    weights = alphas.new_zeros(alphas.shape[0]).index_put((sample,), w)
    opacity = weights_dense.sum(1)
    accum = values.new_zeros(n_rays, values.shape[1]).index_add(0, ray, w[:, None] * values[sample])
    return weights, opacity, accum


def pymcubes_marching_cubes(values, level: float = 0.0):
    """PyMCubes (the CPU marching cubes) on `values` [X, Y, Z] float numpy with inside = below `level`.

    Returns PyMCubes's own output: vertices [V, 3] float64 in lattice index units, faces [F, 3] uint64 wound
    with normals towards larger values (outward, for an SDF). A corner exactly at `level` is outside.
    """
    import mcubes

    # PyMCubes treats values above the iso-level as inside: hand it -values, negated in place and back (exact;
    # a copy would be 4 GB more at 1024^3), with the level negated (0.0 - level: no -0.0).
    np.negative(values, out=values)
    try:
        return mcubes.marching_cubes(values, 0.0 - level)
    finally:
        np.negative(values, out=values)


def marching_cubes(sdf, level: float = 0.0):
    """Triangle mesh of the level set sdf = level, through PyMCubes on the CPU (see raymarching.py)."""
    if min(sdf.shape) < 2:  # no cells
        return (torch.zeros(0, 3, dtype=torch.float32, device=sdf.device),
                torch.zeros(0, 3, dtype=torch.int64, device=sdf.device))
    values = sdf.detach().to("cpu", torch.float32)
    # A CPU float32 input is shared, not copied; pymcubes_marching_cubes restores it bit-exactly.
    vertices, faces = pymcubes_marching_cubes(values.numpy(), level)
    return (torch.from_numpy(vertices.astype(np.float32)).to(sdf.device),
            torch.from_numpy(faces.astype(np.int64)).to(sdf.device))
