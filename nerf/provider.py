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
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
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
    if os.path.exists(os.path.join(root, "cameras_sphere.npz")):
        fmt, loaded = "neus", _load_neus(root)
    elif os.path.exists(os.path.join(root, "transforms_train.json")):
        fmt, loaded = "nerf-synthetic", _load_nerf_synthetic(root)
    elif os.path.exists(os.path.join(root, "transforms.json")):
        fmt, loaded = "instant-ngp", _load_instant_ngp(root)
    else:
        raise DatasetError(f"{root}: no cameras file (expected cameras_sphere.npz, transforms.json or transforms_train.json)")
    images, masks, intrinsics, c2w, names, sources, to_world, split = loaded

    if split is None:
        split = np.array([holdout > 0 and i % holdout == 0 for i in range(len(images))])
    if split.all():
        raise DatasetError(f"{root}: every view is held out (holdout={holdout}, {len(images)} views); use more views or --holdout 0")
    # NeuS poses are already normalised (the object is the unit sphere); the transforms formats are in world
    # units, and the check finds the point the cameras look at, from which the normalisation is derived.
    centre = check_camera_geometry(intrinsics, c2w, images.shape[1:3], sources, root, train=~split,
                                   unit_sphere=to_world is not None)
    if to_world is None:
        to_world = normalise_cameras(images, masks, intrinsics, c2w, root, centre=centre)
        world_to_norm = np.linalg.inv(to_world)
        c2w = c2w.copy()
        c2w[:, :3, 3] = (world_to_norm[:3, :3] @ c2w[:, :3, 3].T).T + world_to_norm[:3, 3]

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


# ----------------------------------------------------------------------------------------------------------
# Checking values: one helper per kind of value, shared by every format; each raises DatasetError with one
# line naming the file and the field.

ROTATION_TOLERANCE = 1e-2  # max |R^T R - I| of a pose's rotation part (rounding noise is far below this)


def _short(value, limit=40):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind(value):
    """What a value is, for a message: 'a string ('abc')', 'null', 'a list', 'an array of strings'..."""
    if value is None:
        return "null"
    if isinstance(value, (bool, np.bool_)):
        return f"a boolean ({str(bool(value)).lower()})"
    if isinstance(value, str):
        return f"a string ({_short(value)})"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} item{'' if len(value) == 1 else 's'}" if value else "an empty list"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, np.ndarray):
        names = {"O": "Python objects", "U": "strings", "S": "byte strings", "c": "complex numbers",
                 "b": "booleans", "V": "records", "M": "dates", "m": "time spans"}
        return f"an array of {names.get(value.dtype.kind, str(value.dtype))}"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return f"the number {_short(value)}"
    return f"a {type(value).__name__}"


def _is_number(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _number(value, path, what, positive=False, whole=False):
    """A finite float from a JSON value (or NumPy scalar); `positive`: > 0; `whole`: an integer value."""
    if not _is_number(value):
        raise DatasetError(f"{path}: {what} is {_kind(value)}, expected a number")
    try:
        x = float(value)
    except OverflowError:  # a huge JSON integer
        x = float("inf")
    if not np.isfinite(x):
        raise DatasetError(f"{path}: {what} is {_short(value)}, expected a finite number")
    if positive and x <= 0:
        raise DatasetError(f"{path}: {what} is {x:g}, expected a positive number")
    if whole and x != round(x):
        raise DatasetError(f"{path}: {what} is {x:g}, expected a whole number")
    return x


def _angle(value, path, what):
    """A field of view in radians, in (0, pi)."""
    x = _number(value, path, what)
    if not 0 < x < np.pi:
        raise DatasetError(f"{path}: {what} is {x:g}, expected a field of view in radians between 0 and pi")
    return x


def _matrix(value, path, what, shapes=((4, 4),)):
    """A finite float64 matrix of one of `shapes` from nested JSON lists or an array (an npz member)."""
    expected = " or ".join("x".join(map(str, s)) for s in shapes)
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "iuf":
            raise DatasetError(f"{path}: {what} is {_kind(value)}, expected numbers")
        m = value.astype(np.float64)
    else:
        if not (isinstance(value, list) and value and all(isinstance(row, list) for row in value)):
            raise DatasetError(f"{path}: {what} is {_kind(value)}, expected a {expected} matrix (a list of rows)")
        entries = [x for row in value for x in row]
        if not all(map(_is_number, entries)):
            bad = next(x for x in entries if not _is_number(x))
            raise DatasetError(f"{path}: {what} has an entry that is {_kind(bad)}, expected numbers")
        lengths = sorted({len(row) for row in value})
        if len(lengths) > 1:
            raise DatasetError(f"{path}: {what} has rows of different lengths ({', '.join(map(str, lengths))})")
        try:
            m = np.array(value, dtype=np.float64)
        except OverflowError:  # a huge JSON integer
            raise DatasetError(f"{path}: {what} has an entry too large for a float") from None
    if m.shape not in shapes:
        raise DatasetError(f"{path}: {what} has shape {m.shape}, expected {expected}")
    _check_finite(m, path, what)
    return m


def _check_finite(matrix, path, key):
    if not np.all(np.isfinite(matrix)):
        raise DatasetError(f"{path}: {key} contains NaN or Inf")


def _row(values):
    return "[" + ", ".join(f"{x:.4g}" for x in values) + "]"


def _check_rigid(m, path, what):
    """A 4x4 camera-to-world matrix must be a rotation and a translation (bottom row [0, 0, 0, 1])."""
    r = m[:3, :3]
    det = np.linalg.det(r)
    error = np.abs(r.T @ r - np.eye(3)).max()
    if abs(det) < 1e-9:
        raise DatasetError(f"{path}: {what} is singular (its rotation part has determinant {det:.3g})")
    if np.abs(m[3] - [0, 0, 0, 1]).max() > 1e-6:
        raise DatasetError(f"{path}: {what} has bottom row {_row(m[3])}, expected [0, 0, 0, 1]")
    if det < 0:
        raise DatasetError(f"{path}: {what} rotation part is a reflection (determinant {det:.3g}), not a rotation")
    if error > ROTATION_TOLERANCE:
        raise DatasetError(f"{path}: {what} rotation part is not a rotation (determinant {det:.4g}, R^T R differs "
                           f"from the identity by up to {error:.3g}; tolerance {ROTATION_TOLERANCE:g})")


# ----------------------------------------------------------------------------------------------------------
# Images and masks


@contextmanager
def _quiet_decoders():
    """Silence what image decoders print while reading: libpng and libjpeg write their own warnings
    ('libpng error: Read Error') straight to the process's stderr, and OpenCV logs a WARN line for a file it
    cannot open; a bad input must give one line, ours. OpenCV's log level is set to silent and file
    descriptor 2 points at /dev/null meanwhile (entered from one thread only: `read_all`)."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    saved = None
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no usable fd 2: nothing to silence
        pass
    try:
        yield
    finally:
        if saved is not None:
            os.dup2(saved, 2)
            os.close(saved)
        cv2.utils.logging.setLogLevel(level)


def _list_images(folder: str, what: str):
    files = sorted(f for f in glob.glob(os.path.join(folder, "*")) if f.endswith(IMAGE_EXTENSIONS))
    if not files:
        raise DatasetError(f"{folder}: no {what} found")
    return files


def _check_file(path, what):
    if os.path.isdir(path):
        raise DatasetError(f"{path}: is a folder, not {'an' if what[0] in 'aeiou' else 'a'} {what} file")
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: {what} file missing")
    if os.path.getsize(path) == 0:
        raise DatasetError(f"{path}: empty {what} file (0 bytes)")


def _imread(path, flags, what):
    try:
        img = cv2.imread(path, flags)
    except cv2.error as e:
        raise DatasetError(f"{path}: unreadable {what} (OpenCV: {str(e).strip().splitlines()[-1]})") from None
    if img is None or img.size == 0:
        raise DatasetError(f"{path}: unreadable {what} (damaged, or not a format OpenCV decodes)")
    return img


def read_image(path: str):
    """(rgb [H, W, 3] uint8, alpha [H, W] uint8 or None); 16-bit images are reduced to 8 bits, float images
    (values in [0, 1]) quantised."""
    _check_file(path, "image")
    img = _imread(path, cv2.IMREAD_UNCHANGED, "image")
    if img.dtype == np.uint16:
        img = (img // 257).astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        if not np.all(np.isfinite(img)):
            raise DatasetError(f"{path}: image has NaN or Inf pixels")
        img = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise DatasetError(f"{path}: unsupported pixel type {img.dtype} (expected 8- or 16-bit, or float)")
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
    _check_file(path, "mask")
    img = _imread(path, cv2.IMREAD_GRAYSCALE, "mask")
    if img.shape != shape:
        raise DatasetError(f"{path}: mask is {img.shape[1]}x{img.shape[0]} but its image is {shape[1]}x{shape[0]}")
    return np.where(img > 127, 255, 0).astype(np.uint8)


def read_all(read_fn, paths):
    """[read_fn(p) for p in paths], decoded on a few threads (OpenCV releases the GIL while decoding) with the
    decoders' own messages silenced; the first failing path in order raises, as a loop would."""
    with _quiet_decoders(), ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
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


# ----------------------------------------------------------------------------------------------------------
# NeuS / IDR


def _npz_matrix(cams, key, path):
    """Member `key` of the open npz as a finite float64 4x4 (a 3x4 gets the row [0, 0, 0, 1])."""
    if key not in cams.files:
        raise DatasetError(f"{path}: {key} missing")
    try:
        value = cams[key]
    except ValueError as e:  # np.load refuses object arrays (they are pickles)
        if "allow_pickle" in str(e):
            raise DatasetError(f"{path}: {key} is an array of Python objects (pickled), expected numbers") from None
        raise DatasetError(f"{path}: {key} unreadable ({type(e).__name__})") from None
    except Exception as e:  # a damaged member
        raise DatasetError(f"{path}: {key} unreadable ({type(e).__name__})") from None
    m = _matrix(value, path, key, ((4, 4), (3, 4)))
    return m if m.shape == (4, 4) else np.vstack([m, [0.0, 0.0, 0.0, 1.0]])


def _check_scale_mat(m, path, key):
    """scale_mat maps the unit sphere to the world: it must be a similarity (rotation, uniform scale,
    translation), else the sphere would be an ellipsoid and the outputs would not map back."""
    a = m[:3, :3]
    s2 = np.trace(a.T @ a) / 3
    if s2 == 0 or abs(np.linalg.det(a)) < 1e-12 * s2**1.5:
        raise DatasetError(f"{path}: {key} is singular")
    if np.abs(m[3] - [0, 0, 0, 1]).max() > 1e-6 * np.abs(m).max():
        raise DatasetError(f"{path}: {key} has bottom row {_row(m[3])}, expected [0, 0, 0, 1]")
    if np.abs(a.T @ a / s2 - np.eye(3)).max() > 1e-3:
        raise DatasetError(f"{path}: {key} is not a similarity (rotation, uniform scale, translation): it would "
                           f"map the unit sphere to an ellipsoid")


def _load_neus(root):
    path = os.path.join(root, "cameras_sphere.npz")
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: is a folder, not a cameras file")
    try:
        cams = np.load(path)  # allow_pickle=False: object arrays are refused (see _npz_matrix)
    except Exception as e:  # a truncated or non-npz file
        raise DatasetError(f"{path}: unreadable cameras file ({type(e).__name__})") from None
    if not isinstance(cams, np.lib.npyio.NpzFile):
        raise DatasetError(f"{path}: a single .npy array, expected an .npz archive of world_mat_i and scale_mat_i")
    keys = set(cams.files)
    try:
        image_dir = os.path.join(root, "image")
        if not os.path.isdir(image_dir):
            raise DatasetError(f"{image_dir}: image folder missing")
        image_paths = _list_images(image_dir, "images")
        num_views = len(image_paths)
        num_cams = len([k for k in keys if k.startswith("world_mat_") and not k.startswith("world_mat_inv")])
        if num_cams != num_views:
            raise DatasetError(f"{path}: {num_cams} cameras (world_mat_i) for {num_views} images in {image_dir}")
        intrinsics, c2w = [], []
        scale_mat_0 = None
        for i in range(num_views):
            world_mat = _npz_matrix(cams, f"world_mat_{i}", path)
            scale_mat = _npz_matrix(cams, f"scale_mat_{i}", path)
            _check_scale_mat(scale_mat, path, f"scale_mat_{i}")
            if scale_mat_0 is None:
                scale_mat_0 = scale_mat
            elif np.abs(scale_mat - scale_mat_0).max() > 1e-5 * np.abs(scale_mat_0).max():
                raise DatasetError(f"{path}: scale_mat_{i} differs from scale_mat_0 (every view must share one "
                                   f"normalisation)")
            m = world_mat[:3, :3]
            if abs(np.linalg.det(m)) <= 1e-9 * np.prod(np.linalg.norm(m, axis=1)):
                raise DatasetError(f"{path}: world_mat_{i} is singular (its 3x3 part K R has rank < 3: a zero "
                                   f"focal length?)")
            with np.errstate(all="ignore"):
                k, pose = decompose_projection((world_mat @ scale_mat)[:3, :4])
            if not (np.all(np.isfinite(k)) and np.all(np.isfinite(pose)) and k[0, 0] > 0 and k[1, 1] > 0):
                raise DatasetError(f"{path}: world_mat_{i} is not a valid projection K[R|t]")
            intrinsics.append(k)
            c2w.append(pose)
    finally:
        cams.close()
    images, masks = _stack_images(image_paths)
    mask_dir = os.path.join(root, "mask")
    if os.path.isdir(mask_dir):
        mask_paths = _list_images(mask_dir, "masks")
        if len(mask_paths) != num_views:
            raise DatasetError(f"{mask_dir}: {len(mask_paths)} masks for {num_views} images")
        masks = np.stack(read_all(lambda p: read_mask(p, images.shape[1:3]), mask_paths))
    names = [os.path.splitext(os.path.basename(p))[0] for p in image_paths]
    sources = [(path, f"world_mat_{i}") for i in range(num_views)]
    return images, masks, np.stack(intrinsics), np.stack(c2w), names, sources, scale_mat_0, None


def decompose_projection(P):
    """Split a 3x4 projection P = K [R | t] into K (3x3, positive focal lengths, K[2,2] = 1) and the
    camera-to-world pose (4x4). P and -P are the same camera and give the same result: the camera looks along
    det(M) m3 (M = P[:, :3], m3 its last row; Hartley & Zisserman 6.2.3), so P is first scaled to det(M) > 0,
    and the signs RQ leaves on K's diagonal are moved into R (K R = (K D)(D R), D = diag(+-1), det D = 1)."""
    P = np.asarray(P, dtype=np.float64)
    if np.linalg.det(P[:, :3]) < 0:
        P = -P
    k, rotation, centre = cv2.decomposeProjectionMatrix(P)[:3]
    signs = np.where(np.diag(k) < 0, -1.0, 1.0)
    if np.prod(signs) > 0:  # else det(K) < 0: a degenerate P; left as it is for the caller's check
        k, rotation = k * signs, signs[:, None] * rotation
    k = k / k[2, 2]
    pose = np.eye(4)
    pose[:3, :3] = rotation.T
    pose[:3, 3] = (centre[:3] / centre[3])[:, 0]
    return k, pose


# ----------------------------------------------------------------------------------------------------------
# The transforms formats (JSON)


def _opengl_to_opencv(c2w):
    c2w = c2w.copy()
    c2w[:, :3, 1:3] *= -1  # flip y and z camera axes
    return c2w


def _read_json(path):
    """The top-level object of a JSON file."""
    if os.path.isdir(path):
        raise DatasetError(f"{path}: is a folder, not a JSON file")
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
        raise DatasetError(f"{path}: the top level is {_kind(meta)}, expected an object ({{...}})")
    return meta


def _frames(meta, path):
    """meta["frames"]: a non-empty list of objects."""
    frames = meta.get("frames")
    if "frames" not in meta or (isinstance(frames, list) and not frames):
        raise DatasetError(f"{path}: no frames")
    if not isinstance(frames, list):
        raise DatasetError(f"{path}: frames is {_kind(frames)}, expected a list of frames")
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict):
            raise DatasetError(f"{path}: frame {i} is {_kind(frame)}, expected an object")
    return frames


def _frame_pose(frame, path, i):
    if "transform_matrix" not in frame:
        raise DatasetError(f"{path}: frame {i} has no transform_matrix")
    m = _matrix(frame["transform_matrix"], path, f"frame {i} transform_matrix")
    _check_rigid(m, path, f"frame {i} transform_matrix")
    return m


def _frame_file(root, frame, key, path, i):
    value = frame[key]
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"{path}: frame {i} {key} is {_kind(value)}, expected a file name")
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
    splits = [("train", False), ("test", True)] if os.path.exists(os.path.join(root, "transforms_test.json")) else [
        ("train", False),
        ("val", True),
    ]
    for split_name, held_out in splits:
        path = os.path.join(root, f"transforms_{split_name}.json")
        if not os.path.exists(path):
            raise DatasetError(f"{path}: missing (needed for the held-out views)")
        meta = _read_json(path)
        if "camera_angle_x" not in meta or "frames" not in meta:
            raise DatasetError(f"{path}: needs camera_angle_x and frames")
        frames = _frames(meta, path)
        angle = _angle(meta["camera_angle_x"], path, "camera_angle_x")
        poses = [_frame_pose(f, path, i) for i, f in enumerate(frames)]
        paths = [_frame_image_path(root, f, path, i) for i, f in enumerate(frames)]
        rgb, alpha = _stack_images(paths)
        h, w = rgb.shape[1:3]
        focal = 0.5 * w / np.tan(0.5 * angle)
        k = np.array([[focal, 0, w / 2 - 0.5], [0, focal, h / 2 - 0.5], [0, 0, 1]])  # NeRF centres at +0.5
        images.append(rgb)
        masks.append(alpha)
        intrinsics += [k] * len(paths)
        c2w.append(_opengl_to_opencv(np.stack(poses)))
        names += [f"{split_name}_{os.path.splitext(os.path.basename(p))[0]}" for p in paths]
        sources += [(path, f"frame {i}") for i in range(len(paths))]
        split += [held_out] * len(paths)
    if images[0].shape[1:] != images[1].shape[1:]:
        raise DatasetError(f"{root}: train and held-out images differ in size")
    masks = None if any(m is None for m in masks) else np.concatenate(masks)
    return (np.concatenate(images), masks, np.stack(intrinsics), np.concatenate(c2w), names, sources, None,
            np.array(split))


def _ngp_camera(meta, frame, path, i):
    """Frame i's camera fields (per-frame values override the shared ones), checked; absent ones are left out.
    camera_angle_x counts only without fl_x."""
    cam = {}
    for key in ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "k1", "k2", "p1", "p2"):
        if key not in frame and key not in meta:
            continue
        if key == "camera_angle_x" and "fl_x" in cam:
            continue
        what = f"frame {i} {key}" if key in frame else key
        value = frame[key] if key in frame else meta[key]
        if key == "camera_angle_x":
            cam[key] = _angle(value, path, what)
        else:
            cam[key] = _number(value, path, what, positive=key in ("fl_x", "fl_y", "w", "h"), whole=key in ("w", "h"))
    if "fl_x" not in cam and "camera_angle_x" not in cam:
        raise DatasetError(f"{path}: frame {i} has no focal length (fl_x or camera_angle_x)")
    return cam


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
        dist = np.array([cam.get(n, 0.0) for n in ("k1", "k2", "p1", "p2")])
        if np.any(dist != 0):
            rgb = cv2.undistort(rgb, k, dist)
            if alpha is not None:
                alpha = cv2.undistort(alpha, k, dist)
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
    if all(a is not None for a in alphas):
        masks = np.stack([np.where(a > 127, 255, 0).astype(np.uint8) for a in alphas])
    sources = [(path, f"frame {i}") for i in range(len(frames))]
    return (np.stack(images), masks, np.stack(intrinsics), _opengl_to_opencv(np.stack(poses)), names, sources,
            None, None)


# ----------------------------------------------------------------------------------------------------------
# Camera geometry (every format, poses camera-to-world in OpenCV axes)


def _point_nearest_axes(c2w, where):
    """The point closest (least squares) to all cameras' optical axes: object-centric captures look at it."""
    a = np.zeros((3, 3))
    b = np.zeros(3)
    for o, d in zip(c2w[:, :3, 3], c2w[:, :3, 2]):
        proj = np.eye(3) - np.outer(d, d)
        a += proj
        b += proj @ o
    if np.linalg.cond(a) > 1e6:
        raise DatasetError(f"{where}: cameras all look the same way; cannot find the object to normalise the scene")
    return np.linalg.solve(a, b)


def check_camera_geometry(intrinsics, c2w, size, sources, root, train=None, unit_sphere=False):
    """Cameras that cannot reconstruct anything: the training cameras all at one point, a camera inside the
    object, looking away from it, or with the object far off its image. `sources[i]` = (file, label) of
    camera i for the message; `train` selects the training views.

    unit_sphere: the poses are in NeuS's normalised space, where the object is the unit sphere; otherwise
    (the transforms formats, in world units) the object is taken to be around the point nearest all optical
    axes, which is returned for `normalise_cameras`.
    """
    n = len(c2w)
    files = sorted({f for f, _ in sources})
    where = files[0] if len(files) == 1 else root
    centres = c2w[:, :3, 3]
    trained = centres if train is None else centres[train]
    if len(trained) > 1 and np.ptp(trained, axis=0).max() <= 1e-6 * np.abs(trained).max():
        what = "training cameras" if train is not None and not train.all() else "cameras"
        train_files = sorted({sources[i][0] for i in np.nonzero(train)[0]}) if train is not None else files
        at = ", ".join(f"{x:.4g}" for x in trained[0])
        raise DatasetError(f"{train_files[0] if len(train_files) == 1 else where}: all {len(trained)} {what} are "
                           f"at one point ({at}); the views need different positions")
    if unit_sphere:
        centre, name = np.zeros(3), "the centre of the unit sphere"
        hint = " (a negative focal length or a mirrored pose in world_mat does this)"
    else:
        centre, name, hint = _point_nearest_axes(c2w, where), "the point nearest all optical axes", ""
    distance = np.linalg.norm(centres - centre, axis=1)
    if unit_sphere:
        inside = distance <= 1.0
        problem = "camera centre is inside the unit sphere (the object region), {:.3g} from its centre"
    else:
        inside = distance < 0.05 * np.median(distance)
        problem = (f"is at the object: {{:.3g}} from {name}, where the median camera is "
                   f"{np.median(distance):.3g} away")
    if inside.any():
        i = int(np.argmax(inside))
        raise DatasetError(f"{sources[i][0]}: {sources[i][1]} {problem.format(distance[i])}")
    # the centre in each camera's frame: in front (z > 0), and projecting inside or near the image
    local = np.einsum("vji,vj->vi", c2w[:, :3, :3], centre - centres)
    z = local[:, 2]
    behind = z <= 1e-9 * distance
    if behind.all():
        raise DatasetError(f"{where}: all {n} cameras look away from the object: {name} is behind every one{hint}")
    if behind.any():
        i = int(np.argmax(behind))
        raise DatasetError(f"{sources[i][0]}: {sources[i][1]} looks away from the object: {name} is behind it{hint}")
    uv = np.einsum("vij,vj->vi", intrinsics, local)
    u, v = uv[:, 0] / z, uv[:, 1] / z
    h, w = size
    off = (u < -w) | (u > 2 * w) | (v < -h) | (v > 2 * h)
    if off.any():
        i = int(np.argmax(off))
        raise DatasetError(f"{sources[i][0]}: {sources[i][1]} does not see the object: {name} projects to pixel "
                           f"({u[i]:.0f}, {v[i]:.0f}), far outside the {w}x{h} image")
    return centre


def normalise_cameras(images, masks, intrinsics, c2w, root, grid=64, centre=None):
    """A similarity (normalised -> world, 4x4) that puts the object inside the unit sphere, for formats
    that come without one.

    1. A first centre: the point closest (least squares) to all cameras' optical axes — object-centric
       captures look at the object (`centre`, when `check_camera_geometry` has found it already).
    2. Carving: points of a grid^3 lattice in a cube around it (half-size 0.9 x the nearest camera's distance,
       so no camera is inside) are kept if they project in front of and inside every view, and inside every
       view's mask when masks (or alpha) exist. This is the visual hull, or without masks the common frustum.
    3. The sphere: centred on the kept points' bounding box, radius = farthest kept point + one cell, x 1.05.
    """
    centres = c2w[:, :3, 3]
    if centre is None:
        centre = _point_nearest_axes(c2w, root)
    half = 0.9 * np.linalg.norm(centres - centre, axis=1).min()
    lin = np.linspace(-half, half, grid)
    pts = np.stack(np.meshgrid(lin, lin, lin, indexing="ij"), -1).reshape(-1, 3) + centre
    keep = np.arange(len(pts))  # indices of the points every camera so far sees
    h, w = images.shape[1:3]
    for i in range(len(c2w)):
        w2c = np.linalg.inv(c2w[i])
        cam = pts[keep] @ w2c[:3, :3].T + w2c[:3, 3]
        z = cam[:, 2]
        uv = cam @ intrinsics[i].T
        with np.errstate(divide="ignore", invalid="ignore"):
            u, v = uv[:, 0] / z, uv[:, 1] / z
        inside = (z > 0) & (u > -0.5) & (u < w - 0.5) & (v > -0.5) & (v < h - 0.5)
        if masks is not None:
            seen = np.nonzero(inside)[0]  # finite u, v only
            ui = np.clip(np.round(u[seen]), 0, w - 1).astype(int)
            vi = np.clip(np.round(v[seen]), 0, h - 1).astype(int)
            inside[seen] = masks[i][vi, ui] > 0
        keep = keep[inside]
    if not len(keep):
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
