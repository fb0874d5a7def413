// Marching cubes of a dense grid [X, Y, Z]: the triangle mesh of the level set sdf = level, with one vertex per
// lattice edge the level crosses (shared by the cells around that edge, so the mesh is connected as PyMCubes's).
//
// Passes (bindings.cpp runs them, with scans in between):
//   classify   each lattice point p: the case of the cell whose lowest corner is p, and which of the three edges
//              leaving p along +x, +y, +z cross the level (their vertices are p's, numbered in axis order);
//   vertices   a scan of the per-point vertex counts numbers every vertex; each point writes its vertices;
//   triangles  the cells with triangles (found by at::nonzero, so in lattice order) count theirs, a scan places
//              them, and each cell writes its faces as the vertex ids of its crossing edges.
// Output order is deterministic: vertices by (point, axis), faces by (cell, the case table's order).
//
// Corners and edges are numbered as in marching_cubes_tables.h, whose triangulations are PyMCubes's: the faces
// equal the CPU path's, with the same winding (normals towards positive SDF).
#include "common.h"
#include "marching_cubes_tables.h"
#include "raymarching.h"

namespace raymarching {
namespace {

// Flat index of lattice point (i, j, k) is (i * Y + j) * Z + k, so one step along axis a is strides.along[a].
struct Strides {
  int along[3];
};

__device__ __forceinline__ Strides lattice_strides(const LatticeArgs& g) { return {{g.ny * g.nz, g.nz, 1}}; }

__device__ __forceinline__ bool is_inside(float value, float level) { return value < level; }

// Id of the vertex on the edge leaving point p along `axis` (which must cross): p's first vertex, then one per
// lower axis whose edge also crosses.
__device__ __forceinline__ int edge_vertex(const uint8_t* __restrict__ edge_bits, const int* __restrict__ vertex_end,
                                           int p, int axis) {
  const int first = p == 0 ? 0 : vertex_end[p - 1];
  return first + __popc(edge_bits[p] & ((1u << axis) - 1u));
}

__global__ void classify_kernel(LatticeArgs g,
                                uint8_t* __restrict__ cell_case,  // [N]
                                uint8_t* __restrict__ edge_bits,  // [N]
                                int* __restrict__ vertex_count) {  // [N]
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= g.n_points) return;
  const int p = static_cast<int>(index);
  const int i = p / (g.ny * g.nz), j = p / g.nz % g.ny, k = p % g.nz;
  const Strides s = lattice_strides(g);
  const bool has_next[3] = {i + 1 < g.nx, j + 1 < g.ny, k + 1 < g.nz};
  const bool inside = is_inside(g.sdf[p], g.level);
  unsigned bits = 0;
  for (int a = 0; a < 3; ++a) {
    if (has_next[a] && is_inside(g.sdf[p + s.along[a]], g.level) != inside) bits |= 1u << a;
  }
  unsigned cube = 0;
  if (has_next[0] && has_next[1] && has_next[2]) {
    for (int c = 0; c < 8; ++c) {
      const int corner = p + (c & 1) * s.along[0] + (c >> 1 & 1) * s.along[1] + (c >> 2 & 1) * s.along[2];
      if (is_inside(g.sdf[corner], g.level)) cube |= 1u << c;
    }
  }
  // All inside (255) makes no triangles either: 0 marks every cell without triangles, for at::nonzero.
  cell_case[p] = cube == 255u ? 0 : static_cast<uint8_t>(cube);
  edge_bits[p] = static_cast<uint8_t>(bits);
  vertex_count[p] = __popc(bits);
}

__global__ void vertices_kernel(LatticeArgs g,
                                const uint8_t* __restrict__ edge_bits,  // [N]
                                const int* __restrict__ vertex_end,     // [N] inclusive scan of the counts
                                float* __restrict__ vertices) {         // [V, 3]
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= g.n_points) return;
  const int p = static_cast<int>(index);
  const unsigned bits = edge_bits[p];
  if (bits == 0) return;
  const float position[3] = {static_cast<float>(p / (g.ny * g.nz)), static_cast<float>(p / g.nz % g.ny),
                             static_cast<float>(p % g.nz)};
  const Strides s = lattice_strides(g);
  const float here = g.sdf[p];
  int id = p == 0 ? 0 : vertex_end[p - 1];
  for (int a = 0; a < 3; ++a) {
    if (!(bits >> a & 1u)) continue;
    // Linear interpolation from the lower end; in [0, 1] since the two values straddle the level.
    const float t = (g.level - here) / (g.sdf[p + s.along[a]] - here);
    for (int b = 0; b < 3; ++b) vertices[3 * static_cast<int64_t>(id) + b] = b == a ? position[b] + t : position[b];
    ++id;
  }
}

__global__ void count_triangles_kernel(const uint8_t* __restrict__ cell_case,      // [N]
                                       const int64_t* __restrict__ active_cells,   // [C]
                                       int n_active,
                                       int64_t* __restrict__ triangle_count) {     // [C]
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= n_active) return;
  triangle_count[c] = kCaseTriangleCount[cell_case[active_cells[c]]];
}

__global__ void faces_kernel(LatticeArgs g,
                             const uint8_t* __restrict__ cell_case,      // [N]
                             const int64_t* __restrict__ active_cells,   // [C]
                             int n_active,
                             const int64_t* __restrict__ triangle_end,   // [C] inclusive scan of the counts
                             const uint8_t* __restrict__ edge_bits,      // [N]
                             const int* __restrict__ vertex_end,         // [N]
                             int64_t* __restrict__ faces) {              // [F, 3]
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= n_active) return;
  const int cell = static_cast<int>(active_cells[c]);
  const unsigned cube = cell_case[cell];
  const int n_corners = 3 * kCaseTriangleCount[cube];
  const int64_t first = c == 0 ? 0 : triangle_end[c - 1];
  const Strides s = lattice_strides(g);
  for (int q = 0; q < n_corners; ++q) {
    const int edge = kCaseTriangleEdges[cube][q];
    const int axis = edge >> 2;
    // The edge starts at offsets (edge & 1, edge >> 1 & 1) along the other two axes, in increasing order.
    const int first_other = axis == 0 ? 1 : 0, second_other = axis == 2 ? 1 : 2;
    const int start = cell + (edge & 1) * s.along[first_other] + (edge >> 1 & 1) * s.along[second_other];
    faces[3 * first + q] = edge_vertex(edge_bits, vertex_end, start, axis);
  }
}

}  // namespace

cudaError_t launch_marching_cubes_classify(const LatticeArgs& g, uint8_t* cell_case, uint8_t* edge_bits,
                                           int* vertex_count, cudaStream_t stream) {
  if (g.n_points == 0) return cudaSuccess;  // a grid of zero blocks is a launch error
  classify_kernel<<<num_blocks(g.n_points), kThreads, 0, stream>>>(g, cell_case, edge_bits, vertex_count);
  return cudaGetLastError();
}

cudaError_t launch_marching_cubes_vertices(const LatticeArgs& g, const uint8_t* edge_bits, const int* vertex_end,
                                           float* vertices, cudaStream_t stream) {
  if (g.n_points == 0) return cudaSuccess;
  vertices_kernel<<<num_blocks(g.n_points), kThreads, 0, stream>>>(g, edge_bits, vertex_end, vertices);
  return cudaGetLastError();
}

cudaError_t launch_marching_cubes_count_triangles(const uint8_t* cell_case, const int64_t* active_cells,
                                                  int n_active, int64_t* triangle_count, cudaStream_t stream) {
  if (n_active == 0) return cudaSuccess;
  count_triangles_kernel<<<num_blocks(n_active), kThreads, 0, stream>>>(cell_case, active_cells, n_active,
                                                                        triangle_count);
  return cudaGetLastError();
}

cudaError_t launch_marching_cubes_faces(const LatticeArgs& g, const uint8_t* cell_case, const int64_t* active_cells,
                                        int n_active, const int64_t* triangle_end, const uint8_t* edge_bits,
                                        const int* vertex_end, int64_t* faces, cudaStream_t stream) {
  if (n_active == 0) return cudaSuccess;
  faces_kernel<<<num_blocks(n_active), kThreads, 0, stream>>>(g, cell_case, active_cells, n_active, triangle_end,
                                                              edge_bits, vertex_end, faces);
  return cudaGetLastError();
}

}  // namespace raymarching
