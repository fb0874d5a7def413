// Host entry points of the raymarching kernels (one declaration per op; docs live in raymarching.py).
// Every float tensor is float32, every tensor contiguous and on the same CUDA device.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

// -> (nears [N], fars [N])
std::tuple<at::Tensor, at::Tensor> near_far_from_sphere(
    const at::Tensor& rays_o,  // [N, 3]
    const at::Tensor& rays_d,  // [N, 3] unit directions
    double radius, double min_near);

// -> (nears [N], fars [N])
std::tuple<at::Tensor, at::Tensor> near_far_from_aabb(
    const at::Tensor& rays_o,  // [N, 3]
    const at::Tensor& rays_d,  // [N, 3]
    const at::Tensor& aabb,    // [6] xmin, ymin, zmin, xmax, ymax, zmax
    double min_near);

// -> bitfield [R^3 / 8] uint8, cell i = bit (i % 8) of byte i / 8
at::Tensor packbits(
    const at::Tensor& values,  // [R^3] float32
    double threshold);

// -> (ray_indices [M] int64, t_starts [M], t_ends [M], packed_info [N, 2] int32 = (start, count)); M = capacity
// when capacity >= 0 (rays that do not fit: start -1, count 0; padding rows zero), else the number of samples
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> march_rays_train(
    const at::Tensor& rays_o,    // [N, 3]
    const at::Tensor& rays_d,    // [N, 3]
    const at::Tensor& nears,     // [N]
    const at::Tensor& fars,      // [N]
    const at::Tensor& jitter,    // [N] in [0, 1)
    const at::Tensor& bitfield,  // [R^3 / 8] uint8
    const at::Tensor& aabb,      // [6]
    int64_t resolution, double step_size, int64_t max_samples, int64_t capacity,
    const at::Tensor& stop_bitfield);  // [R^3 / 8] uint8, or empty: rays end at the first sample in such a cell

// -> (t_starts [n, n_step], t_ends [n, n_step], valid [n, n_step] bool); advances rays_k in place
std::tuple<at::Tensor, at::Tensor, at::Tensor> march_rays(
    const at::Tensor& ray_ids,   // [n] int64, indices into the N rays
    const at::Tensor& rays_k,    // [N] int32, next lattice index per ray (updated)
    const at::Tensor& rays_o,    // [N, 3]
    const at::Tensor& rays_d,    // [N, 3]
    const at::Tensor& nears,     // [N]
    const at::Tensor& fars,      // [N]
    const at::Tensor& bitfield,  // [R^3 / 8] uint8
    const at::Tensor& aabb,      // [6]
    int64_t resolution, double step_size, int64_t n_step);

// -> (weights [M], opacity [N], accum [N, C], transmittance [M] before each sample, saved for backward)
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> composite_rays_train_forward(
    const at::Tensor& alphas,       // [M]
    const at::Tensor& values,       // [M, C]
    const at::Tensor& packed_info,  // [N, 2] int32
    double T_thresh);

// -> (grad_alphas [M], grad_values [M, C])
std::tuple<at::Tensor, at::Tensor> composite_rays_train_backward(
    const at::Tensor& grad_weights,   // [M]
    const at::Tensor& grad_opacity,   // [N]
    const at::Tensor& grad_accum,     // [N, C]
    const at::Tensor& alphas,         // [M]
    const at::Tensor& values,         // [M, C]
    const at::Tensor& transmittance,  // [M] from the forward
    const at::Tensor& packed_info,    // [N, 2] int32
    double T_thresh);

// -> alive [n] bool; updates transmittance and accum in place
at::Tensor composite_rays(
    const at::Tensor& ray_ids,        // [n] int64
    const at::Tensor& alphas,         // [n, S]
    const at::Tensor& values,         // [n, S, C]
    const at::Tensor& valid,          // [n, S] bool, a prefix of each row
    const at::Tensor& transmittance,  // [N] (updated)
    const at::Tensor& accum,          // [N, C] (updated)
    double T_thresh);
