"""Which points of a scene the cameras see: the part of a true surface a reconstruction had pictures of.

A scene's score over the whole true surface also counts what no camera saw (the underside of an object on a
cap of cameras), where any surface is a guess; DTU scores inside an observation mask for the same reason.
`seen_points` keeps the points that some camera's depth buffer of the true mesh shows (in front of, or on, the
first surface along the camera's ray), so floaters in front of the object count and guesses behind it do not.
"""
import os

import numpy as np

from .camera_geometry import downscale_intrinsics, in_image, project_points, world_mat_camera
from .images import list_images, read_image
from .input_checks import DatasetError
from .mesh_render import neus_world_mats, rasterize_mesh

# Depth slack, in pixels' worth of depth (z / focal length per pixel): a point on the surface must pass the test
# although the buffer holds the depth at a pixel centre up to half a pixel away, at grazing angles too.
DEPTH_SLACK_PIXELS = 2.0


class Camera:
    """A pinhole camera: K [3, 3], w2c [4, 4] (OpenCV axes), image width and height in pixels."""

    def __init__(self, K, w2c, width, height):
        self.K, self.w2c, self.width, self.height = K, w2c, int(width), int(height)


def neus_cameras(folder, downscale=2):
    """The cameras of the NeuS-format scene in `folder` (cameras_sphere.npz, image/ for the size), their images
    downscaled by the integer `downscale` (visibility needs no full resolution). Raises DatasetError naming the
    file for a missing or unreadable one, or a world_mat that is no camera. The world_mats alone place the
    cameras in GT's (world) frame: the scale_mats are not needed."""
    path, world_mats = neus_world_mats(folder)
    if not world_mats:
        raise DatasetError(f"{path}: no world_mat_* cameras")
    rgb, _ = read_image(list_images(os.path.join(folder, "image"), "images")[0])
    height, width = rgb.shape[0] // downscale, rgb.shape[1] // downscale
    result = []
    for view in sorted(world_mats):
        key = f"world_mat_{view}"
        K, c2w = world_mat_camera(world_mats[view], path, key)
        result.append(Camera(downscale_intrinsics(K, downscale), np.linalg.inv(c2w), width, height))
    return result


def depth_buffer(mesh, camera):
    """Camera-space depth [H, W] of the first surface of `mesh` (vertices, faces in the world frame) at each pixel
    centre of `camera`; inf where it sees none."""
    frags = rasterize_mesh(mesh.vertices, mesh.faces, camera.K, camera.w2c, camera.width, camera.height)
    depth = np.full(camera.width * camera.height, np.inf)
    depth[frags.pixel] = frags.points_cam[:, 2]
    return depth.reshape(camera.height, camera.width)


def farthest_nearby(depth):
    """Per pixel, the largest finite depth among it and its 8 neighbours (inf where all are inf): lenient at
    silhouettes and grazing angles, where the nearest pixel centre may fall on a nearer part or miss the mesh."""
    finite = np.where(np.isfinite(depth), depth, -np.inf)
    padded = np.pad(finite, 1, constant_values=-np.inf)
    h, w = depth.shape
    best = np.max([padded[i : i + h, j : j + w] for i in range(3) for j in range(3)], axis=0)
    return np.where(np.isfinite(best), best, np.inf)


def first_surfaces(mesh, cameras):
    """For each of `cameras`, `farthest_nearby` of its depth buffer of `mesh` -> list of [H, W] (reused for
    every point set tested against that mesh)."""
    return [farthest_nearby(depth_buffer(mesh, camera)) for camera in cameras]


def seen_points(points, cameras, surfaces):
    """Whether each of points [N, 3] (world frame) is seen by one of `cameras` (Camera): inside its image, in
    front of it, and not behind the first surface along its ray (surfaces: `first_surfaces` of the true mesh)
    within DEPTH_SLACK_PIXELS -> [N] bool. A point off every surface and in front of it (a floater) counts as
    seen."""
    points = np.asarray(points, np.float64)
    seen = np.zeros(len(points), bool)
    for camera, surface in zip(cameras, surfaces):
        u, v, z = project_points(points, camera.K, camera.w2c)
        inside = in_image(u, v, z, (camera.height, camera.width))
        col = np.clip(np.rint(u), 0, camera.width - 1).astype(np.int64)
        row = np.clip(np.rint(v), 0, camera.height - 1).astype(np.int64)
        first = np.where(inside, surface[row, col], np.inf)
        slack = DEPTH_SLACK_PIXELS * np.abs(z) / camera.K[0, 0]
        seen |= inside & (z <= first + slack)
    return seen
