"""The shared camera after mapping: a richer model chosen as the data supports it, the principal point freed,
and a final robust bundle adjustment.

The mapping camera (SIMPLE_RADIAL, principal point fixed at the image centre) biases the poses: on DTU the
true principal point is 12 px off centre, which tilts every view by ~0.5 degree. Once all views are in, each
candidate model (PINHOLE: fx, fy, cx, cy; RADIAL: f, cx, cy, k1, k2; OPENCV: fx, fy, cx, cy, k1, k2, p1, p2)
is started from the mapped camera and bundle adjusted with the principal point free; the simplest candidate
whose mean reprojection error is within MODEL_TOLERANCE of the best is kept. Parameters that buy nothing
only add noise: on DTU's rectified photos OPENCV fits k2 = 0.4 for a 1 % lower error, and on a rendered
(pinhole) scene a forced OPENCV camera took p1 = -0.01 and a principal point 7 px off, with 1.5 degree
rotation errors instead of 0.3. A principal point that wanders far off the centre means the views do not
constrain it (little rotation between them): it is then fixed at the centre again. The last adjustment uses
a Cauchy loss, so that the few wrong matches left do not pull the poses."""
import numpy as np
from tqdm import tqdm

from .sfm import pycolmap_module, quiet_colmap

CANDIDATE_MODELS = ("PINHOLE", "RADIAL", "OPENCV")  # by number of parameters: 4, 5, 8
MODEL_TOLERANCE = 0.03  # a model with more parameters must lower the reprojection error by more than this
MAX_PRINCIPAL_SHIFT = 0.1  # x the image diagonal: beyond, the principal point is not observable
FILTER_ERROR_PX = 4.0  # observations reprojecting farther are dropped before the last adjustment
FILTER_MIN_ANGLE_DEG = 1.5


def convert_camera(pycolmap, camera, model):
    """A pycolmap.Camera of `model` started from `camera`'s focal length(s), principal point and first radial
    term (the rest zero)."""
    new = pycolmap.Camera.create_from_model_name(camera.camera_id, model, camera.mean_focal_length(), camera.width,
                                                 camera.height)
    old = dict(zip(camera.params_info.split(", "), camera.params))
    info = new.params_info.split(", ")
    params = np.array(new.params, dtype=np.float64)
    for name in info:
        if name in old:
            params[info.index(name)] = old[name]
        elif name in ("fx", "fy") and "f" in old:
            params[info.index(name)] = old["f"]
        elif name == "k1" and "k" in old:
            params[info.index(name)] = old["k"]
    new.params = params
    return new


def bundle_adjust(pycolmap, model, principal_point, robust):
    options = pycolmap.BundleAdjustmentOptions()
    options.refine_principal_point = principal_point
    options.print_summary = False
    if robust:
        options.ceres.loss_function_type = pycolmap.LossFunctionType.CAUCHY
    pycolmap.bundle_adjustment(model, options)
    return model


def principal_shift(camera):
    """Distance of the principal point from the image centre, in image diagonals."""
    return float(np.hypot(camera.principal_point_x - camera.width / 2, camera.principal_point_y - camera.height / 2)
                 / np.hypot(camera.width, camera.height))


def with_model(pycolmap, model, camera_model):
    """A copy of the Reconstruction with every camera converted to camera_model."""
    copy = pycolmap.Reconstruction(model)
    for camera_id, camera in list(copy.cameras.items()):
        copy.cameras[camera_id] = convert_camera(pycolmap, camera, camera_model)
    return copy


def refine_cameras(model, camera_model="auto", refine_principal_point=True, disable=None):
    """The Reconstruction after the camera model choice and the final adjustments, and a report (dict):
    the model, each candidate's reprojection error, whether the principal point was refined. camera_model:
    "auto" (a choice among CANDIDATE_MODELS) or a COLMAP model name. disable: tqdm's (None: a bar only on a
    terminal)."""
    pycolmap = pycolmap_module()
    candidates = CANDIDATE_MODELS if camera_model == "auto" else (camera_model,)
    report = {"candidates": {}}
    with quiet_colmap(pycolmap) as stream, tqdm(total=len(candidates) + 1, desc="refinement", unit="step",
                                                disable=disable, file=stream, leave=False) as bar:
        fitted = {}
        for name in candidates:  # a quick (least squares) fit of each, to compare them
            fitted[name] = bundle_adjust(pycolmap, with_model(pycolmap, model, name), refine_principal_point,
                                         robust=False)
            report["candidates"][name] = float(fitted[name].compute_mean_reprojection_error())
            bar.update(1)
        best = min(report["candidates"].values())
        chosen = next(n for n in candidates if report["candidates"][n] <= (1 + MODEL_TOLERANCE) * best)
        refined = fitted[chosen]
        free = refine_principal_point
        if free and any(principal_shift(c) > MAX_PRINCIPAL_SHIFT for c in refined.cameras.values()):
            free = False
            refined = bundle_adjust(pycolmap, with_model(pycolmap, model, chosen), False, robust=False)
        pycolmap.ObservationManager(refined).filter_all_points3D(FILTER_ERROR_PX, FILTER_MIN_ANGLE_DEG)
        bundle_adjust(pycolmap, refined, free, robust=True)
        bar.update(1)
    report.update(camera_model=chosen, principal_point_refined=free,
                  reprojection_error_px=float(refined.compute_mean_reprojection_error()))
    return refined, report
