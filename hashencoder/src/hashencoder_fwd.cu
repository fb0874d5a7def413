// Forward of the hash-grid encoding: outputs[l, n, :] = sum_k w_k(x_n, l) * embeddings[row_k(x_n, l), :].
#include "hashencoder.h"
#include "hashencoder_common.cuh"
#include "hashencoder_dispatch.h"

namespace hashencoder {

template <typename scalar_t, int D, int C>
__global__ void __launch_bounds__(kThreadsPerBlock)
forward_kernel(const scalar_t* __restrict__ inputs,      // [N, D]
               const scalar_t* __restrict__ embeddings,  // [T, C]
               const int32_t* __restrict__ offsets,      // [L + 1]
               const int32_t* __restrict__ resolutions,  // [L]
               int64_t num_points,
               scalar_t* __restrict__ outputs) {  // [L, N, C]
    const int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    const int level = blockIdx.y;
    if (n >= num_points) return;

    const Level lv = load_level<D>(offsets, resolutions, level);
    scalar_t x[D];
#pragma unroll
    for (int d = 0; d < D; ++d) x[d] = inputs[n * D + d];
    const Cell<scalar_t, D> cell = locate_cell<scalar_t, D>(x, lv);

    scalar_t out[C] = {};
    constexpr int kAxis0 = 1 << (D - 1);
#pragma unroll
    for (int k = 0; k < kAxis0; ++k) {  // corners k and k + 2^(D-1): a pair along axis 0
        scalar_t feature_a[C], feature_b[C];
        load_row_pair<scalar_t, C>(embeddings, cell.rows[k], cell.rows[k + kAxis0], feature_a, feature_b);
        const scalar_t w_a = corner_weight<scalar_t, D>(cell.frac, k);
        const scalar_t w_b = corner_weight<scalar_t, D>(cell.frac, k + kAxis0);
#pragma unroll
        for (int c = 0; c < C; ++c) out[c] += w_a * feature_a[c] + w_b * feature_b[c];
    }
    store_row<scalar_t, C>(outputs + feature_row(level, n, num_points) * C, out);
}

cudaError_t launch_forward(const Grid& grid, void* outputs, cudaStream_t stream) {
    return launch(grid, [&](auto scalar, auto dims, auto channels) {
        using scalar_t = decltype(scalar);
        constexpr int D = decltype(dims)::value, C = decltype(channels)::value;
        forward_kernel<scalar_t, D, C><<<grid_for(grid.num_points, grid.num_levels), kThreadsPerBlock, 0, stream>>>(
            static_cast<const scalar_t*>(grid.inputs), static_cast<const scalar_t*>(grid.embeddings), grid.offsets,
            grid.resolutions, grid.num_points, static_cast<scalar_t*>(outputs));
    });
}

}  // namespace hashencoder
