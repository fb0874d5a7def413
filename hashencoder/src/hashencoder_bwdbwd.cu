// Backward of the backward, for losses on grad_inputs (Eikonal loss on analytic normals). With
// g = grad_outputs[l, n, :], v = grad_grad_inputs[n, :] (upstream gradient of grad_inputs) and, per corner,
// u_k = (res - 1) * sum_d v_d dw_k/dpos_d (the directional derivative of the weights along v):
//   grad_grad_outputs[l, n, :] = sum_k u_k * embeddings[row_k]                  (Jacobian-vector product)
//   grad_embeddings[row_k, :] += u_k * g                                         (scatter, atomics)
//   grad_inputs[n, e] += (res - 1)^2 * sum_k sum_{d != e} v_d d2w_k/dpos_d dpos_e * <embeddings[row_k], g>
// (the D-linear weights are linear along each axis, so only mixed second derivatives remain).
// The part driven by the upstream gradient of grad_embeddings reuses the forward and backward kernels.
#include "hashencoder.h"
#include "hashencoder_common.cuh"
#include "hashencoder_dispatch.h"

namespace hashencoder {

template <typename scalar_t, int D, int C>
__global__ void __launch_bounds__(kThreadsPerBlock)
double_backward_kernel(const scalar_t* __restrict__ grad_grad_inputs,  // [N, D]
                       const scalar_t* __restrict__ grad_outputs,      // [L, N, C]
                       const scalar_t* __restrict__ inputs,            // [N, D]
                       const scalar_t* __restrict__ embeddings,        // [T, C]
                       const int32_t* __restrict__ offsets,            // [L + 1]
                       const int32_t* __restrict__ resolutions,        // [L]
                       int64_t num_points,
                       scalar_t* __restrict__ grad_grad_outputs,  // [L, N, C], or null
                       scalar_t* __restrict__ grad_embeddings,    // [T, C] accumulator, or null
                       scalar_t* __restrict__ grad_inputs) {      // [N, D] accumulator, or null
    const int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    const int level = blockIdx.y;
    if (n >= num_points) return;

    const Level lv = load_level<D>(offsets, resolutions, level);
    scalar_t x[D], v[D];
#pragma unroll
    for (int d = 0; d < D; ++d) {
        x[d] = inputs[n * D + d];
        v[d] = grad_grad_inputs[n * D + d];
    }
    const Cell<scalar_t, D> cell = locate_cell<scalar_t, D>(x, lv);
    scalar_t v_pos[D];  // v in position units: d pos / d x = res - 1
#pragma unroll
    for (int d = 0; d < D; ++d) v_pos[d] = v[d] * cell.scale;

    scalar_t grad[C] = {};
    if (grad_embeddings != nullptr || grad_inputs != nullptr)
        load_row<scalar_t, C>(grad_outputs + feature_row(level, n, num_points) * C, grad);

    scalar_t jvp[C] = {};
    scalar_t grad_pos[D] = {};
    constexpr int kAxis0 = 1 << (D - 1);
#pragma unroll
    for (int k = 0; k < kAxis0; ++k) {  // corners k and k + 2^(D-1): a pair along axis 0
        const int corners[2] = {k, k + kAxis0};
        const uint32_t a = cell.rows[k], b = cell.rows[k + kAxis0];
        scalar_t u[2] = {0, 0};
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int d = 0; d < D; ++d) u[i] += v_pos[d] * corner_weight_grad<scalar_t, D>(cell.frac, corners[i], d);
        if (grad_embeddings != nullptr) {
            scalar_t contribution[2][C];
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int c = 0; c < C; ++c) contribution[i][c] = u[i] * grad[c];
            add_row_pair<scalar_t, C>(grad_embeddings, a, contribution[0], b, contribution[1]);
        }
        if (grad_grad_outputs != nullptr || grad_inputs != nullptr) {
            scalar_t feature[2][C];
            load_row_pair<scalar_t, C>(embeddings, a, b, feature[0], feature[1]);
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                scalar_t feature_dot_grad = 0;
#pragma unroll
                for (int c = 0; c < C; ++c) {
                    jvp[c] += u[i] * feature[i][c];
                    feature_dot_grad += feature[i][c] * grad[c];
                }
#pragma unroll
                for (int e = 0; e < D; ++e) {
                    scalar_t mixed = 0;
#pragma unroll
                    for (int d = 0; d < D; ++d)
                        if (d != e) mixed += v_pos[d] * corner_weight_mixed<scalar_t, D>(cell.frac, corners[i], d, e);
                    grad_pos[e] += mixed * feature_dot_grad;
                }
            }
        }
    }
    if (grad_grad_outputs != nullptr)
        store_row<scalar_t, C>(grad_grad_outputs + feature_row(level, n, num_points) * C, jvp);
    if (grad_inputs != nullptr) {
#pragma unroll
        for (int e = 0; e < D; ++e) atomicAdd(grad_inputs + n * D + e, grad_pos[e] * cell.scale);
    }
}

cudaError_t launch_double_backward(const Grid& grid, const void* grad_grad_inputs, const void* grad_outputs,
                                   void* grad_grad_outputs, void* grad_embeddings, void* grad_inputs,
                                   cudaStream_t stream) {
    if (grad_grad_outputs == nullptr && grad_embeddings == nullptr && grad_inputs == nullptr) return cudaSuccess;
    return launch(grid, [&](auto scalar, auto dims, auto channels) {
        using scalar_t = decltype(scalar);
        constexpr int D = decltype(dims)::value, C = decltype(channels)::value;
        double_backward_kernel<scalar_t, D, C>
            <<<grid_for(grid.num_points, grid.num_levels), kThreadsPerBlock, 0, stream>>>(
                static_cast<const scalar_t*>(grad_grad_inputs), static_cast<const scalar_t*>(grad_outputs),
                static_cast<const scalar_t*>(grid.inputs), static_cast<const scalar_t*>(grid.embeddings),
                grid.offsets, grid.resolutions, grid.num_points, static_cast<scalar_t*>(grad_grad_outputs),
                static_cast<scalar_t*>(grad_embeddings), static_cast<scalar_t*>(grad_inputs));
    });
}

}  // namespace hashencoder
