// Backward of the hash-grid encoding. With g = grad_outputs[l, n, :]:
//   grad_embeddings[row_k, :] += w_k * g                                       (scatter, atomics)
//   grad_inputs[n, d] += (res - 1) * sum_k dw_k/dpos_d * <embeddings[row_k], g> (atomics over levels)
// The input gradient is recomputed from the embeddings instead of storing d(out)/dx in the forward: the
// corners are gathered again (mostly L2 hits) rather than writing and reading N * L * C * D floats.
#include "hashencoder.h"
#include "hashencoder_common.cuh"
#include "hashencoder_dispatch.h"

namespace hashencoder {

template <typename scalar_t, int D, int C>
__global__ void __launch_bounds__(kThreadsPerBlock)
backward_kernel(const scalar_t* __restrict__ grad_outputs,  // [L, N, C]
                const scalar_t* __restrict__ inputs,        // [N, D]
                const scalar_t* __restrict__ embeddings,    // [T, C], read only for grad_inputs
                const int32_t* __restrict__ offsets,        // [L + 1]
                const int32_t* __restrict__ resolutions,    // [L]
                int64_t num_points,
                scalar_t* __restrict__ grad_embeddings,  // [T, C] accumulator, or null
                scalar_t* __restrict__ grad_inputs) {    // [N, D] accumulator, or null
    const int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    const int level = blockIdx.y;
    if (n >= num_points) return;

    scalar_t grad[C];
    load_row<scalar_t, C>(grad_outputs + feature_row(level, n, num_points) * C, grad);
    const Level lv = load_level<D>(offsets, resolutions, level);
    scalar_t x[D];
#pragma unroll
    for (int d = 0; d < D; ++d) x[d] = inputs[n * D + d];
    const Cell<scalar_t, D> cell = locate_cell<scalar_t, D>(x, lv);

    scalar_t grad_pos[D] = {};
    constexpr int kAxis0 = 1 << (D - 1);
#pragma unroll
    for (int k = 0; k < kAxis0; ++k) {  // corners k and k + 2^(D-1): a pair along axis 0
        const int corners[2] = {k, k + kAxis0};
        const uint32_t a = cell.rows[k], b = cell.rows[k + kAxis0];
        if (grad_embeddings != nullptr) {
            scalar_t contribution[2][C];
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                const scalar_t w = corner_weight<scalar_t, D>(cell.frac, corners[i]);
#pragma unroll
                for (int c = 0; c < C; ++c) contribution[i][c] = w * grad[c];
            }
            add_row_pair<scalar_t, C>(grad_embeddings, a, contribution[0], b, contribution[1]);
        }
        if (grad_inputs != nullptr) {
            scalar_t feature[2][C];
            load_row_pair<scalar_t, C>(embeddings, a, b, feature[0], feature[1]);
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                scalar_t feature_dot_grad = 0;
#pragma unroll
                for (int c = 0; c < C; ++c) feature_dot_grad += feature[i][c] * grad[c];
#pragma unroll
                for (int d = 0; d < D; ++d)
                    grad_pos[d] += corner_weight_grad<scalar_t, D>(cell.frac, corners[i], d) * feature_dot_grad;
            }
        }
    }
    if (grad_inputs != nullptr) {
#pragma unroll
        for (int d = 0; d < D; ++d) atomicAdd(grad_inputs + n * D + d, grad_pos[d] * cell.scale);
    }
}

cudaError_t launch_backward(const Grid& grid, const void* grad_outputs, void* grad_embeddings, void* grad_inputs,
                            cudaStream_t stream) {
    if (grad_embeddings == nullptr && grad_inputs == nullptr) return cudaSuccess;
    return launch(grid, [&](auto scalar, auto dims, auto channels) {
        using scalar_t = decltype(scalar);
        constexpr int D = decltype(dims)::value, C = decltype(channels)::value;
        backward_kernel<scalar_t, D, C><<<grid_for(grid.num_points, grid.num_levels), kThreadsPerBlock, 0, stream>>>(
            static_cast<const scalar_t*>(grad_outputs), static_cast<const scalar_t*>(grid.inputs),
            static_cast<const scalar_t*>(grid.embeddings), grid.offsets, grid.resolutions, grid.num_points,
            static_cast<scalar_t*>(grad_embeddings), static_cast<scalar_t*>(grad_inputs));
    });
}

}  // namespace hashencoder
