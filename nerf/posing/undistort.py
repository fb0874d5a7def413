"""Undistortion to a pinhole camera (our loader's model), with OpenCV, for any COLMAP camera model.

The pinhole camera keeps the image size and the distorted camera's focal lengths and principal point; where
the distorted image does not cover it (pincushion distortion: corners would come from outside the photo) the
focal length is raised just enough that every pixel has a source. Each target pixel's source is found by
COLMAP's own projection (Camera.img_from_cam), so every model — radial, OpenCV, fisheye — is handled alike. A
camera whose distortion moves no pixel by more than SKIP_SHIFT_PX is taken as pinhole and its images are
copied unresampled (resampling blurs a little).

Pixel conventions: COLMAP puts pixel centres at +0.5, ours (and cv2.remap's) at integers: K's principal point
is COLMAP's minus 0.5."""
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

SKIP_SHIFT_PX = 0.1
BORDER_SAMPLES = 64  # per side: where the coverage of the target image is checked


@dataclass
class Undistortion:
    intrinsics: np.ndarray  # [3, 3] pinhole K of the output images, pixel centres at integers
    map_x: Optional[np.ndarray]  # [H, W] float32 source column of each output pixel (None: copy the image)
    map_y: Optional[np.ndarray]  # [H, W] float32 source row

    def apply(self, image):
        """image [H, W, C] -> the undistorted image [H, W, C]."""
        if self.map_x is None:
            return image
        return cv2.remap(image, self.map_x, self.map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def pinhole_part(camera):
    """(fx, fy, cx, cy) of a pycolmap.Camera, COLMAP's pixel convention."""
    return (camera.focal_length_x, camera.focal_length_y, camera.principal_point_x, camera.principal_point_y)


def source_pixels(camera, intrinsics, u, v):
    """Distorted-image pixels (our convention) [N, 2] seen through target pixels u, v [N] of the pinhole
    `intrinsics` [3, 3] (our convention)."""
    x = (u - intrinsics[0, 2]) / intrinsics[0, 0]
    y = (v - intrinsics[1, 2]) / intrinsics[1, 1]
    rays = np.stack([x, y, np.ones_like(x)], axis=1)
    return camera.img_from_cam(rays) - 0.5


def border(width, height):
    """Target pixels u, v [4 * BORDER_SAMPLES] along the image's edge."""
    us = np.linspace(0, width - 1, BORDER_SAMPLES)
    vs = np.linspace(0, height - 1, BORDER_SAMPLES)
    u = np.concatenate([us, us, np.zeros_like(vs), np.full_like(vs, width - 1)])
    v = np.concatenate([np.zeros_like(us), np.full_like(us, height - 1), vs, vs])
    return u, v


def covered(camera, intrinsics, width, height):
    """Whether every target border pixel has its source inside the distorted image."""
    src = source_pixels(camera, intrinsics, *border(width, height))
    return bool(np.all(np.isfinite(src)) and np.all(src >= -0.5) and np.all(src[:, 0] <= width - 0.5)
                and np.all(src[:, 1] <= height - 0.5))


def undistortion(camera):
    """The Undistortion of a pycolmap.Camera onto a pinhole camera of the same size."""
    fx, fy, cx, cy = pinhole_part(camera)
    width, height = camera.width, camera.height
    k = np.array([[fx, 0.0, cx - 0.5], [0.0, fy, cy - 0.5], [0.0, 0.0, 1.0]])
    if camera.model_name in ("PINHOLE", "SIMPLE_PINHOLE"):
        return Undistortion(k, None, None)
    if not covered(camera, k, width, height):
        low, high = 1.0, 4.0  # zoom: the smallest focal-length factor that covers the image (bisection)
        for _ in range(30):
            mid = 0.5 * (low + high)
            trial = k.copy()
            trial[0, 0], trial[1, 1] = fx * mid, fy * mid
            low, high = (low, mid) if covered(camera, trial, width, height) else (mid, high)
        k[0, 0], k[1, 1] = fx * high, fy * high
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    src = source_pixels(camera, k, u.ravel(), v.ravel())
    shift = np.hypot(src[:, 0] - u.ravel(), src[:, 1] - v.ravel())
    if np.nanmax(shift) <= SKIP_SHIFT_PX:
        return Undistortion(k, None, None)
    map_x = src[:, 0].reshape(height, width).astype(np.float32)
    map_y = src[:, 1].reshape(height, width).astype(np.float32)
    return Undistortion(k, map_x, map_y)
