"""An existing COLMAP model as input: read (binary files after their structure is checked, or text), its cameras
and poses checked to be possible, and checked against its images folder before anything is written — every
registered image present, readable, and of its camera's size."""
import math
import os

import numpy as np

from ..camera_geometry import COORDINATE_LIMIT, FOCAL_RANGE
from ..images import read_all, read_image
from ..input_checks import error_line
from .colmap_binary import check_binary_model
from .errors import PosingError
from .sfm import pycolmap_module, quiet_colmap


def check_cameras(model, cameras_file):
    """Every camera of the Reconstruction has finite parameters and focal lengths within FOCAL_RANGE of its
    longer side (its size is checked against its images later)."""
    low, high = FOCAL_RANGE
    for camera_id, camera in model.cameras.items():
        params = np.asarray(camera.params, dtype=np.float64)
        focal = params[camera.focal_length_idxs()] / max(camera.width, camera.height, 1)
        if not (np.all(np.isfinite(params)) and np.all((focal >= low) & (focal <= high))):
            raise PosingError(f"{cameras_file}: camera {camera_id} is impossible ({camera.model_name} "
                              f"{camera.params_to_string()}: focal lengths must be {low:g} to {high:g} times the "
                              f"longer image side, all parameters finite)")


def check_image_names(model, images_file):
    """No two images share a name: the views, their files and posing.json are keyed by it."""
    seen = {}
    for image_id in sorted(model.images):
        name = model.image(image_id).name
        if name in seen:
            raise PosingError(f"{images_file}: images {seen[name]} and {image_id} are both named {name!r}")
        seen[name] = image_id


def check_points(model, points_file):
    """Every sparse point is finite and within COORDINATE_LIMIT."""
    for point_id, point in model.points3D.items():
        if not np.all(np.abs(point.xyz) <= COORDINATE_LIMIT):  # NaN fails too
            raise PosingError(f"{points_file}: point {point_id} is at {point.xyz.tolist()}, expected coordinates "
                              f"within +-{COORDINATE_LIMIT:g}")


def normalise_poses(pycolmap, model, ids, poses_file):
    """The poses of the registered images `ids` finite (translations within COORDINATE_LIMIT: |t| is the camera's
    distance from the origin), their rotation quaternions of non-zero norm and made unit ones in place (a text
    model is read as written, and a scaled quaternion would scale the rotation)."""
    for i in ids:
        frame = model.frame(model.image(i).frame_id)
        pose = frame.rig_from_world
        with np.errstate(over="ignore"):  # a huge quaternion's norm is inf, refused below
            norm = np.linalg.norm(pose.rotation.quat)
        if not (math.isfinite(norm) and norm > 0 and np.all(np.abs(pose.translation) <= COORDINATE_LIMIT)):
            raise PosingError(f"{poses_file}: image {i} ({model.image(i).name}) has an impossible pose (rotation "
                              f"quaternion xyzw {pose.rotation.quat.tolist()}, "
                              f"translation {pose.translation.tolist()}; expected a quaternion of non-zero norm, a translation "
                              f"within +-{COORDINATE_LIMIT:g})")
        pose.rotation = pycolmap.Rotation3d(pose.rotation.quat / norm)
        frame.rig_from_world = pose


def poses_file(model_dir, ext):
    """The model file the poses are read from: frames (COLMAP 3.12 and later) when present, else images."""
    frames = os.path.join(model_dir, "frames" + ext)
    return frames if os.path.isfile(frames) else os.path.join(model_dir, "images" + ext)


def read_model(model_dir, ext, image_dir):
    """The pycolmap.Reconstruction in model_dir (ext '.bin' or '.txt') whose images are in image_dir."""
    pycolmap = pycolmap_module()
    if ext == ".bin":
        check_binary_model(model_dir, pycolmap)
    model = pycolmap.Reconstruction()
    try:
        with quiet_colmap(pycolmap):
            if ext == ".bin":
                model.read_binary(model_dir)
            else:
                model.read_text(model_dir)
    except Exception as e:  # pycolmap turns COLMAP's failed checks into ValueError/RuntimeError
        raise PosingError(f"{model_dir}: unreadable COLMAP model ({error_line(e, last=True)})") from None
    check_cameras(model, os.path.join(model_dir, "cameras" + ext))
    check_image_names(model, os.path.join(model_dir, "images" + ext))
    check_points(model, os.path.join(model_dir, "points3D" + ext))
    try:  # pycolmap checks here that each registered frame's images exist
        ids = sorted(model.reg_image_ids(), key=lambda i: model.image(i).name)
    except Exception as e:
        raise PosingError(f"{model_dir}: unreadable COLMAP model ({error_line(e, last=True)})") from None
    if not ids:
        raise PosingError(f"{model_dir}: the COLMAP model has no registered images")
    normalise_poses(pycolmap, model, ids, poses_file(model_dir, ext))
    paths = [os.path.join(image_dir, model.image(i).name) for i in ids]
    for path in paths:
        if not os.path.isfile(path):
            raise PosingError(f"{path}: image of the COLMAP model {model_dir} missing")
    sizes = read_all(lambda p: read_image(p)[0].shape[:2], paths)
    for i, path, (height, width) in zip(ids, paths, sizes):
        camera = model.camera(model.image(i).camera_id)
        if (camera.width, camera.height) != (width, height):
            raise PosingError(f"{path}: image is {width}x{height}, its camera in {model_dir} is "
                              f"{camera.width}x{camera.height}")
        if (height, width) != sizes[0]:
            raise PosingError(f"{path}: image is {width}x{height}, {paths[0]} is {sizes[0][1]}x{sizes[0][0]} "
                              f"(all images must have one size)")
    return model
