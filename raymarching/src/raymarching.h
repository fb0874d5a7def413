// Launchers of the raymarching kernels (near_far.cu, march.cu, composite.cu, marching_cubes.cu), called by bindings.cpp after it has
// checked every tensor (device, dtype, contiguity, shape, int range). Plain pointers only: the .cu files do not
// include the torch headers, which would make each of them take minutes to compile. The ops are documented in
// raymarching/raymarching.py.
//
// Shapes: N rays, M packed samples, C channels, R cells per axis of the occupancy grid. Floats are float32.
// Marching cubes: an X x Y x Z lattice of N = X * Y * Z points, C cells with triangles, V vertices, F faces.
// Each launcher returns the launch error (cudaSuccess when there is nothing to do).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace raymarching {

cudaError_t launch_near_far_from_sphere(const float* rays_o,  // [N, 3]
                                        const float* rays_d,  // [N, 3] unit directions
                                        int n_rays, float radius, float min_near,
                                        float* nears,  // [N]
                                        float* fars,   // [N]
                                        cudaStream_t stream);

cudaError_t launch_near_far_from_aabb(const float* rays_o,  // [N, 3]
                                      const float* rays_d,  // [N, 3]
                                      const float* aabb,    // [6] xmin, ymin, zmin, xmax, ymax, zmax
                                      int n_rays, float min_near,
                                      float* nears,  // [N]
                                      float* fars,   // [N]
                                      cudaStream_t stream);

cudaError_t launch_packbits(const float* values,  // [R^3]
                            int n_bytes, float threshold,
                            uint8_t* bitfield,  // [R^3 / 8], cell i = bit (i % 8) of byte i / 8
                            cudaStream_t stream);

// The rays and the grid that march_rays_train walks.
struct MarchArgs {
  const float* rays_o;      // [N, 3]
  const float* rays_d;      // [N, 3]
  const float* nears;       // [N]
  const float* fars;        // [N]
  const float* jitter;      // [N] in [0, 1)
  const uint8_t* bitfield;  // [R^3 / 8]
  const uint8_t* stop;      // [R^3 / 8] or null: rays end at the first sample in one of these cells
  const float* aabb;        // [6]
  int n_rays;               // N
  int resolution;           // R
  float step;               // lattice spacing along t
};

// Pass 1: the number of kept samples of each ray (at most max_samples).
cudaError_t launch_march_rays_train_count(const MarchArgs& args, int max_samples,
                                          int* counts,  // [N]
                                          cudaStream_t stream);

// Pass 2: the samples of each ray at its place; rays with count 0 (also those dropped, start -1) write nothing.
cudaError_t launch_march_rays_train_fill(const MarchArgs& args,
                                         const int* packed_info,  // [N, 2] (start, count), counts from pass 1
                                         int64_t* ray_indices,    // [M]
                                         float* t_starts,         // [M]
                                         float* t_ends,           // [M]
                                         cudaStream_t stream);

cudaError_t launch_composite_rays_train_forward(const float* alphas,     // [M]
                                                const float* values,     // [M, C]
                                                const int* packed_info,  // [N, 2] (start, count)
                                                int n_rays, int n_channels, float T_thresh,
                                                float* weights,        // [M], zeroed
                                                float* opacity,        // [N]; overwritten
                                                float* accum,          // [N, C]; overwritten
                                                float* transmittance,  // [M] before each sample, zeroed
                                                cudaStream_t stream);

cudaError_t launch_composite_rays_train_backward(const float* grad_weights,   // [M]
                                                 const float* grad_opacity,   // [N]
                                                 const float* grad_accum,     // [N, C]
                                                 const float* alphas,         // [M]
                                                 const float* values,         // [M, C]
                                                 const float* transmittance,  // [M] from the forward
                                                 const int* packed_info,      // [N, 2]
                                                 int n_rays, int n_channels, float T_thresh,
                                                 float* grad_alphas,  // [M], zeroed
                                                 float* grad_values,  // [M, C], zeroed
                                                 cudaStream_t stream);

// The grid that marching cubes walks; lattice point (i, j, k) is sdf[(i * Y + j) * Z + k].
struct LatticeArgs {
  const float* sdf;  // [N]
  int nx, ny, nz;    // X, Y, Z
  int n_points;      // N
  float level;       // inside iff sdf < level
};

// Pass 1, per lattice point p: cell_case = the case of the cell whose lowest corner is p (bit c: corner c inside,
// see marching_cubes_tables.h), 0 where p is on an upper face or the cell has no triangles; edge_bits bit a = the
// edge from p along axis a crosses the level; vertex_count = the number of those edges (p's vertices).
cudaError_t launch_marching_cubes_classify(const LatticeArgs& grid,
                                           uint8_t* cell_case,  // [N]
                                           uint8_t* edge_bits,  // [N]
                                           int* vertex_count,   // [N]
                                           cudaStream_t stream);

// Pass 2: the vertices of each point, in lattice index units, at ids vertex_end[p - 1] (0 for p = 0) onwards.
cudaError_t launch_marching_cubes_vertices(const LatticeArgs& grid,
                                           const uint8_t* edge_bits,  // [N] from pass 1
                                           const int* vertex_end,     // [N] inclusive scan of vertex_count
                                           float* vertices,           // [V, 3]
                                           cudaStream_t stream);

// Pass 3: the number of triangles of each cell with triangles.
cudaError_t launch_marching_cubes_count_triangles(const uint8_t* cell_case,     // [N] from pass 1
                                                  const int64_t* active_cells,  // [C] cells with cell_case != 0
                                                  int n_active,                 // C
                                                  int64_t* triangle_count,      // [C]
                                                  cudaStream_t stream);

// Pass 4: each cell's faces (vertex ids, outward winding) at rows triangle_end[c - 1] (0 for c = 0) onwards.
cudaError_t launch_marching_cubes_faces(const LatticeArgs& grid,
                                        const uint8_t* cell_case,     // [N]
                                        const int64_t* active_cells,  // [C]
                                        int n_active,                 // C
                                        const int64_t* triangle_end,  // [C] inclusive scan of triangle_count
                                        const uint8_t* edge_bits,     // [N]
                                        const int* vertex_end,        // [N]
                                        int64_t* faces,               // [F, 3]
                                        cudaStream_t stream);

}  // namespace raymarching
