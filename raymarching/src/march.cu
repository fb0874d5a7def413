// Sample generation on the ray lattice t_k = near + (k + jitter) * step, skipping empty cells.
//
// Exactness: the midpoint, the point and the cell of a sample are computed with explicitly rounded operations
// (__fadd_rn / __fmul_rn: no fused multiply-add) in the order torch_impl uses, so the kept samples equal the
// PyTorch twin's bit for bit. Each of those operations is monotone in k, hence so is every per-axis cell index
// of a sample along a ray: if samples k and k' lie in the same cell, so do all samples between them. Jumps over
// empty cells rely on that: a jump target is only accepted after checking it is still in the same cell, so
// skipping never changes the result, it only avoids looking at every sample.
#include <cmath>

#include "common.h"
#include "raymarching.h"

namespace raymarching {
namespace {

// Largest lattice index the twin considers, so both agree even for degenerate inputs (e.g. far = inf).
constexpr float kMaxLatticeIndex = 1073741824.f;  // 2^30

// Where a sample falls: a cell index >= 0 inside the box, else one of these.
constexpr int64_t kBeforeBox = -1;  // outside on an axis the ray still approaches: later samples may enter
constexpr int64_t kPastBox = -2;    // outside on an axis the ray leaves or runs parallel to: none will enter

struct Grid {
  float lo[3], hi[3];
  float scale[3];      // R / (hi - lo), as the twin divides
  float cell_size[3];  // (hi - lo) / R, only for jump estimates
  int resolution;
};

__device__ Grid make_grid(const float* aabb, int resolution) {
  Grid g;
  for (int a = 0; a < 3; ++a) {
    g.lo[a] = aabb[a];
    g.hi[a] = aabb[3 + a];
    g.scale[a] = __fdiv_rn(static_cast<float>(resolution), __fsub_rn(g.hi[a], g.lo[a]));
    g.cell_size[a] = (g.hi[a] - g.lo[a]) / resolution;
  }
  g.resolution = resolution;
  return g;
}

struct Ray {
  float o[3], d[3];
  float near, far, jitter;
};

__device__ Ray load_ray(const MarchArgs& args, int r) {
  Ray ray;
  for (int a = 0; a < 3; ++a) {
    ray.o[a] = args.rays_o[3 * r + a];
    ray.d[a] = args.rays_d[3 * r + a];
  }
  ray.near = args.nears[r];
  ray.far = args.fars[r];
  ray.jitter = args.jitter[r];
  return ray;
}

// t_k = ((k + jitter) * step) + near, rounded op by op.
__device__ __forceinline__ float lattice_t(const Ray& ray, float step, int k) {
  return __fadd_rn(__fmul_rn(__fadd_rn(static_cast<float>(k), ray.jitter), step), ray.near);
}

// Exclusive bound on k, the twin's candidate bound: ceil(clamp((far - near) / step - jitter - 0.5)) + 2.
__device__ int lattice_end(const Ray& ray, float step) {
  float span = __fsub_rn(__fsub_rn(__fdiv_rn(__fsub_rn(ray.far, ray.near), step), ray.jitter), 0.5f);
  if (isnan(span)) span = 0.f;
  return static_cast<int>(ceilf(fminf(fmaxf(span, -1.f), kMaxLatticeIndex))) + 2;
}

// Estimated last k whose midpoint is below t (only used as a jump target, which is then verified).
__device__ int k_before(const Ray& ray, float step, float t) {
  const float k = floorf((t - ray.near) / step - ray.jitter - 0.5f);
  return isnan(k) ? 0 : static_cast<int>(fminf(fmaxf(k, -1.f), kMaxLatticeIndex));
}

__device__ __forceinline__ float point_axis(const Ray& ray, float mid, int a) {
  return __fadd_rn(ray.o[a], __fmul_rn(ray.d[a], mid));
}

// Cell (or kBeforeBox / kPastBox) of the point at distance `mid`; `before_axis` names an axis not yet entered.
__device__ int64_t locate(const Ray& ray, float mid, const Grid& g, int* before_axis) {
  int idx[3];
  bool before = false;
  for (int a = 0; a < 3; ++a) {
    const float p = point_axis(ray, mid, a);
    if (p >= g.lo[a] && p <= g.hi[a]) {
      const float x = floorf(__fmul_rn(__fsub_rn(p, g.lo[a]), g.scale[a]));
      idx[a] = static_cast<int>(fminf(fmaxf(x, 0.f), static_cast<float>(g.resolution - 1)));
    } else if ((p < g.lo[a] && ray.d[a] > 0.f) || (p > g.hi[a] && ray.d[a] < 0.f)) {
      before = true;
      *before_axis = a;
    } else {
      return kPastBox;  // also NaN points, which the twin never keeps either
    }
  }
  if (before) return kBeforeBox;
  return (static_cast<int64_t>(idx[0]) * g.resolution + idx[1]) * g.resolution + idx[2];
}

__device__ __forceinline__ bool occupied(const uint8_t* bitfield, int64_t cell) {
  return (bitfield[cell >> 3] >> (cell & 7)) & 1;
}

// Estimated distance at which the ray leaves `cell`.
__device__ float cell_exit_t(const Ray& ray, int64_t cell, const Grid& g) {
  const int64_t R = g.resolution;
  const int idx[3] = {static_cast<int>(cell / (R * R)), static_cast<int>((cell / R) % R), static_cast<int>(cell % R)};
  float t_exit = INFINITY;
  for (int a = 0; a < 3; ++a) {
    if (ray.d[a] == 0.f) continue;
    const float face = g.lo[a] + (idx[a] + (ray.d[a] > 0.f ? 1 : 0)) * g.cell_size[a];
    t_exit = fminf(t_exit, (face - ray.o[a]) / ray.d[a]);
  }
  return t_exit;
}

// Walks the lattice of one ray and calls emit(n, t_start) for its first `cap` kept samples, stopping at the first
// sample in a cell of `stop` (a bitfield like `bitfield`, or null). Returns the number of kept samples. Works
// cell by cell: all samples of a cell share its fate, so after locating one sample the walk jumps to the last
// sample in the same cell (or still before the box), emitting the run if the cell is occupied. The cost is per
// cell crossed, not per sample.
template <typename Emit>
__device__ int march_one_ray(const Ray& ray, int cap, float step, const Grid& g, const uint8_t* bitfield,
                             const uint8_t* stop, Emit emit) {
  const float half = step * 0.5f;
  const int k_end = lattice_end(ray, step);
  int n = 0, k = 0;
  while (n < cap && k < k_end) {
    const float t = lattice_t(ray, step, k);
    const float mid = __fadd_rn(t, half);
    if (!(mid < ray.far)) break;
    int axis = 0;
    const int64_t cell = locate(ray, mid, g, &axis);
    if (cell == kPastBox) break;
    if (cell >= 0 && stop != nullptr && occupied(stop, cell)) break;
    // Last sample sharing sample k's fate (same cell and before far, or still before the box on `axis`): an
    // estimate from where the ray leaves, accepted only after checking it (by monotonicity, enough).
    float t_leave;
    if (cell >= 0) {
      t_leave = cell_exit_t(ray, cell, g);
    } else {
      t_leave = ((ray.d[axis] > 0.f ? g.lo[axis] : g.hi[axis]) - ray.o[axis]) / ray.d[axis];
    }
    const auto same_fate = [&](int kk) {
      const float mid_kk = __fadd_rn(lattice_t(ray, step, kk), half);
      if (cell >= 0) {
        int unused = 0;
        return mid_kk < ray.far && locate(ray, mid_kk, g, &unused) == cell;
      }
      const float p = point_axis(ray, mid_kk, axis);
      return ray.d[axis] > 0.f ? p < g.lo[axis] : p > g.hi[axis];
    };
    const int k_jump = min(k_before(ray, step, t_leave), k_end - 1);
    int k_last = k;
    if (k_jump > k && same_fate(k_jump)) {
      k_last = k_jump;
    } else if (k_jump - 1 > k && same_fate(k_jump - 1)) {
      k_last = k_jump - 1;
    }
    if (cell >= 0 && occupied(bitfield, cell)) {
      const int run = min(k_last - k + 1, cap - n);
      for (int i = 0; i < run; ++i) emit(n + i, lattice_t(ray, step, k + i));
      n += run;
    }
    k = k_last + 1;
  }
  return n;
}

__global__ void march_rays_train_count_kernel(MarchArgs args, int max_samples,
                                              int* __restrict__ counts) {  // [N]
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= args.n_rays) return;
  const Grid g = make_grid(args.aabb, args.resolution);
  counts[r] = march_one_ray(load_ray(args, r), max_samples, args.step, g, args.bitfield, args.stop,
                            [](int, float) {});
}

__global__ void march_rays_train_fill_kernel(MarchArgs args,
                                             const int* __restrict__ packed_info,  // [N, 2] (start, count)
                                             int64_t* __restrict__ ray_indices,    // [M]
                                             float* __restrict__ t_starts,         // [M]
                                             float* __restrict__ t_ends) {         // [M]
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= args.n_rays) return;
  const int start = packed_info[2 * r], count = packed_info[2 * r + 1];
  if (count == 0) return;  // no samples, or dropped for lack of capacity (start = -1)
  const Grid g = make_grid(args.aabb, args.resolution);
  const float step = args.step;
  march_one_ray(load_ray(args, r), count, step, g, args.bitfield, args.stop, [&](int n, float t) {
    ray_indices[start + n] = r;
    t_starts[start + n] = t;
    t_ends[start + n] = __fadd_rn(t, step);
  });
}

}  // namespace

cudaError_t launch_march_rays_train_count(const MarchArgs& args, int max_samples, int* counts,
                                          cudaStream_t stream) {
  if (args.n_rays == 0) return cudaSuccess;  // a grid of zero blocks is a launch error
  march_rays_train_count_kernel<<<num_blocks(args.n_rays, kRayThreads), kRayThreads, 0, stream>>>(
      args, max_samples, counts);
  return cudaGetLastError();
}

cudaError_t launch_march_rays_train_fill(const MarchArgs& args, const int* packed_info, int64_t* ray_indices,
                                         float* t_starts, float* t_ends, cudaStream_t stream) {
  if (args.n_rays == 0) return cudaSuccess;
  march_rays_train_fill_kernel<<<num_blocks(args.n_rays, kRayThreads), kRayThreads, 0, stream>>>(
      args, packed_info, ray_indices, t_starts, t_ends);
  return cudaGetLastError();
}

}  // namespace raymarching
