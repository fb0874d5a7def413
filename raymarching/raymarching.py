"""Public ray-marching ops (and marching cubes): CUDA kernels on CUDA float32 tensors, their twins otherwise.

Each function checks shapes (a ValueError with the bad shape in its message), then dispatches:
`backend.cuda_backend_for(...)` picks the compiled kernels when every tensor is on CUDA (float data in
float32), they build, and INSTANT_NSR_TORCH_ONLY is unset; otherwise the twin of the same name in
`torch_impl.py` runs. Both follow the same semantics (the twin defines them).

Sampling lattice (`march_rays_train`): along ray r, sample k = 0, 1, ... covers
[t_k, t_k + step_size) with

.. math:: t_k = near_r + (k + jitter_r) \\cdot step\\_size,

and is kept iff its midpoint m_k = t_k + step_size / 2 satisfies m_k < far_r, the point o_r + m_k d_r lies in
the closed aabb, and that point's grid cell is occupied in the bitfield. Cells: the aabb is split into R^3
cells, cell (ix, iy, iz) = floor((p - aabb_min) * R / (aabb_max - aabb_min)) clamped to [0, R-1], flat index
(ix * R + iy) * R + iz, stored as bit (i % 8) of byte i // 8 of the bitfield, LSB first.

Typical training use::

    nears, fars = near_far_from_aabb(rays_o, rays_d, aabb)
    ray_indices, t_starts, t_ends, packed_info = march_rays_train(
        rays_o, rays_d, nears, fars, grid.bitfield, aabb, grid.resolution, step_size, max_samples,
        jitter=torch.rand_like(nears))
    alphas = ...  # [M] from the field at the samples
    weights, opacity, accum = composite_rays_train(alphas, rgb, packed_info)
"""
import torch
from torch.autograd.function import once_differentiable

from . import torch_impl
from .backend import cuda_backend_for


def _check(ok, message):
    if not ok:
        raise ValueError(message)


def _check_rays(rays_o, rays_d):
    _check(rays_o.dim() == 2 and rays_o.shape[1] == 3, f"rays_o must be [N, 3], got {tuple(rays_o.shape)}")
    _check(rays_d.shape == rays_o.shape, f"rays_d must be [N, 3] like rays_o, got {tuple(rays_d.shape)}")


def _check_per_ray(name, x, n_rays):
    _check(x.shape == (n_rays,), f"{name} must be [N] = [{n_rays}], got {tuple(x.shape)}")


def _check_aabb(aabb):
    _check(aabb.shape == (6,), f"aabb must be [6] (xmin, ymin, zmin, xmax, ymax, zmax), got {tuple(aabb.shape)}")


def _check_grid(name, bitfield, resolution):
    _check(
        bitfield.dtype == torch.uint8 and bitfield.shape == (resolution**3 // 8,),
        f"{name} must be uint8 [R^3 / 8] = [{resolution**3 // 8}], got {bitfield.dtype} {tuple(bitfield.shape)}",
    )


def near_far_from_sphere(rays_o, rays_d, radius: float, min_near: float = 0.0):
    """Distances at which rays enter and leave the sphere of `radius` centred at the origin.

    Args:
        rays_o: (N, 3) float. Ray origins.
        rays_d: (N, 3) float. Unit ray directions.
        radius: sphere radius.
        min_near: lower bound on the entry distance (e.g. to start in front of the camera).

    Returns:
        nears: (N,) float. max(entry distance, min_near).
        fars: (N,) float. max(exit distance, nears). Rays that miss (or touch) the sphere get the empty
        interval nears = fars = max(-(o . d), min_near); never NaN.

    >>> o = torch.tensor([[-3.0, 0, 0]]); d = torch.tensor([[1.0, 0, 0]])
    >>> near_far_from_sphere(o, d, radius=1.0)
    (tensor([2.]), tensor([4.]))
    """
    _check_rays(rays_o, rays_d)
    backend = cuda_backend_for(rays_o, rays_d)
    if backend is None:
        return torch_impl.near_far_from_sphere(rays_o, rays_d, radius, min_near)
    return backend.near_far_from_sphere(rays_o.contiguous(), rays_d.contiguous(), float(radius), float(min_near))


def near_far_from_aabb(rays_o, rays_d, aabb, min_near: float = 0.0):
    """Distances at which rays enter and leave an axis-aligned box (slab test).

    Args:
        rays_o: (N, 3) float. Ray origins.
        rays_d: (N, 3) float. Ray directions (any length; components may be exactly 0).
        aabb: (6,) float. Box (xmin, ymin, zmin, xmax, ymax, zmax).
        min_near: lower bound on the entry distance; rays starting inside the box get nears = min_near.

    Returns:
        nears: (N,) float. max(entry distance, min_near).
        fars: (N,) float. max(exit distance, nears). Rays that miss (or only graze) the box get the empty
        interval nears = fars = max(-(o . d), min_near); never NaN.
    """
    _check_rays(rays_o, rays_d)
    _check_aabb(aabb)
    backend = cuda_backend_for(rays_o, rays_d, aabb)
    if backend is None:
        return torch_impl.near_far_from_aabb(rays_o, rays_d, aabb, min_near)
    return backend.near_far_from_aabb(rays_o.contiguous(), rays_d.contiguous(), aabb.contiguous(), float(min_near))


def packbits(values, threshold: float):
    """Occupancy bitfield of per-cell values.

    Args:
        values: (R^3,) float. Per-cell values in cell order (ix * R + iy) * R + iz.
        threshold: a cell is occupied iff its value > threshold.

    Returns:
        bitfield: (R^3 / 8,) uint8. Cell i is bit (i % 8) of byte i // 8, LSB first.
    """
    _check(values.dim() == 1 and values.numel() % 8 == 0,
           f"values must be [R^3] with R^3 a multiple of 8, got {tuple(values.shape)}")
    backend = cuda_backend_for(values)
    if backend is None:
        return torch_impl.packbits(values, threshold)
    return backend.packbits(values.contiguous(), float(threshold))


def march_rays_train(rays_o, rays_d, nears, fars, bitfield, aabb, resolution: int, step_size: float,
                     max_samples: int, jitter=None, capacity=None, stop_bitfield=None):
    """Samples of every ray on the jittered lattice, in occupied cells, packed ray after ray.

    See the module docstring for the lattice and the keep rule. At most the first `max_samples` kept samples of
    each ray are returned. Deterministic: the kernel and the twin return identical samples.

    Without `capacity` the number of samples M is only known after counting, so the kernel path synchronises
    once with the host to allocate the outputs. With `capacity` the outputs have exactly M = capacity rows and
    nothing waits on the host (what a training step wants): rays are taken in order while all their samples
    fit; every later ray is dropped, marked by start -1 (and count 0) in packed_info; rows past the last kept
    sample are padding with ray index 0 and t_starts = t_ends = 0 (tell them by t_ends == t_starts).

    Args:
        rays_o: (N, 3) float. Ray origins.
        rays_d: (N, 3) float. Ray directions (unit, so that t is a distance).
        nears: (N,) float. Start of each ray's interval; the lattice is anchored here.
        fars: (N,) float. End of each ray's interval (finite: the twin enumerates the lattice up to it).
        bitfield: (R^3 / 8,) uint8. Occupancy bits (see `OccupancyGrid`).
        aabb: (6,) float. Box covered by the grid.
        resolution: R, cells per axis.
        step_size: lattice spacing along t (> 0).
        max_samples: cap on samples per ray.
        jitter: (N,) float in [0, 1) or None (= 0). Per-ray offset of the lattice, in steps.
        capacity: None, or the fixed number of output rows (see above).
        stop_bitfield: (R^3 / 8,) uint8 or None. A ray ends at its first lattice sample (with its midpoint
            before `far` and in the box) whose cell is set here: that sample and the later ones are not kept
            (e.g. cells known to lie inside an opaque object).

    Returns:
        ray_indices: (M,) int64. Ray of each sample; non-decreasing (up to the padding).
        t_starts: (M,) float. Sample interval starts t_k; increasing within a ray.
        t_ends: (M,) float. t_k + step_size.
        packed_info: (N, 2) int32. (index of the ray's first sample, number of samples) per ray; (-1, 0) for a
        ray dropped for lack of capacity.
    """
    _check_rays(rays_o, rays_d)
    n_rays = rays_o.shape[0]
    _check_per_ray("nears", nears, n_rays)
    _check_per_ray("fars", fars, n_rays)
    _check_aabb(aabb)
    _check_grid("bitfield", bitfield, resolution)
    _check(step_size > 0, f"step_size must be positive, got {step_size}")
    _check(capacity is None or capacity >= 0, f"capacity must be None or >= 0, got {capacity}")
    if jitter is None:
        jitter = torch.zeros_like(nears)
    _check_per_ray("jitter", jitter, n_rays)
    if stop_bitfield is not None:
        _check_grid("stop_bitfield", stop_bitfield, resolution)
    tensors = [t for t in (rays_o, rays_d, nears, fars, jitter, bitfield, aabb, stop_bitfield) if t is not None]
    backend = cuda_backend_for(*tensors)
    if backend is None:
        return torch_impl.march_rays_train(rays_o, rays_d, nears, fars, bitfield, aabb, resolution, step_size,
                                           max_samples, jitter, capacity, stop_bitfield)
    no_stop = torch.empty(0, dtype=torch.uint8, device=bitfield.device)
    return backend.march_rays_train(
        rays_o.contiguous(), rays_d.contiguous(), nears.contiguous(), fars.contiguous(), jitter.contiguous(),
        bitfield.contiguous(), aabb.contiguous(), int(resolution), float(step_size), int(max_samples),
        -1 if capacity is None else int(capacity), no_stop if stop_bitfield is None else stop_bitfield.contiguous(),
    )


class _CompositeRaysTrain(torch.autograd.Function):
    @staticmethod
    def forward(ctx, alphas, values, packed_info, T_thresh, backend):
        weights, opacity, accum, transmittance = backend.composite_rays_train_forward(
            alphas, values, packed_info, T_thresh
        )
        ctx.save_for_backward(alphas, values, transmittance, packed_info)
        ctx.T_thresh = T_thresh
        ctx.backend = backend
        return weights, opacity, accum

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_weights, grad_opacity, grad_accum):
        alphas, values, transmittance, packed_info = ctx.saved_tensors
        if not (ctx.needs_input_grad[0] or ctx.needs_input_grad[1]):
            return None, None, None, None, None
        grad_alphas, grad_values = ctx.backend.composite_rays_train_backward(
            grad_weights.contiguous(), grad_opacity.contiguous(), grad_accum.contiguous(), alphas, values,
            transmittance, packed_info, ctx.T_thresh,
        )
        return (
            grad_alphas if ctx.needs_input_grad[0] else None,
            grad_values if ctx.needs_input_grad[1] else None,
            None, None, None,
        )


def composite_rays_train(alphas, values, packed_info, T_thresh: float = 1e-4):
    """Front-to-back alpha compositing of packed samples, with early ray termination.

    Within each ray, in sample order,

    .. math:: w_i = \\alpha_i T_i, \\quad T_i = \\prod_{j<i} (1 - \\alpha_j),

    except that once T_i < T_thresh, sample i and every later sample of the ray get w = 0 -- in the forward and
    in the backward alike (no gradient flows to or through terminated samples).

    Args:
        alphas: (M,) float in [0, 1]. Opacity of each sample.
        values: (M, C) float. Anything to integrate (rgb, depth t, normals, ... packed along C).
        packed_info: (N, 2) int. (first sample, number of samples) per ray, from `march_rays_train`.
        T_thresh: transmittance below which a ray stops.

    Returns:
        weights: (M,) float >= 0. w_i (0 for samples no ray references).
        opacity: (N,) float. sum of a ray's weights, in [0, 1].
        accum: (N, C) float. sum of a ray's w_i * values_i.

    Differentiable w.r.t. `alphas` and `values`, with gradients accepted on all three outputs.
    """
    _check(alphas.dim() == 1, f"alphas must be [M], got {tuple(alphas.shape)}")
    _check(values.dim() == 2 and values.shape[0] == alphas.shape[0],
           f"values must be [M, C] with M = {alphas.shape[0]}, got {tuple(values.shape)}")
    _check(packed_info.dim() == 2 and packed_info.shape[1] == 2,
           f"packed_info must be [N, 2], got {tuple(packed_info.shape)}")
    backend = cuda_backend_for(alphas, values, packed_info)
    if backend is None:
        return torch_impl.composite_rays_train(alphas, values, packed_info, T_thresh)
    return _CompositeRaysTrain.apply(
        alphas.contiguous(), values.contiguous(), packed_info.int().contiguous(), float(T_thresh), backend
    )


def marching_cubes(sdf, level: float = 0.0):
    """Triangle mesh of the level set sdf = level of a grid (marching cubes, Lorensen-Cline case tables).

    A lattice point is inside iff sdf < level (a point exactly at the level is outside). Every lattice edge whose
    ends are on opposite sides gets one vertex, at the linear interpolation of the two values, shared by the
    cells around the edge: the mesh is PyMCubes's (the twin), the same vertices and faces up to order.

    Args:
        sdf: (X, Y, Z) float. Values at lattice points (i, j, k); any size (no cells when a side is < 2).
        level: the iso-value.

    Returns:
        vertices: (V, 3) float32. Positions in lattice index units: (i, j, k) is lattice point sdf[i, j, k].
        faces: (F, 3) int64. Vertex ids, wound with normals towards larger values (outward, for an SDF).
        Both on sdf's device, in a deterministic order: the kernel's vertices by lattice point, then its x, y, z
        edge, its faces by cell; the twin's in PyMCubes's order.
    """
    _check(sdf.dim() == 3, f"sdf must be [X, Y, Z], got {tuple(sdf.shape)}")
    backend = cuda_backend_for(sdf)
    if backend is None:
        return torch_impl.marching_cubes(sdf, level)
    return backend.marching_cubes(sdf.detach().contiguous(), float(level))
