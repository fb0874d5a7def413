// Python bindings of the spherical-harmonics kernels (called by shencoder/sphere_harmonics.py): argument checks
// (device, dtype, contiguity, shape, with the bad value in the message), a device guard, then the launchers of
// shencoder.h on the current stream. Outputs are allocated by the caller and fully overwritten here.
// Shapes: N directions, degree^2 outputs each; every tensor has the dtype of dirs (float32 or float16; the
// arithmetic is float32 either way).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include <string>
#include <type_traits>

#include "shencoder.h"

namespace {

using at::Tensor;

// "[4, 5]": sizes go into messages as strings, never as streamed integers: streaming integers (or sizes())
// through TORCH_CHECK crashed the process on the GPU machine (torch 2.11); strings, devices, dtypes were fine.
std::string shape_string(at::IntArrayRef sizes) {
  std::string s = "[";
  for (size_t d = 0; d < sizes.size(); ++d) s += (d ? ", " : "") + std::to_string(sizes[d]);
  return s + "]";
}

void check_dirs(const Tensor& dirs) {
  TORCH_CHECK(dirs.is_cuda(), "sh_encode: dirs must be a CUDA tensor, got one on ", dirs.device());
  TORCH_CHECK(dirs.scalar_type() == at::kFloat || dirs.scalar_type() == at::kHalf,
              "sh_encode: dirs must be float32 or float16, got ", dirs.scalar_type());
  TORCH_CHECK(dirs.dim() == 2 && dirs.size(1) == 3, "sh_encode: dirs must have shape [N, 3], got ",
              shape_string(dirs.sizes()));
  TORCH_CHECK(dirs.is_contiguous(), "sh_encode: dirs must be contiguous (shape ", shape_string(dirs.sizes()), ")");
}

void check_degree(int64_t degree) {
  TORCH_CHECK(degree >= 1 && degree <= shencoder::kMaxDegree, "sh_encode: degree must be in 1..",
              std::to_string(shencoder::kMaxDegree), ", got ", std::to_string(degree));
}

// `t` must be a contiguous [dirs.size(0), cols] matrix of the dtype and on the device of `dirs`.
void check_like_dirs(const Tensor& t, const char* name, const Tensor& dirs, int64_t cols) {
  TORCH_CHECK(t.device() == dirs.device(), "sh_encode: ", name, " must be on ", dirs.device(), ", got ",
              t.device());
  TORCH_CHECK(t.scalar_type() == dirs.scalar_type(), "sh_encode: ", name, " must have the dtype of dirs (",
              dirs.scalar_type(), "), got ", t.scalar_type());
  TORCH_CHECK(t.sizes() == at::IntArrayRef({dirs.size(0), cols}), "sh_encode: ", name, " must have shape ",
              shape_string({dirs.size(0), cols}), ", got ", shape_string(t.sizes()));
  TORCH_CHECK(t.is_contiguous(), "sh_encode: ", name, " must be contiguous (shape ", shape_string(t.sizes()), ")");
}

// at::Half and CUDA's __half are both a bare IEEE binary16, so the pointers convert.
template <typename scalar_t>
scalar_t* data(const Tensor& t) {
  if constexpr (std::is_same_v<scalar_t, __half>) {
    return reinterpret_cast<__half*>(t.data_ptr<at::Half>());
  } else {
    return t.data_ptr<scalar_t>();
  }
}

void sh_forward(const Tensor& dirs,  // [N, 3] float32|float16, unit vectors
                Tensor outputs,      // [N, degree^2] dtype of dirs; overwritten
                int64_t degree)      // 1..kMaxDegree
{
  check_dirs(dirs);
  check_degree(degree);
  check_like_dirs(outputs, "outputs", dirs, degree * degree);
  const c10::cuda::CUDAGuard device_guard(dirs.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  if (dirs.scalar_type() == at::kFloat) {
    C10_CUDA_CHECK(shencoder::launch_sh_forward(data<float>(dirs), data<float>(outputs), dirs.size(0),
                                                static_cast<int>(degree), stream));
  } else {
    C10_CUDA_CHECK(shencoder::launch_sh_forward(data<__half>(dirs), data<__half>(outputs), dirs.size(0),
                                                static_cast<int>(degree), stream));
  }
}

void sh_backward(const Tensor& grad_outputs,  // [N, degree^2] dLoss/doutputs, dtype of dirs
                 const Tensor& dirs,          // [N, 3] float32|float16, as given to the forward
                 Tensor grad_dirs,            // [N, 3] dtype of dirs; overwritten with dLoss/ddirs
                 int64_t degree)              // 1..kMaxDegree
{
  check_dirs(dirs);
  check_degree(degree);
  check_like_dirs(grad_outputs, "grad_outputs", dirs, degree * degree);
  check_like_dirs(grad_dirs, "grad_dirs", dirs, 3);
  const c10::cuda::CUDAGuard device_guard(dirs.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  if (dirs.scalar_type() == at::kFloat) {
    C10_CUDA_CHECK(shencoder::launch_sh_backward(data<float>(grad_outputs), data<float>(dirs),
                                                 data<float>(grad_dirs), dirs.size(0), static_cast<int>(degree),
                                                 stream));
  } else {
    C10_CUDA_CHECK(shencoder::launch_sh_backward(data<__half>(grad_outputs), data<__half>(dirs),
                                                 data<__half>(grad_dirs), dirs.size(0), static_cast<int>(degree),
                                                 stream));
  }
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Spherical-harmonics encoding kernels (see shencoder/sphere_harmonics.py)";
  m.def("sh_forward", &sh_forward, "real spherical harmonics of unit directions into `outputs`", py::arg("dirs"),
        py::arg("outputs"), py::arg("degree"));
  m.def("sh_backward", &sh_backward, "gradient of sh_forward with respect to dirs, into `grad_dirs`",
        py::arg("grad_outputs"), py::arg("dirs"), py::arg("grad_dirs"), py::arg("degree"));
}
