"""make_scene: a ground-truth synthetic scene rendered and written to a folder (conventions in __init__.py)."""
import json
import os
import shutil
import time
from contextlib import contextmanager

import numpy as np

from ..cli import check_output_file
from ..files import outermost_missing
from ..input_checks import DatasetError, check_file
from ..mesh_metrics import THIN_MESH_FILE
from .analytic import UNIT_SHAPES, AnalyticShape
from .backdrop import KINDS as BACKDROPS
from .backdrop import backdrop_colors
from .appearance import AMBIENT, LIGHT_DIR_WORLD, make_procedural_texture, procedural_albedo
from .cameras import DISTANCE_RANGE, ELEVATION_RANGE_DEG, GOLDEN_ANGLE, make_cameras, make_intrinsics
from .geometry import normalize
from .mesh_shape import MeshShape, resolve_mesh_path
from .writers import write_neus_cameras, write_transforms, write_views

# The unit sphere of the normalised space must enclose the object with room to spare (NeuS samples the background
# outside it), but not so much that the object occupies a small part of it.
SCALE_MAT_MARGIN = 1.15
ANALYTIC_SHAPES = tuple(UNIT_SHAPES)
SHAPES = ANALYTIC_SHAPES + ("spot", "bunny")
FORMATS = ("neus", "transforms")
CONVENTIONS = {
    "camera_axes": "OpenCV: x right, y down, z forward",
    "world_up": "+z",
    "pixel_centres": "integer (u col, v row); ray = K^-1 [u, v, 1]",
    "world_mat": "K4 @ W2C (4x4), world mm -> pixels",
    "scale_mat": "diag(r, r, r, 1) + translation centre: unit sphere -> world",
    "transforms_json": "instant-ngp: cx, cy = OpenCV + 0.5; transform_matrix = C2W in OpenGL axes",
}


# 'room' and 'table': a floor and a dome around the object (backdrop.py), for unmasked training (--no_masks).
BACKGROUNDS = ("black", "white") + BACKDROPS


def check_formats(formats, background):
    """The formats as a tuple (a comma list is split); DatasetError naming the flag for none, an unknown format or
    an unknown background."""
    if isinstance(formats, str):
        formats = tuple(f for f in formats.split(",") if f)
    unknown = set(formats) - set(FORMATS)
    if unknown or not formats:
        raise DatasetError(f"--formats: {', '.join(sorted(unknown)) or 'none'} given, expected a comma list of "
                           f"{', '.join(FORMATS)}")
    if background not in BACKGROUNDS:
        raise DatasetError(f"--background: {background}, expected one of {', '.join(BACKGROUNDS)}")
    return formats


def place_object(shape, radius_mm, texture, rng):
    """The object (AnalyticShape or MeshShape) of bounding radius radius_mm and the parameters of its procedural
    texture; the object centre is near, but deliberately not at, the world origin (5-15% of the radius), so a
    loader that ignores scale_mat's translation shows."""
    offset_dir = normalize(rng.normal(size=3))
    offset = offset_dir * radius_mm * rng.uniform(0.05, 0.15)
    texture_params = make_procedural_texture(rng)
    if shape in ANALYTIC_SHAPES:
        return AnalyticShape(shape, radius_mm, offset, rng), texture_params
    return MeshShape(resolve_mesh_path(shape), radius_mm, offset, texture), texture_params


def write_cameras(out_dir, subsets, formats, K, width, height, centre, scale_radius):
    """Camera files of each (sub-folder, cameras) in `subsets` in the chosen formats; K [3, 3]; the unit sphere is
    placed on the world sphere (centre [3], scale_radius)."""
    scale_mat = np.diag([scale_radius, scale_radius, scale_radius, 1.0])
    scale_mat[:3, 3] = centre
    for sub, cams in subsets:
        if "neus" in formats:
            write_neus_cameras(os.path.join(out_dir, sub, "cameras_sphere.npz"), cams, K, scale_mat)
        if "transforms" in formats:
            write_transforms(os.path.join(out_dir, sub, "transforms.json"), cams, K, width, height, centre,
                             scale_radius)


def textured_by(obj):
    """How the object is coloured, for scene.json."""
    if isinstance(obj, AnalyticShape):
        return obj.spec.albedo_name or "procedural_3d"
    return "procedural_3d" if obj.texture is None else "uv_texture"


def write_gt_meshes(out_dir, obj, gt_resolution):
    """gt_mesh.ply and, for a shape with a thin part, gt_thin.ply (the gt mesh's faces on the thin part); returns
    scene.json's "gt_mesh" and "thin_part" entries."""
    gt = obj.gt_mesh(gt_resolution)
    gt.export(os.path.join(out_dir, "gt_mesh.ply"))
    analytic = isinstance(obj, AnalyticShape)
    gt_info = {"vertices": int(len(gt.vertices)), "faces": int(len(gt.faces)),
               "marching_cubes_resolution": max(gt_resolution, obj.gt_resolution_floor()) if analytic else None}
    if analytic and obj.spec.gt_cell is not None:
        gt_info["marching_cubes_resolution_floor"] = obj.gt_resolution_floor()
    thin, thin_info = obj.thin_mesh(gt) if analytic else (None, None)
    thin_path = os.path.join(out_dir, THIN_MESH_FILE)
    if thin is not None:
        thin.export(thin_path)
        thin_info.update(file=THIN_MESH_FILE, faces=int(len(thin.faces)), area_mm2=float(thin.area),
                         area_fraction=float(thin.area / gt.area))
    elif os.path.isfile(thin_path):
        os.remove(thin_path)  # left by an earlier scene in this folder: eval_mesh.py would score it
    return gt_info, thin_info


def describe_setup(shape, obj, subsets, K, width, height, seed, background, formats):
    """The first part of scene.json: what was placed where, seen by which cameras, lit how."""
    analytic = isinstance(obj, AnalyticShape)
    return {
        "shape": shape if shape in SHAPES else os.path.abspath(shape),
        "shape_kind": "analytic" if analytic else "mesh",
        "views": len(subsets[0][1]),
        "holdout_views": len(subsets[1][1]) if len(subsets) > 1 else 0,
        "width": width, "height": height,
        "world_units": "mm",
        "object_radius": float(obj.radius),
        "object_centre": list(map(float, obj.centre)),
        "scale_mat_radius": float(SCALE_MAT_MARGIN * obj.radius),
        "K": K.tolist(),
        "seed": seed,
        "background": background,
        "formats": list(formats),
        "textured_by": textured_by(obj),
        "light_dir_world": list(map(float, normalize(LIGHT_DIR_WORLD))),
        "ambient": AMBIENT,
        "elevation_deg": list(ELEVATION_RANGE_DEG),
        "distance_in_radii": list(DISTANCE_RANGE),
    }


@contextmanager
def removed_on_failure(out_dir):
    """Create out_dir (and missing folders above it) for the block; if the block fails, remove what was created,
    so that a failed run leaves no half-written scene behind (a folder that was already there is kept)."""
    first_missing = outermost_missing(os.path.abspath(out_dir))
    os.makedirs(out_dir, exist_ok=True)
    try:
        yield
    except BaseException:
        if first_missing is not None:
            shutil.rmtree(first_missing, ignore_errors=True)
        raise


def make_scene(out_dir, shape="sphere", views=32, width=400, height=300, radius_mm=200.0,
               formats=("neus", "transforms"), seed=0, background="black", holdout_jitter=False, gt_resolution=256,
               texture=None, verbose=False):
    """Render a synthetic scene into out_dir; returns the scene.json dict.

    shape: 'sphere' | 'torus' | 'blob' | 'blade' | 'wire' | 'relief' | 'checker' (analytic SDFs, sphere traced) or
    'spot' | 'bunny' | path to an OBJ (rasterised). formats: any of 'neus', 'transforms'. gt_resolution:
    marching-cubes grid for analytic shapes, raised where a shape's finest feature needs it (blade, wire, relief).
    holdout_jitter: also render views//4 (at least 2) extra cameras placed between the training ones (azimuth
    offset by half a golden angle, own random jitter) into out_dir/holdout/ in the same formats, for novel-view
    evaluation on poses never trained on. texture: texture image for an OBJ with UVs. Raises DatasetError naming
    the flag or file for a bad argument, before anything is written.
    """
    # an OUT that cannot hold files is refused before the rendering
    check_output_file(os.path.join(out_dir, "scene.json"), "OUT")
    formats = check_formats(formats, background)
    if texture is not None:
        check_file(texture, "a --texture image")
    t_start = time.time()
    rng = np.random.default_rng(seed)
    obj, texture_params = place_object(shape, radius_mm, texture, rng)
    centre, radius = obj.centre, obj.radius
    K = make_intrinsics(width, height)
    subsets = [("", make_cameras(views, centre, radius, rng))]
    if holdout_jitter:
        hold_rng = np.random.default_rng([seed, 1])
        hold_cams = make_cameras(max(2, views // 4), centre, radius, hold_rng, azimuth_offset=0.5 * GOLDEN_ANGLE)
        subsets.append(("holdout", hold_cams))

    # a shape's own albedo (the checker's) replaces the procedural texture
    shape_albedo = obj.albedo_fn() if isinstance(obj, AnalyticShape) else None

    def albedo_fn(points):
        if shape_albedo is not None:
            return shape_albedo(points)
        return procedural_albedo(points, centre, radius, texture_params)

    with removed_on_failure(out_dir):
        t_render = time.time()
        room_texture = make_procedural_texture(np.random.default_rng([seed, 2]))

        def backdrop_fn(K, R, t, width, height):
            return backdrop_colors(K, R, t, width, height, centre, radius, room_texture, kind=background)

        coverage = [write_views(obj, cams, K, width, height, albedo_fn, background, out_dir, sub, backdrop_fn)
                    for sub, cams in subsets]
        render_seconds = time.time() - t_render
        write_cameras(out_dir, subsets, formats, K, width, height, centre, SCALE_MAT_MARGIN * radius)

        t_mesh = time.time()
        gt_info, thin_info = write_gt_meshes(out_dir, obj, gt_resolution)
        mesh_seconds = time.time() - t_mesh

        info = describe_setup(shape, obj, subsets, K, width, height, seed, background, formats)
        info["mask_coverage_mean"] = float(np.mean(coverage[0]))  # of the training views
        info["gt_mesh"] = gt_info
        # the thin part's surface (gt_thin.ply) for nerf.mesh_metrics' thin_recall; null for shapes without one
        info["thin_part"] = thin_info
        info["conventions"] = dict(CONVENTIONS)
        info["timings_s"] = {"render": round(render_seconds, 3), "gt_mesh": round(mesh_seconds, 3),
                             "total": round(time.time() - t_start, 3)}
        with open(os.path.join(out_dir, "scene.json"), "w") as f:
            json.dump(info, f, indent=1)
        if verbose:
            print(f"{out_dir}: {shape}, {views} views {width}x{height}, render {render_seconds:.1f}s, gt mesh "
                  f"{mesh_seconds:.1f}s, coverage {np.mean(coverage[0]):.2f}")
    return info
