// Python bindings of the raymarching kernels; the ops are documented in raymarching/raymarching.py.
#include <torch/extension.h>

#include "raymarching.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("near_far_from_sphere", &near_far_from_sphere, "ray/sphere entry and exit distances");
  m.def("near_far_from_aabb", &near_far_from_aabb, "ray/box entry and exit distances");
  m.def("packbits", &packbits, "occupancy values -> bitfield");
  m.def("march_rays_train", &march_rays_train, "packed occupied lattice samples of every ray");
  m.def("march_rays", &march_rays, "next n_step occupied lattice samples of the alive rays");
  m.def("composite_rays_train_forward", &composite_rays_train_forward, "alpha compositing, forward");
  m.def("composite_rays_train_backward", &composite_rays_train_backward, "alpha compositing, backward");
  m.def("composite_rays", &composite_rays, "alpha compositing of one inference step, in place");
}
