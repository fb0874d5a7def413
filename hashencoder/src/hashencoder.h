// Launchers of the hash-grid kernels (hashencoder_fwd.cu, _bwd.cu, _bwdbwd.cu), called by bindings.cpp after it
// has checked every tensor (device, dtype, contiguity, shape, alignment). Plain pointers only: the .cu files do
// not include the torch headers, which would make each of them take minutes to compile.
//
// Shapes: N points, D = input_dim (2 or 3), L levels, C = level_dim (1, 2, 4 or 8), T = offsets[L] table rows.
// "acc" is float32 for float32/float16 tables and float64 for float64 tables.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace hashencoder {

enum class TableType { kFloat32, kFloat16, kFloat64 };

// Element strides of a per-(point, level) feature tensor: [N, L * C] (point-major) or [L, N, C] (level-major).
struct FeatureLayout {
    int64_t point_stride;
    int64_t level_stride;
};

// What every kernel reads.
struct Grid {
    const void* inputs;           // [N, D] acc, in [0, 1]
    const void* embeddings;       // [T, C] of table_type
    const int32_t* offsets;       // [L + 1], first row of each level
    const int32_t* resolutions;   // [L], vertices per axis of each level
    int64_t num_points;           // N
    int num_levels;               // L
    int input_dim;                // D
    int level_dim;                // C
    TableType table_type;
};

// Each launcher returns false when (table_type, D, C) has no kernel; launch errors are left to
// cudaGetLastError.
bool launch_forward(const Grid& grid,
                    void* outputs,  // [N, L * C] or [L, N, C], table type; overwritten
                    FeatureLayout out_layout, cudaStream_t stream);

bool launch_backward(const Grid& grid,
                     const void* grad_outputs,  // [N, L * C] or [L, N, C], table type
                     FeatureLayout grad_layout,
                     void* grad_embeddings,       // [T, C] acc, accumulated, or null
                     void* grad_embeddings_half,  // [T, C] fp16, accumulated with half2 atomics (fp16 tables), or null
                     void* grad_inputs,           // [N, D] acc, accumulated, or null
                     cudaStream_t stream);

bool launch_double_backward(const Grid& grid,
                            const void* grad_grad_inputs,  // [N, D] acc, upstream gradient of grad_inputs
                            const void* grad_outputs,      // [N, L * C] or [L, N, C], table type
                            FeatureLayout grad_layout,
                            void* grad_grad_outputs,       // [N, L * C] or [L, N, C], table type; overwritten, or null
                            FeatureLayout grad_grad_layout,
                            void* grad_embeddings,         // [T, C] acc, accumulated, or null
                            void* grad_inputs,             // [N, D] acc, accumulated, or null
                            cudaStream_t stream);

}  // namespace hashencoder
