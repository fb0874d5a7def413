// From runtime (table type, input_dim, level_dim) to the kernel template instantiations.
// Supported: float32 / float64 tables, D in {2, 3}, C in {1, 2, 4, 8}: 16 instantiations per kernel.
#pragma once

#include <type_traits>

#include "hashencoder.h"
#include "hashencoder_common.cuh"

namespace hashencoder {

// Calls fn(scalar_t{}, std::integral_constant<int, D>{}, std::integral_constant<int, C>{}) with scalar_t the
// CUDA type of the table (float or double); false when there is no such instantiation.
template <typename Fn>
bool dispatch(const Grid& grid, Fn&& fn) {
    auto with_level_dim = [&](auto scalar, auto dims) {
        switch (grid.level_dim) {
            case 1: fn(scalar, dims, std::integral_constant<int, 1>{}); return true;
            case 2: fn(scalar, dims, std::integral_constant<int, 2>{}); return true;
            case 4: fn(scalar, dims, std::integral_constant<int, 4>{}); return true;
            case 8: fn(scalar, dims, std::integral_constant<int, 8>{}); return true;
            default: return false;
        }
    };
    auto with_input_dim = [&](auto scalar) {
        switch (grid.input_dim) {
            case 2: return with_level_dim(scalar, std::integral_constant<int, 2>{});
            case 3: return with_level_dim(scalar, std::integral_constant<int, 3>{});
            default: return false;
        }
    };
    switch (grid.table_type) {
        case TableType::kFloat32: return with_input_dim(float{});
        case TableType::kFloat64: return with_input_dim(double{});
    }
    return false;
}

// Launches fn as `dispatch` does, for a grid of points x levels; the launcher's return value.
template <typename Fn>
cudaError_t launch(const Grid& grid, Fn&& fn) {
    if (grid.num_points == 0 || grid.num_levels == 0) return cudaSuccess;  // zero blocks is a launch error
    if (!dispatch(grid, fn)) return cudaErrorInvalidValue;
    return cudaGetLastError();
}

inline dim3 grid_for(int64_t num_points, int num_levels) {
    return dim3(static_cast<unsigned>((num_points + kThreadsPerBlock - 1) / kThreadsPerBlock),
                static_cast<unsigned>(num_levels));
}

}  // namespace hashencoder
