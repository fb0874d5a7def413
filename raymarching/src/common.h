// Checks and launch helpers shared by the raymarching kernels.
#pragma once

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <cstdint>
#include <string>

namespace raymarching {

// Sizes go into messages as strings: streaming integers or sizes() through TORCH_CHECK crashed the process
// (segfault) on the GPU machine (torch 2.11), while strings, devices and dtypes were fine.
inline std::string shape_string(at::IntArrayRef sizes) {
  std::string s = "[";
  for (size_t d = 0; d < sizes.size(); ++d) s += (d ? ", " : "") + std::to_string(sizes[d]);
  return s + "]";
}

constexpr int kThreads = 256;
// Kernels with a serial loop per ray run in small blocks, so that a few thousand rays still spread over all SMs.
constexpr int kRayThreads = 64;

inline int num_blocks(int64_t n, int threads = kThreads) { return static_cast<int>((n + threads - 1) / threads); }

// Kernels index with int; refuse sizes that would overflow rather than corrupt memory.
inline void check_size(int64_t n, const char* what) {
  TORCH_CHECK(n < (int64_t(1) << 31), what, " too large for int indexing: ", std::to_string(n));
}

// Device, dtype and contiguity of an input; `device` is the device every tensor of the call must be on.
inline void check_input(const at::Tensor& x, const char* name, at::ScalarType dtype, const at::Device& device) {
  TORCH_CHECK(x.is_cuda(), name, " must be a CUDA tensor, got device ", x.device());
  TORCH_CHECK(x.device() == device, name, " is on ", x.device(), " but the other inputs are on ", device);
  TORCH_CHECK(x.scalar_type() == dtype, name, " must be ", dtype, ", got ", x.scalar_type());
  TORCH_CHECK(x.is_contiguous(), name, " must be contiguous (shape ", shape_string(x.sizes()), ", strides ",
              shape_string(x.strides()), ")");
}

// Shape check that prints the offending shape.
inline void check_shape(bool ok, const at::Tensor& x, const char* name, const char* expected) {
  TORCH_CHECK(ok, name, " must have shape ", expected, ", got ", shape_string(x.sizes()));
}

}  // namespace raymarching
