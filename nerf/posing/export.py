"""Writing a posed scene in the NeuS/IDR layout our loader reads (nerf/provider.py `_load_neus`):
image/000000.png..., cameras_sphere.npz (world_mat_i = K4 @ W2C_i, world -> pixel, pixel centres at integers;
scale_mat_i = unit sphere -> world, the same for every view), points3D.ply (the sparse points, world frame)
and posing.json (where each view came from, the camera, the timings). Every file goes through write_atomic
(images: nerf.files.save_png, JSON: nerf.files.write_json)."""
import numpy as np

from ..files import write_atomic


def world_mat(intrinsics, c2w):
    """[4, 4] K4 @ W2C of intrinsics [3, 3] and the camera-to-world pose c2w [4, 4]."""
    k4 = np.eye(4)
    k4[:3, :3] = intrinsics
    return k4 @ np.linalg.inv(c2w)


def write_cameras(path, intrinsics, c2w, scale_mat):
    """cameras_sphere.npz of intrinsics [V, 3, 3], c2w [V, 4, 4], scale_mat [4, 4]."""
    arrays = {}
    for i in range(len(c2w)):
        arrays[f"world_mat_{i}"] = world_mat(intrinsics[i], c2w[i])
        arrays[f"scale_mat_{i}"] = scale_mat

    def write(p):
        with open(p, "wb") as f:
            np.savez(f, **arrays)

    write_atomic(path, write)


def write_points_ply(path, points, colours):
    """Binary PLY of points [N, 3] (float32) with colours [N, 3] uint8."""
    vertex = np.empty(len(points), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                          ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    for i, axis in enumerate("xyz"):
        vertex[axis] = points[:, i]
    for i, channel in enumerate(("red", "green", "blue")):
        vertex[channel] = colours[:, i]
    header = ("ply\nformat binary_little_endian 1.0\n"
              f"element vertex {len(points)}\n"
              "property float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")

    def write(p):
        with open(p, "wb") as f:
            f.write(header.encode("ascii"))
            f.write(vertex.tobytes())

    write_atomic(path, write)
