// Python bindings of the hash-grid kernels: argument checks (device, dtype, contiguity, shapes, with the bad
// value in the message), then the launchers of hashencoder_{fwd,bwd,bwdbwd}.cu.
// Shapes: N points, D = input_dim, L levels, C = level_dim, T = table rows; "acc" = float32 for float32/float16
// tables, float64 for float64 tables. Output and accumulator tensors are allocated (and zeroed) by the caller.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include "hashencoder.h"

namespace {

using at::Tensor;

// "[4, 5]": sizes go into messages as strings, never as streamed integers: streaming integers (or sizes())
// through TORCH_CHECK crashed the process on the GPU machine (torch 2.11); strings, devices, dtypes were fine.
std::string shape_string(const Tensor& t) {
    std::string s = "[";
    for (int64_t d = 0; d < t.dim(); ++d) s += (d ? ", " : "") + std::to_string(t.size(d));
    return s + "]";
}

at::ScalarType acc_dtype(const Tensor& embeddings) {
    return embeddings.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

void check_tensor(const Tensor& t, const char* name, const Tensor& like, at::ScalarType dtype) {
    TORCH_CHECK(t.is_cuda(), "hash_encode: ", name, " must be a CUDA tensor, got one on ", t.device());
    TORCH_CHECK(t.device() == like.device(), "hash_encode: ", name, " is on ", t.device(), " but inputs are on ",
                like.device());
    TORCH_CHECK(t.scalar_type() == dtype, "hash_encode: ", name, " must be ", dtype, ", got ", t.scalar_type());
    TORCH_CHECK(t.is_contiguous(), "hash_encode: ", name, " must be contiguous (shape ", shape_string(t), ")");
    // Rows of C features are read and written as vectors: the base must be aligned to 16 bytes.
    TORCH_CHECK(reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0, "hash_encode: ", name,
                " must be 16-byte aligned (is it a view with a storage offset?)");
}

void check_shape(const Tensor& t, const char* name, at::IntArrayRef expected) {
    if (t.sizes() == expected) return;
    std::string want = "[";
    for (size_t i = 0; i < expected.size(); ++i) want += (i ? ", " : "") + std::to_string(expected[i]);
    TORCH_CHECK(false, "hash_encode: ", name, " must have shape ", want, "], got ", shape_string(t));
}

// Checks the arguments every kernel shares and returns (N, L, C).
std::tuple<int64_t, int64_t, int64_t> check_common(const Tensor& inputs, const Tensor& embeddings,
                                                   const Tensor& offsets, const Tensor& resolutions) {
    TORCH_CHECK(inputs.dim() == 2 && (inputs.size(1) == 2 || inputs.size(1) == 3),
                "hash_encode: inputs must be [N, 2] or [N, 3], got ", shape_string(inputs));
    TORCH_CHECK(embeddings.dim() == 2, "hash_encode: embeddings must be [T, C], got ", shape_string(embeddings));
    const int64_t level_dim = embeddings.size(1);
    TORCH_CHECK(level_dim == 1 || level_dim == 2 || level_dim == 4 || level_dim == 8,
                "hash_encode: level_dim (embeddings.size(1)) must be 1, 2, 4 or 8, got ", shape_string(embeddings));
    const auto dtype = embeddings.scalar_type();
    TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kDouble,
                "hash_encode: embeddings must be float32, float16 or float64, got ", dtype);
    TORCH_CHECK(resolutions.dim() == 1, "hash_encode: resolutions must be [L], got ", shape_string(resolutions));
    const int64_t num_levels = resolutions.size(0);
    TORCH_CHECK(num_levels <= 65535, "hash_encode: at most 65535 levels (grid y dimension), got ", std::to_string(num_levels));
    check_shape(offsets, "offsets", {num_levels + 1});
    check_tensor(inputs, "inputs", inputs, acc_dtype(embeddings));
    check_tensor(embeddings, "embeddings", inputs, dtype);
    TORCH_CHECK(offsets.is_cuda() && offsets.device() == inputs.device() && offsets.scalar_type() == at::kInt &&
                    offsets.is_contiguous(),
                "hash_encode: offsets must be a contiguous int32 tensor on ", inputs.device(), ", got ",
                offsets.scalar_type(), " on ", offsets.device());
    TORCH_CHECK(resolutions.is_cuda() && resolutions.device() == inputs.device() &&
                    resolutions.scalar_type() == at::kInt && resolutions.is_contiguous(),
                "hash_encode: resolutions must be a contiguous int32 tensor on ", inputs.device(), ", got ",
                resolutions.scalar_type(), " on ", resolutions.device());
    // offsets[L] == T is not checked here: it would need a device-to-host copy on every call (Python checks it
    // once when building the layout).
    return {inputs.size(0), num_levels, level_dim};
}

// Per-(point, level) features: [N, L * C] or level-major [L, N, C].
void check_features(const Tensor& t, const char* name, const Tensor& inputs, const Tensor& embeddings,
                    int64_t num_points, int64_t num_levels, int64_t level_dim) {
    check_tensor(t, name, inputs, embeddings.scalar_type());
    const bool point_major = t.dim() == 2 && t.size(0) == num_points && t.size(1) == num_levels * level_dim;
    const bool level_major =
        t.dim() == 3 && t.size(0) == num_levels && t.size(1) == num_points && t.size(2) == level_dim;
    TORCH_CHECK(point_major || level_major, "hash_encode: ", name, " must be [N, L * C] = [",
                std::to_string(num_points), ", ", std::to_string(num_levels * level_dim), "] or [L, N, C] = [",
                std::to_string(num_levels), ", ", std::to_string(num_points), ", ", std::to_string(level_dim),
                "], got ", shape_string(t));
}

hashencoder::Grid make_grid(const Tensor& inputs, const Tensor& embeddings, const Tensor& offsets,
                            const Tensor& resolutions) {
    const auto dtype = embeddings.scalar_type();
    return {inputs.data_ptr(),
            embeddings.data_ptr(),
            offsets.data_ptr<int32_t>(),
            resolutions.data_ptr<int32_t>(),
            inputs.size(0),
            static_cast<int>(resolutions.size(0)),
            static_cast<int>(inputs.size(1)),
            static_cast<int>(embeddings.size(1)),
            dtype == at::kDouble ? hashencoder::TableType::kFloat64
                                 : (dtype == at::kHalf ? hashencoder::TableType::kFloat16
                                                       : hashencoder::TableType::kFloat32)};
}

hashencoder::FeatureLayout feature_layout(const Tensor& features, int64_t num_points, int64_t num_levels,
                                          int64_t level_dim) {
    if (features.dim() == 3) return {level_dim, num_points * level_dim};  // [L, N, C]
    return {num_levels * level_dim, level_dim};                            // [N, L * C]
}

void check_launch(bool launched, const Tensor& embeddings, const Tensor& inputs) {
    TORCH_CHECK(launched, "hash_encode: no kernel for ", embeddings.scalar_type(), " tables, input_dim ",
                std::to_string(inputs.size(1)), ", level_dim ", std::to_string(embeddings.size(1)));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void forward(const Tensor& inputs,       // [N, D] acc, in [0, 1]
             const Tensor& embeddings,   // [T, C]
             const Tensor& offsets,      // [L + 1] int32
             const Tensor& resolutions,  // [L] int32
             Tensor outputs) {           // [N, L * C] or [L, N, C], embeddings dtype; overwritten
    const auto [num_points, num_levels, level_dim] = check_common(inputs, embeddings, offsets, resolutions);
    check_features(outputs, "outputs", inputs, embeddings, num_points, num_levels, level_dim);
    if (num_points == 0 || num_levels == 0) return;
    const c10::cuda::CUDAGuard guard(inputs.device());
    const bool launched = hashencoder::launch_forward(make_grid(inputs, embeddings, offsets, resolutions),
                                                      outputs.data_ptr(),
                                                      feature_layout(outputs, num_points, num_levels, level_dim),
                                                      at::cuda::getCurrentCUDAStream());
    check_launch(launched, embeddings, inputs);
}

void backward(const Tensor& grad_outputs,  // [N, L * C] or [L, N, C], embeddings dtype
              const Tensor& inputs,        // [N, D] acc
              const Tensor& embeddings,    // [T, C]
              const Tensor& offsets,       // [L + 1] int32
              const Tensor& resolutions,   // [L] int32
              std::optional<Tensor> grad_embeddings,  // [T, C] acc (fp16 tables: fp16 = half2 atomics), zeroed, or None
              std::optional<Tensor> grad_inputs) {    // [N, D] acc, zeroed, or None
    const auto [num_points, num_levels, level_dim] = check_common(inputs, embeddings, offsets, resolutions);
    check_features(grad_outputs, "grad_outputs", inputs, embeddings, num_points, num_levels, level_dim);
    if (grad_embeddings) {
        const auto dtype = grad_embeddings->scalar_type() == at::kHalf && embeddings.scalar_type() == at::kHalf
                               ? at::kHalf
                               : acc_dtype(embeddings);
        check_tensor(*grad_embeddings, "grad_embeddings", inputs, dtype);
        check_shape(*grad_embeddings, "grad_embeddings", embeddings.sizes());
    }
    if (grad_inputs) {
        check_tensor(*grad_inputs, "grad_inputs", inputs, acc_dtype(embeddings));
        check_shape(*grad_inputs, "grad_inputs", inputs.sizes());
    }
    if (num_points == 0 || num_levels == 0 || (!grad_embeddings && !grad_inputs)) return;
    // A fp16 gradient for a fp16 table means half2 atomics straight into it (else a fp32 accumulator).
    const bool half_atomics = grad_embeddings && grad_embeddings->scalar_type() == at::kHalf;
    void* grad_embeddings_ptr = grad_embeddings ? grad_embeddings->data_ptr() : nullptr;
    const c10::cuda::CUDAGuard guard(inputs.device());
    const bool launched = hashencoder::launch_backward(
        make_grid(inputs, embeddings, offsets, resolutions), grad_outputs.data_ptr(),
        feature_layout(grad_outputs, num_points, num_levels, level_dim), half_atomics ? nullptr : grad_embeddings_ptr,
        half_atomics ? grad_embeddings_ptr : nullptr, grad_inputs ? grad_inputs->data_ptr() : nullptr,
        at::cuda::getCurrentCUDAStream());
    check_launch(launched, embeddings, inputs);
}

void double_backward(const Tensor& grad_grad_inputs,  // [N, D] acc
                     const Tensor& grad_outputs,      // [N, L * C] or [L, N, C], embeddings dtype
                     const Tensor& inputs,            // [N, D] acc
                     const Tensor& embeddings,        // [T, C]
                     const Tensor& offsets,           // [L + 1] int32
                     const Tensor& resolutions,       // [L] int32
                     std::optional<Tensor> grad_grad_outputs,  // [N, L * C] or [L, N, C]; overwritten, or None
                     std::optional<Tensor> grad_embeddings,    // [T, C] acc, zeroed, or None
                     std::optional<Tensor> grad_inputs) {      // [N, D] acc, zeroed, or None
    const auto [num_points, num_levels, level_dim] = check_common(inputs, embeddings, offsets, resolutions);
    check_tensor(grad_grad_inputs, "grad_grad_inputs", inputs, acc_dtype(embeddings));
    check_shape(grad_grad_inputs, "grad_grad_inputs", inputs.sizes());
    check_features(grad_outputs, "grad_outputs", inputs, embeddings, num_points, num_levels, level_dim);
    if (grad_grad_outputs) {
        check_features(*grad_grad_outputs, "grad_grad_outputs", inputs, embeddings, num_points, num_levels, level_dim);
    }
    if (grad_embeddings) {
        check_tensor(*grad_embeddings, "grad_embeddings", inputs, acc_dtype(embeddings));
        check_shape(*grad_embeddings, "grad_embeddings", embeddings.sizes());
    }
    if (grad_inputs) {
        check_tensor(*grad_inputs, "grad_inputs", inputs, acc_dtype(embeddings));
        check_shape(*grad_inputs, "grad_inputs", inputs.sizes());
    }
    if (num_points == 0 || num_levels == 0 || (!grad_grad_outputs && !grad_embeddings && !grad_inputs)) return;
    // The two per-level feature tensors may differ in layout (the upstream gradient as autograd hands it over,
    // the output written coalesced).
    const auto grad_grad_layout = grad_grad_outputs
                                      ? feature_layout(*grad_grad_outputs, num_points, num_levels, level_dim)
                                      : hashencoder::FeatureLayout{0, 0};
    const c10::cuda::CUDAGuard guard(inputs.device());
    const bool launched = hashencoder::launch_double_backward(
        make_grid(inputs, embeddings, offsets, resolutions), grad_grad_inputs.data_ptr(), grad_outputs.data_ptr(),
        feature_layout(grad_outputs, num_points, num_levels, level_dim),
        grad_grad_outputs ? grad_grad_outputs->data_ptr() : nullptr, grad_grad_layout,
        grad_embeddings ? grad_embeddings->data_ptr() : nullptr, grad_inputs ? grad_inputs->data_ptr() : nullptr,
        at::cuda::getCurrentCUDAStream());
    check_launch(launched, embeddings, inputs);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "Multiresolution hash-grid encoding kernels (see hashencoder/hashgrid.py)";
    m.def("forward", &forward, "outputs[n, l, :] = D-linear blend of the cell corners' features",
          py::arg("inputs"), py::arg("embeddings"), py::arg("offsets"), py::arg("resolutions"), py::arg("outputs"));
    m.def("backward", &backward, "accumulate grad_embeddings and/or grad_inputs", py::arg("grad_outputs"),
          py::arg("inputs"), py::arg("embeddings"), py::arg("offsets"), py::arg("resolutions"),
          py::arg("grad_embeddings"), py::arg("grad_inputs"));
    m.def("double_backward", &double_backward, "backward of backward w.r.t. grad_outputs, embeddings, inputs",
          py::arg("grad_grad_inputs"), py::arg("grad_outputs"), py::arg("inputs"), py::arg("embeddings"),
          py::arg("offsets"), py::arg("resolutions"), py::arg("grad_grad_outputs"), py::arg("grad_embeddings"),
          py::arg("grad_inputs"));
}
