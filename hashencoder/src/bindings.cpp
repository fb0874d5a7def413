// Python bindings of the hash-grid kernels: argument checks (device, dtype, contiguity, shapes, with the bad
// value in the message), then the launchers of hashencoder_{fwd,bwd,bwdbwd}.cu.
// Shapes: N points, D = input_dim, L levels, C = level_dim, T = table rows; "acc" = float32 for float32/float16
// tables, float64 for float64 tables. Output and accumulator tensors are allocated (and zeroed) by the caller.
#include <torch/extension.h>

#include <c10/util/Optional.h>

#include "hashencoder.h"

namespace {

using at::Tensor;

at::ScalarType acc_dtype(const Tensor& embeddings) {
    return embeddings.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

void check_tensor(const Tensor& t, const char* name, const Tensor& like, at::ScalarType dtype) {
    TORCH_CHECK(t.is_cuda(), "hash_encode: ", name, " must be a CUDA tensor, got one on ", t.device());
    TORCH_CHECK(t.device() == like.device(), "hash_encode: ", name, " is on ", t.device(), " but inputs are on ",
                like.device());
    TORCH_CHECK(t.scalar_type() == dtype, "hash_encode: ", name, " must be ", dtype, ", got ", t.scalar_type());
    TORCH_CHECK(t.is_contiguous(), "hash_encode: ", name, " must be contiguous (shape ", t.sizes(), ", strides ",
                t.strides(), ")");
    // Rows of C features are read and written as vectors: the base must be aligned to 16 bytes.
    TORCH_CHECK(reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0, "hash_encode: ", name,
                " must be 16-byte aligned (is it a view with a storage offset?)");
}

void check_shape(const Tensor& t, const char* name, at::IntArrayRef expected) {
    TORCH_CHECK(t.sizes() == expected, "hash_encode: ", name, " must have shape ", expected, ", got ", t.sizes());
}

// Checks the arguments every kernel shares and returns (N, L, C).
std::tuple<int64_t, int64_t, int64_t> check_common(const Tensor& inputs, const Tensor& embeddings,
                                                   const Tensor& offsets, const Tensor& resolutions) {
    TORCH_CHECK(inputs.dim() == 2 && (inputs.size(1) == 2 || inputs.size(1) == 3),
                "hash_encode: inputs must be [N, 2] or [N, 3], got ", inputs.sizes());
    TORCH_CHECK(embeddings.dim() == 2, "hash_encode: embeddings must be [T, C], got ", embeddings.sizes());
    const int64_t level_dim = embeddings.size(1);
    TORCH_CHECK(level_dim == 1 || level_dim == 2 || level_dim == 4 || level_dim == 8,
                "hash_encode: level_dim (embeddings.size(1)) must be 1, 2, 4 or 8, got ", embeddings.sizes());
    const auto dtype = embeddings.scalar_type();
    TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kDouble,
                "hash_encode: embeddings must be float32, float16 or float64, got ", dtype);
    TORCH_CHECK(resolutions.dim() == 1, "hash_encode: resolutions must be [L], got ", resolutions.sizes());
    const int64_t num_levels = resolutions.size(0);
    TORCH_CHECK(num_levels <= 65535, "hash_encode: at most 65535 levels (grid y dimension), got ", num_levels);
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
    TORCH_CHECK(t.sizes() == at::IntArrayRef({num_points, num_levels * level_dim}) ||
                    t.sizes() == at::IntArrayRef({num_levels, num_points, level_dim}),
                "hash_encode: ", name, " must be [N, L * C] = [", num_points, ", ", num_levels * level_dim,
                "] or [L, N, C] = [", num_levels, ", ", num_points, ", ", level_dim, "], got ", t.sizes());
}

void forward(const Tensor& inputs,       // [N, D] acc, in [0, 1]
             const Tensor& embeddings,   // [T, C]
             const Tensor& offsets,      // [L + 1] int32
             const Tensor& resolutions,  // [L] int32
             Tensor outputs) {           // [N, L * C] or [L, N, C], embeddings dtype; overwritten
    const auto [num_points, num_levels, level_dim] = check_common(inputs, embeddings, offsets, resolutions);
    check_features(outputs, "outputs", inputs, embeddings, num_points, num_levels, level_dim);
    hashencoder::forward_cuda(inputs, embeddings, offsets, resolutions, outputs);
}

void backward(const Tensor& grad_outputs,  // [N, L * C] or [L, N, C], embeddings dtype
              const Tensor& inputs,        // [N, D] acc
              const Tensor& embeddings,    // [T, C]
              const Tensor& offsets,       // [L + 1] int32
              const Tensor& resolutions,   // [L] int32
              c10::optional<Tensor> grad_embeddings,  // [T, C] acc (fp16 tables: fp16 = half2 atomics), zeroed, or None
              c10::optional<Tensor> grad_inputs) {    // [N, D] acc, zeroed, or None
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
    hashencoder::backward_cuda(grad_outputs, inputs, embeddings, offsets, resolutions,
                               grad_embeddings ? &*grad_embeddings : nullptr, grad_inputs ? &*grad_inputs : nullptr);
}

void double_backward(const Tensor& grad_grad_inputs,  // [N, D] acc
                     const Tensor& grad_outputs,      // [N, L * C] or [L, N, C], embeddings dtype
                     const Tensor& inputs,            // [N, D] acc
                     const Tensor& embeddings,        // [T, C]
                     const Tensor& offsets,           // [L + 1] int32
                     const Tensor& resolutions,       // [L] int32
                     c10::optional<Tensor> grad_grad_outputs,  // like grad_outputs; overwritten, or None
                     c10::optional<Tensor> grad_embeddings,    // [T, C] acc, zeroed, or None
                     c10::optional<Tensor> grad_inputs) {      // [N, D] acc, zeroed, or None
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
    hashencoder::double_backward_cuda(grad_grad_inputs, grad_outputs, inputs, embeddings, offsets, resolutions,
                                      grad_grad_outputs ? &*grad_grad_outputs : nullptr,
                                      grad_embeddings ? &*grad_embeddings : nullptr,
                                      grad_inputs ? &*grad_inputs : nullptr);
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
