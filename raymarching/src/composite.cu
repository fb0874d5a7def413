// Front-to-back alpha compositing with early termination: training (packed, with backward) and inference.
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

__global__ void composite_rays_kernel(
    const int64_t* __restrict__ ray_ids,  // [n]
    const float* __restrict__ alphas,     // [n, S]
    const float* __restrict__ values,     // [n, S, C]
    const bool* __restrict__ valid,       // [n, S]
    int n_alive, int n_step, int n_channels, float T_thresh,
    float* __restrict__ transmittance,    // [N]
    float* __restrict__ accum,            // [N, C]
    bool* __restrict__ alive) {           // [n]
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n_alive) return;
  const int64_t r = ray_ids[i];
  float* accum_r = accum + r * n_channels;
  float T = transmittance[r];
  for (int s = 0; s < n_step; ++s) {
    const int64_t sample = static_cast<int64_t>(i) * n_step + s;
    if (!valid[sample] || T < T_thresh) break;
    const float alpha = alphas[sample];
    const float w = alpha * T;
    for (int c = 0; c < n_channels; ++c) accum_r[c] += w * values[sample * n_channels + c];
    T = __fmul_rn(T, __fsub_rn(1.f, alpha));
  }
  transmittance[r] = T;
  // A ray whose last slot is empty has no samples left.
  alive[i] = T >= T_thresh && valid[static_cast<int64_t>(i) * n_step + n_step - 1];
}

void check_packed(const at::Tensor& alphas, const at::Tensor& values, const at::Tensor& packed_info) {
  const auto device = alphas.device();
  check_input(alphas, "alphas", at::kFloat, device);
  check_input(values, "values", at::kFloat, device);
  check_input(packed_info, "packed_info", at::kInt, device);
  check_shape(alphas.dim() == 1, alphas, "alphas", "[M]");
  check_shape(values.dim() == 2 && values.size(0) == alphas.size(0), values, "values", "[M, C]");
  check_shape(packed_info.dim() == 2 && packed_info.size(1) == 2, packed_info, "packed_info", "[N, 2]");
  check_size(values.numel(), "values");
}

}  // namespace
}  // namespace raymarching

using namespace raymarching;

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> composite_rays_train_forward(
    const at::Tensor& alphas, const at::Tensor& values, const at::Tensor& packed_info, double T_thresh) {
  check_packed(alphas, values, packed_info);
  const c10::cuda::CUDAGuard guard(alphas.device());
  const int n_rays = packed_info.size(0), n_channels = values.size(1);
  // Zero-filled so samples that no ray references get weight 0.
  auto weights = at::zeros_like(alphas);
  auto transmittance = at::zeros_like(alphas);
  auto opacity = at::empty({n_rays}, alphas.options());
  auto accum = at::empty({n_rays, n_channels}, alphas.options());
  if (n_rays > 0) {
    const auto stream = at::cuda::getCurrentCUDAStream();
    composite_rays_train_forward_kernel<<<num_blocks(n_rays, kRayThreads), kRayThreads, 0, stream>>>(
        alphas.data_ptr<float>(), values.data_ptr<float>(), packed_info.data_ptr<int>(), n_rays, n_channels,
        static_cast<float>(T_thresh), weights.data_ptr<float>(), opacity.data_ptr<float>(),
        accum.data_ptr<float>(), transmittance.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return {weights, opacity, accum, transmittance};
}

std::tuple<at::Tensor, at::Tensor> composite_rays_train_backward(
    const at::Tensor& grad_weights, const at::Tensor& grad_opacity, const at::Tensor& grad_accum,
    const at::Tensor& alphas, const at::Tensor& values, const at::Tensor& transmittance,
    const at::Tensor& packed_info, double T_thresh) {
  check_packed(alphas, values, packed_info);
  const auto device = alphas.device();
  check_input(grad_weights, "grad_weights", at::kFloat, device);
  check_input(grad_opacity, "grad_opacity", at::kFloat, device);
  check_input(grad_accum, "grad_accum", at::kFloat, device);
  check_input(transmittance, "transmittance", at::kFloat, device);
  const int n_rays = packed_info.size(0), n_channels = values.size(1);
  check_shape(grad_weights.sizes() == alphas.sizes(), grad_weights, "grad_weights", "[M]");
  check_shape(transmittance.sizes() == alphas.sizes(), transmittance, "transmittance", "[M]");
  check_shape(grad_opacity.dim() == 1 && grad_opacity.size(0) == n_rays, grad_opacity, "grad_opacity", "[N]");
  check_shape(grad_accum.dim() == 2 && grad_accum.size(0) == n_rays && grad_accum.size(1) == n_channels, grad_accum,
              "grad_accum", "[N, C]");
  const c10::cuda::CUDAGuard guard(device);
  auto grad_alphas = at::zeros_like(alphas);
  auto grad_values = at::zeros_like(values);
  if (n_rays > 0) {
    const auto stream = at::cuda::getCurrentCUDAStream();
    composite_rays_train_backward_kernel<<<num_blocks(n_rays, kRayThreads), kRayThreads, 0, stream>>>(
        grad_weights.data_ptr<float>(), grad_opacity.data_ptr<float>(), grad_accum.data_ptr<float>(),
        alphas.data_ptr<float>(), values.data_ptr<float>(), transmittance.data_ptr<float>(),
        packed_info.data_ptr<int>(), n_rays, n_channels, static_cast<float>(T_thresh),
        grad_alphas.data_ptr<float>(), grad_values.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return {grad_alphas, grad_values};
}

at::Tensor composite_rays(const at::Tensor& ray_ids, const at::Tensor& alphas, const at::Tensor& values,
                          const at::Tensor& valid, const at::Tensor& transmittance, const at::Tensor& accum,
                          double T_thresh) {
  const auto device = alphas.device();
  check_input(ray_ids, "ray_ids", at::kLong, device);
  check_input(alphas, "alphas", at::kFloat, device);
  check_input(values, "values", at::kFloat, device);
  check_input(valid, "valid", at::kBool, device);
  check_input(transmittance, "transmittance", at::kFloat, device);
  check_input(accum, "accum", at::kFloat, device);
  check_shape(ray_ids.dim() == 1, ray_ids, "ray_ids", "[n]");
  check_shape(alphas.dim() == 2 && alphas.size(0) == ray_ids.size(0) && alphas.size(1) > 0, alphas, "alphas",
              "[n, S]");
  check_shape(values.dim() == 3 && values.size(0) == alphas.size(0) && values.size(1) == alphas.size(1), values,
              "values", "[n, S, C]");
  check_shape(valid.sizes() == alphas.sizes(), valid, "valid", "[n, S]");
  check_shape(transmittance.dim() == 1, transmittance, "transmittance", "[N]");
  check_shape(accum.dim() == 2 && accum.size(0) == transmittance.size(0) && accum.size(1) == values.size(2), accum,
              "accum", "[N, C]");
  check_size(values.numel(), "values");
  const c10::cuda::CUDAGuard guard(device);
  const int n_alive = ray_ids.size(0);
  auto alive = at::empty({n_alive}, alphas.options().dtype(at::kBool));
  if (n_alive > 0) {
    const auto stream = at::cuda::getCurrentCUDAStream();
    composite_rays_kernel<<<num_blocks(n_alive, kRayThreads), kRayThreads, 0, stream>>>(
        ray_ids.data_ptr<int64_t>(), alphas.data_ptr<float>(), values.data_ptr<float>(), valid.data_ptr<bool>(),
        n_alive, static_cast<int>(alphas.size(1)), static_cast<int>(values.size(2)), static_cast<float>(T_thresh),
        transmittance.data_ptr<float>(), accum.data_ptr<float>(), alive.data_ptr<bool>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return alive;
}
