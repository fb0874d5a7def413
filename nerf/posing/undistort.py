"""Undistortion to a pinhole camera (our loader's model), with OpenCV, for any COLMAP camera model.

The pinhole camera keeps the image size and the distorted camera's focal lengths and principal point; where
the distorted image does not cover it (pincushion distortion: corners would come from outside the photo) the
focal length is raised just enough that every pixel has a source. Each target pixel's source is found by
COLMAP's own projection (Camera.img_from_cam), so every model — radial, OpenCV, fisheye — is handled alike. A
camera whose distortion moves no pixel by more than SKIP_SHIFT_PX is taken as pinhole and its images are
copied unresampled (resampling blurs a little).

Pixel conventions: COLMAP puts pixel centres at +0.5, ours (and cv2.remap's) at integers: K's principal point
is COLMAP's minus 0.5."""
import numpy as np

from ..camera_geometry import MAX_ZOOM, Undistortion, border_pixels, inside_image, smallest_zoom

SKIP_SHIFT_PX = 0.1
BORDER_SAMPLES = 64  # per side: where the coverage of the target image is checked


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


def covered(camera, intrinsics, width, height):
    """Whether every target border pixel has its source inside the distorted image."""
    src = source_pixels(camera, intrinsics, *border_pixels(width, height, BORDER_SAMPLES))
    return inside_image(src, width, height)


def undistortion(camera):
    """The Undistortion of a pycolmap.Camera onto a pinhole camera of the same size."""
    fx, fy, cx, cy = pinhole_part(camera)
    width, height = camera.width, camera.height
    k = np.array([[fx, 0.0, cx - 0.5], [0.0, fy, cy - 0.5], [0.0, 0.0, 1.0]])
    if camera.model_name in ("PINHOLE", "SIMPLE_PINHOLE"):
        return Undistortion(k, None, None)

    def zoomed(factor):
        """k with its focal lengths `factor` times the camera's."""
        trial = k.copy()
        trial[0, 0], trial[1, 1] = fx * factor, fy * factor
        return trial

    if not covered(camera, k, width, height):  # zoom in: the smallest focal-length factor that covers the image
        k = zoomed(smallest_zoom(lambda factor: covered(camera, zoomed(factor), width, height), 1.0, MAX_ZOOM))
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    src = source_pixels(camera, k, u.ravel(), v.ravel())
    shift = np.hypot(src[:, 0] - u.ravel(), src[:, 1] - v.ravel())
    if np.nanmax(shift) <= SKIP_SHIFT_PX:
        return Undistortion(k, None, None)
    map_x = src[:, 0].reshape(height, width).astype(np.float32)
    map_y = src[:, 1].reshape(height, width).astype(np.float32)
    return Undistortion(k, map_x, map_y)
