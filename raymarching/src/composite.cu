// Front-to-back alpha compositing of packed samples with early termination, and its backward.
//
// A sample is active while the transmittance before it, and before every earlier sample of its ray, is
// >= T_thresh; inactive samples get weight 0 in the forward and no gradient in the backward.
#include "common.h"
#include "raymarching.h"

namespace raymarching {
namespace {

// Channels accumulated in registers per pass over a ray; more channels take more passes. Per-thread serial
// loops over a ray are latency-bound, so nothing in them may wait on a global read-modify-write.
constexpr int kChannelChunk = 8;

__global__ void composite_rays_train_forward_kernel(
    const float* __restrict__ alphas,      // [M]
    const float* __restrict__ values,      // [M, C]
    const int* __restrict__ packed_info,   // [N, 2] (start, count)
    int n_rays, int n_channels, float T_thresh,
    float* __restrict__ weights,           // [M]
    float* __restrict__ opacity,           // [N]
    float* __restrict__ accum,             // [N, C]
    float* __restrict__ transmittance) {   // [M], before each sample
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= n_rays) return;
  const int start = packed_info[2 * r], count = packed_info[2 * r + 1];
  float* accum_r = accum + static_cast<int64_t>(r) * n_channels;
  for (int c0 = 0; c0 == 0 || c0 < n_channels; c0 += kChannelChunk) {
    const bool first_pass = c0 == 0;
    float sums[kChannelChunk] = {};
    float T = 1.f, weight_sum = 0.f;
    bool active = true;
#pragma unroll 4
    for (int i = start; i < start + count; ++i) {
      const float alpha = alphas[i];
      active = active && T >= T_thresh;
      const float w = active ? alpha * T : 0.f;
      if (first_pass) {
        transmittance[i] = T;
        weights[i] = w;
        weight_sum += w;
      }
      const float* v = values + static_cast<int64_t>(i) * n_channels + c0;
#pragma unroll
      for (int c = 0; c < kChannelChunk; ++c)
        if (c0 + c < n_channels) sums[c] += w * v[c];
      // Kept running past the termination (same product as the twin's cumprod); only active samples use it.
      T = __fmul_rn(T, __fsub_rn(1.f, alpha));
    }
#pragma unroll
    for (int c = 0; c < kChannelChunk; ++c)
      if (c0 + c < n_channels) accum_r[c0 + c] = sums[c];
    if (first_pass) opacity[r] = weight_sum;
  }
}

// dL/dalpha_j = T_j (g_j - S_j) with g_i = dL/dw_i + dL/dopacity + sum_c dL/daccum_c v_ic and
// S_j = sum_{i>j active} g_i alpha_i prod_{j<k<i} (1 - alpha_k), accumulated by a reverse scan (no division).
__global__ void composite_rays_train_backward_kernel(
    const float* __restrict__ grad_weights,   // [M]
    const float* __restrict__ grad_opacity,   // [N]
    const float* __restrict__ grad_accum,     // [N, C]
    const float* __restrict__ alphas,         // [M]
    const float* __restrict__ values,         // [M, C]
    const float* __restrict__ transmittance,  // [M]
    const int* __restrict__ packed_info,      // [N, 2]
    int n_rays, int n_channels, float T_thresh,
    float* __restrict__ grad_alphas,          // [M]
    float* __restrict__ grad_values) {        // [M, C]
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= n_rays) return;
  const int start = packed_info[2 * r], count = packed_info[2 * r + 1];
  const float* grad_accum_r = grad_accum + static_cast<int64_t>(r) * n_channels;
  float grad_accum_chunk[kChannelChunk];  // the first channels in registers (all of them for C <= 8)
#pragma unroll
  for (int c = 0; c < kChannelChunk; ++c) grad_accum_chunk[c] = c < n_channels ? grad_accum_r[c] : 0.f;
  const float grad_opacity_r = grad_opacity[r];
  // Active samples are a prefix (the transmittance never increases): binary search for its length.
  int lo = 0, hi = count;
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (transmittance[start + mid] >= T_thresh) lo = mid + 1; else hi = mid;
  }
  const int n_active = lo;
  float S = 0.f;
#pragma unroll 4
  for (int i = start + n_active - 1; i >= start; --i) {
    const float alpha = alphas[i], T = transmittance[i];
    const int64_t row = static_cast<int64_t>(i) * n_channels;
    float g = grad_weights[i] + grad_opacity_r;
#pragma unroll
    for (int c = 0; c < kChannelChunk; ++c)
      if (c < n_channels) g += grad_accum_chunk[c] * values[row + c];
    for (int c = kChannelChunk; c < n_channels; ++c) g += grad_accum_r[c] * values[row + c];
    grad_alphas[i] = T * (g - S);
    S = g * alpha + (1.f - alpha) * S;
    const float w = alpha * T;
#pragma unroll
    for (int c = 0; c < kChannelChunk; ++c)
      if (c < n_channels) grad_values[row + c] = w * grad_accum_chunk[c];
    for (int c = kChannelChunk; c < n_channels; ++c) grad_values[row + c] = w * grad_accum_r[c];
  }
  // Terminated samples keep the zeros their buffers were created with.
}

}  // namespace

cudaError_t launch_composite_rays_train_forward(const float* alphas, const float* values, const int* packed_info,
                                                int n_rays, int n_channels, float T_thresh, float* weights,
                                                float* opacity, float* accum, float* transmittance,
                                                cudaStream_t stream) {
  if (n_rays == 0) return cudaSuccess;  // a grid of zero blocks is a launch error
  composite_rays_train_forward_kernel<<<num_blocks(n_rays, kRayThreads), kRayThreads, 0, stream>>>(
      alphas, values, packed_info, n_rays, n_channels, T_thresh, weights, opacity, accum, transmittance);
  return cudaGetLastError();
}

cudaError_t launch_composite_rays_train_backward(const float* grad_weights, const float* grad_opacity,
                                                 const float* grad_accum, const float* alphas, const float* values,
                                                 const float* transmittance, const int* packed_info, int n_rays,
                                                 int n_channels, float T_thresh, float* grad_alphas,
                                                 float* grad_values, cudaStream_t stream) {
  if (n_rays == 0) return cudaSuccess;
  composite_rays_train_backward_kernel<<<num_blocks(n_rays, kRayThreads), kRayThreads, 0, stream>>>(
      grad_weights, grad_opacity, grad_accum, alphas, values, transmittance, packed_info, n_rays, n_channels,
      T_thresh, grad_alphas, grad_values);
  return cudaGetLastError();
}

}  // namespace raymarching
