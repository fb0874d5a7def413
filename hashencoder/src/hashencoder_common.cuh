// Device helpers shared by the hash-grid kernels: locating a point's cell in one level, the D-linear corner
// weights and their first and second derivatives, row loads/stores of C features, and gradient atomics.
//
// Conventions (those of hashencoder/torch_impl.py, the reference):
//   pos_d = x_d * (res - 1); cell_d = clamp(floor(pos_d), 0, res - 2); frac_d = pos_d - cell_d.
//   Corner k of the cell sits at offset bit (D - 1 - d) of k along axis d (axis 0 varies slowest).
//   w_k = prod_d (bit ? frac_d : 1 - frac_d).
//   Dense level (res^D <= table size): row = sum_d corner_d * res^d.
//   Hashed level: row = (xor_d corner_d * PRIMES[d] mod 2^32) mod table size.
// Positions, weights and gradients have the table's type scalar_t: float, or double for gradcheck.
// One thread handles one (point, level); the level is blockIdx.y so that the blocks running at any time all
// read the same level's table, which then stays in L2.
#pragma once

#include <cstdint>
#include <type_traits>

namespace hashencoder {

// Threads per block of every kernel: 1D over points, levels in blockIdx.y.
constexpr int kThreadsPerBlock = 256;

// Instant-NGP spatial-hash primes; must equal torch_impl.PRIMES. Constant-folded in unrolled loops.
__device__ __forceinline__ uint32_t hash_prime(int axis) {
    return axis == 0 ? 1u : (axis == 1 ? 2654435761u : 805459861u);
}

// Offset of corner k along `axis` (0 or 1).
template <int D>
__device__ __forceinline__ uint32_t corner_bit(int k, int axis) {
    return (k >> (D - 1 - axis)) & 1;
}

// One level's layout, uniform across a block.
struct Level {
    uint32_t first_row;   // offsets[l]
    uint32_t num_rows;    // offsets[l + 1] - offsets[l]
    uint32_t resolution;  // vertices per axis (>= 2)
    bool dense;           // all res^D vertices have their own row
    bool pow2_rows;       // num_rows is a power of two: the modulo is a mask
};

template <int D>
__device__ __forceinline__ Level load_level(const int32_t* __restrict__ offsets,     // [L + 1]
                                            const int32_t* __restrict__ resolutions,  // [L]
                                            int level) {
    Level lv;
    lv.first_row = static_cast<uint32_t>(offsets[level]);
    lv.num_rows = static_cast<uint32_t>(offsets[level + 1]) - lv.first_row;
    lv.resolution = static_cast<uint32_t>(resolutions[level]);
    uint64_t vertices = 1;
#pragma unroll
    for (int d = 0; d < D; ++d) vertices *= lv.resolution;
    lv.dense = vertices <= lv.num_rows;
    lv.pow2_rows = (lv.num_rows & (lv.num_rows - 1)) == 0;
    return lv;
}

// A point's cell in one level: the table rows of its 2^D corners and its fractional position.
template <typename scalar_t, int D>
struct Cell {
    uint32_t rows[1 << D];  // absolute rows in the stacked embedding table
    scalar_t frac[D];       // in [0, 1] for inputs in [0, 1]
    scalar_t scale;         // d pos / d x = res - 1
};

template <typename scalar_t, int D>
__device__ __forceinline__ Cell<scalar_t, D> locate_cell(const scalar_t (&x)[D], const Level& lv) {
    Cell<scalar_t, D> cell;
    cell.scale = static_cast<scalar_t>(lv.resolution - 1);
    const scalar_t last_cell = static_cast<scalar_t>(lv.resolution - 2);
    uint32_t base[D];
#pragma unroll
    for (int d = 0; d < D; ++d) {
        const scalar_t pos = x[d] * cell.scale;
        // fmax before fmin: a NaN input lands in cell 0 instead of an out-of-bounds row.
        const scalar_t corner = fmin(fmax(floor(pos), scalar_t(0)), last_cell);
        base[d] = static_cast<uint32_t>(corner);
        cell.frac[d] = pos - corner;
    }
#pragma unroll
    for (int k = 0; k < (1 << D); ++k) {
        uint32_t row;
        if (lv.dense) {
            row = 0;
            uint32_t stride = 1;
#pragma unroll
            for (int d = 0; d < D; ++d) {
                row += (base[d] + corner_bit<D>(k, d)) * stride;
                stride *= lv.resolution;
            }
        } else {
            uint32_t hash = 0;
#pragma unroll
            for (int d = 0; d < D; ++d) hash ^= (base[d] + corner_bit<D>(k, d)) * hash_prime(d);
            row = lv.pow2_rows ? (hash & (lv.num_rows - 1)) : (hash % lv.num_rows);
        }
        cell.rows[k] = lv.first_row + row;
    }
    return cell;
}

// Factor of axis d in corner k's weight.
template <typename scalar_t, int D>
__device__ __forceinline__ scalar_t axis_factor(const scalar_t (&frac)[D], int k, int d) {
    return corner_bit<D>(k, d) ? frac[d] : scalar_t(1) - frac[d];
}

// w_k, multiplied in axis order as the twin does.
template <typename scalar_t, int D>
__device__ __forceinline__ scalar_t corner_weight(const scalar_t (&frac)[D], int k) {
    scalar_t w = 1;
#pragma unroll
    for (int d = 0; d < D; ++d) w *= axis_factor<scalar_t, D>(frac, k, d);
    return w;
}

// d w_k / d pos_d: the sign of corner k along d times the other axes' factors.
template <typename scalar_t, int D>
__device__ __forceinline__ scalar_t corner_weight_grad(const scalar_t (&frac)[D], int k, int d) {
    scalar_t g = corner_bit<D>(k, d) ? scalar_t(1) : scalar_t(-1);
#pragma unroll
    for (int e = 0; e < D; ++e)
        if (e != d) g *= axis_factor<scalar_t, D>(frac, k, e);
    return g;
}

// d^2 w_k / d pos_d d pos_e for d != e (zero for d == e: w is linear along each axis).
template <typename scalar_t, int D>
__device__ __forceinline__ scalar_t corner_weight_mixed(const scalar_t (&frac)[D], int k, int d, int e) {
    scalar_t g = (corner_bit<D>(k, d) ^ corner_bit<D>(k, e)) ? scalar_t(-1) : scalar_t(1);
#pragma unroll
    for (int f = 0; f < D; ++f)
        if (f != d && f != e) g *= axis_factor<scalar_t, D>(frac, k, f);
    return g;
}

// C features of one row as a single (or, above 16 bytes, a few) vector memory operation(s).
template <typename T, int C>
struct alignas(sizeof(T) * C < 16 ? sizeof(T) * C : 16) Row {
    T v[C];
};

template <typename scalar_t, int C>
__device__ __forceinline__ void load_row(const scalar_t* __restrict__ ptr,  // [C], aligned to the row size
                                         scalar_t (&out)[C]) {
    const Row<scalar_t, C> row = *reinterpret_cast<const Row<scalar_t, C>*>(ptr);
#pragma unroll
    for (int c = 0; c < C; ++c) out[c] = row.v[c];
}

template <typename scalar_t, int C>
__device__ __forceinline__ void store_row(scalar_t* __restrict__ ptr,  // [C], aligned to the row size
                                          const scalar_t (&val)[C]) {
    Row<scalar_t, C> row;
#pragma unroll
    for (int c = 0; c < C; ++c) row.v[c] = val[c];
    *reinterpret_cast<Row<scalar_t, C>*>(ptr) = row;
}

// Vector float atomics (one L2 atomic per 8 or 16 bytes instead of per 4) exist on sm_90 from CUDA 12.2.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && \
    (__CUDACC_VER_MAJOR__ > 12 || (__CUDACC_VER_MAJOR__ == 12 && __CUDACC_VER_MINOR__ >= 2))
#define HASHENCODER_VECTOR_ATOMICS 1
#else
#define HASHENCODER_VECTOR_ATOMICS 0
#endif

// dst[c] += val[c] for a row of a float32 or float64 gradient.
template <typename scalar_t, int C>
__device__ __forceinline__ void atomic_add_row(scalar_t* __restrict__ dst,  // [C], aligned to the row size
                                               const scalar_t (&val)[C]) {
#if HASHENCODER_VECTOR_ATOMICS
    if constexpr (std::is_same_v<scalar_t, float> && C % 4 == 0) {
#pragma unroll
        for (int c = 0; c < C; c += 4)
            atomicAdd(reinterpret_cast<float4*>(dst + c), make_float4(val[c], val[c + 1], val[c + 2], val[c + 3]));
        return;
    } else if constexpr (std::is_same_v<scalar_t, float> && C == 2) {
        atomicAdd(reinterpret_cast<float2*>(dst), make_float2(val[0], val[1]));
        return;
    }
#endif
#pragma unroll
    for (int c = 0; c < C; ++c) atomicAdd(dst + c, val[c]);
}

// table[row, c] += val[c] for every active lane of the warp, combining first the lanes that hit the same row as
// their neighbour lane, so that each run of equal rows costs one atomic (on its first lane) instead of one per
// lane. Points along a ray are consecutive and share cells at the coarse levels, where atomics on the same rows
// would otherwise queue up. When no two neighbours share a row (e.g. random points) this costs one shuffle and
// one ballot. All active lanes must call it with the same `table`.
template <typename scalar_t, int C>
__device__ __forceinline__ void warp_aggregated_add_row(scalar_t* __restrict__ table,  // [T, C]
                                                        uint32_t row, scalar_t (&val)[C]) {
    const unsigned active = __activemask();
    const int lane = threadIdx.x & 31;
    const uint32_t prev_row = __shfl_up_sync(active, row, 1);
    const bool head = lane == 0 || !((active >> (lane - 1)) & 1u) || prev_row != row;
    const unsigned heads = __ballot_sync(active, head);
    if (heads != active) {  // some run longer than one lane (warp-uniform branch)
        // A run ends before the next head or the next inactive lane; suffix sums within runs leave each run's
        // total on its head.
        const unsigned later = lane == 31 ? 0u : (0xffffffffu << (lane + 1));
        const unsigned breaks = (heads | ~active) & later;
        const int run_end = breaks ? __ffs(breaks) - 1 : 32;
#pragma unroll
        for (int offset = 1; offset < 32; offset <<= 1) {
            scalar_t other[C];
#pragma unroll
            for (int c = 0; c < C; ++c) other[c] = __shfl_down_sync(active, val[c], offset);
            if (lane + offset < run_end) {
#pragma unroll
                for (int c = 0; c < C; ++c) val[c] += other[c];
            }
        }
    }
    if (head) atomic_add_row<scalar_t, C>(table + static_cast<int64_t>(row) * C, val);
}

// Corners k and k + 2^(D-1) of a cell differ only along axis 0, whose hash prime and dense stride are both 1.
// When their rows are 2m and 2m + 1 (on average half the time: an even axis-0 index at hashed levels, an even
// lower row at dense ones; level offsets are multiples of 8, so parity is that of the level's own row), both rows
// lie in one aligned block of 2C features, which one vector load or one vector atomic covers: a quarter fewer
// memory operations in all. The row pair is (a, b) with a the corner whose axis-0 bit is 0.
__device__ __forceinline__ bool rows_paired(uint32_t a, uint32_t b) { return (a ^ b) == 1u; }

// Features of rows a and b (C each), with one load when they pair and the pair fits one vector (16 bytes).
template <typename scalar_t, int C>
__device__ __forceinline__ void load_row_pair(const scalar_t* __restrict__ table,  // [T, C], 16-byte aligned
                                              uint32_t a, uint32_t b, scalar_t (&fa)[C], scalar_t (&fb)[C]) {
    if constexpr (sizeof(scalar_t) * C * 2 <= 16) {
        if (rows_paired(a, b)) {
            scalar_t both[2 * C];
            load_row<scalar_t, 2 * C>(table + static_cast<int64_t>(a & ~1u) * C, both);
            const bool a_low = (a & 1u) == 0;
#pragma unroll
            for (int c = 0; c < C; ++c) {  // selects, not a runtime index: `both` stays in registers
                fa[c] = a_low ? both[c] : both[C + c];
                fb[c] = a_low ? both[C + c] : both[c];
            }
            return;
        }
    }
    load_row<scalar_t, C>(table + static_cast<int64_t>(a) * C, fa);
    load_row<scalar_t, C>(table + static_cast<int64_t>(b) * C, fb);
}

// table[a] += va and table[b] += vb (warp-aggregated), with one vector atomic when the rows pair and a float
// vector atomic of 2C features exists (C = 1: float2, C = 2: float4).
template <typename scalar_t, int C>
__device__ __forceinline__ void add_row_pair(scalar_t* __restrict__ table,  // [T, C], 16-byte aligned
                                             uint32_t a, scalar_t (&va)[C], uint32_t b, scalar_t (&vb)[C]) {
#if HASHENCODER_VECTOR_ATOMICS
    if constexpr (std::is_same_v<scalar_t, float> && (C == 1 || C == 2)) {
        if (rows_paired(a, b)) {
            scalar_t both[2 * C];
            const bool a_low = (a & 1u) == 0;
#pragma unroll
            for (int c = 0; c < C; ++c) {
                both[c] = a_low ? va[c] : vb[c];
                both[C + c] = a_low ? vb[c] : va[c];
            }
            warp_aggregated_add_row<scalar_t, 2 * C>(table, a >> 1, both);  // block a >> 1 of 2C features
            return;
        }
    }
#endif
    warp_aggregated_add_row<scalar_t, C>(table, a, va);
    warp_aggregated_add_row<scalar_t, C>(table, b, vb);
}

// Row of point n at `level` in a level-major [L, N, C] feature tensor.
__device__ __forceinline__ int64_t feature_row(int level, int64_t n, int64_t num_points) {
    return static_cast<int64_t>(level) * num_points + n;
}

}  // namespace hashencoder
