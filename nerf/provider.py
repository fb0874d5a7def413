"""Posed images in, rays out.

Reads a scene folder in one of three formats, checks it, and puts every camera into a *normalised space* in
which the object lies inside the unit sphere:

* NeuS / IDR: `image/*.png`, optional `mask/*.png`, `cameras_sphere.npz` with `world_mat_i` (K[R|t] padded to
  4x4, world -> pixel) and `scale_mat_i` (normalised space -> world). P = world_mat @ scale_mat is decomposed
  into K and a camera-to-world pose; `scale_mat` maps results back to the input's world frame.
* NeRF-synthetic: `transforms_{train,val,test}.json` (`camera_angle_x`, RGBA images whose alpha is the mask).
* instant-ngp: `transforms.json` (`fl_x fl_y cx cy w h`, optional `k1 k2 p1 p2`, per-frame `file_path` and
  `transform_matrix`); images are undistorted on load.

The two transforms formats have no normalisation of their own; `normalise_cameras` derives one (see there).
Conventions: OpenCV camera axes (x right, y down, z forward); integer pixel coordinates are pixel centres, so
pixel (u, v) is the ray through K^-1 [u, v, 1]. Every problem with the input raises `DatasetError` with one
line naming the file.
"""
import glob
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np
import torch

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".JPG", ".PNG", ".exr")


class DatasetError(Exception):
    """A problem with the input folder; the message is one line naming the file and the problem."""


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

    @property
    def world_scale(self) -> float:
        """World units per normalised unit (lengths such as depth scale by this)."""
        return float(np.cbrt(abs(np.linalg.det(self.to_world[:3, :3]))))


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


def sample_rays(views: Views, num_rays: int, generator: torch.Generator):
    """A training batch: `num_rays` pixels drawn uniformly from all views.

    Returns a dict with rays_o [R, 3], rays_d [R, 3], rgb [R, 3] float in [0, 1], mask [R] float or None.
    """
    device = views.images.device
    shape = (num_rays,)
    view = torch.randint(0, len(views), shape, generator=generator, device=device)
    row = torch.randint(0, views.height, shape, generator=generator, device=device)
    col = torch.randint(0, views.width, shape, generator=generator, device=device)
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


def load_scene(root: str, holdout: int = 8, downscale: int = 1, device="cpu") -> Scene:
    """Load and check a scene folder, auto-detecting its format; views whose index is a multiple of `holdout`
    are held out for testing (NeRF-synthetic uses its own test split instead)."""
    if not os.path.isdir(root):
        raise DatasetError(f"{root}: not a folder")
    if os.path.isfile(os.path.join(root, "cameras_sphere.npz")):
        fmt, (images, masks, intrinsics, c2w, names, to_world, split) = "neus", _load_neus(root)
    elif os.path.isfile(os.path.join(root, "transforms_train.json")):
        fmt, (images, masks, intrinsics, c2w, names, split) = "nerf-synthetic", _load_nerf_synthetic(root)
        to_world = None
    elif os.path.isfile(os.path.join(root, "transforms.json")):
        fmt, (images, masks, intrinsics, c2w, names, split) = "instant-ngp", _load_instant_ngp(root)
        to_world = None
    else:
        raise DatasetError(f"{root}: no cameras file (expected cameras_sphere.npz, transforms.json or transforms_train.json)")

    if to_world is None:  # transforms formats: poses are in world units; derive the normalisation
        to_world = normalise_cameras(images, masks, intrinsics, c2w, root)
        world_to_norm = np.linalg.inv(to_world)
        c2w = c2w.copy()
        c2w[:, :3, 3] = (world_to_norm[:3, :3] @ c2w[:, :3, 3].T).T + world_to_norm[:3, 3]
    if split is None:
        split = np.array([holdout > 0 and i % holdout == 0 for i in range(len(images))])
    if split.all():
        raise DatasetError(f"{root}: every view is held out (holdout={holdout}, {len(images)} views); use more views or --holdout 0")

    if downscale > 1:
        images, masks, intrinsics = _downscale(images, masks, intrinsics, downscale)

    def views(selected):
        idx = np.nonzero(selected)[0]
        return Views(
            images=torch.from_numpy(images[idx]).to(device),
            masks=None if masks is None else torch.from_numpy(masks[idx]).to(device),
            intrinsics=torch.from_numpy(intrinsics[idx]).float().to(device),
            c2w=torch.from_numpy(c2w[idx]).float().to(device),
            names=[names[i] for i in idx],
        )

    return Scene(train=views(~split), test=views(split), to_world=to_world, format=fmt, root=root)


def _list_images(folder: str, what: str):
    files = sorted(f for f in glob.glob(os.path.join(folder, "*")) if f.endswith(IMAGE_EXTENSIONS))
    if not files:
        raise DatasetError(f"{folder}: no {what} found")
    return files


def read_image(path: str):
    """(rgb [H, W, 3] uint8, alpha [H, W] uint8 or None); 16-bit images are reduced to 8 bits."""
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: image file missing")
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise DatasetError(f"{path}: unreadable image")
    if img.dtype == np.uint16:
        img = (img // 257).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    if img.ndim == 2:
        img = img[..., None]
    channels = img.shape[2]
    if channels == 1:
        return np.repeat(img, 3, axis=2), None
    if channels == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB), None
    if channels == 4:
        return cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2RGB), img[..., 3].copy()
    raise DatasetError(f"{path}: unsupported image with {channels} channels")


def read_mask(path: str, shape):
    img = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if img is None or img.size == 0:
        raise DatasetError(f"{path}: unreadable mask")
    if img.shape != shape:
        raise DatasetError(f"{path}: mask is {img.shape[1]}x{img.shape[0]} but its image is {shape[1]}x{shape[0]}")
    return np.where(img > 127, 255, 0).astype(np.uint8)


def read_all(read_fn, paths):
    """[read_fn(p) for p in paths], decoded on a few threads (OpenCV releases the GIL while decoding); the first
    failing path in order raises, as a loop would."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(read_fn, paths))


def _stack_images(paths):
    """Read images that must all share one size; returns (rgb [V,H,W,3], alpha [V,H,W] or None)."""
    rgbs, alphas = [], []
    for path, (rgb, alpha) in zip(paths, read_all(read_image, paths)):
        if rgbs and rgb.shape != rgbs[0].shape:
            raise DatasetError(f"{path}: image is {rgb.shape[1]}x{rgb.shape[0]}, others are {rgbs[0].shape[1]}x{rgbs[0].shape[0]}")
        rgbs.append(rgb)
        alphas.append(alpha)
    has_alpha = all(a is not None for a in alphas)
    masks = np.stack([np.where(a > 127, 255, 0).astype(np.uint8) for a in alphas]) if has_alpha else None
    return np.stack(rgbs), masks


def _check_finite(matrix, path, key):
    if not np.all(np.isfinite(matrix)):
        raise DatasetError(f"{path}: {key} contains NaN or Inf")


def _load_neus(root):
    path = os.path.join(root, "cameras_sphere.npz")
    try:
        cams = np.load(path)
        keys = set(cams.files)
    except Exception as e:  # a truncated or non-npz file
        raise DatasetError(f"{path}: unreadable cameras file ({type(e).__name__})")
    image_dir = os.path.join(root, "image")
    if not os.path.isdir(image_dir):
        raise DatasetError(f"{image_dir}: image folder missing")
    image_paths = _list_images(image_dir, "images")
    num_views = len(image_paths)
    num_cams = len([k for k in keys if k.startswith("world_mat_") and not k.startswith("world_mat_inv")])
    if num_cams != num_views:
        raise DatasetError(f"{path}: {num_cams} cameras (world_mat_i) for {num_views} images in {image_dir}")
    images, masks = _stack_images(image_paths)
    mask_dir = os.path.join(root, "mask")
    if os.path.isdir(mask_dir):
        mask_paths = _list_images(mask_dir, "masks")
        if len(mask_paths) != num_views:
            raise DatasetError(f"{mask_dir}: {len(mask_paths)} masks for {num_views} images")
        masks = np.stack(read_all(lambda p: read_mask(p, images.shape[1:3]), mask_paths))

    intrinsics, c2w, scale_mats = [], [], []
    for i in range(num_views):
        for key in (f"world_mat_{i}", f"scale_mat_{i}"):
            if key not in keys:
                raise DatasetError(f"{path}: {key} missing")
        world_mat, scale_mat = cams[f"world_mat_{i}"].astype(np.float64), cams[f"scale_mat_{i}"].astype(np.float64)
        for key, m in ((f"world_mat_{i}", world_mat), (f"scale_mat_{i}", scale_mat)):
            if m.shape != (4, 4) and m.shape != (3, 4):
                raise DatasetError(f"{path}: {key} has shape {m.shape}, expected (4, 4)")
            _check_finite(m, path, key)
        if abs(np.linalg.det(scale_mat[:3, :3])) < 1e-12:
            raise DatasetError(f"{path}: scale_mat_{i} is singular")
        k, pose = decompose_projection((world_mat[:3, :4] @ scale_mat)[:3, :4])
        if not (np.all(np.isfinite(k)) and np.all(np.isfinite(pose)) and k[0, 0] > 0 and k[1, 1] > 0):
            raise DatasetError(f"{path}: world_mat_{i} is not a valid projection K[R|t]")
        intrinsics.append(k)
        c2w.append(pose)
        scale_mats.append(scale_mat)
    names = [os.path.splitext(os.path.basename(p))[0] for p in image_paths]
    return images, masks, np.stack(intrinsics), np.stack(c2w), names, scale_mats[0], None


def decompose_projection(P):
    """Split a 3x4 projection P = K [R | t] into K (3x3, K[2,2] = 1) and the camera-to-world pose (4x4)."""
    k, rotation, centre = cv2.decomposeProjectionMatrix(P)[:3]
    k = k / k[2, 2]
    pose = np.eye(4)
    pose[:3, :3] = rotation.T
    pose[:3, 3] = (centre[:3] / centre[3])[:, 0]
    return k, pose


def _opengl_to_opencv(c2w):
    c2w = c2w.copy()
    c2w[:, :3, 1:3] *= -1  # flip y and z camera axes
    return c2w


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: unreadable JSON ({e})")


def _frame_pose(frame, path, i):
    if "transform_matrix" not in frame:
        raise DatasetError(f"{path}: frame {i} has no transform_matrix")
    m = np.array(frame["transform_matrix"], dtype=np.float64)
    if m.shape != (4, 4):
        raise DatasetError(f"{path}: frame {i} transform_matrix has shape {m.shape}, expected (4, 4)")
    _check_finite(m, path, f"frame {i} transform_matrix")
    return m


def _frame_image_path(root, frame, path, i):
    if "file_path" not in frame:
        raise DatasetError(f"{path}: frame {i} has no file_path")
    p = os.path.join(root, frame["file_path"])
    if not os.path.splitext(p)[1]:  # NeRF-synthetic omits the extension
        p += ".png"
    return p


def _load_nerf_synthetic(root):
    images, masks, intrinsics, c2w, names, split = [], [], [], [], [], []
    splits = [("train", False), ("test", True)] if os.path.isfile(os.path.join(root, "transforms_test.json")) else [
        ("train", False),
        ("val", True),
    ]
    for split_name, held_out in splits:
        path = os.path.join(root, f"transforms_{split_name}.json")
        if not os.path.isfile(path):
            raise DatasetError(f"{path}: missing (needed for the held-out views)")
        meta = _read_json(path)
        if "camera_angle_x" not in meta or "frames" not in meta:
            raise DatasetError(f"{path}: needs camera_angle_x and frames")
        paths = [_frame_image_path(root, f, path, i) for i, f in enumerate(meta["frames"])]
        rgb, alpha = _stack_images(paths)
        h, w = rgb.shape[1:3]
        focal = 0.5 * w / np.tan(0.5 * float(meta["camera_angle_x"]))
        k = np.array([[focal, 0, w / 2 - 0.5], [0, focal, h / 2 - 0.5], [0, 0, 1]])  # NeRF centres at +0.5
        images.append(rgb)
        masks.append(alpha)
        intrinsics += [k] * len(paths)
        c2w.append(_opengl_to_opencv(np.stack([_frame_pose(f, path, i) for i, f in enumerate(meta["frames"])])))
        names += [f"{split_name}_{os.path.splitext(os.path.basename(p))[0]}" for p in paths]
        split += [held_out] * len(paths)
    if images[0].shape[1:] != images[1].shape[1:]:
        raise DatasetError(f"{root}: train and held-out images differ in size")
    masks = None if any(m is None for m in masks) else np.concatenate(masks)
    return np.concatenate(images), masks, np.stack(intrinsics), np.concatenate(c2w), names, np.array(split)


def _load_instant_ngp(root):
    path = os.path.join(root, "transforms.json")
    meta = _read_json(path)
    frames = meta.get("frames")
    if not frames:
        raise DatasetError(f"{path}: no frames")
    images, alphas, intrinsics, poses, names = [], [], [], [], []
    image_paths = [_frame_image_path(root, frame, path, i) for i, frame in enumerate(frames)]
    for i, (frame, image_path, (rgb, alpha)) in enumerate(zip(frames, image_paths, read_all(read_image, image_paths))):
        cam = {**meta, **frame}  # per-frame intrinsics override the shared ones
        h, w = rgb.shape[:2]
        if images and rgb.shape != images[0].shape:
            raise DatasetError(f"{image_path}: image is {w}x{h}, others are {images[0].shape[1]}x{images[0].shape[0]}")
        if ("w" in cam and int(cam["w"]) != w) or ("h" in cam and int(cam["h"]) != h):
            raise DatasetError(f"{image_path}: image is {w}x{h} but {path} says {cam.get('w')}x{cam.get('h')}")
        if "fl_x" in cam:
            fx = float(cam["fl_x"])
            fy = float(cam.get("fl_y", fx))
        elif "camera_angle_x" in cam:
            fx = fy = 0.5 * w / np.tan(0.5 * float(cam["camera_angle_x"]))
        else:
            raise DatasetError(f"{path}: frame {i} has no focal length (fl_x or camera_angle_x)")
        # instant-ngp puts pixel centres at +0.5; ours are at integers.
        k = np.array([[fx, 0, float(cam.get("cx", w / 2)) - 0.5], [0, fy, float(cam.get("cy", h / 2)) - 0.5], [0, 0, 1]])
        _check_finite(k, path, f"frame {i} intrinsics")
        dist = np.array([float(cam.get(n, 0.0)) for n in ("k1", "k2", "p1", "p2")])
        if np.any(dist != 0):
            rgb = cv2.undistort(rgb, k, dist)
            if alpha is not None:
                alpha = cv2.undistort(alpha, k, dist)
        if "mask_path" in frame:  # nerfstudio-style per-frame mask, overriding any alpha channel
            alpha = read_mask(os.path.join(root, frame["mask_path"]), (h, w))
        images.append(rgb)
        alphas.append(alpha)
        intrinsics.append(k)
        poses.append(_frame_pose(frame, path, i))
        names.append(os.path.splitext(os.path.basename(image_path))[0])
    masks = None
    if all(a is not None for a in alphas):
        masks = np.stack([np.where(a > 127, 255, 0).astype(np.uint8) for a in alphas])
    return np.stack(images), masks, np.stack(intrinsics), _opengl_to_opencv(np.stack(poses)), names, None


def normalise_cameras(images, masks, intrinsics, c2w, root, grid=64):
    """A similarity (normalised -> world, 4x4) that puts the object inside the unit sphere, for formats
    that come without one.

    1. A first centre: the point closest (least squares) to all cameras' optical axes — object-centric
       captures look at the object.
    2. Carving: points of a grid^3 lattice in a cube around it (half-size 0.9 x the nearest camera's distance,
       so no camera is inside) are kept if they project in front of and inside every view, and inside every
       view's mask when masks (or alpha) exist. This is the visual hull, or without masks the common frustum.
    3. The sphere: centred on the kept points' bounding box, radius = farthest kept point + one cell, x 1.05.
    """
    centres = c2w[:, :3, 3]
    axes = c2w[:, :3, 2]
    a = np.zeros((3, 3))
    b = np.zeros(3)
    for o, d in zip(centres, axes):
        proj = np.eye(3) - np.outer(d, d)
        a += proj
        b += proj @ o
    if np.linalg.cond(a) > 1e6:
        raise DatasetError(f"{root}: cameras all look the same way; cannot find the object to normalise the scene")
    centre = np.linalg.solve(a, b)
    half = 0.9 * np.linalg.norm(centres - centre, axis=1).min()
    lin = np.linspace(-half, half, grid)
    pts = np.stack(np.meshgrid(lin, lin, lin, indexing="ij"), -1).reshape(-1, 3) + centre
    keep = np.ones(len(pts), dtype=bool)
    h, w = images.shape[1:3]
    for i in range(len(c2w)):
        w2c = np.linalg.inv(c2w[i])
        cam = pts @ w2c[:3, :3].T + w2c[:3, 3]
        z = cam[:, 2]
        uv = cam @ intrinsics[i].T
        with np.errstate(divide="ignore", invalid="ignore"):
            u, v = uv[:, 0] / z, uv[:, 1] / z
        inside = (z > 0) & (u > -0.5) & (u < w - 0.5) & (v > -0.5) & (v < h - 0.5)
        if masks is not None:
            ui = np.clip(np.round(u), 0, w - 1).astype(int)
            vi = np.clip(np.round(v), 0, h - 1).astype(int)
            inside &= masks[i][vi, ui] > 0
        keep &= inside
    if not keep.any():
        raise DatasetError(f"{root}: no point is seen by every camera (inside every mask); cannot normalise the scene")
    kept = pts[keep]
    cell = 2 * half / (grid - 1)
    centre = (kept.min(0) + kept.max(0)) / 2
    radius = 1.05 * (np.linalg.norm(kept - centre, axis=1).max() + np.sqrt(3) * cell)
    to_world = np.eye(4)
    to_world[:3, :3] *= radius
    to_world[:3, 3] = centre
    return to_world


def _downscale(images, masks, intrinsics, factor):
    h, w = images.shape[1] // factor, images.shape[2] // factor
    images = np.stack([cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA) for im in images])
    if masks is not None:
        masks = np.stack([np.where(cv2.resize(m, (w, h), interpolation=cv2.INTER_AREA) > 127, 255, 0).astype(np.uint8) for m in masks])
    intrinsics = intrinsics.copy()
    intrinsics[:, :2, :] /= factor
    intrinsics[:, :2, 2] += 0.5 / factor - 0.5  # pixel centres: u' = (u + 0.5) / s - 0.5
    return images, masks, intrinsics
