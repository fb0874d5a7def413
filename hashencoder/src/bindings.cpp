// Python bindings of the hash-grid kernels (called by hashencoder/hashgrid.py): argument checks (device, dtype,
// contiguity, shape, alignment, with the bad value in the message), a device guard, then the launchers of
// hashencoder.h on the current stream. Outputs and gradient buffers are allocated (and zeroed) by the caller.
// Shapes: N points, D = input_dim, L levels, C = level_dim, T = table rows. Every float tensor has the table's
// dtype (float32, or float64 for gradcheck); per-(point, level) features are level-major, [L, N, C].
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include <optional>
#include <string>

#include "hashencoder.h"

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
    TORCH_CHECK(t.is_cuda(), "hash_encode: ", name, " must be a CUDA tensor, got one on ", t.device());
    TORCH_CHECK(t.device() == like.device(), "hash_encode: ", name, " is on ", t.device(), " but inputs are on ",
                like.device());
    TORCH_CHECK(t.scalar_type() == dtype, "hash_encode: ", name, " must be ", dtype, ", got ", t.scalar_type());
    TORCH_CHECK(t.is_contiguous(), "hash_encode: ", name, " must be contiguous (shape ", shape_string(t.sizes()),
                ")");
}

// check_tensor, and rows of C features are read and written as vectors: the base must be aligned to 16 bytes.
void check_aligned_tensor(const Tensor& t, const char* name, const Tensor& like, at::ScalarType dtype) {
    check_tensor(t, name, like, dtype);
    TORCH_CHECK(reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0, "hash_encode: ", name,
                " must be 16-byte aligned (is it a view with a storage offset?)");
}

void check_shape(const Tensor& t, const char* name, at::IntArrayRef expected) {
    TORCH_CHECK(t.sizes() == expected, "hash_encode: ", name, " must have shape ", shape_string(expected), ", got ",
                shape_string(t.sizes()));
}

// Checks the arguments every kernel shares and returns (N, L, C).
std::tuple<int64_t, int64_t, int64_t> check_common(const Tensor& inputs,       // [N, D]
                                                   const Tensor& embeddings,   // [T, C]
                                                   const Tensor& offsets,      // [L + 1] int32
                                                   const Tensor& resolutions)  // [L] int32
{
    TORCH_CHECK(inputs.dim() == 2 && (inputs.size(1) == 2 || inputs.size(1) == 3),
                "hash_encode: inputs must be [N, 2] or [N, 3], got ", shape_string(inputs.sizes()));
    TORCH_CHECK(embeddings.dim() == 2, "hash_encode: embeddings must be [T, C], got ",
                shape_string(embeddings.sizes()));
    const int64_t level_dim = embeddings.size(1);
    TORCH_CHECK(level_dim == 1 || level_dim == 2 || level_dim == 4 || level_dim == 8,
                "hash_encode: level_dim (embeddings.size(1)) must be 1, 2, 4 or 8, got ",
                shape_string(embeddings.sizes()));
    const auto dtype = embeddings.scalar_type();
    TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, "hash_encode: embeddings must be float32 or float64, got ",
                dtype);
    TORCH_CHECK(resolutions.dim() == 1, "hash_encode: resolutions must be [L], got ",
                shape_string(resolutions.sizes()));
    const int64_t num_levels = resolutions.size(0);
    TORCH_CHECK(num_levels <= 65535, "hash_encode: at most 65535 levels (grid y dimension), got ",
                std::to_string(num_levels));
    check_shape(offsets, "offsets", {num_levels + 1});
    check_aligned_tensor(inputs, "inputs", inputs, dtype);
    check_aligned_tensor(embeddings, "embeddings", inputs, dtype);
    check_tensor(offsets, "offsets", inputs, at::kInt);
    check_tensor(resolutions, "resolutions", inputs, at::kInt);
    // offsets[L] == T is not checked here: it would need a device-to-host copy on every call (Python checks it
    // once when building the layout).
    return {inputs.size(0), num_levels, level_dim};
}

// Per-(point, level) features [L, N, C].
void check_features(const Tensor& t, const char* name, const Tensor& inputs, const Tensor& embeddings,
                    int64_t num_points, int64_t num_levels, int64_t level_dim) {
    check_aligned_tensor(t, name, inputs, embeddings.scalar_type());
    check_shape(t, name, {num_levels, num_points, level_dim});
}

// A gradient buffer shaped like `like` (and of the table's dtype), if given.
void check_gradient(const std::optional<Tensor>& t, const char* name, const Tensor& like, const Tensor& inputs,
                    const Tensor& embeddings) {
    if (!t) return;
    check_aligned_tensor(*t, name, inputs, embeddings.scalar_type());
    check_shape(*t, name, like.sizes());
}

void* data_or_null(const std::optional<Tensor>& t) { return t ? t->data_ptr() : nullptr; }

hashencoder::Grid make_grid(const Tensor& inputs, const Tensor& embeddings, const Tensor& offsets,
                            const Tensor& resolutions) {
    return {inputs.data_ptr(),
            embeddings.data_ptr(),
            offsets.data_ptr<int32_t>(),
            resolutions.data_ptr<int32_t>(),
            inputs.size(0),
            static_cast<int>(resolutions.size(0)),
            static_cast<int>(inputs.size(1)),
            static_cast<int>(embeddings.size(1)),
            embeddings.scalar_type() == at::kDouble ? hashencoder::TableType::kFloat64
                                                    : hashencoder::TableType::kFloat32};
}

void forward(const Tensor& inputs,       // [N, D], in [0, 1]
             const Tensor& embeddings,   // [T, C]
             const Tensor& offsets,      // [L + 1] int32
             const Tensor& resolutions,  // [L] int32
             Tensor outputs)             // [L, N, C]; overwritten
{
    const auto [num_points, num_levels, level_dim] = check_common(inputs, embeddings, offsets, resolutions);
    check_features(outputs, "outputs", inputs, embeddings, num_points, num_levels, level_dim);
    const c10::cuda::CUDAGuard device_guard(inputs.device());
    C10_CUDA_CHECK(hashencoder::launch_forward(make_grid(inputs, embeddings, offsets, resolutions),
                                               outputs.data_ptr(), at::cuda::getCurrentCUDAStream()));
}

void backward(const Tensor& grad_outputs,                  // [L, N, C]
              const Tensor& inputs,                        // [N, D]
              const Tensor& embeddings,                    // [T, C]
              const Tensor& offsets,                       // [L + 1] int32
              const Tensor& resolutions,                   // [L] int32
              const std::optional<Tensor>& grad_embeddings,  // [T, C], zeroed, or None
              const std::optional<Tensor>& grad_inputs)      // [N, D], zeroed, or None
{
    const auto [num_points, num_levels, level_dim] = check_common(inputs, embeddings, offsets, resolutions);
    check_features(grad_outputs, "grad_outputs", inputs, embeddings, num_points, num_levels, level_dim);
    check_gradient(grad_embeddings, "grad_embeddings", embeddings, inputs, embeddings);
    check_gradient(grad_inputs, "grad_inputs", inputs, inputs, embeddings);
    const c10::cuda::CUDAGuard device_guard(inputs.device());
    C10_CUDA_CHECK(hashencoder::launch_backward(make_grid(inputs, embeddings, offsets, resolutions),
                                                grad_outputs.data_ptr(), data_or_null(grad_embeddings),
                                                data_or_null(grad_inputs), at::cuda::getCurrentCUDAStream()));
}

void double_backward(const Tensor& grad_grad_inputs,                 // [N, D]
                     const Tensor& grad_outputs,                     // [L, N, C]
                     const Tensor& inputs,                           // [N, D]
                     const Tensor& embeddings,                       // [T, C]
                     const Tensor& offsets,                          // [L + 1] int32
                     const Tensor& resolutions,                      // [L] int32
                     const std::optional<Tensor>& grad_grad_outputs,  // [L, N, C]; overwritten, or None
                     const std::optional<Tensor>& grad_embeddings,    // [T, C], zeroed, or None
                     const std::optional<Tensor>& grad_inputs)        // [N, D], zeroed, or None
{
    const auto [num_points, num_levels, level_dim] = check_common(inputs, embeddings, offsets, resolutions);
    check_aligned_tensor(grad_grad_inputs, "grad_grad_inputs", inputs, embeddings.scalar_type());
    check_shape(grad_grad_inputs, "grad_grad_inputs", inputs.sizes());
    check_features(grad_outputs, "grad_outputs", inputs, embeddings, num_points, num_levels, level_dim);
    if (grad_grad_outputs) {
        check_features(*grad_grad_outputs, "grad_grad_outputs", inputs, embeddings, num_points, num_levels, level_dim);
    }
    check_gradient(grad_embeddings, "grad_embeddings", embeddings, inputs, embeddings);
    check_gradient(grad_inputs, "grad_inputs", inputs, inputs, embeddings);
    const c10::cuda::CUDAGuard device_guard(inputs.device());
    C10_CUDA_CHECK(hashencoder::launch_double_backward(
        make_grid(inputs, embeddings, offsets, resolutions), grad_grad_inputs.data_ptr(), grad_outputs.data_ptr(),
        data_or_null(grad_grad_outputs), data_or_null(grad_embeddings), data_or_null(grad_inputs),
        at::cuda::getCurrentCUDAStream()));
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "Multiresolution hash-grid encoding kernels (see hashencoder/hashgrid.py)";
    m.def("forward", &forward, "outputs[l, n, :] = D-linear blend of the cell corners' features",
          py::arg("inputs"), py::arg("embeddings"), py::arg("offsets"), py::arg("resolutions"), py::arg("outputs"));
    m.def("backward", &backward, "accumulate grad_embeddings and/or grad_inputs", py::arg("grad_outputs"),
          py::arg("inputs"), py::arg("embeddings"), py::arg("offsets"), py::arg("resolutions"),
          py::arg("grad_embeddings"), py::arg("grad_inputs"));
    m.def("double_backward", &double_backward, "backward of backward w.r.t. grad_outputs, embeddings, inputs",
          py::arg("grad_grad_inputs"), py::arg("grad_outputs"), py::arg("inputs"), py::arg("embeddings"),
          py::arg("offsets"), py::arg("resolutions"), py::arg("grad_grad_outputs"), py::arg("grad_embeddings"),
          py::arg("grad_inputs"));
}
