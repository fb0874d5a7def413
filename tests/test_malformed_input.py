"""Malformed input, all three formats: every broken scene folder stops with one line `error: PATH: problem` on
stderr naming the file (or folder), exit code 2, no traceback, and no workspace written.

Each case derives a folder from the `small_scene` fixture (the torus in NeuS format plus transforms.json) or from
a NeRF-synthetic copy of it, changing one thing; unchanged files and folders are symlinked, so a case costs
milliseconds. The run stops while loading, before any model is built.
"""
import json
import os
import pathlib
import zlib

import cv2
import numpy as np
import pytest

import main_sdf
from nerf.files import save_png
from nerf.input_checks import error_line
from nerf.logger import Logger
from nerf.provider import load_scene

PNG_NAME = "000005.png"  # the image a broken-image case replaces
MASK_NAME = "005.png"


# ------------------------------------------------------------------------------------------------------
# Base scenes


@pytest.fixture(scope="session")
def bases(small_scene, tmp_path_factory):
    """{"neus": the small_scene folder (also holds transforms.json), "synthetic": a NeRF-synthetic copy (RGBA
    images whose alpha is the mask, train = views 0-11, test = 12-15), "K": the cameras' K [3, 3]}."""
    root, info = small_scene
    meta = json.load(open(os.path.join(root, "transforms.json")))
    out = tmp_path_factory.mktemp("synthetic")
    for split, frames in (("train", meta["frames"][:12]), ("test", meta["frames"][12:])):
        (out / split).mkdir()
        entries = []
        for frame in frames:
            name = os.path.splitext(os.path.basename(frame["file_path"]))[0]
            rgb = cv2.imread(os.path.join(root, frame["file_path"]))
            mask = cv2.imread(os.path.join(root, frame["mask_path"]), cv2.IMREAD_GRAYSCALE)
            cv2.imwrite(str(out / split / f"{name}.png"), np.dstack([rgb, mask]))
            entries.append({"file_path": f"./{split}/{name}", "transform_matrix": frame["transform_matrix"]})
        angle = 2 * np.arctan(0.5 * meta["w"] / meta["fl_x"])
        json.dump({"camera_angle_x": angle, "frames": entries}, open(out / f"transforms_{split}.json", "w"))
    return {"neus": root, "synthetic": str(out), "K": np.array(info["K"])}


def link_all(src, dst, skip=()):
    """dst/NAME -> src/NAME for every entry of src except `skip`."""
    os.makedirs(dst, exist_ok=True)
    for name in os.listdir(src):
        if name not in skip:
            os.symlink(os.path.join(src, name), os.path.join(dst, name))


def neus_folder(d, base, skip_image=None, skip_mask=None, cams=None):
    """A NeuS folder in d: image/ and mask/ linked (a folder of links when one file is to be replaced),
    cameras_sphere.npz linked, or written from `cams` (a dict of arrays, or the file's bytes)."""
    root = base["neus"]
    for sub, skip in (("image", skip_image), ("mask", skip_mask)):
        if skip is None:
            os.symlink(os.path.join(root, sub), d / sub)
        else:
            link_all(os.path.join(root, sub), d / sub, skip=(skip,))
    if cams is None:
        os.symlink(os.path.join(root, "cameras_sphere.npz"), d / "cameras_sphere.npz")
    elif isinstance(cams, bytes):
        (d / "cameras_sphere.npz").write_bytes(cams)
    else:
        np.savez(d / "cameras_sphere.npz", **cams)


def neus_cams(base):
    return dict(np.load(os.path.join(base["neus"], "cameras_sphere.npz")))


def ngp_meta(base):
    return json.load(open(os.path.join(base["neus"], "transforms.json")))


def ngp_folder(d, base, meta, skip_image=None, skip_mask=None):
    """An instant-ngp folder in d: image/ and mask/ linked, transforms.json from `meta` (a dict or bytes)."""
    for sub, skip in (("image", skip_image), ("mask", skip_mask)):
        if skip is None:
            os.symlink(os.path.join(base["neus"], sub), d / sub)
        else:
            link_all(os.path.join(base["neus"], sub), d / sub, skip=(skip,))
    path = d / "transforms.json"
    path.write_bytes(meta if isinstance(meta, bytes) else json.dumps(meta).encode())
    return path


def synth_meta(base, split):
    return json.load(open(os.path.join(base["synthetic"], f"transforms_{split}.json")))


def synth_folder(d, base, train=None, test=None, skip_train_image=None):
    """A NeRF-synthetic folder in d: train/ and test/ linked, each transforms file linked or written from
    `train` / `test` (a dict, or bytes)."""
    src = base["synthetic"]
    if skip_train_image is None:
        os.symlink(os.path.join(src, "train"), d / "train")
    else:
        link_all(os.path.join(src, "train"), d / "train", skip=(skip_train_image,))
    os.symlink(os.path.join(src, "test"), d / "test")
    for split, meta in (("train", train), ("test", test)):
        path = d / f"transforms_{split}.json"
        if meta is None:
            os.symlink(os.path.join(src, path.name), path)
        else:
            path.write_bytes(meta if isinstance(meta, bytes) else json.dumps(meta).encode())


# Camera geometry helpers (world_mat = K4 @ W2C; transform_matrix = camera-to-world, OpenGL axes).


def split_world_mat(world_mat, K):
    k4 = np.eye(4)
    k4[:3, :3] = K
    return k4, np.linalg.inv(k4) @ world_mat


def rotation_y(degrees):
    a = np.radians(degrees)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def turned_w2c(w2c, degrees):
    """The camera turned about its own y axis by `degrees` (180: looking the opposite way)."""
    out = w2c.copy()
    r = np.eye(4)
    r[:3, :3] = rotation_y(degrees).T
    return r @ out


def png_bytes(width, height, colour_type, raw):
    """A minimal 8-bit PNG (colour_type 0 gray, 2 RGB, 4 gray+alpha, 6 RGBA) from raw scanlines."""
    import struct

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def non_utf8(folder, name):
    """The str path (with surrogate escapes, as Python holds it) of `folder` / `name`, a bytes name that is not
    UTF-8; skips the test where the filesystem refuses such names."""
    path = os.path.join(os.fsencode(folder), name)
    try:
        open(path, "wb").close()
        os.remove(path)
    except OSError as e:
        pytest.skip(f"the filesystem refuses the non-UTF-8 file name {name!r}: {e.strerror}")
    return os.fsdecode(path)


def tiff_bytes(array, mode):
    from PIL import Image
    import io

    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="TIFF")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------------
# The cases: name -> builder(d, base) that fills folder d and returns the path the error must name (or
# "PATH: FIELD" where the line must name the field too).

CASES = {}


def case(name):
    def register(fn):
        assert name not in CASES
        CASES[name] = fn
        return fn

    return register


def neus_cams_case(name, mutate):
    """A NeuS case whose cameras_sphere.npz is the fixture's after mutate(cams, base)."""

    @case(name)
    def build(d, base):
        cams = neus_cams(base)
        mutate(cams, base)
        neus_folder(d, base, cams=cams)
        return d / "cameras_sphere.npz"


def ngp_case(name, mutate):
    """An instant-ngp case whose transforms.json is the fixture's after mutate(meta, base)."""

    @case(name)
    def build(d, base):
        meta = ngp_meta(base)
        mutate(meta, base)
        return ngp_folder(d, base, meta)


def synth_case(name, mutate, split="train"):
    """A NeRF-synthetic case whose transforms_SPLIT.json is the fixture's after mutate(meta, base)."""

    @case(name)
    def build(d, base):
        meta = synth_meta(base, split)
        mutate(meta, base)
        synth_folder(d, base, **{split: meta})
        return d / f"transforms_{split}.json"


def setitem(key, value):
    def mutate(meta, base):
        meta[key] = value

    return mutate


def set_frame(i, key, value):
    def mutate(meta, base):
        meta["frames"][i][key] = value

    return mutate


def set_pose(i, fn):
    """frame i's transform_matrix <- fn(matrix [4, 4] array).tolist() (fn may return a list)."""

    def mutate(meta, base):
        m = fn(np.array(meta["frames"][i]["transform_matrix"]))
        meta["frames"][i]["transform_matrix"] = m.tolist() if isinstance(m, np.ndarray) else m

    return mutate


def set_all_poses(fn):
    def mutate(meta, base):
        for j, frame in enumerate(meta["frames"]):
            frame["transform_matrix"] = fn(j, np.array(frame["transform_matrix"]), meta).tolist()

    return mutate


def set_cam(key, value):
    def mutate(cams, base):
        cams[key] = value(cams[key]) if callable(value) else value

    return mutate


def with_rotation(fn):
    def f(m):
        m = m.copy()
        m[:3, :3] = fn(m[:3, :3])
        return m

    return f


def all_world_mats(fn):
    """world_mat_i <- K4' @ W2C' where (K, W2C') = fn(i, K, W2C)."""

    def mutate(cams, base):
        for i in range(len([k for k in cams if k.startswith("world_mat_")])):
            k4, w2c = split_world_mat(cams[f"world_mat_{i}"], base["K"])
            result = fn(i, k4.copy(), w2c)
            if result is not None:
                k4, w2c = result
                cams[f"world_mat_{i}"] = k4 @ w2c

    return mutate


# --- NeuS: cameras_sphere.npz members

neus_cams_case("npz object dtype world_mat",
               set_cam("world_mat_3", lambda m: np.array([list(r) for r in m], dtype=object)))
neus_cams_case("npz string world_mat", set_cam("world_mat_3", lambda m: m.astype(str)))
neus_cams_case("npz string scale_mat", set_cam("scale_mat_3", lambda m: m.astype(str)))
neus_cams_case("npz complex world_mat", set_cam("world_mat_3", lambda m: m.astype(np.complex128)))
neus_cams_case("npz bool world_mat", set_cam("world_mat_3", lambda m: m != 0))
neus_cams_case("npz short world_mat 3x3", set_cam("world_mat_3", lambda m: m[:3, :3]))
neus_cams_case("npz flat world_mat 16", set_cam("world_mat_3", lambda m: m.reshape(16)))
neus_cams_case("npz scalar world_mat", set_cam("world_mat_3", np.float64(1.0)))
neus_cams_case("npz short scale_mat 4", set_cam("scale_mat_3", lambda m: m[0]))
neus_cams_case("npz inf world_mat", set_cam("world_mat_2", lambda m: np.where(np.eye(4) > 0, np.inf, m)))
neus_cams_case("npz nan scale_mat", set_cam("scale_mat_2", lambda m: m * np.nan))
neus_cams_case("npz zero world_mat (singular)", set_cam("world_mat_6", np.zeros((4, 4))))
neus_cams_case("npz rank-2 world_mat (singular)",
               set_cam("world_mat_6", lambda m: np.vstack([m[:1], m[:1], m[2:]])))
neus_cams_case("npz zero scale_mat (singular)", set_cam("scale_mat_6", np.zeros((4, 4))))
neus_cams_case("npz scale_mat not a similarity",
               set_cam("scale_mat_1", lambda m: m @ np.diag([1.0, 3.0, 1.0, 1.0])))
neus_cams_case("npz scale_mat projective bottom row",
               set_cam("scale_mat_1", lambda m: np.vstack([m[:3], [0.0, 0.0, 0.01, 1.0]])))
neus_cams_case("npz scale_mats differ between views", set_cam("scale_mat_9", lambda m: m @ np.diag([2.0, 2, 2, 1])))
neus_cams_case("npz scale_mat missing", lambda cams, base: cams.pop("scale_mat_4"))


@case("npz scale_mat huge (its scale overflows)")
def _(d, base):
    cams = neus_cams(base)
    cams["scale_mat_3"][:3] *= 1e200
    neus_folder(d, base, cams=cams)
    return f"{d / 'cameras_sphere.npz'}: scale_mat_3"


@case("npz truncated file")
def _(d, base):
    data = open(os.path.join(base["neus"], "cameras_sphere.npz"), "rb").read()
    neus_folder(d, base, cams=data[: len(data) // 2])
    return d / "cameras_sphere.npz"


@case("npz empty file")
def _(d, base):
    neus_folder(d, base, cams=b"")
    return d / "cameras_sphere.npz"


@case("npz a single .npy array")
def _(d, base):
    neus_folder(d, base, cams=b"")
    np.save(open(d / "cameras_sphere.npz", "wb"), np.eye(4))
    return d / "cameras_sphere.npz"


@case("npz a dangling link next to a valid transforms.json")
def _(d, base):
    ngp_folder(d, base, ngp_meta(base))
    os.symlink(d / "missing.npz", d / "cameras_sphere.npz")
    return d / "cameras_sphere.npz"


@case("npz is a folder")
def _(d, base):
    neus_folder(d, base, cams=b"")
    os.remove(d / "cameras_sphere.npz")
    (d / "cameras_sphere.npz").mkdir()
    return d / "cameras_sphere.npz"


# --- NeuS: cameras that cannot work


def all_like_camera_0(cams, base):
    for key in [k for k in cams if k.startswith("world_mat_")]:
        cams[key] = cams["world_mat_0"]


neus_cams_case("npz all cameras identical", all_like_camera_0)
neus_cams_case("npz all cameras looking away", all_world_mats(lambda i, k4, w2c: (k4, turned_w2c(w2c, 180))))
neus_cams_case("npz one camera looking away",
               all_world_mats(lambda i, k4, w2c: (k4, turned_w2c(w2c, 180)) if i == 3 else None))
neus_cams_case("npz one camera turned 80 degrees (object off the image)",
               all_world_mats(lambda i, k4, w2c: (k4, turned_w2c(w2c, 80)) if i == 3 else None))


def camera_at_object_centre(i, k4, w2c, base_cams):
    centre = base_cams["scale_mat_0"][:3, 3]
    w2c = w2c.copy()
    w2c[:3, 3] = -w2c[:3, :3] @ centre
    return k4, w2c


@case("npz camera at the object centre")
def _(d, base):
    cams = neus_cams(base)
    all_world_mats(lambda i, k4, w2c: camera_at_object_centre(i, k4, w2c, cams) if i == 7 else None)(cams, base)
    neus_folder(d, base, cams=cams)
    return d / "cameras_sphere.npz"


def scaled_k(i, k4, w2c, sx=1.0, sy=1.0, index=5):
    if i != index:
        return None
    k4[0, 0] *= sx
    k4[1, 1] *= sy
    return k4, w2c


neus_cams_case("npz negative fx", all_world_mats(lambda i, k4, w2c: scaled_k(i, k4, w2c, sx=-1)))
neus_cams_case("npz negative fy", all_world_mats(lambda i, k4, w2c: scaled_k(i, k4, w2c, sy=-1)))
neus_cams_case("npz zero fx", all_world_mats(lambda i, k4, w2c: scaled_k(i, k4, w2c, sx=0)))

# --- instant-ngp: transforms.json as a file


@case("ngp non-utf8 bytes")
def _(d, base):
    return ngp_folder(d, base, b"\xff\xfe{\x00\"frames\x00" + bytes(range(128, 256)))


@case("ngp not json")
def _(d, base):
    return ngp_folder(d, base, b"{\"frames\": [")


@case("ngp empty file")
def _(d, base):
    return ngp_folder(d, base, b"")


@case("ngp is a folder")
def _(d, base):
    path = ngp_folder(d, base, b"")
    os.remove(path)
    path.mkdir()
    return path


@case("ngp huge integer literal")
def _(d, base):
    return ngp_folder(d, base, ('{"fl_x": ' + "9" * 5000 + ', "frames": []}').encode())


CASES["ngp top level a list"] = lambda d, base: ngp_folder(d, base, json.dumps([ngp_meta(base)]).encode())
CASES["ngp top level a string"] = lambda d, base: ngp_folder(d, base, b'"transforms"')
ngp_case("ngp frames missing", lambda meta, base: meta.pop("frames"))
ngp_case("ngp frames empty", setitem("frames", []))
ngp_case("ngp frames an object", lambda meta, base: meta.__setitem__("frames", {"0": meta["frames"][0]}))
ngp_case("ngp frames a string", setitem("frames", "image/*.png"))
ngp_case("ngp frame a number", lambda meta, base: meta["frames"].__setitem__(4, 17))
ngp_case("ngp frame a list", lambda meta, base: meta["frames"].__setitem__(4, [meta["frames"][4]]))

# --- instant-ngp: per-frame fields
ngp_case("ngp file_path a number", set_frame(3, "file_path", 3))
ngp_case("ngp file_path null", set_frame(3, "file_path", None))
ngp_case("ngp file_path empty", set_frame(3, "file_path", ""))
ngp_case("ngp file_path missing key", lambda meta, base: meta["frames"][3].pop("file_path"))
ngp_case("ngp mask_path a number", set_frame(3, "mask_path", 5))
ngp_case("ngp transform_matrix missing", lambda meta, base: meta["frames"][3].pop("transform_matrix"))
ngp_case("ngp transform_matrix ragged", set_pose(3, lambda m: [list(m[0]), list(m[1][:3]), list(m[2]), list(m[3])]))
ngp_case("ngp transform_matrix strings", set_pose(3, lambda m: [[str(x) for x in r] for r in m]))
ngp_case("ngp transform_matrix booleans", set_pose(3, lambda m: [[bool(x) for x in r] for r in m]))
ngp_case("ngp transform_matrix null", set_frame(3, "transform_matrix", None))
ngp_case("ngp transform_matrix a number", set_frame(3, "transform_matrix", 1.0))
ngp_case("ngp transform_matrix flat 16", set_pose(3, lambda m: m.reshape(16)))
ngp_case("ngp transform_matrix 3x3", set_pose(3, lambda m: m[:3, :3]))
ngp_case("ngp transform_matrix all zeros", set_pose(3, lambda m: np.zeros((4, 4))))
ngp_case("ngp transform_matrix nan", set_pose(3, lambda m: np.where(np.eye(4) > 0, np.nan, m)))
ngp_case("ngp rotation scaled (det 8)", set_pose(3, with_rotation(lambda r: 2 * r)))
ngp_case("ngp rotation sheared", set_pose(3, with_rotation(lambda r: r + 0.3 * np.outer(r[:, 0], r[:, 1]))))
ngp_case("ngp rotation mirrored (det -1)", set_pose(3, with_rotation(lambda r: r * [-1, 1, 1])))


@case("ngp translation 1e300 (its distances overflow)")
def _(d, base):
    meta = ngp_meta(base)
    meta["frames"][3]["transform_matrix"][0][3] = 1e300
    return f"{ngp_folder(d, base, meta)}: frame 3"


ngp_case("ngp aabb 1e300 (its sphere overflows)", setitem("aabb", [[-1e300] * 3, [1e300] * 3]))
ngp_case("ngp aabb 1e40 (its sphere overflows float32)", setitem("aabb", [[-1e40] * 3, [1e40] * 3]))
ngp_case("ngp projective bottom row", set_pose(3, lambda m: np.vstack([m[:3], [0.0, 0.0, 1.0, 1.0]])))

# --- instant-ngp: intrinsics
ngp_case("ngp fl_x a string", setitem("fl_x", "abc"))
ngp_case("ngp fl_x null", setitem("fl_x", None))
ngp_case("ngp fl_x boolean", setitem("fl_x", True))
ngp_case("ngp fl_x a list", setitem("fl_x", [75.0]))
ngp_case("ngp fl_x negative", lambda meta, base: meta.__setitem__("fl_x", -meta["fl_x"]))
ngp_case("ngp fl_x zero", setitem("fl_x", 0))
ngp_case("ngp fl_x infinite", setitem("fl_x", float("inf")))
ngp_case("ngp fl_y negative", lambda meta, base: meta.__setitem__("fl_y", -meta["fl_y"]))
# (a focal length of 1e-300 px passed the other checks, then ray directions overflowed: training diverged)
ngp_case("ngp fl_x tiny", setitem("fl_x", 1e-300))
ngp_case("ngp per-frame fl_y tiny", set_frame(3, "fl_y", 1e-300))
ngp_case("ngp fl_x huge", setitem("fl_x", 1e300))
ngp_case("ngp per-frame fl_x a string", set_frame(6, "fl_x", "abc"))
ngp_case("ngp cx a string", setitem("cx", "centre"))
ngp_case("ngp cy nan", setitem("cy", float("nan")))
ngp_case("ngp k1 a string", setitem("k1", "none"))
ngp_case("ngp k1 nan", setitem("k1", float("nan")))
# distortions no lens has, which cv2.undistort turned into garbage images without a word
ngp_case("ngp k1 folds the image", setitem("k1", -5.0))
ngp_case("ngp k1 huge", setitem("k1", 1e6))
ngp_case("ngp per-frame k2 folds the image", set_frame(5, "k2", -40.0))


def lens_case(name, fields, message, frame=None, drop=()):
    """An instant-ngp case whose lens `fields` (top level, or frame `frame`'s; the top-level keys `drop` removed)
    are refused with `message`."""

    @case(name)
    def build(d, base):
        meta = ngp_meta(base)
        for key in drop:
            del meta[key]
        (meta if frame is None else meta["frames"][frame]).update(fields)
        return f"{ngp_folder(d, base, meta)}: {message}"


# lenses: a model that is not undone loaded as a pinhole without a word; a coefficient its model lacks was dropped
lens_case("ngp camera_model EQUIRECTANGULAR", {"camera_model": "EQUIRECTANGULAR"},
          "camera_model 'EQUIRECTANGULAR' is not supported")
lens_case("ngp per-frame camera_model unknown", {"camera_model": "SUPER_WIDE"},
          "frame 3 camera_model 'SUPER_WIDE' is not supported", frame=3)
lens_case("ngp camera_model a number", {"camera_model": 4}, "camera_model is the number 4, expected a camera model")
lens_case("ngp is_fisheye a string", {"is_fisheye": "yes"}, "is_fisheye is a string ('yes'), expected true or false")
lens_case("ngp is_fisheye against camera_model", {"is_fisheye": True},
          "is_fisheye is true but camera_model is OPENCV")
lens_case("ngp instant-ngp equirectangular key", {"equirectangular": True},
          "equirectangular: instant-ngp's equirectangular lens is not supported")
lens_case("ngp k4 with OPENCV", {"k4": 0.1}, "k4 is 0.1, but camera_model OPENCV has no k4")
lens_case("ngp per-frame k5 without camera_model", {"k5": 0.1}, "frame 2 k5 is 0.1, but OPENCV (no camera_model",
          frame=2, drop=("camera_model",))
lens_case("ngp p1 with OPENCV_FISHEYE", {"camera_model": "OPENCV_FISHEYE", "p1": 0.01},
          "p1 is 0.01, but camera_model OPENCV_FISHEYE has no p1")
lens_case("ngp k1 with PINHOLE", {"camera_model": "PINHOLE", "k1": -0.1}, "k1 is -0.1, but camera_model PINHOLE")
lens_case("ngp k6 nan", {"camera_model": "FULL_OPENCV", "k6": float("nan")}, "k6 is nan, expected a finite number")
lens_case("ngp k3 folds the image", {"k3": -30.0}, "frame 0 distortion k1 0, k2 0, k3 -30 folds the image")
lens_case("ngp fisheye folds the image", {"camera_model": "OPENCV_FISHEYE", "k1": -1.5},
          "frame 0 fisheye distortion k1 -1.5, k2 0 folds the image")
lens_case("ngp FULL_OPENCV scales the edge by 20", {"camera_model": "FULL_OPENCV", "k4": -4.5},
          "frame 0 distortion k1 0, k2 0, k4 -4.5 scales the image's edge by")
lens_case("ngp distortion about a principal point far outside the image", {"cx": -200.0, "k1": -0.1},
          "frame 0 distortion k1 -0.1, k2 0: no pinhole view of the lens lies inside its 96x72 image")
ngp_case("ngp w a string", setitem("w", "wide"))
ngp_case("ngp h not whole", setitem("h", 72.5))
ngp_case("ngp w zero", setitem("w", 0))
ngp_case("ngp w mismatch", setitem("w", 128))
ngp_case("ngp no focal length", lambda meta, base: [meta.pop(k) for k in ("fl_x", "fl_y", "camera_angle_x")])


def angle_only(value):
    def mutate(meta, base):
        meta.pop("fl_x")
        meta.pop("fl_y")
        meta["camera_angle_x"] = value

    return mutate


ngp_case("ngp camera_angle_x a string", angle_only("wide"))
ngp_case("ngp camera_angle_x zero", angle_only(0.0))
ngp_case("ngp camera_angle_x negative", angle_only(-1.0))
ngp_case("ngp camera_angle_x pi", angle_only(float(np.pi)))

# --- instant-ngp: cameras that cannot work


def like_frame_0(rotation=False, translation=False):
    """Every frame's rotation and/or translation replaced by frame 0's."""

    def pose(j, m, meta):
        first = np.array(meta["frames"][0]["transform_matrix"])
        m = m.copy()
        if rotation:
            m[:3, :3] = first[:3, :3]
        if translation:
            m[:3, 3] = first[:3, 3]
        return m

    return set_all_poses(pose)


ngp_case("ngp all cameras at one point",
         like_frame_0(translation=True))
ngp_case("ngp all cameras identical", like_frame_0(rotation=True, translation=True))
ngp_case("ngp all cameras look the same way",
         like_frame_0(rotation=True))


def opengl_turned(m, degrees):
    """An OpenGL camera-to-world matrix turned about the camera's own y axis."""
    m = m.copy()
    m[:3, :3] = m[:3, :3] @ rotation_y(degrees)
    return m


ngp_case("ngp all cameras looking away", set_all_poses(lambda j, m, meta: opengl_turned(m, 180)))
ngp_case("ngp one camera looking away", set_pose(9, lambda m: opengl_turned(m, 180)))
ngp_case("ngp one camera turned 80 degrees", set_pose(9, lambda m: opengl_turned(m, 80)))


def camera_at_sphere_centre(meta, base):
    m = np.array(meta["frames"][9]["transform_matrix"])
    m[:3, 3] = meta["sphere_center"]
    meta["frames"][9]["transform_matrix"] = m.tolist()


ngp_case("ngp camera at the object centre", camera_at_sphere_centre)


@case("ngp a whole scene 1e-300 across")
def _(d, base):
    # the region of interest derived from such cameras is singular (a traceback in the normalisation before)
    meta = ngp_meta(base)
    for frame in meta["frames"]:
        pose = np.array(frame["transform_matrix"])
        pose[:3, 3] *= 1e-300
        frame["transform_matrix"] = pose.tolist()
    ngp_folder(d, base, meta)
    return d

# --- NeRF-synthetic


@case("synthetic non-utf8 bytes")
def _(d, base):
    synth_folder(d, base, train=b"\x80\x81{}")
    return d / "transforms_train.json"


@case("synthetic top level a list")
def _(d, base):
    synth_folder(d, base, test=b"[]")
    return d / "transforms_test.json"


synth_case("synthetic frames empty (train)", setitem("frames", []))
synth_case("synthetic frames empty (test)", setitem("frames", []), split="test")
synth_case("synthetic frames a number", setitem("frames", 12))
synth_case("synthetic frame a string", lambda meta, base: meta["frames"].__setitem__(2, "./train/000002"))
synth_case("synthetic file_path a number", set_frame(2, "file_path", 2))
synth_case("synthetic transform_matrix strings", set_pose(2, lambda m: [["1"] * 4] * 4))
synth_case("synthetic transform_matrix 3x4", set_pose(1, lambda m: m[:3]), split="test")
synth_case("synthetic camera_angle_x a string", setitem("camera_angle_x", "wide"))
synth_case("synthetic camera_angle_x negative", setitem("camera_angle_x", -0.5))
synth_case("synthetic camera_angle_x zero", setitem("camera_angle_x", 0))
synth_case("synthetic camera_angle_x 4 (>= pi)", setitem("camera_angle_x", 4.0), split="test")
synth_case("synthetic camera_angle_x missing", lambda meta, base: meta.pop("camera_angle_x"))
synth_case("synthetic all cameras at one point",
           like_frame_0(translation=True))
synth_case("synthetic all train cameras looking away", set_all_poses(lambda j, m, meta: opengl_turned(m, 180)))


# --- Images and masks


def neus_broken_image(content, sub="image", name=PNG_NAME):
    def build(d, base):
        neus_folder(d, base, **{f"skip_{sub}": name})
        path = d / sub / name
        if content == "folder":
            path.mkdir()
        else:
            src = os.path.join(base["neus"], sub, name)
            path.write_bytes(content(open(src, "rb").read()) if callable(content) else content)
        return path

    return build


CASES["image not an image"] = neus_broken_image(b"not a png")
CASES["image empty file"] = neus_broken_image(b"")
CASES["image is a folder"] = neus_broken_image("folder")
CASES["image truncated (no IEND)"] = neus_broken_image(lambda data: data[:-12])
CASES["image truncated (half)"] = neus_broken_image(lambda data: data[: len(data) // 2])
CASES["image bad CRC"] = neus_broken_image(lambda data: data[:40] + bytes([data[40] ^ 0xFF]) + data[41:])
CASES["image other size"] = neus_broken_image(png_bytes(4, 4, 2, b"".join(b"\x00" + b"\x80" * 12 for _ in range(4))))
CASES["image int32 pixels"] = neus_broken_image(tiff_bytes(np.zeros((72, 96), np.int32), "I"))
CASES["image float pixels with NaN"] = neus_broken_image(
    tiff_bytes(np.where(np.eye(72, 96) > 0, np.nan, 0.5).astype(np.float32), "F"))
CASES["mask not an image"] = neus_broken_image(b"GIF89a nothing", sub="mask", name=MASK_NAME)
CASES["mask empty file"] = neus_broken_image(b"", sub="mask", name=MASK_NAME)
CASES["mask is a folder"] = neus_broken_image("folder", sub="mask", name=MASK_NAME)
CASES["mask truncated (no IEND)"] = neus_broken_image(lambda data: data[:-12], sub="mask", name=MASK_NAME)


@case("image folder missing")
def _(d, base):
    neus_folder(d, base)
    os.remove(d / "image")
    return d / "image"


@case("image folder empty")
def _(d, base):
    neus_folder(d, base)
    os.remove(d / "image")
    (d / "image").mkdir()
    return d / "image"


@case("mask folder is a file")
def _(d, base):
    neus_folder(d, base)
    os.remove(d / "mask")
    (d / "mask").write_bytes(b"")
    return d / "mask"


@case("mask folder a dangling link")
def _(d, base):
    neus_folder(d, base)
    os.remove(d / "mask")
    os.symlink(d / "masks", d / "mask")
    return d / "mask"


def truncated_copy(source, path):
    """path <- the file `source` less its last 12 bytes (a PNG cut inside its end chunk); returns path."""
    with open(path, "wb") as f:
        f.write(open(source, "rb").read()[:-12])
    return path


@case("image of 16000 x 16000 pixels (a few hundred kB that decode to gigabytes)")
def _(d, base):
    neus_folder(d, base, skip_image=PNG_NAME)
    cv2.imwrite(str(d / "image" / PNG_NAME), np.zeros((16000, 16000), np.uint8))
    return f"{d / 'image' / PNG_NAME}: image is too large"


@case("mask with a non-UTF-8 name truncated")
def _(d, base):
    neus_folder(d, base, skip_mask=MASK_NAME)
    return truncated_copy(os.path.join(base["neus"], "mask", MASK_NAME), non_utf8(d / "mask", b"005\xff.png"))


@case("ngp file_path not UTF-8, image truncated")
def _(d, base):
    meta = ngp_meta(base)
    meta["frames"][5]["file_path"] = "image/" + os.fsdecode(b"bad\xff.png")  # "\udcff" in the JSON
    ngp_folder(d, base, meta, skip_image=PNG_NAME)
    return truncated_copy(os.path.join(base["neus"], "image", PNG_NAME), non_utf8(d / "image", b"bad\xff.png"))


@case("ngp image missing")
def _(d, base):
    ngp_folder(d, base, ngp_meta(base), skip_image=PNG_NAME)
    return d / "image" / PNG_NAME


@case("ngp mask_path on some frames only (the others would silently drop every mask)")
def _(d, base):
    meta = ngp_meta(base)
    del meta["frames"][2]["mask_path"]
    return f"{ngp_folder(d, base, meta)}: frame 2 has no mask_path (nor an alpha channel) while frame 0 has one"


@case("ngp mask_path file missing")
def _(d, base):
    ngp_folder(d, base, ngp_meta(base), skip_mask=MASK_NAME)
    return d / "mask" / MASK_NAME


@case("ngp mask_path a folder")
def _(d, base):
    ngp_folder(d, base, ngp_meta(base), skip_mask=MASK_NAME)
    (d / "mask" / MASK_NAME).mkdir()
    return d / "mask" / MASK_NAME


@case("ngp image truncated")
def _(d, base):
    ngp_folder(d, base, ngp_meta(base), skip_image=PNG_NAME)
    (d / "image" / PNG_NAME).write_bytes(open(os.path.join(base["neus"], "image", PNG_NAME), "rb").read()[:-12])
    return d / "image" / PNG_NAME


@case("ngp all masks empty")
def _(d, base):
    meta = ngp_meta(base)
    (d / "black").mkdir()
    cv2.imwrite(str(d / "black" / "0.png"), np.zeros((72, 96), np.uint8))
    for frame in meta["frames"]:
        frame["mask_path"] = "black/0.png"
    ngp_folder(d, base, meta)
    return d


@case("mask all black")
def _(d, base):
    neus_folder(d, base, skip_mask=MASK_NAME)
    cv2.imwrite(str(d / "mask" / MASK_NAME), np.zeros((72, 96), np.uint8))
    return d / "mask" / MASK_NAME


def jpeg_frames(d, base, damage, encoding=".jpg", suffix=".jpg"):
    """An instant-ngp folder whose images are JPEGs (or `encoding`) named *`suffix`; frame 3's file is passed
    through `damage`."""
    meta = ngp_meta(base)
    (d / "jpg").mkdir()
    for i, frame in enumerate(meta["frames"]):
        rgb = cv2.imread(os.path.join(base["neus"], frame["file_path"]))
        ok, data = cv2.imencode(encoding, rgb)
        path = d / "jpg" / f"{i:03d}{suffix}"
        path.write_bytes(damage(data.tobytes()) if i == 3 else data.tobytes())
        frame["file_path"] = f"jpg/{i:03d}{suffix}"
    ngp_folder(d, base, meta)
    return d / "jpg" / f"003{suffix}"


CASES["ngp jpeg truncated"] = lambda d, base: jpeg_frames(d, base, lambda data: data[: len(data) * 2 // 3])
CASES["ngp jpeg cut before its end marker"] = lambda d, base: jpeg_frames(d, base, lambda data: data[:-2])
# a JPEG is known by its content, not its name: one named .png, cut short
CASES["ngp jpeg named .png, cut short"] = lambda d, base: jpeg_frames(d, base, lambda data: data[:-2], suffix=".png")


@case("synthetic alpha all zero")
def _(d, base):
    name = "000002.png"
    synth_folder(d, base, skip_train_image=name)
    rgba = cv2.imread(os.path.join(base["synthetic"], "train", name), cv2.IMREAD_UNCHANGED)
    rgba[..., 3] = 0
    cv2.imwrite(str(d / "train" / name), rgba)
    return d / "train" / name


@case("synthetic image truncated")
def _(d, base):
    name = "000002.png"
    synth_folder(d, base, skip_train_image=name)
    (d / "train" / name).write_bytes(open(os.path.join(base["synthetic"], "train", name), "rb").read()[:-12])
    return d / "train" / name


# ------------------------------------------------------------------------------------------------------
# The test


# the warnings Python does not show unless asked to
HIDDEN_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_input_stops_with_one_line(name, bases, tmp_path, capfd, recwarn):
    data = tmp_path / "data"
    data.mkdir()
    # as the line shows it: pytest's capture writes a file name's non-UTF-8 byte (a surrogate escape) as "?"
    expected = str(CASES[name](data, bases)).encode("utf-8", "replace").decode()
    workspace = tmp_path / "ws"
    code = main_sdf.main([str(data), "--workspace", str(workspace), "--iters", "1", "--device", "cpu", "--quiet"])
    out, err = capfd.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    shown = [str(w.message) for w in recwarn if not issubclass(w.category, HIDDEN_WARNINGS)]
    assert not shown, shown  # outside pytest each would be lines on stderr (NumPy's overflow warnings...)
    assert expected in lines[0] or os.path.basename(expected) in lines[0], (expected, err)
    assert "Traceback" not in err and "Traceback" not in out, out + err
    assert not workspace.exists()


def test_a_path_with_control_characters_is_one_line(tmp_path, capfd):
    """A newline (or another control character) in a path or flag value is escaped in the error line."""
    for flags in ([str(tmp_path / "no\nwhere"), "--workspace", str(tmp_path / "ws")],
                  [str(tmp_path), "--workspace", str(tmp_path / "ws"), "--mesh_format", "ply\nobj"]):
        assert main_sdf.main(flags + ["--device", "cpu", "--quiet"]) == 2
        lines = capfd.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and "\\n" in lines[0], lines
    assert not (tmp_path / "ws").exists()


def test_there_are_enough_cases():
    assert len(CASES) >= 60


# ------------------------------------------------------------------------------------------------------
# Valid but unusual: must still load.


def test_rotation_with_numerical_noise_and_unusual_numbers_load(bases, tmp_path):
    """Rotations with 1e-6 noise, w and h written as 96.0, an integer per-frame fl_x, a byte-order mark and an
    unused camera_angle_x that is not a number."""
    meta = ngp_meta(bases)
    rng = np.random.default_rng(0)
    for frame in meta["frames"]:
        m = np.array(frame["transform_matrix"])
        m[:3, :3] += rng.normal(0, 1e-6, (3, 3))
        frame["transform_matrix"] = m.tolist()
    meta["w"], meta["h"] = 96.0, 72.0  # whole numbers written as floats
    meta["frames"][0]["fl_x"] = int(round(meta["fl_x"]))  # a per-frame integer focal length
    meta["camera_angle_x"] = "unused: fl_x is given"
    ngp_folder(tmp_path, bases, b"\xef\xbb\xbf" + json.dumps(meta).encode())  # with a UTF-8 byte-order mark
    scene = load_scene(str(tmp_path))
    assert scene.format == "instant-ngp" and len(scene.train) + len(scene.test) == 16


def test_neus_3x4_scaled_and_negated_world_mats_and_extra_keys_load(bases, tmp_path):
    """world_mat as 3x4, world_mats times -1 and 1e300 (the same projective cameras; the latter's determinant
    would overflow) and DTU's extra keys."""
    cams = neus_cams(bases)
    reference = load_scene(bases["neus"])
    cams["world_mat_0"] = cams["world_mat_0"][:3]
    cams["world_mat_1"] = -cams["world_mat_1"]
    cams["world_mat_2"] = cams["world_mat_2"] * 1e300
    cams["world_mat_inv_1"] = np.linalg.inv(cams["world_mat_1"])
    cams["camera_mat_1"] = np.eye(4)
    neus_folder(tmp_path, bases, cams=cams)
    scene = load_scene(str(tmp_path))
    assert np.allclose(scene.test.c2w.numpy(), reference.test.c2w.numpy(), atol=1e-5)
    assert np.allclose(scene.train.c2w.numpy(), reference.train.c2w.numpy(), atol=1e-5)
    assert np.allclose(scene.train.intrinsics.numpy(), reference.train.intrinsics.numpy(), atol=1e-4)


def test_non_utf8_folder_and_file_names_load_and_write(bases, tmp_path):
    """A scene folder and a mask whose names are not UTF-8 (OpenCV's imread and imwrite crash the process on
    them): the scene loads with its masks, and save_png writes to such a path."""
    root = non_utf8(tmp_path, b"scene\xff")
    os.mkdir(root)
    neus_folder(pathlib.Path(root), bases, skip_mask=MASK_NAME)
    mask = cv2.imread(os.path.join(bases["neus"], "mask", MASK_NAME))
    save_png(os.path.join(root, "mask", os.fsdecode(b"005\xff.png")), mask[..., ::-1])
    scene = load_scene(root, holdout=0)
    assert (scene.train.masks == load_scene(bases["neus"], holdout=0).train.masks).all()


def test_a_non_utf8_workspace_path_is_logged(tmp_path):
    workspace = non_utf8(tmp_path, b"ws\xff")
    logger = Logger(workspace)
    logger.log(f"mesh -> {workspace}/mesh.ply")
    logger.close()
    assert open(os.path.join(workspace, "log.txt"), "rb").read().endswith(b"ws\\udcff/mesh.ply\n")


def test_nerf_synthetic_with_val_split_and_extensions_loads(bases, tmp_path):
    """transforms_val.json instead of a test split; file_path with its extension; extra keys per frame."""
    train = synth_meta(bases, "train")
    val = synth_meta(bases, "test")
    for frame in val["frames"]:
        frame["file_path"] += ".png"
        frame["rotation"] = 0.0
    synth_folder(tmp_path, bases, train=train)
    os.remove(tmp_path / "transforms_test.json")
    (tmp_path / "transforms_val.json").write_text(json.dumps(val))
    scene = load_scene(str(tmp_path))
    assert scene.format == "nerf-synthetic" and len(scene.test) == 4


def test_16_bit_and_gray_alpha_images_load(bases, tmp_path):
    """16-bit RGB images and a gray+alpha PNG (read as 4 channels) are images too."""
    link_all(os.path.join(bases["neus"], "mask"), tmp_path / "mask")
    os.symlink(os.path.join(bases["neus"], "cameras_sphere.npz"), tmp_path / "cameras_sphere.npz")
    (tmp_path / "image").mkdir()
    for name in sorted(os.listdir(os.path.join(bases["neus"], "image"))):
        img = cv2.imread(os.path.join(bases["neus"], "image", name))
        cv2.imwrite(str(tmp_path / "image" / name), img.astype(np.uint16) * 257)
    gray = cv2.cvtColor(cv2.imread(os.path.join(bases["neus"], "image", PNG_NAME)), cv2.COLOR_BGR2GRAY)
    raw = b"".join(b"\x00" + np.dstack([row, np.full_like(row, 255)]).tobytes() for row in gray)
    (tmp_path / "image" / PNG_NAME).write_bytes(png_bytes(96, 72, 4, raw))
    scene = load_scene(str(tmp_path), holdout=0)
    assert len(scene.train) == 16 and scene.train.masks is not None
    reference = load_scene(bases["neus"], holdout=0).train.images
    index = scene.train.names.index(os.path.splitext(PNG_NAME)[0])
    gray_view = scene.train.images[index]
    assert (gray_view == gray_view[..., :1]).all()  # three equal channels
    others = [i for i in range(16) if i != index]
    assert (scene.train.images[others] == reference[others]).all()  # 16-bit -> the same 8-bit values


def test_complete_jpegs_load_with_trailing_padding(bases, tmp_path):
    """JPEG images load, also one with a few padding bytes after its end-of-image marker (some cameras write
    them); only a file cut before the marker is refused."""
    jpeg_frames(tmp_path, bases, lambda data: data + b"\x00" * 16)
    scene = load_scene(str(tmp_path))
    assert len(scene.train) + len(scene.test) == 16 and scene.train.images.float().mean() > 10


def test_a_lens_distortion_loads(bases, tmp_path):
    """A real lens's radial distortion (barrel, strong for a phone) passes the distortion check and is undone."""
    meta = ngp_meta(bases)
    meta.update(k1=-0.25, k2=0.05, p1=1e-3)
    ngp_folder(tmp_path, bases, meta)
    scene = load_scene(str(tmp_path))
    assert len(scene.train) + len(scene.test) == 16 and scene.train.images.float().mean() > 10


def test_pngs_named_jpg_load(bases, tmp_path):
    """Images are decoded by their content, not their names: PNG files called .jpg are not "truncated JPEGs"
    (they were refused as such)."""
    jpeg_frames(tmp_path, bases, lambda data: data, encoding=".png")
    scene = load_scene(str(tmp_path))
    assert len(scene.train) + len(scene.test) == 16 and scene.train.images.float().mean() > 10


def test_nerf_synthetic_with_only_a_train_split_holds_out_every_nth_view(bases, tmp_path):
    synth_folder(tmp_path, bases)
    os.remove(tmp_path / "transforms_test.json")
    scene = load_scene(str(tmp_path), holdout=4)
    assert scene.format == "nerf-synthetic" and len(scene.train) == 9 and len(scene.test) == 3  # 12 views
    assert scene.test.names == ["train_000000", "train_000004", "train_000008"]


def test_library_errors_become_one_line():
    """A library's exception in an `error:` line: the first line of a many-line message (or the last, where OpenCV
    and COLMAP put the failed check), and the exception's type when it says nothing (a message-less RuntimeError
    used to turn a failed CUDA-graph capture into an IndexError)."""
    many = RuntimeError("ffmpeg said:\n  a detail\nInvalid data found when processing input")
    assert error_line(many) == "ffmpeg said:"
    assert error_line(many, last=True) == "Invalid data found when processing input"
    assert error_line(RuntimeError()) == "RuntimeError"
    assert error_line(ValueError("  \n ")) == "ValueError"
