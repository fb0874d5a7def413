// Python bindings of the spherical-harmonics kernels: tensor checks, device guard, current stream.
// Outputs are allocated by the caller (shencoder/sphere_harmonics.py) and fully overwritten here.

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include <type_traits>

#include "shencoder.h"

namespace {

// Sizes go into messages as strings: streaming integers through TORCH_CHECK crashed the process (segfault) on
// the GPU machine (torch 2.11), while strings, devices and dtypes were fine.
std::string shape_string(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? ", " : "") + std::to_string(t.size(d));
  return s + "]";
}

void check_dirs(const at::Tensor& dirs) {
  TORCH_CHECK(dirs.is_cuda(), "dirs must be a CUDA tensor, got one on ", dirs.device());
  TORCH_CHECK(dirs.scalar_type() == at::kFloat || dirs.scalar_type() == at::kHalf,
              "dirs must be float32 or float16, got ", dirs.scalar_type());
  TORCH_CHECK(dirs.dim() == 2 && dirs.size(1) == 3, "dirs must have shape [N, 3], got ", shape_string(dirs));
  TORCH_CHECK(dirs.is_contiguous(), "dirs must be contiguous");
}

void check_degree(int64_t degree) {
  TORCH_CHECK(degree >= 1 && degree <= shencoder::kMaxDegree, "degree must be in 1..", std::to_string(shencoder::kMaxDegree),
              ", got ", std::to_string(degree));
}

// `tensor` must be a contiguous [dirs.size(0), cols] matrix of the dtype and on the device of `dirs`.
void check_like_dirs(const at::Tensor& tensor, const char* name, const at::Tensor& dirs, int64_t cols) {
  TORCH_CHECK(tensor.device() == dirs.device(), name, " must be on ", dirs.device(), ", got ", tensor.device());
  TORCH_CHECK(tensor.scalar_type() == dirs.scalar_type(), name, " must have the dtype of dirs (",
              dirs.scalar_type(), "), got ", tensor.scalar_type());
  TORCH_CHECK(tensor.dim() == 2 && tensor.size(0) == dirs.size(0) && tensor.size(1) == cols, name,
              " must have shape [", std::to_string(dirs.size(0)), ", ", std::to_string(cols), "], got ",
              shape_string(tensor));
  TORCH_CHECK(tensor.is_contiguous(), name, " must be contiguous");
}

// at::Half and CUDA's __half are both a bare IEEE binary16, so the pointers convert.
template <typename scalar_t>
scalar_t* data(const at::Tensor& tensor) {
  if constexpr (std::is_same_v<scalar_t, __half>) {
    return reinterpret_cast<__half*>(tensor.data_ptr<at::Half>());
  } else {
    return tensor.data_ptr<scalar_t>();
  }
}

}  // namespace

void sh_forward(
    const at::Tensor& dirs,  // [N, 3] float32|float16, unit vectors
    at::Tensor outputs,      // [N, degree^2] same dtype, overwritten (a handle; the data is shared)
    int64_t degree)
{
  check_dirs(dirs);
  check_degree(degree);
  check_like_dirs(outputs, "outputs", dirs, degree * degree);
  const c10::cuda::CUDAGuard device_guard(dirs.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  cudaError_t error;
  if (dirs.scalar_type() == at::kFloat) {
    error = shencoder::launch_sh_forward(data<float>(dirs), data<float>(outputs), dirs.size(0),
                                         static_cast<int>(degree), stream);
  } else {
    error = shencoder::launch_sh_forward(data<__half>(dirs), data<__half>(outputs), dirs.size(0),
                                         static_cast<int>(degree), stream);
  }
  C10_CUDA_CHECK(error);
}

void sh_backward(
    const at::Tensor& grad_outputs,  // [N, degree^2] dLoss/doutputs, dtype of dirs
    const at::Tensor& dirs,          // [N, 3] float32|float16, as given to the forward
    at::Tensor grad_dirs,            // [N, 3] dtype of dirs, overwritten with dLoss/ddirs
    int64_t degree)
{
  check_dirs(dirs);
  check_degree(degree);
  check_like_dirs(grad_outputs, "grad_outputs", dirs, degree * degree);
  check_like_dirs(grad_dirs, "grad_dirs", dirs, 3);
  const c10::cuda::CUDAGuard device_guard(dirs.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  cudaError_t error;
  if (dirs.scalar_type() == at::kFloat) {
    error = shencoder::launch_sh_backward(data<float>(grad_outputs), data<float>(dirs), data<float>(grad_dirs),
                                          dirs.size(0), static_cast<int>(degree), stream);
  } else {
    error = shencoder::launch_sh_backward(data<__half>(grad_outputs), data<__half>(dirs),
                                          data<__half>(grad_dirs), dirs.size(0), static_cast<int>(degree), stream);
  }
  C10_CUDA_CHECK(error);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("sh_forward", &sh_forward, "Real spherical harmonics of unit directions into `outputs`.",
        py::arg("dirs"), py::arg("outputs"), py::arg("degree"));
  m.def("sh_backward", &sh_backward, "Gradient of sh_forward with respect to dirs, into `grad_dirs`.",
        py::arg("grad_outputs"), py::arg("dirs"), py::arg("grad_dirs"), py::arg("degree"));
}
