// Ray/sphere and ray/box intervals, and the occupancy bitfield packing.
#include <cmath>

#include "common.h"
#include "raymarching.h"

namespace raymarching {
namespace {

__global__ void near_far_from_sphere_kernel(
    const float* __restrict__ rays_o,  // [N, 3]
    const float* __restrict__ rays_d,  // [N, 3]
    int n_rays, float radius, float min_near,
    float* __restrict__ nears,         // [N]
    float* __restrict__ fars) {        // [N]
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= n_rays) return;
  const float ox = rays_o[3 * r], oy = rays_o[3 * r + 1], oz = rays_o[3 * r + 2];
  const float dx = rays_d[3 * r], dy = rays_d[3 * r + 1], dz = rays_d[3 * r + 2];
  const float b = ox * dx + oy * dy + oz * dz;
  const float c = ox * ox + oy * oy + oz * oz - radius * radius;
  const float disc = b * b - c;
  // A miss gets an empty interval at the ray's closest approach to the centre (never NaN).
  const float miss_t = fmaxf(-b, min_near);
  if (disc > 0.f) {
    const float root = sqrtf(disc);
    const float near = fmaxf(-b - root, min_near);
    nears[r] = near;
    fars[r] = fmaxf(-b + root, near);
  } else {
    nears[r] = miss_t;
    fars[r] = miss_t;
  }
}

__global__ void near_far_from_aabb_kernel(
    const float* __restrict__ rays_o,  // [N, 3]
    const float* __restrict__ rays_d,  // [N, 3]
    const float* __restrict__ aabb,    // [6]
    int n_rays, float min_near,
    float* __restrict__ nears,         // [N]
    float* __restrict__ fars) {        // [N]
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= n_rays) return;
  float t_enter = -INFINITY, t_exit = INFINITY;
  for (int a = 0; a < 3; ++a) {
    const float o = rays_o[3 * r + a], d = rays_d[3 * r + a];
    const float lo = aabb[a], hi = aabb[3 + a];
    if (d == 0.f) {
      // Parallel to this slab: inside it for all t or for none (avoids 0 * inf = NaN).
      if (!(o >= lo && o <= hi)) { t_enter = INFINITY; t_exit = -INFINITY; }
      continue;
    }
    const float t_lo = __fdiv_rn(lo - o, d), t_hi = __fdiv_rn(hi - o, d);
    t_enter = fmaxf(t_enter, fminf(t_lo, t_hi));
    t_exit = fminf(t_exit, fmaxf(t_lo, t_hi));
  }
  if (t_enter < t_exit) {
    const float near = fmaxf(t_enter, min_near);
    nears[r] = near;
    fars[r] = fmaxf(t_exit, near);
  } else {
    const float* o = rays_o + 3 * r;
    const float* d = rays_d + 3 * r;
    const float miss_t = fmaxf(-(o[0] * d[0] + o[1] * d[1] + o[2] * d[2]), min_near);
    nears[r] = miss_t;
    fars[r] = miss_t;
  }
}

__global__ void packbits_kernel(
    const float* __restrict__ values,  // [R^3]
    int n_bytes, float threshold,
    uint8_t* __restrict__ bitfield) {  // [R^3 / 8]
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n_bytes) return;
  uint8_t byte = 0;
  for (int b = 0; b < 8; ++b) byte |= static_cast<uint8_t>(values[8 * i + b] > threshold) << b;
  bitfield[i] = byte;
}

}  // namespace

cudaError_t launch_near_far_from_sphere(const float* rays_o, const float* rays_d, int n_rays, float radius,
                                        float min_near, float* nears, float* fars, cudaStream_t stream) {
  if (n_rays == 0) return cudaSuccess;  // a grid of zero blocks is a launch error
  near_far_from_sphere_kernel<<<num_blocks(n_rays), kThreads, 0, stream>>>(rays_o, rays_d, n_rays, radius,
                                                                           min_near, nears, fars);
  return cudaGetLastError();
}

cudaError_t launch_near_far_from_aabb(const float* rays_o, const float* rays_d, const float* aabb, int n_rays,
                                      float min_near, float* nears, float* fars, cudaStream_t stream) {
  if (n_rays == 0) return cudaSuccess;
  near_far_from_aabb_kernel<<<num_blocks(n_rays), kThreads, 0, stream>>>(rays_o, rays_d, aabb, n_rays, min_near,
                                                                         nears, fars);
  return cudaGetLastError();
}

cudaError_t launch_packbits(const float* values, int n_bytes, float threshold, uint8_t* bitfield,
                            cudaStream_t stream) {
  if (n_bytes == 0) return cudaSuccess;
  packbits_kernel<<<num_blocks(n_bytes), kThreads, 0, stream>>>(values, n_bytes, threshold, bitfield);
  return cudaGetLastError();
}

}  // namespace raymarching
