// Launchers of the spherical-harmonics kernels (shencoder.cu), called by the bindings (bindings.cpp).
// They take raw pointers and a stream so that shencoder.cu needs no PyTorch headers (faster to compile);
// all checking of tensors happens in the bindings.
#pragma once

#include <cstdint>

#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace shencoder {

// Largest supported number of SH bands (outputs per direction = degree^2 <= 64).
constexpr int kMaxDegree = 8;

// scalar_t is float or __half; arithmetic is float32 either way. Returns the launch error, if any.
template <typename scalar_t>
cudaError_t launch_sh_forward(
    const scalar_t* dirs,  // [num_dirs, 3] unit vectors
    scalar_t* outputs,     // [num_dirs, degree^2], fully overwritten
    int64_t num_dirs,
    int degree,            // 1..kMaxDegree
    cudaStream_t stream);

template <typename scalar_t>
cudaError_t launch_sh_backward(
    const scalar_t* grad_outputs,  // [num_dirs, degree^2] dLoss/doutputs
    const scalar_t* dirs,          // [num_dirs, 3] unit vectors, as given to the forward
    scalar_t* grad_dirs,           // [num_dirs, 3] dLoss/ddirs, fully overwritten
    int64_t num_dirs,
    int degree,                    // 1..kMaxDegree
    cudaStream_t stream);

}  // namespace shencoder
