"""Files of a synthetic scene: image/ and mask/ PNGs, NeuS/IDR cameras_sphere.npz, instant-ngp transforms.json."""
import json
import os

import numpy as np

from ..files import save_png
from .cameras import c2w_opengl, world_mat


def write_views(shape, cams, K, width, height, albedo_fn, background, out_dir, sub="", backdrop_fn=None):
    """Render `shape` (AnalyticShape or MeshShape) from each camera (R [3, 3], t [3]) in `cams`, K [3, 3], over a
    'black' or 'white' background, or over a backdrop (`background` 'room' or 'table': backdrop_fn(K, R, t, width,
    height) -> [H * W, 3], see backdrop.py) and write out_dir/sub/image/NNNNNN.png and mask/NNN.png; returns the
    fraction of each view the mask covers."""
    img_dir = os.path.join(out_dir, sub, "image")
    mask_dir = os.path.join(out_dir, sub, "mask")
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(mask_dir, exist_ok=True)
    bg = np.array([1.0, 1.0, 1.0] if background == "white" else [0.0, 0.0, 0.0])
    plain = background in ("black", "white")
    coverage = []
    for i, (R, t) in enumerate(cams):
        mask, rgb, hit = shape.render(K, R, t, width, height, albedo_fn)
        image = np.tile(bg, (width * height, 1)) if plain else backdrop_fn(K, R, t, width, height)
        image[hit] = rgb
        image8 = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
        image8 = image8.reshape(height, width, 3)
        save_png(os.path.join(img_dir, f"{i:06d}.png"), image8)
        save_png(os.path.join(mask_dir, f"{i:03d}.png"), mask.astype(np.uint8) * 255)
        coverage.append(float(mask.mean()))
    return coverage


def write_neus_cameras(path, cams, K, scale_mat):
    """cameras_sphere.npz: world_mat_i of each camera (R [3, 3], t [3]) in `cams` with K [3, 3], and the same
    scale_mat [4, 4] (unit sphere -> world) for every view."""
    arrays = {}
    for i, (R, t) in enumerate(cams):
        arrays[f"world_mat_{i}"] = world_mat(K, R, t)
        arrays[f"scale_mat_{i}"] = scale_mat
    np.savez(path, **arrays)


def write_transforms(path, cams, K, width, height, centre, scale_radius):
    """instant-ngp transforms.json of the cameras (R [3, 3], t [3]) in `cams` with K [3, 3] (pixel centres moved
    to +0.5; image paths relative to the file's folder), plus the world sphere (centre [3], scale_radius) that
    encloses the object."""
    frames = []
    for i, (R, t) in enumerate(cams):
        frames.append({
            "file_path": os.path.join("image", f"{i:06d}.png"),
            "mask_path": os.path.join("mask", f"{i:03d}.png"),
            "transform_matrix": c2w_opengl(R, t).tolist(),
        })
    meta = {
        "camera_model": "OPENCV",
        "fl_x": K[0, 0], "fl_y": K[1, 1],
        # instant-ngp puts pixel centres at +0.5
        "cx": K[0, 2] + 0.5, "cy": K[1, 2] + 0.5,
        "w": width, "h": height,
        "camera_angle_x": 2 * np.arctan(width / (2 * K[0, 0])),
        "camera_angle_y": 2 * np.arctan(height / (2 * K[1, 1])),
        "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0,
        # not an instant-ngp key: the world sphere enclosing the object (mm); same as scale_mat in
        # cameras_sphere.npz
        "sphere_center": list(map(float, centre)),
        "sphere_radius": float(scale_radius),
        "world_units": "mm",
        "frames": frames,
    }
    with open(path, "w") as f:
        json.dump(meta, f, indent=1)
