"""Posed scene vs a reference scene (both NeuS folders): rotation and camera-centre errors after a similarity
alignment on the camera centres, focal length and principal point errors, and how the two regions of interest
(scale_mat spheres) agree. Views are matched by the source image names that posing.json records; a posed
folder without it is matched by index."""
import json
import os

import numpy as np

from ..camera_geometry import check_scale_mat, npz_matrix, open_cameras_npz, similarity_scale, world_mat_camera
from ..images import list_images
from ..input_checks import DatasetError, describe, error_line
from .alignment import pose_errors

# posing.json holds ~200 bytes a view: far more is no record of ours
MAX_POSING_RECORD_BYTES = 64 << 20


def read_neus_cameras(folder):
    """(image names [V], intrinsics [V, 3, 3], c2w [V, 4, 4] in the world frame, scale_mat [4, 4]) of a NeuS
    folder. world_mat alone is K [R | t] in the world frame (scale_mat is only the normalisation)."""
    path = os.path.join(folder, "cameras_sphere.npz")
    with open_cameras_npz(path) as cams:
        names = [os.path.basename(p) for p in list_images(os.path.join(folder, "image"), "images")]
        intrinsics, c2w = [], []
        for i in range(len(names)):
            # finite, and a camera the loader takes (non-singular, positive focal lengths): the alignment's SVD
            # and the error ratios need that
            k, pose = world_mat_camera(npz_matrix(cams, f"world_mat_{i}", path), path, f"world_mat_{i}")
            intrinsics.append(k)
            c2w.append(pose)
        # the errors are in units of its radius: a singular or sheared one would make them inf or meaningless
        scale_mat = npz_matrix(cams, "scale_mat_0", path)
        check_scale_mat(scale_mat, path, "scale_mat_0")
    return names, np.stack(intrinsics), np.stack(c2w), scale_mat


def read_view_sources(info_path, count):
    """The source image names (basenames) of the `count` views that posing.json at info_path records."""
    size = os.path.getsize(info_path)
    if size > MAX_POSING_RECORD_BYTES:  # read whole below: a huge file would run out of memory
        raise DatasetError(f"{info_path}: {size} bytes, too large for a posing record (at most "
                           f"{MAX_POSING_RECORD_BYTES} bytes)")
    try:
        with open(info_path, "rb") as f:
            info = json.loads(f.read().decode("utf-8"))
    except OSError as e:
        raise DatasetError(f"{info_path}: unreadable posing record ({e.strerror})") from None
    except (ValueError, RecursionError) as e:  # not JSON, not UTF-8, nested too deep
        raise DatasetError(f"{info_path}: unreadable posing record ({error_line(e)})") from None
    views = info.get("views") if isinstance(info, dict) else None
    if not isinstance(views, list):
        what = describe(views) if isinstance(info, dict) else describe(info)
        raise DatasetError(f"{info_path}: {'views' if isinstance(info, dict) else 'the file'} is {what}, expected "
                           f"{'a list of views' if isinstance(info, dict) else 'an object with a list of views'}")
    if len(views) != count:
        raise DatasetError(f"{info_path}: {len(views)} views for {count} images in the posed folder")
    for i, view in enumerate(views):
        source = view.get("source") if isinstance(view, dict) else None
        if not isinstance(source, str):
            raise DatasetError(f"{info_path}: views[{i}].source is {describe(source)}, expected an image name")
    return [os.path.basename(view["source"]) for view in views]


def check_centres_spread(c2w, folder):
    """The camera centres of c2w [V, 4, 4] span a plane at least: the similarity alignment is undefined for
    centres on one line or at one point."""
    centres = c2w[:, :3, 3]
    spread = np.linalg.svd(centres - centres.mean(0), compute_uv=False)
    if len(spread) < 2 or not spread[1] > 1e-9 * spread[0]:
        raise DatasetError(f"{folder}: the {len(centres)} camera centres are on one line or at one point; they "
                           f"cannot be aligned with the reference cameras")


def compare_poses(posed_dir, reference_dir):
    """A dict of the errors of posed_dir's cameras against reference_dir's (see the module docstring):
    registered / total views, rotation_deg and centre_error_pct (of the reference's scale_mat radius) as
    median and max, focal_error_pct (fx, fy), principal_point_error_px (x, y) as medians over the views,
    roi_centre_offset_pct and roi_radius_ratio (posed sphere vs reference sphere)."""
    ref_names, ref_k, ref_c2w, ref_scale = read_neus_cameras(reference_dir)
    names, k, c2w, scale = read_neus_cameras(posed_dir)
    info_path = os.path.join(posed_dir, "posing.json")
    if os.path.isfile(info_path):
        sources = read_view_sources(info_path, len(names))
    elif len(names) == len(ref_names):
        sources = ref_names
    else:
        raise DatasetError(f"{posed_dir}: {len(names)} views for {len(ref_names)} reference views and no posing.json "
                           f"to match them by name")
    index = {n: i for i, n in enumerate(ref_names)}
    missing = [s for s in sources if s not in index]
    if missing:
        raise DatasetError(f"{posed_dir}: view {missing[0]} is not an image of {reference_dir}")
    ref = np.array([index[s] for s in sources])
    check_centres_spread(c2w, posed_dir)
    check_centres_spread(ref_c2w[ref], reference_dir)
    radius = similarity_scale(ref_scale)
    errors = pose_errors(c2w, ref_c2w[ref], radius)
    # the posed sphere in the reference frame, through the same similarity
    s, rotation, translation = errors["similarity"]
    roi_centre = s * rotation @ scale[:3, 3] + translation
    return {
        "registered": len(sources), "total": len(ref_names),
        "rotation_deg": {"median": float(np.median(errors["rotation_deg"])),
                         "max": float(errors["rotation_deg"].max())},
        "centre_error_pct": {"median": float(100 * np.median(errors["centre_error_rel"])),
                             "max": float(100 * errors["centre_error_rel"].max())},
        "focal_error_pct": [float(100 * np.median(k[:, a, a] / ref_k[ref, a, a] - 1)) for a in (0, 1)],
        "principal_point_error_px": [float(np.median(k[:, a, 2] - ref_k[ref, a, 2])) for a in (0, 1)],
        "roi_centre_offset_pct": float(100 * np.linalg.norm(roi_centre - ref_scale[:3, 3]) / radius),
        "roi_radius_ratio": float(s * similarity_scale(scale) / radius),
    }


def format_comparison(result):
    """The comparison dict as a few readable lines."""
    r, c = result["rotation_deg"], result["centre_error_pct"]
    f, p = result["focal_error_pct"], result["principal_point_error_px"]
    return "\n".join([
        f"registered {result['registered']} of {result['total']} views",
        f"rotation error: median {r['median']:.3f} deg, max {r['max']:.3f} deg",
        f"camera centre error: median {c['median']:.3f} %, max {c['max']:.3f} % of the reference radius",
        f"focal length error: fx {f[0]:+.2f} %, fy {f[1]:+.2f} %",
        f"principal point error: x {p[0]:+.2f} px, y {p[1]:+.2f} px",
        f"region of interest: centre {result['roi_centre_offset_pct']:.1f} % of the reference radius away, "
        f"radius x {result['roi_radius_ratio']:.3f}",
    ])
