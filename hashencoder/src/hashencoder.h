// Launchers of the hash-grid kernels (hashencoder_fwd.cu, _bwd.cu, _bwdbwd.cu), called by bindings.cpp after it
// has checked every tensor (device, dtype, contiguity, shape, alignment). Plain pointers only: the .cu files do
// not include the torch headers, which would make each of them take minutes to compile.
//
// Shapes: N points, D = input_dim (2 or 3), L levels, C = level_dim (1, 2, 4 or 8), T = offsets[L] table rows.
// Every float tensor has the table's type (float32, or float64 for gradcheck). Per-(point, level) features are
// level-major, [L, N, C]: each level's rows are contiguous, so that a warp reads and writes them coalesced.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace hashencoder {

enum class TableType { kFloat32, kFloat64 };

// What every kernel reads.
struct Grid {
    const void* inputs;           // [N, D], in [0, 1]
    const void* embeddings;       // [T, C]
    const int32_t* offsets;       // [L + 1], first row of each level
    const int32_t* resolutions;   // [L], vertices per axis of each level
    int64_t num_points;           // N
    int num_levels;               // L
    int input_dim;                // D
    int level_dim;                // C
    TableType table_type;
};

// Each launcher returns the launch error (cudaSuccess when there is nothing to do, cudaErrorInvalidValue when
// (table_type, D, C) has no kernel, which the bindings' checks rule out).
cudaError_t launch_forward(const Grid& grid,
                           void* outputs,  // [L, N, C]; overwritten
                           cudaStream_t stream);

cudaError_t launch_backward(const Grid& grid,
                            const void* grad_outputs,  // [L, N, C]
                            void* grad_embeddings,     // [T, C], accumulated, or null
                            void* grad_inputs,         // [N, D], accumulated, or null
                            cudaStream_t stream);

cudaError_t launch_double_backward(const Grid& grid,
                                   const void* grad_grad_inputs,  // [N, D], upstream gradient of grad_inputs
                                   const void* grad_outputs,      // [L, N, C]
                                   void* grad_grad_outputs,       // [L, N, C]; overwritten, or null
                                   void* grad_embeddings,         // [T, C], accumulated, or null
                                   void* grad_inputs,             // [N, D], accumulated, or null
                                   cudaStream_t stream);

}  // namespace hashencoder
