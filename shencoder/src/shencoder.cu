// Real spherical harmonics of unit directions: forward and backward-to-inputs kernels.
//
// Basis and order as tiny-cuda-nn: band l occupies outputs l*l .. l*l+2l in the order m = -l..l, with
//   Y_{l,0} = Pn_l^0(z),  Y_{l,+m} = Pn_l^m(z) Re((x+iy)^m),  Y_{l,-m} = Pn_l^m(z) Im((x+iy)^m),
// where Pn_l^m is the normalised associated Legendre function with its sin^m(theta) factor removed (a
// polynomial in z). Instead of one hand-expanded polynomial per output, both kernels walk the three-term
// recurrence in l for each order m, so one short loop serves every degree and the backward is the
// derivative of the same recurrence. The PyTorch twin (torch_impl.py) documents the maths.

#include <cmath>

#include "shencoder.h"

namespace shencoder {
namespace {

constexpr int kThreadsPerBlock = 256;

// Coefficients of the recurrence, with the normalisation folded in:
//   Pn_m^m = diag[m],   Pn_l^m = a[l][m] z Pn_{l-1}^m - b[l][m] Pn_{l-2}^m   (l > m; b[m+1][m] = 0).
// Passed to the kernels by value (544 bytes of kernel-parameter space, cached like constant memory).
struct LegendreTable {
  float diag[kMaxDegree];
  float a[kMaxDegree][kMaxDegree];  // [l][m]
  float b[kMaxDegree][kMaxDegree];  // [l][m]
};

// Computed in double on the host, once. N_{l,m} is the SH normalisation (sqrt(2) extra for m > 0) and the
// unnormalised recurrence is Q_m^m = (-1)^m (2m-1)!!, (l-m) Q_l^m = (2l-1) z Q_{l-1}^m - (l+m-1) Q_{l-2}^m.
LegendreTable make_legendre_table() {
  auto norm = [](int l, int m) {
    double ratio = 1.0;  // (l-m)! / (l+m)!
    for (int k = l - m + 1; k <= l + m; ++k) ratio /= k;
    const double base = (2 * l + 1) / (4.0 * M_PI) * ratio;
    return std::sqrt(m == 0 ? base : 2.0 * base);
  };
  LegendreTable table{};
  for (int m = 0; m < kMaxDegree; ++m) {
    double double_factorial = 1.0;  // (2m-1)!!
    for (int k = 2 * m - 1; k > 1; k -= 2) double_factorial *= k;
    table.diag[m] = static_cast<float>((m % 2 ? -1.0 : 1.0) * double_factorial * norm(m, m));
    for (int l = m + 1; l < kMaxDegree; ++l) {
      table.a[l][m] = static_cast<float>(norm(l, m) / norm(l - 1, m) * (2 * l - 1) / (l - m));
      if (l >= m + 2) {
        table.b[l][m] = static_cast<float>(norm(l, m) / norm(l - 2, m) * (l + m - 1) / (l - m));
      }
    }
  }
  return table;
}

const LegendreTable& legendre_table() {
  static const LegendreTable table = make_legendre_table();
  return table;
}

// The degree^2 values for one direction (x, y, z). __host__ as well so the maths can be checked on a CPU.
template <typename out_t>
__host__ __device__ inline void sh_forward_one(
    const float x, const float y, const float z, const int degree, const LegendreTable& table,
    out_t* __restrict__ out)  // [degree^2]
{
  float cos_m = 1.f, sin_m = 0.f;  // Re and Im of (x + iy)^m
  for (int m = 0; m < degree; ++m) {
    if (m > 0) {
      const float next_cos = x * cos_m - y * sin_m;
      sin_m = x * sin_m + y * cos_m;
      cos_m = next_cos;
    }
    float p_prev2 = 0.f, p_prev = table.diag[m];  // Pn_{l-2}^m, Pn_{l-1}^m
    for (int l = m; l < degree; ++l) {
      float p = p_prev;  // Pn_m^m when l == m
      if (l > m) {
        p = table.a[l][m] * z * p_prev - table.b[l][m] * p_prev2;
        p_prev2 = p_prev;
        p_prev = p;
      }
      const int centre = l * l + l;
      if (m == 0) {
        out[centre] = static_cast<out_t>(p);
      } else {
        out[centre + m] = static_cast<out_t>(p * cos_m);
        out[centre - m] = static_cast<out_t>(p * sin_m);
      }
    }
  }
}

// dLoss/d(x, y, z) for one direction given dLoss/doutputs. Uses d/dx (x+iy)^m = m (x+iy)^(m-1) and
// d/dy (x+iy)^m = i m (x+iy)^(m-1), and the recurrence differentiated in z.
template <typename grad_t>
__host__ __device__ inline void sh_backward_one(
    const float x, const float y, const float z, const int degree, const LegendreTable& table,
    const grad_t* __restrict__ grad_out,  // [degree^2]
    float grad_xyz[3])
{
  float grad_x = 0.f, grad_y = 0.f, grad_z = 0.f;
  float cos_m = 1.f, sin_m = 0.f;        // Re and Im of (x + iy)^m
  float cos_prev = 0.f, sin_prev = 0.f;  // Re and Im of (x + iy)^(m-1)
  for (int m = 0; m < degree; ++m) {
    if (m > 0) {
      cos_prev = cos_m;
      sin_prev = sin_m;
      cos_m = x * cos_prev - y * sin_prev;
      sin_m = x * sin_prev + y * cos_prev;
    }
    float p_prev2 = 0.f, p_prev = table.diag[m];  // Pn_{l-2}^m, Pn_{l-1}^m
    float dp_prev2 = 0.f, dp_prev = 0.f;          // their derivatives in z
    // Sum over l of Pn_l^m times the incoming gradient of the cos (+m) and sin (-m) outputs.
    float p_grad_cos = 0.f, p_grad_sin = 0.f;
    for (int l = m; l < degree; ++l) {
      float p = p_prev, dp = dp_prev;
      if (l > m) {
        p = table.a[l][m] * z * p_prev - table.b[l][m] * p_prev2;
        dp = table.a[l][m] * (p_prev + z * dp_prev) - table.b[l][m] * dp_prev2;
        p_prev2 = p_prev;
        p_prev = p;
        dp_prev2 = dp_prev;
        dp_prev = dp;
      }
      const int centre = l * l + l;
      if (m == 0) {
        grad_z += static_cast<float>(grad_out[centre]) * dp;
      } else {
        const float g_cos = static_cast<float>(grad_out[centre + m]);
        const float g_sin = static_cast<float>(grad_out[centre - m]);
        p_grad_cos += p * g_cos;
        p_grad_sin += p * g_sin;
        grad_z += dp * (g_cos * cos_m + g_sin * sin_m);
      }
    }
    grad_x += m * (p_grad_cos * cos_prev + p_grad_sin * sin_prev);
    grad_y += m * (p_grad_sin * cos_prev - p_grad_cos * sin_prev);
  }
  grad_xyz[0] = grad_x;
  grad_xyz[1] = grad_y;
  grad_xyz[2] = grad_z;
}

// One thread per direction.
template <typename scalar_t>
__global__ void sh_forward_kernel(
    const scalar_t* __restrict__ dirs,  // [num_dirs, 3] unit vectors
    scalar_t* __restrict__ outputs,     // [num_dirs, degree^2]
    const int64_t num_dirs,
    const int degree,                   // 1..kMaxDegree
    const LegendreTable table)
{
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= num_dirs) return;
  const scalar_t* dir = dirs + i * 3;
  sh_forward_one(static_cast<float>(dir[0]), static_cast<float>(dir[1]), static_cast<float>(dir[2]),
                 degree, table, outputs + i * degree * degree);
}

template <typename scalar_t>
__global__ void sh_backward_kernel(
    const scalar_t* __restrict__ grad_outputs,  // [num_dirs, degree^2]
    const scalar_t* __restrict__ dirs,          // [num_dirs, 3] unit vectors
    scalar_t* __restrict__ grad_dirs,           // [num_dirs, 3]
    const int64_t num_dirs,
    const int degree,                           // 1..kMaxDegree
    const LegendreTable table)
{
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= num_dirs) return;
  const scalar_t* dir = dirs + i * 3;
  float grad_xyz[3];
  sh_backward_one(static_cast<float>(dir[0]), static_cast<float>(dir[1]), static_cast<float>(dir[2]),
                  degree, table, grad_outputs + i * degree * degree, grad_xyz);
  for (int k = 0; k < 3; ++k) grad_dirs[i * 3 + k] = static_cast<scalar_t>(grad_xyz[k]);
}

unsigned int num_blocks(int64_t num_dirs) {
  return static_cast<unsigned int>((num_dirs + kThreadsPerBlock - 1) / kThreadsPerBlock);
}

}  // namespace

template <typename scalar_t>
cudaError_t launch_sh_forward(const scalar_t* dirs, scalar_t* outputs, int64_t num_dirs, int degree,
                              cudaStream_t stream) {
  if (num_dirs == 0) return cudaSuccess;  // a grid of zero blocks is a launch error
  sh_forward_kernel<scalar_t><<<num_blocks(num_dirs), kThreadsPerBlock, 0, stream>>>(
      dirs, outputs, num_dirs, degree, legendre_table());
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t launch_sh_backward(const scalar_t* grad_outputs, const scalar_t* dirs, scalar_t* grad_dirs,
                               int64_t num_dirs, int degree, cudaStream_t stream) {
  if (num_dirs == 0) return cudaSuccess;
  sh_backward_kernel<scalar_t><<<num_blocks(num_dirs), kThreadsPerBlock, 0, stream>>>(
      grad_outputs, dirs, grad_dirs, num_dirs, degree, legendre_table());
  return cudaGetLastError();
}

template cudaError_t launch_sh_forward<float>(const float*, float*, int64_t, int, cudaStream_t);
template cudaError_t launch_sh_forward<__half>(const __half*, __half*, int64_t, int, cudaStream_t);
template cudaError_t launch_sh_backward<float>(const float*, const float*, float*, int64_t, int, cudaStream_t);
template cudaError_t launch_sh_backward<__half>(const __half*, const __half*, __half*, int64_t, int,
                                                cudaStream_t);

}  // namespace shencoder
