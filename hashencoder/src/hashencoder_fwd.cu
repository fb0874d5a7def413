// Forward of the hash-grid encoding: outputs[n, l, :] = sum_k w_k(x_n, l) * embeddings[row_k(x_n, l), :].
#include "hashencoder.h"
#include "hashencoder_common.cuh"
#include "hashencoder_dispatch.h"

namespace hashencoder {

template <typename scalar_t, int D, int C>
__global__ void __launch_bounds__(kThreadsPerBlock)
forward_kernel(const acc_t<scalar_t>* __restrict__ inputs,  // [N, D]
               const scalar_t* __restrict__ embeddings,     // [T, C]
               const int32_t* __restrict__ offsets,         // [L + 1]
               const int32_t* __restrict__ resolutions,     // [L]
               int64_t num_points,
               scalar_t* __restrict__ outputs,  // [N, L * C] or [L, N, C]
               FeatureLayout out_layout) {
    using acc = acc_t<scalar_t>;
    const int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    const int level = blockIdx.y;
    if (n >= num_points) return;

    const Level lv = load_level<D>(offsets, resolutions, level);
    acc x[D];
#pragma unroll
    for (int d = 0; d < D; ++d) x[d] = inputs[n * D + d];
    const Cell<acc, D> cell = locate_cell<acc, D>(x, lv);

    acc out[C] = {};
    constexpr int kAxis0 = 1 << (D - 1);
#pragma unroll
    for (int k = 0; k < kAxis0; ++k) {  // corners k and k + 2^(D-1): a pair along axis 0
        acc feature_a[C], feature_b[C];
        load_row_pair<scalar_t, C>(embeddings, cell.rows[k], cell.rows[k + kAxis0], feature_a, feature_b);
        const acc w_a = corner_weight<acc, D>(cell.frac, k), w_b = corner_weight<acc, D>(cell.frac, k + kAxis0);
#pragma unroll
        for (int c = 0; c < C; ++c) out[c] += w_a * feature_a[c] + w_b * feature_b[c];
    }
    store_row<scalar_t, C>(outputs + n * out_layout.point_stride + level * out_layout.level_stride, out);
}

bool launch_forward(const Grid& grid, void* outputs, FeatureLayout out_layout, cudaStream_t stream) {
    return dispatch(grid, [&](auto scalar, auto dims, auto channels) {
        using scalar_t = decltype(scalar);
        constexpr int D = decltype(dims)::value, C = decltype(channels)::value;
        forward_kernel<scalar_t, D, C><<<grid_for(grid.num_points, grid.num_levels), kThreadsPerBlock, 0, stream>>>(
            static_cast<const acc_t<scalar_t>*>(grid.inputs), static_cast<const scalar_t*>(grid.embeddings),
            grid.offsets, grid.resolutions, grid.num_points, static_cast<scalar_t*>(outputs), out_layout);
    });
}

}  // namespace hashencoder
