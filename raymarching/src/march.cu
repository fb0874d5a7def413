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

__device__ Ray load_ray(const float* rays_o, const float* rays_d, const float* nears, const float* fars,
                        float jitter, int r) {
  Ray ray;
  for (int a = 0; a < 3; ++a) {
    ray.o[a] = rays_o[3 * r + a];
    ray.d[a] = rays_d[3 * r + a];
  }
  ray.near = nears[r];
  ray.far = fars[r];
  ray.jitter = jitter;
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

// Walks the lattice of one ray from index k and calls emit(n, k, t_start) for its first `cap` kept samples,
// stopping at the first sample in a cell of `stop` (a bitfield like `bitfield`, or null). Returns the number of
// kept samples. Works cell by cell: all samples of a cell share its fate, so after locating one sample the walk
// jumps to the last sample in the same cell (or still before the box), emitting the run if the cell is
// occupied. The cost is per cell crossed, not per sample.
template <typename Emit>
__device__ int march_one_ray(const Ray& ray, int k, int cap, float step, const Grid& g, const uint8_t* bitfield,
                             const uint8_t* stop, Emit emit) {
  const float half = step * 0.5f;
  const int k_end = lattice_end(ray, step);
  int n = 0;
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
      for (int i = 0; i < run; ++i) emit(n + i, k + i, lattice_t(ray, step, k + i));
      n += run;
    }
    k = k_last + 1;
  }
  return n;
}

struct MarchArgs {
  const float* rays_o;      // [N, 3]
  const float* rays_d;      // [N, 3]
  const float* nears;       // [N]
  const float* fars;        // [N]
  const uint8_t* bitfield;  // [R^3 / 8]
  const uint8_t* stop;      // [R^3 / 8] or null: rays end at the first sample in one of these cells
  const float* aabb;        // [6]
  int resolution;
  float step;
};

__global__ void march_rays_train_count_kernel(
    MarchArgs args,
    const float* __restrict__ jitter,  // [N]
    int n_rays, int max_samples,
    int* __restrict__ counts) {        // [N]
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= n_rays) return;
  const Grid g = make_grid(args.aabb, args.resolution);
  const Ray ray = load_ray(args.rays_o, args.rays_d, args.nears, args.fars, jitter[r], r);
  counts[r] = march_one_ray(ray, 0, max_samples, args.step, g, args.bitfield, args.stop, [](int, int, float) {});
}

__global__ void march_rays_train_fill_kernel(
    MarchArgs args,
    const float* __restrict__ jitter,       // [N]
    const int* __restrict__ packed_info,    // [N, 2] (start, count)
    int n_rays,
    int64_t* __restrict__ ray_indices,      // [M]
    float* __restrict__ t_starts,           // [M]
    float* __restrict__ t_ends) {           // [M]
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= n_rays) return;
  const Grid g = make_grid(args.aabb, args.resolution);
  const Ray ray = load_ray(args.rays_o, args.rays_d, args.nears, args.fars, jitter[r], r);
  const int start = packed_info[2 * r], count = packed_info[2 * r + 1];
  if (count == 0) return;  // no samples, or dropped for lack of capacity (start = -1)
  const float step = args.step;
  march_one_ray(ray, 0, count, step, g, args.bitfield, args.stop, [&](int n, int, float t) {
    ray_indices[start + n] = r;
    t_starts[start + n] = t;
    t_ends[start + n] = __fadd_rn(t, step);
  });
}

__global__ void march_rays_kernel(
    MarchArgs args,
    const int64_t* __restrict__ ray_ids,  // [n]
    int* __restrict__ rays_k,             // [N]
    int n_alive, int n_step,
    float* __restrict__ t_starts,         // [n, n_step]
    float* __restrict__ t_ends,           // [n, n_step]
    bool* __restrict__ valid) {           // [n, n_step]
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n_alive) return;
  const int r = static_cast<int>(ray_ids[i]);
  const Grid g = make_grid(args.aabb, args.resolution);
  const Ray ray = load_ray(args.rays_o, args.rays_d, args.nears, args.fars, 0.f, r);
  const float step = args.step;
  int next_k = rays_k[r];
  const auto emit = [&](int s, int k, float t) {
    t_starts[i * n_step + s] = t;
    t_ends[i * n_step + s] = __fadd_rn(t, step);
    valid[i * n_step + s] = true;
    next_k = k + 1;
  };
  const int n = march_one_ray(ray, next_k, n_step, step, g, args.bitfield, args.stop, emit);
  for (int s = n; s < n_step; ++s) {
    t_starts[i * n_step + s] = 0.f;
    t_ends[i * n_step + s] = 0.f;
    valid[i * n_step + s] = false;
  }
  rays_k[r] = next_k;
}

void check_march_inputs(const at::Tensor& rays_o, const at::Tensor& rays_d, const at::Tensor& nears,
                        const at::Tensor& fars, const at::Tensor& bitfield, const at::Tensor& aabb,
                        int64_t resolution, double step_size) {
  const auto device = rays_o.device();
  check_input(rays_o, "rays_o", at::kFloat, device);
  check_input(rays_d, "rays_d", at::kFloat, device);
  check_input(nears, "nears", at::kFloat, device);
  check_input(fars, "fars", at::kFloat, device);
  check_input(bitfield, "bitfield", at::kByte, device);
  check_input(aabb, "aabb", at::kFloat, device);
  check_shape(rays_o.dim() == 2 && rays_o.size(1) == 3, rays_o, "rays_o", "[N, 3]");
  check_shape(rays_d.sizes() == rays_o.sizes(), rays_d, "rays_d", "[N, 3] like rays_o");
  check_shape(nears.dim() == 1 && nears.size(0) == rays_o.size(0), nears, "nears", "[N]");
  check_shape(fars.sizes() == nears.sizes(), fars, "fars", "[N]");
  check_shape(aabb.dim() == 1 && aabb.size(0) == 6, aabb, "aabb", "[6]");
  TORCH_CHECK(resolution > 0 && resolution < 2048, "resolution must be in [1, 2047], got ", std::to_string(resolution));
  check_shape(bitfield.dim() == 1 && bitfield.size(0) * 8 == resolution * resolution * resolution, bitfield,
              "bitfield", "[R^3 / 8]");
  TORCH_CHECK(step_size > 0, "step_size must be positive, got ", std::to_string(step_size));
  check_size(rays_o.numel(), "rays_o");
}

MarchArgs march_args(const at::Tensor& rays_o, const at::Tensor& rays_d, const at::Tensor& nears,
                     const at::Tensor& fars, const at::Tensor& bitfield, const at::Tensor& aabb,
                     int64_t resolution, double step_size) {
  return MarchArgs{rays_o.data_ptr<float>(), rays_d.data_ptr<float>(),   nears.data_ptr<float>(),
                   fars.data_ptr<float>(),   bitfield.data_ptr<uint8_t>(), nullptr,
                   aabb.data_ptr<float>(),   static_cast<int>(resolution), static_cast<float>(step_size)};
}

}  // namespace
}  // namespace raymarching

using namespace raymarching;

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> march_rays_train(
    const at::Tensor& rays_o, const at::Tensor& rays_d, const at::Tensor& nears, const at::Tensor& fars,
    const at::Tensor& jitter, const at::Tensor& bitfield, const at::Tensor& aabb, int64_t resolution,
    double step_size, int64_t max_samples, int64_t capacity, const at::Tensor& stop_bitfield) {
  check_march_inputs(rays_o, rays_d, nears, fars, bitfield, aabb, resolution, step_size);
  const bool has_stop = stop_bitfield.numel() > 0;
  if (has_stop) {
    check_input(stop_bitfield, "stop_bitfield", at::kByte, rays_o.device());
    check_shape(stop_bitfield.sizes() == bitfield.sizes(), stop_bitfield, "stop_bitfield",
                "[R^3 / 8] like bitfield");
  }
  check_input(jitter, "jitter", at::kFloat, rays_o.device());
  check_shape(jitter.sizes() == nears.sizes(), jitter, "jitter", "[N]");
  TORCH_CHECK(max_samples >= 0 && max_samples < (int64_t(1) << 30), "bad max_samples ", std::to_string(max_samples));
  TORCH_CHECK(capacity >= -1, "capacity must be >= 0 (or -1: none), got ", std::to_string(capacity));
  check_size(capacity, "capacity");
  const c10::cuda::CUDAGuard guard(rays_o.device());
  const auto stream = at::cuda::getCurrentCUDAStream();
  const int n_rays = rays_o.size(0);
  MarchArgs args = march_args(rays_o, rays_d, nears, fars, bitfield, aabb, resolution, step_size);
  if (has_stop) args.stop = stop_bitfield.data_ptr<uint8_t>();

  // Pass 1 counts, an inclusive cumsum places each ray, pass 2 writes: deterministic and in ray order.
  auto counts = at::empty({n_rays}, rays_o.options().dtype(at::kInt));
  if (n_rays > 0) {
    march_rays_train_count_kernel<<<num_blocks(n_rays, kRayThreads), kRayThreads, 0, stream>>>(
        args, jitter.data_ptr<float>(), n_rays, static_cast<int>(max_samples), counts.data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  const auto ends = counts.cumsum(0, at::kLong);
  at::Tensor packed_info, ray_indices, t_starts, t_ends;
  if (capacity < 0) {
    // Output size known only on the host after counting: one synchronisation.
    const int64_t n_samples = n_rays > 0 ? ends[n_rays - 1].item<int64_t>() : 0;
    check_size(n_samples, "number of samples");
    packed_info = at::stack({(ends - counts).to(at::kInt), counts}, 1).contiguous();
    ray_indices = at::empty({n_samples}, rays_o.options().dtype(at::kLong));
    t_starts = at::empty({n_samples}, rays_o.options());
    t_ends = at::empty({n_samples}, rays_o.options());
  } else {
    // Fixed output size, no synchronisation: the rays whose samples fit (a prefix) keep them, the rest are
    // dropped (start -1, count 0); rows past the kept samples are zero padding.
    const auto kept = ends <= capacity;
    packed_info = at::stack({at::where(kept, ends - counts, -1).to(at::kInt), at::where(kept, counts, 0)}, 1)
                      .contiguous();
    ray_indices = at::zeros({capacity}, rays_o.options().dtype(at::kLong));
    t_starts = at::zeros({capacity}, rays_o.options());
    t_ends = at::zeros({capacity}, rays_o.options());
  }
  if (n_rays > 0 && ray_indices.numel() > 0) {
    march_rays_train_fill_kernel<<<num_blocks(n_rays, kRayThreads), kRayThreads, 0, stream>>>(
        args, jitter.data_ptr<float>(), packed_info.data_ptr<int>(), n_rays, ray_indices.data_ptr<int64_t>(),
        t_starts.data_ptr<float>(), t_ends.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return {ray_indices, t_starts, t_ends, packed_info};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> march_rays(
    const at::Tensor& ray_ids, const at::Tensor& rays_k, const at::Tensor& rays_o, const at::Tensor& rays_d,
    const at::Tensor& nears, const at::Tensor& fars, const at::Tensor& bitfield, const at::Tensor& aabb,
    int64_t resolution, double step_size, int64_t n_step) {
  check_march_inputs(rays_o, rays_d, nears, fars, bitfield, aabb, resolution, step_size);
  check_input(ray_ids, "ray_ids", at::kLong, rays_o.device());
  check_input(rays_k, "rays_k", at::kInt, rays_o.device());
  check_shape(ray_ids.dim() == 1, ray_ids, "ray_ids", "[n]");
  check_shape(rays_k.sizes() == nears.sizes(), rays_k, "rays_k", "[N]");
  TORCH_CHECK(n_step > 0 && n_step < 65536, "n_step must be in [1, 65535], got ", std::to_string(n_step));
  check_size(ray_ids.size(0) * n_step, "n * n_step");
  const c10::cuda::CUDAGuard guard(rays_o.device());
  const int n_alive = ray_ids.size(0);
  auto t_starts = at::empty({n_alive, n_step}, rays_o.options());
  auto t_ends = at::empty({n_alive, n_step}, rays_o.options());
  auto valid = at::empty({n_alive, n_step}, rays_o.options().dtype(at::kBool));
  if (n_alive > 0) {
    const auto stream = at::cuda::getCurrentCUDAStream();
    march_rays_kernel<<<num_blocks(n_alive, kRayThreads), kRayThreads, 0, stream>>>(
        march_args(rays_o, rays_d, nears, fars, bitfield, aabb, resolution, step_size), ray_ids.data_ptr<int64_t>(),
        rays_k.data_ptr<int>(), n_alive, static_cast<int>(n_step), t_starts.data_ptr<float>(),
        t_ends.data_ptr<float>(), valid.data_ptr<bool>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return {t_starts, t_ends, valid};
}
