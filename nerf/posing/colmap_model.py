"""An existing COLMAP model as input: read (binary files after their structure is checked, or text), its cameras
and poses checked to be possible, and checked against its images folder before anything is written — every
registered image present, readable, and of its camera's size."""
import math
import os

import numpy as np

from ..camera_geometry import COORDINATE_LIMIT, FOCAL_RANGE, LENS_EDGE_SCALE, check_distortion
from ..images import read_all, read_image
from ..input_checks import DatasetError, error_line
from .colmap_binary import check_binary_model
from .errors import PosingError
from .inputs import MIN_IMAGES
from .sfm import pycolmap_module, quiet_colmap


# COLMAP's models with radial distortion -> (fisheye, the names of their coefficients in camera_geometry's order:
# OpenCV's k1 k2 p1 p2 k3 k4 k5 k6, or cv2.fisheye's k1 k2 k3 k4, of which COLMAP's fisheye models are a part).
# SIMPLE_RADIAL's "k" is k1; THIN_PRISM_FISHEYE's radial part is OPENCV_FISHEYE's. Every model with a distortion
# gets check_projection_folds too (after, so that a radial fold is named by its coefficients): it alone sees
# tangential and thin-prism terms, and the other models.
RADIAL_MODELS = {
    "SIMPLE_RADIAL": (False, ("k",)),
    "RADIAL": (False, ("k1", "k2")),
    "OPENCV": (False, ("k1", "k2", "p1", "p2")),
    "FULL_OPENCV": (False, ("k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6")),
    "SIMPLE_RADIAL_FISHEYE": (True, ("k",)),
    "RADIAL_FISHEYE": (True, ("k1", "k2")),
    "OPENCV_FISHEYE": (True, ("k1", "k2", "k3", "k4")),
    "THIN_PRISM_FISHEYE": (True, ("k1", "k2", "k3", "k4")),
}
UNDISTORTED_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_FISHEYE", "FISHEYE")  # nothing that can fold
FOLD_AZIMUTHS = 16  # directions out from the optical axis along which check_projection_folds follows the projection
FOLD_MAX_ANGLE = 89.5  # degrees from the axis: pycolmap projects nothing at 90 degrees or beyond


def check_cameras(model, cameras_file):
    """Every camera of the Reconstruction is of a model with focal lengths and a principal point (undistortion
    needs them; pycolmap crashes asking an EQUIRECTANGULAR camera for its focal length), has finite parameters,
    focal lengths within FOCAL_RANGE of its longer side and, for RADIAL_MODELS, a distortion that does not fold
    the image (its size is checked against its images later)."""
    low, high = FOCAL_RANGE
    for camera_id, camera in model.cameras.items():
        if not (camera.focal_length_idxs() and camera.principal_point_idxs()):
            raise PosingError(f"{cameras_file}: camera {camera_id} is of the model {camera.model_name}, which has no "
                              f"focal length and principal point; unsupported (a perspective or fisheye model is)")
        params = np.asarray(camera.params, dtype=np.float64)
        focal = params[camera.focal_length_idxs()] / max(camera.width, camera.height, 1)
        if not (np.all(np.isfinite(params)) and np.all((focal >= low) & (focal <= high))):
            raise PosingError(f"{cameras_file}: camera {camera_id} is impossible ({camera.model_name} "
                              f"{camera.params_to_string()}: focal lengths must be {low:g} to {high:g} times the "
                              f"longer image side, all parameters finite)")
        if camera.model_name in RADIAL_MODELS:
            check_radial_distortion(camera, cameras_file, f"camera {camera_id}")
        if camera.model_name not in UNDISTORTED_MODELS:
            check_projection_folds(camera, cameras_file, f"camera {camera_id}")


def check_radial_distortion(camera, cameras_file, label):
    """camera_geometry.check_distortion (the instant-ngp loader's check) on a camera of RADIAL_MODELS."""
    params = dict(zip(camera.params_info.split(", "), camera.params))
    fisheye, names = RADIAL_MODELS[camera.model_name]
    dist = [params[name] for name in names]
    dist += [0.0] * ((4 if fisheye else 8) - len(dist))  # (only the order matters: SIMPLE_RADIAL's k is k1)
    k = np.array([[camera.focal_length_x, 0.0, camera.principal_point_x - 0.5],
                  [0.0, camera.focal_length_y, camera.principal_point_y - 0.5], [0.0, 0.0, 1.0]])
    try:
        check_distortion(k, dist, (camera.width, camera.height), cameras_file, label, fisheye)
    except DatasetError as e:
        raise PosingError(str(e)) from None


def check_projection_folds(camera, cameras_file, label):
    """For a camera of any model with a distortion (FOV, DIVISION, EUCM, RAD_TAN_THIN_PRISM_FISHEYE, and
    RADIAL_MODELS' tangential and thin-prism terms): along each of FOLD_AZIMUTHS directions out from the optical
    axis, COLMAP's own projection must move steadily away from the principal point, on the ray's side of it, until
    it reaches the ellipse inscribed in the image (or the rays reach FOLD_MAX_ANGLE: a lens wider than that is used
    only as far as a pinhole view reaches). One that turns back, crosses the axis or fails (NaN) before folds the
    image, and undistorting it gives garbage; so does one whose scale there is no lens's: where it reaches the
    image's edge (or the widest ray), its distance from the principal point in focal lengths must be from
    LENS_EDGE_SCALE's low x the ray's angle (a fisheye's is about 1 x) to its high x a pinhole's tan(angle)."""
    cx, cy = camera.principal_point_x, camera.principal_point_y
    focal = np.array([camera.focal_length_x, camera.focal_length_y])
    half_axes = np.array([min(cx, camera.width - cx), min(cy, camera.height - cy)])  # COLMAP: edges at 0 and W
    theta = np.radians(np.linspace(0.0, FOLD_MAX_ANGLE, 2001))[:, None]  # [T, 1]
    low, high = LENS_EDGE_SCALE
    for azimuth in np.linspace(0.0, 2.0 * np.pi, FOLD_AZIMUTHS, endpoint=False):
        rays = np.stack([np.sin(theta) * np.cos(azimuth), np.sin(theta) * np.sin(azimuth), np.cos(theta)], -1)
        with np.errstate(all="ignore"):
            offsets = camera.img_from_cam(rays.reshape(-1, 3)) - (cx, cy)  # [T, 2]
            reach = np.hypot(*(offsets / np.maximum(half_axes, 1e-9)).T)  # [T] 1 on the ellipse
            along = offsets @ (np.cos(azimuth), np.sin(azimuth))  # [T] > 0 on the ray's side of the axis
        inside = np.cumsum(~(reach < 1.0)) == 0  # up to the first that reaches it (NaN counts as reaching)
        edge = min(np.count_nonzero(inside), len(theta) - 1)  # that one, or the widest ray
        upto = reach[: edge + 1]
        if not (np.all(np.isfinite(upto)) and np.all(np.diff(upto) > 0) and np.all(along[1: edge + 1] > 0)):
            raise PosingError(f"{cameras_file}: {label} ({camera.model_name} {camera.params_to_string()}) folds "
                              f"the image (its projection turns back, crosses the axis or fails before the image's "
                              f"edge)")
        angle, radius = theta[edge, 0], np.hypot(*(offsets[edge] / focal))
        if not low * angle <= radius <= high * np.tan(angle):
            raise PosingError(f"{cameras_file}: {label} ({camera.model_name} {camera.params_to_string()}) puts the "
                              f"ray {np.degrees(angle):.3g} degrees off its axis {radius:.3g} focal lengths out, at "
                              f"the image's edge; a lens's is {low:g} x the angle in radians to {high:g} x a "
                              f"pinhole's")


def check_image_names(model, images_file):
    """Every image's name is UTF-8 text (pycolmap cannot give it otherwise), and no two images share one: the
    views, their files and posing.json are keyed by it."""
    seen = {}
    for image_id in sorted(model.images):
        try:
            name = model.image(image_id).name
        except UnicodeDecodeError:
            raise PosingError(f"{images_file}: image {image_id} has a name that is not UTF-8 text") from None
        if name in seen:
            raise PosingError(f"{images_file}: images {seen[name]} and {image_id} are both named {name!r}")
        seen[name] = image_id


def check_points(model, points_file):
    """Every sparse point is finite and within COORDINATE_LIMIT."""
    for point_id, point in model.points3D.items():
        if not np.all(np.abs(point.xyz) <= COORDINATE_LIMIT):  # NaN fails too
            raise PosingError(f"{points_file}: point {point_id} is at {point.xyz.tolist()}, expected coordinates "
                              f"within +-{COORDINATE_LIMIT:g}")


def unit_pose(pycolmap, pose):
    """The pycolmap.Rigid3d pose with its rotation quaternion made a unit one (a text model is read as written,
    and a scaled quaternion would scale the rotation), or None when it is impossible: a quaternion of zero or
    non-finite norm, a translation not within COORDINATE_LIMIT (|t| is a camera's distance from the origin)."""
    with np.errstate(over="ignore"):  # a huge quaternion's norm is inf, refused below
        norm = np.linalg.norm(pose.rotation.quat)
    if not (math.isfinite(norm) and norm > 0 and np.all(np.abs(pose.translation) <= COORDINATE_LIMIT)):
        return None
    pose.rotation = pycolmap.Rotation3d(pose.rotation.quat / norm)
    return pose


def impossible_pose(pose):
    return (f"has an impossible pose (rotation quaternion xyzw {pose.rotation.quat.tolist()}, translation "
            f"{pose.translation.tolist()}; expected a quaternion of non-zero norm, a translation within "
            f"+-{COORDINATE_LIMIT:g})")


def normalise_poses(pycolmap, model, ids, poses_file):
    """The poses of the registered images `ids` made unit_pose ones in place; PosingError for an impossible one."""
    for i in ids:
        frame = model.frame(model.image(i).frame_id)
        pose = unit_pose(pycolmap, frame.rig_from_world)
        if pose is None:
            problem = impossible_pose(frame.rig_from_world)
            raise PosingError(f"{poses_file}: image {i} ({model.image(i).name}) {problem}")
        frame.rig_from_world = pose


def normalise_rigs(pycolmap, model, rigs_file):
    """The poses of the cameras of a rig relative to its reference camera (an image's pose is its frame's
    composed with its camera's) made unit_pose ones in place; PosingError for an impossible one."""
    for rig_id in sorted(model.rigs):
        rig = model.rig(rig_id)
        for sensor, pose in sorted(rig.non_ref_sensors.items(), key=lambda item: item[0].id):
            if pose is None:  # a camera whose pose in the rig is unknown: COLMAP does not use its images
                continue
            unit = unit_pose(pycolmap, pose)
            if unit is None:
                raise PosingError(f"{rigs_file}: camera {sensor.id} of rig {rig_id} {impossible_pose(pose)}")
            rig.set_sensor_from_rig(sensor, unit)


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
    if len(ids) < MIN_IMAGES:
        images = "image" if len(ids) == 1 else "images"
        raise PosingError(f"{model_dir}: the COLMAP model has {len(ids)} registered {images}; at least {MIN_IMAGES} "
                          f"views of the object are needed")
    normalise_rigs(pycolmap, model, os.path.join(model_dir, "rigs" + ext))
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
