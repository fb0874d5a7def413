// Python bindings of the raymarching kernels (called by raymarching/raymarching.py, where the ops are
// documented): argument checks (device, dtype, contiguity, shape, int range, with the bad value in the message),
// a device guard, output allocation, then the launchers of raymarching.h on the current stream.
// Shapes: N rays, M packed samples, C channels, R cells per axis; marching cubes: an [X, Y, Z] grid, V vertices,
// F faces. Every float tensor is float32, every tensor contiguous and on the device of the first one.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include <algorithm>
#include <string>
#include <tuple>

#include "raymarching.h"

namespace {

using at::Tensor;

// "[4, 5]": sizes go into messages as strings, never as streamed integers: streaming integers (or sizes())
// through TORCH_CHECK crashed the process on the GPU machine (torch 2.11); strings, devices, dtypes were fine.
std::string shape_string(at::IntArrayRef sizes) {
  std::string s = "[";
  for (size_t d = 0; d < sizes.size(); ++d) s += (d ? ", " : "") + std::to_string(sizes[d]);
  return s + "]";
}

// `t` must be a contiguous CUDA tensor of `dtype` on the device of `like`.
void check_tensor(const Tensor& t, const char* name, const Tensor& like, at::ScalarType dtype) {
  TORCH_CHECK(t.is_cuda(), "raymarching: ", name, " must be a CUDA tensor, got one on ", t.device());
  TORCH_CHECK(t.device() == like.device(), "raymarching: ", name, " is on ", t.device(),
              " but the other inputs are on ", like.device());
  TORCH_CHECK(t.scalar_type() == dtype, "raymarching: ", name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), "raymarching: ", name, " must be contiguous (shape ", shape_string(t.sizes()),
              ", strides ", shape_string(t.strides()), ")");
}

void check_shape(bool ok, const Tensor& t, const char* name, const char* expected) {
  TORCH_CHECK(ok, "raymarching: ", name, " must have shape ", expected, ", got ", shape_string(t.sizes()));
}

// Kernels index with int; refuse sizes that would overflow rather than corrupt memory.
void check_size(int64_t n, const char* what) {
  TORCH_CHECK(n < (int64_t(1) << 31), "raymarching: ", what, " too large for int indexing: ", std::to_string(n));
}

void check_rays(const Tensor& rays_o,   // [N, 3]
                const Tensor& rays_d) {  // [N, 3]
  check_tensor(rays_o, "rays_o", rays_o, at::kFloat);
  check_tensor(rays_d, "rays_d", rays_o, at::kFloat);
  check_shape(rays_o.dim() == 2 && rays_o.size(1) == 3, rays_o, "rays_o", "[N, 3]");
  check_shape(rays_d.sizes() == rays_o.sizes(), rays_d, "rays_d", "[N, 3] like rays_o");
  check_size(rays_o.numel(), "rays_o");
}

void check_aabb(const Tensor& aabb, const Tensor& like) {  // [6]
  check_tensor(aabb, "aabb", like, at::kFloat);
  check_shape(aabb.dim() == 1 && aabb.size(0) == 6, aabb, "aabb", "[6]");
}

std::tuple<Tensor, Tensor> near_far_from_sphere(const Tensor& rays_o,  // [N, 3]
                                                const Tensor& rays_d,  // [N, 3] unit directions
                                                double radius, double min_near) {
  check_rays(rays_o, rays_d);
  const c10::cuda::CUDAGuard device_guard(rays_o.device());
  const int n_rays = rays_o.size(0);
  auto nears = at::empty({n_rays}, rays_o.options());
  auto fars = at::empty({n_rays}, rays_o.options());
  C10_CUDA_CHECK(raymarching::launch_near_far_from_sphere(
      rays_o.data_ptr<float>(), rays_d.data_ptr<float>(), n_rays, static_cast<float>(radius),
      static_cast<float>(min_near), nears.data_ptr<float>(), fars.data_ptr<float>(), at::cuda::getCurrentCUDAStream()));
  return {nears, fars};  // [N], [N]
}

std::tuple<Tensor, Tensor> near_far_from_aabb(const Tensor& rays_o,  // [N, 3]
                                              const Tensor& rays_d,  // [N, 3]
                                              const Tensor& aabb,    // [6] xmin, ymin, zmin, xmax, ymax, zmax
                                              double min_near) {
  check_rays(rays_o, rays_d);
  check_aabb(aabb, rays_o);
  const c10::cuda::CUDAGuard device_guard(rays_o.device());
  const int n_rays = rays_o.size(0);
  auto nears = at::empty({n_rays}, rays_o.options());
  auto fars = at::empty({n_rays}, rays_o.options());
  C10_CUDA_CHECK(raymarching::launch_near_far_from_aabb(
      rays_o.data_ptr<float>(), rays_d.data_ptr<float>(), aabb.data_ptr<float>(), n_rays,
      static_cast<float>(min_near), nears.data_ptr<float>(), fars.data_ptr<float>(), at::cuda::getCurrentCUDAStream()));
  return {nears, fars};  // [N], [N]
}

Tensor packbits(const Tensor& values,  // [R^3]
                double threshold) {
  check_tensor(values, "values", values, at::kFloat);
  check_shape(values.dim() == 1 && values.size(0) % 8 == 0, values, "values", "[R^3] with R^3 a multiple of 8");
  check_size(values.numel(), "values");
  const c10::cuda::CUDAGuard device_guard(values.device());
  const int n_bytes = values.size(0) / 8;
  auto bitfield = at::empty({n_bytes}, values.options().dtype(at::kByte));
  C10_CUDA_CHECK(raymarching::launch_packbits(values.data_ptr<float>(), n_bytes, static_cast<float>(threshold),
                                              bitfield.data_ptr<uint8_t>(), at::cuda::getCurrentCUDAStream()));
  return bitfield;  // [R^3 / 8] uint8
}

std::tuple<Tensor, Tensor, Tensor, Tensor> march_rays_train(
    const Tensor& rays_o,    // [N, 3]
    const Tensor& rays_d,    // [N, 3]
    const Tensor& nears,     // [N]
    const Tensor& fars,      // [N]
    const Tensor& jitter,    // [N] in [0, 1)
    const Tensor& bitfield,  // [R^3 / 8] uint8
    const Tensor& aabb,      // [6]
    int64_t resolution, double step_size, int64_t max_samples,
    int64_t capacity,                // M if >= 0, else -1: M = the number of samples (one host synchronisation)
    const Tensor& stop_bitfield) {   // [R^3 / 8] uint8, or empty: rays end at the first sample in such a cell
  check_rays(rays_o, rays_d);
  check_tensor(nears, "nears", rays_o, at::kFloat);
  check_tensor(fars, "fars", rays_o, at::kFloat);
  check_tensor(jitter, "jitter", rays_o, at::kFloat);
  check_tensor(bitfield, "bitfield", rays_o, at::kByte);
  check_aabb(aabb, rays_o);
  check_shape(nears.dim() == 1 && nears.size(0) == rays_o.size(0), nears, "nears", "[N]");
  check_shape(fars.sizes() == nears.sizes(), fars, "fars", "[N]");
  check_shape(jitter.sizes() == nears.sizes(), jitter, "jitter", "[N]");
  TORCH_CHECK(resolution > 0 && resolution < 2048, "raymarching: resolution must be in [1, 2047], got ",
              std::to_string(resolution));
  check_shape(bitfield.dim() == 1 && bitfield.size(0) * 8 == resolution * resolution * resolution, bitfield,
              "bitfield", "[R^3 / 8]");
  const bool has_stop = stop_bitfield.numel() > 0;
  if (has_stop) {
    check_tensor(stop_bitfield, "stop_bitfield", rays_o, at::kByte);
    check_shape(stop_bitfield.sizes() == bitfield.sizes(), stop_bitfield, "stop_bitfield", "[R^3 / 8] like bitfield");
  }
  TORCH_CHECK(step_size > 0, "raymarching: step_size must be positive, got ", std::to_string(step_size));
  TORCH_CHECK(max_samples >= 0 && max_samples < (int64_t(1) << 30), "raymarching: bad max_samples ",
              std::to_string(max_samples));
  TORCH_CHECK(capacity >= -1, "raymarching: capacity must be >= 0 (or -1: none), got ", std::to_string(capacity));
  check_size(capacity, "capacity");
  const c10::cuda::CUDAGuard device_guard(rays_o.device());
  const auto stream = at::cuda::getCurrentCUDAStream();
  const int n_rays = rays_o.size(0);
  const raymarching::MarchArgs args{rays_o.data_ptr<float>(),
                                    rays_d.data_ptr<float>(),
                                    nears.data_ptr<float>(),
                                    fars.data_ptr<float>(),
                                    jitter.data_ptr<float>(),
                                    bitfield.data_ptr<uint8_t>(),
                                    has_stop ? stop_bitfield.data_ptr<uint8_t>() : nullptr,
                                    aabb.data_ptr<float>(),
                                    n_rays,
                                    static_cast<int>(resolution),
                                    static_cast<float>(step_size)};

  // Pass 1 counts, an inclusive cumsum places each ray, pass 2 writes: deterministic and in ray order.
  auto counts = at::empty({n_rays}, rays_o.options().dtype(at::kInt));
  C10_CUDA_CHECK(raymarching::launch_march_rays_train_count(args, static_cast<int>(max_samples),
                                                            counts.data_ptr<int>(), stream));
  const auto ends = counts.cumsum(0, at::kLong);
  Tensor packed_info, ray_indices, t_starts, t_ends;
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
  if (ray_indices.numel() > 0) {
    C10_CUDA_CHECK(raymarching::launch_march_rays_train_fill(args, packed_info.data_ptr<int>(),
                                                             ray_indices.data_ptr<int64_t>(),
                                                             t_starts.data_ptr<float>(), t_ends.data_ptr<float>(),
                                                             stream));
  }
  // [M] int64, [M], [M], [N, 2] int32 (start, count)
  return {ray_indices, t_starts, t_ends, packed_info};
}

void check_packed(const Tensor& alphas,         // [M]
                  const Tensor& values,         // [M, C]
                  const Tensor& packed_info) {  // [N, 2] int32
  check_tensor(alphas, "alphas", alphas, at::kFloat);
  check_tensor(values, "values", alphas, at::kFloat);
  check_tensor(packed_info, "packed_info", alphas, at::kInt);
  check_shape(alphas.dim() == 1, alphas, "alphas", "[M]");
  check_shape(values.dim() == 2 && values.size(0) == alphas.size(0), values, "values", "[M, C]");
  check_shape(packed_info.dim() == 2 && packed_info.size(1) == 2, packed_info, "packed_info", "[N, 2]");
  check_size(values.numel(), "values");
}

std::tuple<Tensor, Tensor, Tensor, Tensor> composite_rays_train_forward(
    const Tensor& alphas,       // [M]
    const Tensor& values,       // [M, C]
    const Tensor& packed_info,  // [N, 2] int32 (start, count)
    double T_thresh) {
  check_packed(alphas, values, packed_info);
  const c10::cuda::CUDAGuard device_guard(alphas.device());
  const int n_rays = packed_info.size(0), n_channels = values.size(1);
  // Zero-filled so samples that no ray references get weight 0.
  auto weights = at::zeros_like(alphas);
  auto transmittance = at::zeros_like(alphas);
  auto opacity = at::empty({n_rays}, alphas.options());
  auto accum = at::empty({n_rays, n_channels}, alphas.options());
  C10_CUDA_CHECK(raymarching::launch_composite_rays_train_forward(
      alphas.data_ptr<float>(), values.data_ptr<float>(), packed_info.data_ptr<int>(), n_rays, n_channels,
      static_cast<float>(T_thresh), weights.data_ptr<float>(), opacity.data_ptr<float>(), accum.data_ptr<float>(),
      transmittance.data_ptr<float>(), at::cuda::getCurrentCUDAStream()));
  // [M], [N], [N, C], [M] transmittance before each sample (saved for the backward)
  return {weights, opacity, accum, transmittance};
}

std::tuple<Tensor, Tensor> composite_rays_train_backward(
    const Tensor& grad_weights,   // [M]
    const Tensor& grad_opacity,   // [N]
    const Tensor& grad_accum,     // [N, C]
    const Tensor& alphas,         // [M]
    const Tensor& values,         // [M, C]
    const Tensor& transmittance,  // [M] from the forward
    const Tensor& packed_info,    // [N, 2] int32
    double T_thresh) {
  check_packed(alphas, values, packed_info);
  check_tensor(grad_weights, "grad_weights", alphas, at::kFloat);
  check_tensor(grad_opacity, "grad_opacity", alphas, at::kFloat);
  check_tensor(grad_accum, "grad_accum", alphas, at::kFloat);
  check_tensor(transmittance, "transmittance", alphas, at::kFloat);
  const int n_rays = packed_info.size(0), n_channels = values.size(1);
  check_shape(grad_weights.sizes() == alphas.sizes(), grad_weights, "grad_weights", "[M]");
  check_shape(transmittance.sizes() == alphas.sizes(), transmittance, "transmittance", "[M]");
  check_shape(grad_opacity.dim() == 1 && grad_opacity.size(0) == n_rays, grad_opacity, "grad_opacity", "[N]");
  check_shape(grad_accum.dim() == 2 && grad_accum.size(0) == n_rays && grad_accum.size(1) == n_channels, grad_accum,
              "grad_accum", "[N, C]");
  const c10::cuda::CUDAGuard device_guard(alphas.device());
  auto grad_alphas = at::zeros_like(alphas);
  auto grad_values = at::zeros_like(values);
  C10_CUDA_CHECK(raymarching::launch_composite_rays_train_backward(
      grad_weights.data_ptr<float>(), grad_opacity.data_ptr<float>(), grad_accum.data_ptr<float>(),
      alphas.data_ptr<float>(), values.data_ptr<float>(), transmittance.data_ptr<float>(),
      packed_info.data_ptr<int>(), n_rays, n_channels, static_cast<float>(T_thresh), grad_alphas.data_ptr<float>(),
      grad_values.data_ptr<float>(), at::cuda::getCurrentCUDAStream()));
  return {grad_alphas, grad_values};  // [M], [M, C]
}

std::tuple<Tensor, Tensor> marching_cubes(const Tensor& sdf,  // [X, Y, Z]
                                          double level) {
  check_tensor(sdf, "sdf", sdf, at::kFloat);
  check_shape(sdf.dim() == 3, sdf, "sdf", "[X, Y, Z]");
  check_size(sdf.numel(), "sdf");
  const c10::cuda::CUDAGuard device_guard(sdf.device());
  const auto stream = at::cuda::getCurrentCUDAStream();
  const auto long_options = sdf.options().dtype(at::kLong);
  if (sdf.size(0) < 2 || sdf.size(1) < 2 || sdf.size(2) < 2) {  // no cells
    return {at::empty({0, 3}, sdf.options()), at::empty({0, 3}, long_options)};
  }
  const int n_points = static_cast<int>(sdf.numel());
  const raymarching::LatticeArgs grid{sdf.data_ptr<float>(), static_cast<int>(sdf.size(0)),
                                      static_cast<int>(sdf.size(1)), static_cast<int>(sdf.size(2)), n_points,
                                      static_cast<float>(level)};
  // One byte per point for the cases and the crossing edges and one int for the vertex numbering: 6 bytes per
  // point beside the grid's 4 (6.4 GB at 1024^3).
  auto cell_case = at::empty({n_points}, sdf.options().dtype(at::kByte));
  auto edge_bits = at::empty({n_points}, sdf.options().dtype(at::kByte));
  auto vertex_end = at::empty({n_points}, sdf.options().dtype(at::kInt));
  C10_CUDA_CHECK(raymarching::launch_marching_cubes_classify(grid, cell_case.data_ptr<uint8_t>(),
                                                             edge_bits.data_ptr<uint8_t>(),
                                                             vertex_end.data_ptr<int>(), stream));
  // Up to 3 vertices per point: the total may pass int range although the points do not, so it is summed in
  // int64 (one synchronisation) before the int scan, whose partial sums are then known to fit. Chunk by chunk:
  // a sum into int64 first casts its whole input (8 more bytes a point).
  constexpr int64_t kSumChunk = int64_t(1) << 24;
  auto vertex_total = at::zeros({}, long_options);
  for (int64_t start = 0; start < n_points; start += kSumChunk) {
    vertex_total += vertex_end.narrow(0, start, std::min(kSumChunk, n_points - start)).sum(at::kLong);
  }
  const int64_t n_vertices = vertex_total.item<int64_t>();
  check_size(n_vertices, "number of vertices");
  vertex_end.cumsum_(0);
  auto vertices = at::empty({n_vertices, 3}, sdf.options());
  if (n_vertices > 0) {
    C10_CUDA_CHECK(raymarching::launch_marching_cubes_vertices(grid, edge_bits.data_ptr<uint8_t>(),
                                                               vertex_end.data_ptr<int>(),
                                                               vertices.data_ptr<float>(), stream));
  }
  // The cells with triangles, ascending (a synchronisation), then their triangle counts and placement.
  const auto active_cells = at::nonzero(cell_case).view({-1});
  const int64_t n_active = active_cells.size(0);
  check_size(n_active, "number of cells with triangles");
  auto triangle_end = at::empty({n_active}, long_options);
  C10_CUDA_CHECK(raymarching::launch_marching_cubes_count_triangles(
      cell_case.data_ptr<uint8_t>(), active_cells.data_ptr<int64_t>(), static_cast<int>(n_active),
      triangle_end.data_ptr<int64_t>(), stream));
  triangle_end.cumsum_(0);
  const int64_t n_faces = n_active > 0 ? triangle_end[n_active - 1].item<int64_t>() : 0;
  auto faces = at::empty({n_faces, 3}, long_options);
  C10_CUDA_CHECK(raymarching::launch_marching_cubes_faces(
      grid, cell_case.data_ptr<uint8_t>(), active_cells.data_ptr<int64_t>(), static_cast<int>(n_active),
      triangle_end.data_ptr<int64_t>(), edge_bits.data_ptr<uint8_t>(), vertex_end.data_ptr<int>(),
      faces.data_ptr<int64_t>(), stream));
  return {vertices, faces};  // [V, 3] lattice index units, [F, 3] int64
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Ray-marching kernels on an occupancy grid (see raymarching/raymarching.py)";
  m.def("near_far_from_sphere", &near_far_from_sphere, "ray/sphere entry and exit distances -> (nears, fars)",
        py::arg("rays_o"), py::arg("rays_d"), py::arg("radius"), py::arg("min_near"));
  m.def("near_far_from_aabb", &near_far_from_aabb, "ray/box entry and exit distances -> (nears, fars)",
        py::arg("rays_o"), py::arg("rays_d"), py::arg("aabb"), py::arg("min_near"));
  m.def("packbits", &packbits, "occupancy values -> bitfield", py::arg("values"), py::arg("threshold"));
  m.def("march_rays_train", &march_rays_train,
        "packed occupied lattice samples of every ray -> (ray_indices, t_starts, t_ends, packed_info)",
        py::arg("rays_o"), py::arg("rays_d"), py::arg("nears"), py::arg("fars"), py::arg("jitter"),
        py::arg("bitfield"), py::arg("aabb"), py::arg("resolution"), py::arg("step_size"), py::arg("max_samples"),
        py::arg("capacity"), py::arg("stop_bitfield"));
  m.def("composite_rays_train_forward", &composite_rays_train_forward,
        "alpha compositing -> (weights, opacity, accum, transmittance)", py::arg("alphas"), py::arg("values"),
        py::arg("packed_info"), py::arg("T_thresh"));
  m.def("composite_rays_train_backward", &composite_rays_train_backward,
        "backward of alpha compositing -> (grad_alphas, grad_values)", py::arg("grad_weights"),
        py::arg("grad_opacity"), py::arg("grad_accum"), py::arg("alphas"), py::arg("values"),
        py::arg("transmittance"), py::arg("packed_info"), py::arg("T_thresh"));
  m.def("marching_cubes", &marching_cubes, "triangle mesh of the level set sdf = level -> (vertices, faces)",
        py::arg("sdf"), py::arg("level"));
}
