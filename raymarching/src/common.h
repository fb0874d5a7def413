// Launch configuration shared by the raymarching kernels.
#pragma once

#include <cstdint>

namespace raymarching {

constexpr int kThreads = 256;
// Kernels with a serial loop per ray run in small blocks, so that a few thousand rays still spread over all SMs.
constexpr int kRayThreads = 64;

inline int num_blocks(int64_t n, int threads = kThreads) { return static_cast<int>((n + threads - 1) / threads); }

}  // namespace raymarching
