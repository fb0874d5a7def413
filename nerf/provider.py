"""Posed images in, rays out.

Reads a scene folder in one of three formats, checks it, and puts every camera into a *normalised space* in
which the object lies inside the unit sphere:

* NeuS / IDR: `image/*.png`, optional `mask/*.png`, `cameras_sphere.npz` with `world_mat_i` (K[R|t] padded to
  4x4, world -> pixel) and `scale_mat_i` (normalised space -> world). P = world_mat @ scale_mat is decomposed
  into K and a camera-to-world pose; `scale_mat` maps results back to the input's world frame.
* NeRF-synthetic: `transforms_{train,val,test}.json` (`camera_angle_x`, RGBA images whose alpha is the mask).
* instant-ngp / nerfstudio: `transforms.json` (`fl_x fl_y cx cy w h`, per-frame `file_path` and
  `transform_matrix`; optional lens: `camera_model` (LENS_MODELS) or instant-ngp's `is_fisheye`, with OpenCV's
  `k1 k2 p1 p2 k3` (`k4 k5 k6`: FULL_OPENCV) or the fisheye `k1..k4`); images and masks are undistorted on load
  onto the widest pinhole view whose every pixel has a source (`camera_geometry.lens_undistortion`).

The two transforms formats have no normalisation of their own; `camera_geometry.normalise_cameras` derives one.
Values are checked by `input_checks.py`, images read by `images.py`, camera geometry checked by
`camera_geometry.py`.
Conventions: OpenCV camera axes (x right, y down, z forward); integer pixel coordinates are pixel centres, so
pixel (u, v) is the ray through K^-1 [u, v, 1]. Every problem with the input raises `DatasetError` with one
line naming the file.
"""
import json
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from .camera_geometry import (FISHEYE_COEFFICIENTS, OPENCV_COEFFICIENTS, check_camera_geometry, check_scale_mat,
                              check_sphere, lens_undistortion, normalise_cameras, npz_matrix, open_cameras_npz,
                              opengl_to_opencv, projection_camera, renormalise, similarity_scale, sphere_similarity,
                              unit_projection)
from .images import binary_mask, downscale_images, list_images, read_all, read_image, read_mask, stack_images
from .input_checks import (DatasetError, check_file, check_folder, check_rigid, describe, field_of_view,
                           matrix, number, short_repr)


@dataclass
class Views:
    """A set of posed images in normalised space (all tensors on one device)."""

    images: torch.Tensor  # [V, H, W, 3] uint8, RGB
    masks: Optional[torch.Tensor]  # [V, H, W] uint8 in {0..255} (object = 255), or None
    intrinsics: torch.Tensor  # [V, 3, 3] float32, pixel centres at integer coordinates
    c2w: torch.Tensor  # [V, 4, 4] float32, camera-to-normalised-world, OpenCV axes
    names: list

    def __len__(self):
        return self.images.shape[0]

    @property
    def height(self):
        return self.images.shape[1]

    @property
    def width(self):
        return self.images.shape[2]


@dataclass
class Scene:
    train: Views
    test: Views  # held out: never used for training
    to_world: np.ndarray  # [4, 4] similarity: normalised space -> the input's world frame
    format: str
    root: str
    downscale: int  # the factor the images were loaded at (resolved when load_scene was asked for 0)
    # [T, H, W] uint8: the held-out views' masks when training ignores the scene's masks (use_masks off), kept only
    # to score the test renders on the object and on the backdrop apart; None otherwise
    test_score_masks: Optional[torch.Tensor] = None

    @property
    def world_scale(self) -> float:
        """World units per normalised unit (lengths such as depth scale by this)."""
        return similarity_scale(self.to_world)


# ----------------------------------------------------------------------------------------------------------
# Rays


def pixel_rays(intrinsics, c2w, u, v):
    """Rays through pixel centres.

    Args:
        intrinsics: [B, 3, 3] camera matrices.
        c2w: [B, 4, 4] camera-to-world poses (OpenCV axes).
        u, v: [B] pixel column / row (float; integers are pixel centres).
    Returns:
        rays_o [B, 3], rays_d [B, 3] (unit length).
    """
    fx, fy = intrinsics[:, 0, 0], intrinsics[:, 1, 1]
    cx, cy, skew = intrinsics[:, 0, 2], intrinsics[:, 1, 2], intrinsics[:, 0, 1]
    y = (v - cy) / fy
    x = (u - cx - skew * y) / fx
    dirs_cam = torch.stack([x, y, torch.ones_like(x)], dim=-1)  # [B, 3]
    rays_d = torch.einsum("bij,bj->bi", c2w[:, :3, :3], dirs_cam)
    rays_d = rays_d / rays_d.norm(dim=-1, keepdim=True)
    rays_o = c2w[:, :3, 3].expand_as(rays_d)
    return rays_o, rays_d


def camera_rays(c2w, intrinsics, width, height):
    """All pixel rays of one camera: c2w [4, 4], intrinsics [3, 3] (tensors, one device) -> rays_o, rays_d
    [height * width, 3], row by row."""
    device = c2w.device
    rows, cols = torch.meshgrid(torch.arange(height, device=device, dtype=torch.float32),
                                torch.arange(width, device=device, dtype=torch.float32), indexing="ij")
    n = height * width
    return pixel_rays(intrinsics.expand(n, 3, 3), c2w.expand(n, 4, 4), cols.reshape(-1), rows.reshape(-1))


def sample_rays(views: Views, num_rays: int, generator: torch.Generator):
    """A training batch: `num_rays` pixels drawn uniformly from all views.

    Returns a dict with rays_o [R, 3], rays_d [R, 3], rgb [R, 3] float in [0, 1], mask [R] float or None.
    """
    return pixel_batch(views, *uniform_pixels(views, num_rays, generator))


def uniform_pixels(views: Views, count: int, generator: torch.Generator):
    """`count` pixels drawn uniformly from all views -> view [count], row [count], col [count] int64 indices."""
    device = views.images.device
    shape = (count,)
    view = torch.randint(0, len(views), shape, generator=generator, device=device)
    row = torch.randint(0, views.height, shape, generator=generator, device=device)
    col = torch.randint(0, views.width, shape, generator=generator, device=device)
    return view, row, col


def pixel_batch(views: Views, view, row, col):
    """The training batch of the pixels (view [R], row [R], col [R]: int64 indices) -> rays_o [R, 3],
    rays_d [R, 3], rgb [R, 3] float in [0, 1], mask [R] float or None (as `sample_rays`)."""
    rays_o, rays_d = pixel_rays(views.intrinsics[view], views.c2w[view], col.float(), row.float())
    rgb = views.images[view, row, col].float() / 255
    mask = None if views.masks is None else views.masks[view, row, col].float() / 255
    return {"rays_o": rays_o, "rays_d": rays_d, "rgb": rgb, "mask": mask}


def image_rays(views: Views, index: int, downscale: int = 1):
    """All rays of view `index`, optionally on a grid `downscale` times coarser (for quick validation).

    Returns rays_o, rays_d [H', W', 3], rgb [H', W', 3] float, mask [H', W'] float or None.
    """
    device = views.images.device
    rows = torch.arange(0, views.height, downscale, device=device)
    cols = torch.arange(0, views.width, downscale, device=device)
    row, col = torch.meshgrid(rows, cols, indexing="ij")
    n = row.numel()
    k = views.intrinsics[index].expand(n, 3, 3)
    pose = views.c2w[index].expand(n, 4, 4)
    rays_o, rays_d = pixel_rays(k, pose, col.reshape(-1).float(), row.reshape(-1).float())
    h, w = row.shape
    rgb = views.images[index][row, col].float() / 255
    mask = None if views.masks is None else views.masks[index][row, col].float() / 255
    return {"rays_o": rays_o.reshape(h, w, 3), "rays_d": rays_d.reshape(h, w, 3), "rgb": rgb, "mask": mask}


# ----------------------------------------------------------------------------------------------------------
# Loading


CAMERA_FILES = ("cameras_sphere.npz", "transforms_train.json", "transforms.json")  # NeuS, NeRF-synthetic, ngp


def has_cameras_file(root):
    """Whether `root` holds one of CAMERA_FILES; a dangling link counts (the loader then says what it is)."""
    return any(os.path.lexists(os.path.join(root, name)) for name in CAMERA_FILES)


# Huge (finite) numbers in a file overflow in the checks' arithmetic: no NumPy warnings, the checks refuse the
# non-finite results instead.
@np.errstate(all="ignore")
def load_scene(root: str, holdout: int = 8, downscale: int = 1, use_masks: bool = True, roi=None,
               device="cpu", max_side: Optional[int] = None) -> Scene:
    """Load and check a scene folder, auto-detecting its format; views whose index is a multiple of `holdout`
    are held out for testing (NeRF-synthetic uses its own test split instead). `downscale` 0 picks the smallest
    factor that brings the images' longer side to at most `max_side` (`auto_downscale`). Without `use_masks` the
    scene's masks (and alpha channels) are dropped after loading, as if it had none. `roi` = (centre [3],
    radius) in world units replaces the region of interest (the unit sphere) that the format gives or that is
    derived (`normalise_cameras`)."""
    if not os.path.isdir(root):
        raise DatasetError(f"{root}: not a folder")
    if not has_cameras_file(root):
        raise DatasetError(f"{root}: no cameras file (expected {', '.join(CAMERA_FILES)})")
    if os.path.lexists(os.path.join(root, "cameras_sphere.npz")):
        fmt, loaded = "neus", _load_neus(root)
    elif os.path.lexists(os.path.join(root, "transforms_train.json")):
        fmt, loaded = "nerf-synthetic", _load_nerf_synthetic(root)
    else:
        fmt, loaded = "instant-ngp", _load_instant_ngp(root)
    images, masks, intrinsics, c2w, names, sources, to_world, split = loaded
    normalised = fmt == "neus"

    if split is None:
        split = np.array([holdout > 0 and i % holdout == 0 for i in range(len(images))])
    if split.all():
        raise DatasetError(f"{root}: every view is held out (holdout={holdout}, {len(images)} views); use more views "
                           f"or --holdout 0")
    # NeuS poses are already normalised (the object is the unit sphere); the transforms formats are in world
    # units, and the check finds the point the cameras look at, from which the normalisation is derived.
    centre = check_camera_geometry(intrinsics, c2w, images.shape[1:3], sources, root, train=~split,
                                   unit_sphere=normalised)
    # Poses in the normalised space of `to_world`: NeuS's come so; the others are in world units (identity).
    given = to_world if normalised else np.eye(4)
    # a region of interest not checked against the cameras yet: the flags', or a transforms file's aabb
    region = None if normalised or to_world is None else f"{sources[0][0]}: the sphere around aabb"
    if roi is not None:
        to_world = sphere_similarity(np.asarray(roi[0], float), float(roi[1]))
        region = "--radius: the region of interest (--center, --radius)"
    elif to_world is None:
        to_world = normalise_cameras(images, masks if use_masks else None, intrinsics, c2w, root, centre=centre)
        derived = f"{root}: the region of interest derived from the cameras has"  # in the cameras' world units
        check_sphere(to_world[:3, 3], similarity_scale(to_world), f"{derived} centre", f"{derived} radius")
    c2w = renormalise(c2w, given, to_world)
    inside = np.linalg.norm(c2w[:, :3, 3], axis=1) <= 1.0
    if region is not None and inside.any():
        file, label = sources[int(np.argmax(inside))]
        raise DatasetError(f"{region} holds the camera of {label} of {file} (a camera must be outside it)")

    if downscale == 0:
        downscale = auto_downscale(images.shape[1:3], max_side)
    if downscale > 1:
        if min(images.shape[1:3]) < downscale:
            raise DatasetError(f"--downscale: {downscale} leaves no pixel of the {images.shape[2]}x{images.shape[1]} "
                               f"images of {root}")
        images, masks, intrinsics = downscale_images(images, masks, intrinsics, downscale)
    # Without use_masks training never sees the masks; the held-out views' are kept, only to score the renders.
    score_masks, masks = (None, masks) if use_masks else (masks, None)

    def views(selected):
        idx = np.nonzero(selected)[0]
        return Views(
            images=torch.from_numpy(images[idx]).to(device),
            masks=None if masks is None else torch.from_numpy(masks[idx]).to(device),
            intrinsics=torch.from_numpy(intrinsics[idx]).float().to(device),
            c2w=torch.from_numpy(c2w[idx]).float().to(device),
            names=[names[i] for i in idx],
        )

    test_score_masks = None if score_masks is None else torch.from_numpy(score_masks[split]).to(device)
    return Scene(train=views(~split), test=views(split), to_world=to_world, format=fmt, root=root,
                 downscale=downscale, test_score_masks=test_score_masks)


def auto_downscale(size, max_side: int) -> int:
    """The smallest integer factor that brings an image of size (H, W) to a longer side of at most `max_side`."""
    return max(1, -(-max(size) // max_side))


# ----------------------------------------------------------------------------------------------------------
# NeuS / IDR


def _load_neus(root):
    path = os.path.join(root, "cameras_sphere.npz")
    cams = open_cameras_npz(path)
    keys = set(cams.files)
    try:
        image_dir = os.path.join(root, "image")
        check_folder(image_dir, "the image folder")
        image_paths = list_images(image_dir, "images")
        num_views = len(image_paths)
        num_cams = len([k for k in keys if k.startswith("world_mat_") and not k.startswith("world_mat_inv")])
        if num_cams != num_views:
            raise DatasetError(f"{path}: {num_cams} cameras (world_mat_i) for {num_views} images in {image_dir}")
        intrinsics, c2w = [], []
        scale_mat_0 = None
        for i in range(num_views):
            world_mat = unit_projection(npz_matrix(cams, f"world_mat_{i}", path)[:3])
            scale_mat = npz_matrix(cams, f"scale_mat_{i}", path)
            check_scale_mat(scale_mat, path, f"scale_mat_{i}")
            if scale_mat_0 is None:
                scale_mat_0 = scale_mat
            elif np.abs(scale_mat - scale_mat_0).max() > 1e-5 * np.abs(scale_mat_0).max():
                raise DatasetError(f"{path}: scale_mat_{i} differs from scale_mat_0 (every view must share one "
                                   f"normalisation)")
            # (scale_mat is a similarity: the product's 3x3 part has full rank exactly when world_mat's has)
            k, pose = projection_camera(world_mat @ scale_mat, path, f"world_mat_{i}")
            intrinsics.append(k)
            c2w.append(pose)
    finally:
        cams.close()
    images, masks = stack_images(image_paths)
    mask_dir = os.path.join(root, "mask")
    if os.path.lexists(mask_dir):  # optional; but a file or a dangling link there is a mistake, not "no masks"
        check_folder(mask_dir, "the mask folder")
        mask_paths = list_images(mask_dir, "masks")
        if len(mask_paths) != num_views:
            raise DatasetError(f"{mask_dir}: {len(mask_paths)} masks for {num_views} images")
        masks = np.stack(read_all(lambda p: read_mask(p, images.shape[1:3]), mask_paths))
    names = [os.path.splitext(os.path.basename(p))[0] for p in image_paths]
    sources = [(path, f"world_mat_{i}") for i in range(num_views)]
    return images, masks, np.stack(intrinsics), np.stack(c2w), names, sources, scale_mat_0, None


# ----------------------------------------------------------------------------------------------------------
# The transforms formats (JSON)


def _read_json(path):
    """The top-level object of a JSON file."""
    check_file(path, "a JSON file")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DatasetError(f"{path}: unreadable ({e.strerror})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})") from None
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError, as is a 5000-digit integer
        raise DatasetError(f"{path}: unreadable JSON ({' '.join(str(e).split())})") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: the top level is {describe(meta)}, expected an object ({{...}})")
    return meta


def _frames(meta, path):
    """meta["frames"]: a non-empty list of objects."""
    frames = meta.get("frames")
    if "frames" not in meta or (isinstance(frames, list) and not frames):
        raise DatasetError(f"{path}: no frames")
    if not isinstance(frames, list):
        raise DatasetError(f"{path}: frames is {describe(frames)}, expected a list of frames")
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict):
            raise DatasetError(f"{path}: frame {i} is {describe(frame)}, expected an object")
    return frames


def _frame_pose(frame, path, i):
    if "transform_matrix" not in frame:
        raise DatasetError(f"{path}: frame {i} has no transform_matrix")
    m = matrix(frame["transform_matrix"], path, f"frame {i} transform_matrix")
    check_rigid(m, path, f"frame {i} transform_matrix")
    return m


def _frame_file(root, frame, key, path, i):
    value = frame[key]
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"{path}: frame {i} {key} is {describe(value)}, expected a file name")
    return os.path.normpath(os.path.join(root, value))


def _frame_image_path(root, frame, path, i):
    if "file_path" not in frame:
        raise DatasetError(f"{path}: frame {i} has no file_path")
    p = _frame_file(root, frame, "file_path", path, i)
    if not os.path.splitext(p)[1]:  # NeRF-synthetic omits the extension
        p += ".png"
    return p


def _load_nerf_synthetic(root):
    images, masks, intrinsics, c2w, names, sources, split = [], [], [], [], [], [], []
    # The test split is held out, else the val split; with neither, every --holdout-th training view is.
    held_out_split = next((name for name in ("test", "val")
                           if os.path.lexists(os.path.join(root, f"transforms_{name}.json"))), None)
    splits = [("train", False)] + ([(held_out_split, True)] if held_out_split else [])
    for split_name, held_out in splits:
        path = os.path.join(root, f"transforms_{split_name}.json")
        meta = _read_json(path)
        if "camera_angle_x" not in meta or "frames" not in meta:
            raise DatasetError(f"{path}: needs camera_angle_x and frames")
        frames = _frames(meta, path)
        angle = field_of_view(meta["camera_angle_x"], path, "camera_angle_x")
        poses = [_frame_pose(f, path, i) for i, f in enumerate(frames)]
        paths = [_frame_image_path(root, f, path, i) for i, f in enumerate(frames)]
        rgb, alpha = stack_images(paths)
        h, w = rgb.shape[1:3]
        focal = 0.5 * w / np.tan(0.5 * angle)
        k = np.array([[focal, 0, w / 2 - 0.5], [0, focal, h / 2 - 0.5], [0, 0, 1]])  # NeRF centres at +0.5
        images.append(rgb)
        masks.append(alpha)
        intrinsics += [k] * len(paths)
        c2w.append(opengl_to_opencv(np.stack(poses)))
        names += [f"{split_name}_{os.path.splitext(os.path.basename(p))[0]}" for p in paths]
        sources += [(path, f"frame {i}") for i in range(len(paths))]
        split += [held_out] * len(paths)
    if len(images) == 2 and images[0].shape[1:] != images[1].shape[1:]:
        raise DatasetError(f"{root}: train and held-out images differ in size")
    masks = None if any(m is None for m in masks) else np.concatenate(masks)
    return (np.concatenate(images), masks, np.stack(intrinsics), np.concatenate(c2w), names, sources, None,
            np.array(split) if held_out_split else None)


# transforms.json's lens models: nerfstudio's camera_model (COLMAP's model names) -> (fisheye, the distortion
# coefficients it has). Without camera_model, instant-ngp's is_fisheye picks OPENCV_FISHEYE, else OPENCV. (An
# OPENCV k4 is refused: nerfstudio would read it as an r^8 term, which OpenCV's model has not.)
LENS_MODELS = {
    "SIMPLE_PINHOLE": (False, ()),
    "PINHOLE": (False, ()),
    "SIMPLE_RADIAL": (False, ("k1",)),
    "RADIAL": (False, ("k1", "k2")),
    "OPENCV": (False, ("k1", "k2", "p1", "p2", "k3")),
    "FULL_OPENCV": (False, OPENCV_COEFFICIENTS),  # k4..k6: the denominator of OpenCV's rational model
    "OPENCV_FISHEYE": (True, FISHEYE_COEFFICIENTS),
}
# instant-ngp's keys for its other lenses (which it picks by the key's presence, whatever its value)
NGP_OTHER_LENSES = {"ftheta_p0": "f-theta", "latlong": "latitude-longitude", "equirectangular": "equirectangular"}
NGP_NUMBERS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", *OPENCV_COEFFICIENTS)


def _ngp_camera(meta, frame, path, i):
    """Frame i's camera fields (per-frame values override the shared ones), checked; absent ones are left out.
    camera_angle_x counts only without fl_x. Adds "fisheye" and "dist" (`_ngp_lens`)."""
    cam, what = {}, {}
    for key in (*NGP_NUMBERS, "camera_model", "is_fisheye", *NGP_OTHER_LENSES):
        if key not in frame and key not in meta:
            continue
        if key == "camera_angle_x" and "fl_x" in cam:
            continue
        what[key] = f"frame {i} {key}" if key in frame else key
        value = frame[key] if key in frame else meta[key]
        if key in NGP_OTHER_LENSES:
            raise DatasetError(f"{path}: {what[key]}: instant-ngp's {NGP_OTHER_LENSES[key]} lens is not supported")
        if key == "camera_model":
            models = ", ".join(sorted(LENS_MODELS))
            if not isinstance(value, str):
                raise DatasetError(f"{path}: {what[key]} is {describe(value)}, expected a camera model ({models})")
            if value not in LENS_MODELS:  # (nerfstudio's EQUIRECTANGULAR too: training it as a pinhole is wrong)
                raise DatasetError(f"{path}: {what[key]} {short_repr(value)} is not supported ({models})")
            cam[key] = value
        elif key == "is_fisheye":
            if not isinstance(value, bool):
                raise DatasetError(f"{path}: {what[key]} is {describe(value)}, expected true or false")
            cam[key] = value
        elif key == "camera_angle_x":
            cam[key] = field_of_view(value, path, what[key])
        else:
            cam[key] = number(value, path, what[key], positive=key in ("fl_x", "fl_y", "w", "h"),
                              whole=key in ("w", "h"))
    if "fl_x" not in cam and "camera_angle_x" not in cam:
        raise DatasetError(f"{path}: frame {i} has no focal length (fl_x or camera_angle_x)")
    cam["fisheye"], cam["dist"] = _ngp_lens(cam, what, path)
    return cam


def _ngp_lens(cam, what, path):
    """(fisheye, the distortion coefficients [4 or 8] in OpenCV's order) of a frame's checked camera fields (`what`:
    each field's name for a message). A coefficient the lens model does not have is refused rather than dropped,
    and so is an is_fisheye that contradicts camera_model (nerfstudio reads one, instant-ngp the other)."""
    flag = cam.get("is_fisheye")
    model = cam.get("camera_model", "OPENCV_FISHEYE" if flag else "OPENCV")
    fisheye, coefficients = LENS_MODELS[model]
    if "camera_model" in cam and flag is not None and flag != fisheye:
        raise DatasetError(f"{path}: {what['is_fisheye']} is {str(flag).lower()} but {what['camera_model']} is "
                           f"{model}")
    for key in OPENCV_COEFFICIENTS:
        if cam.get(key, 0.0) != 0.0 and key not in coefficients:
            named = f"{what['camera_model']} {model}" if "camera_model" in cam else f"{model} (no camera_model given)"
            raise DatasetError(f"{path}: {what[key]} is {cam[key]:g}, but {named} has no {key} (its coefficients: "
                               f"{' '.join(coefficients) or 'none'})")
    names = FISHEYE_COEFFICIENTS if fisheye else OPENCV_COEFFICIENTS
    return fisheye, np.array([cam.get(n, 0.0) for n in names])


def _load_instant_ngp(root):
    path = os.path.join(root, "transforms.json")
    meta = _read_json(path)
    frames = _frames(meta, path)
    # Everything the file says is checked before any image is read.
    cams = [_ngp_camera(meta, frame, path, i) for i, frame in enumerate(frames)]
    poses = [_frame_pose(frame, path, i) for i, frame in enumerate(frames)]
    image_paths = [_frame_image_path(root, frame, path, i) for i, frame in enumerate(frames)]
    mask_paths = [_frame_file(root, frame, "mask_path", path, i) if "mask_path" in frame else None
                  for i, frame in enumerate(frames)]
    images, alphas, intrinsics, names = [], [], [], []
    for i, (cam, image_path, (rgb, alpha)) in enumerate(zip(cams, image_paths, read_all(read_image, image_paths))):
        h, w = rgb.shape[:2]
        if images and rgb.shape != images[0].shape:
            raise DatasetError(f"{image_path}: image is {w}x{h}, others are {images[0].shape[1]}x{images[0].shape[0]}")
        if cam.get("w", w) != w or cam.get("h", h) != h:
            raise DatasetError(f"{image_path}: image is {w}x{h} but {path} says "
                               f"{cam.get('w', w):g}x{cam.get('h', h):g}")
        if "fl_x" in cam:
            fx = cam["fl_x"]
            fy = cam.get("fl_y", fx)
        else:
            fx = fy = 0.5 * w / np.tan(0.5 * cam["camera_angle_x"])
        # instant-ngp puts pixel centres at +0.5; ours are at integers.
        k = np.array([[fx, 0, cam.get("cx", w / 2) - 0.5], [0, fy, cam.get("cy", h / 2) - 0.5], [0, 0, 1]])
        images.append(rgb)
        alphas.append(alpha)
        intrinsics.append(k)
        names.append(os.path.splitext(os.path.basename(image_path))[0])
    # nerfstudio-style per-frame masks, overriding any alpha channel
    shape = images[0].shape[:2]
    with_mask = [i for i, p in enumerate(mask_paths) if p is not None]
    for i, mask in zip(with_mask, read_all(lambda p: read_mask(p, shape), [mask_paths[i] for i in with_mask])):
        alphas[i] = mask
    masks = None
    if with_mask and any(a is None for a in alphas):  # masks were meant: training on none would be a surprise
        i = next(i for i, a in enumerate(alphas) if a is None)
        raise DatasetError(f"{path}: frame {i} has no mask_path (nor an alpha channel) while frame {with_mask[0]} has "
                           f"one: give every frame a mask, or none")
    _undo_lenses(cams, images, alphas, intrinsics, path)
    if all(a is not None for a in alphas):
        masks = np.stack([binary_mask(a, mask_paths[i] or image_paths[i], "mask" if mask_paths[i] else "alpha channel")
                          for i, a in enumerate(alphas)])
    sources = [(path, f"frame {i}") for i in range(len(frames))]
    return (np.stack(images), masks, np.stack(intrinsics), opengl_to_opencv(np.stack(poses)), names, sources,
            _aabb_sphere(meta, path), None)


def _undo_lenses(cams, images, alphas, intrinsics, path):
    """Undistorts, in place, each frame's image [H, W, 3], mask or alpha [H, W] (drawn on the photo, it takes the
    same map) and K [3, 3] (`cams` from `_ngp_camera`) whose lens is not a plain pinhole
    (`camera_geometry.lens_undistortion`: the widest pinhole view without blank pixels). Consecutive frames
    mostly share a lens, whose undistortion is then made once."""
    lens, undo = None, None
    for i, cam in enumerate(cams):
        if not cam["fisheye"] and not np.any(cam["dist"] != 0):  # (a fisheye lens without distortion is one still)
            continue
        key = (intrinsics[i].tobytes(), cam["dist"].tobytes(), cam["fisheye"])
        if key != lens:
            size = images[i].shape[1::-1]
            lens, undo = key, lens_undistortion(intrinsics[i], cam["dist"], cam["fisheye"], size, path, f"frame {i}")
        intrinsics[i], images[i] = undo.intrinsics, undo.apply(images[i])
        alphas[i] = None if alphas[i] is None else undo.apply(alphas[i])


def _aabb_sphere(meta, path):
    """The sphere around the file's `aabb` ([[x, y, z] min, [x, y, z] max], in the poses' world units, as
    torch-ngp and instant-nsr-pl exports write it) as a similarity, or None without one."""
    if "aabb" not in meta:
        return None
    box = matrix(meta["aabb"], path, "aabb", shapes=((2, 3),))
    if np.any(box[1] <= box[0]):
        raise DatasetError(f"{path}: aabb must be [[min x, y, z], [max x, y, z]] with max > min, got {box.tolist()}")
    with np.errstate(over="ignore"):  # an overflowing box is refused by the check
        centre, radius = box.mean(0), 0.5 * float(np.linalg.norm(box[1] - box[0]))
    check_sphere(centre, radius, f"{path}: aabb's centre", f"{path}: aabb's radius")
    return sphere_similarity(centre, radius)
