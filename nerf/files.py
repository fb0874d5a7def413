"""Writing outputs so that a killed run never leaves half a file: a hidden temporary file, flushed to disk,
then one atomic rename."""
import json
import os
import secrets

import cv2
import numpy as np


def outermost_missing(folder):
    """The outermost of the absolute path `folder` and its parents that does not exist; None when it exists."""
    missing = None
    while not os.path.exists(folder):
        folder, missing = os.path.dirname(folder), folder
    return missing


def overlong_name(path, existing, affix=0):
    """The first name that creating `path` below the existing folder `existing` would make and that the file
    system refuses as too long (with `affix` more bytes on the last one: a temporary name made from it), as
    (name, its bytes, the limit), or None."""
    limit = os.pathconf(existing, "PC_NAME_MAX")
    names = os.path.relpath(os.path.abspath(path), existing).split(os.sep)
    for k, name in enumerate(names):
        size = len(os.fsencode(name)) + (affix if k == len(names) - 1 else 0)
        if size > limit:
            return name, size, limit
    return None


def write_atomic(path, write_fn):
    """write_fn(tmp_path) writes the file; it is synced to disk and then replaces `path` in one rename. The
    temporary file is hidden ('.tmp-', a random tag, '-' + name: it can never match a pattern for the real
    files, such as ckpt_*.pth, nor meet a stray entry of a fixed name) and keeps the extension, from which some
    writers pick the format. If writing fails (a full
    disk...), the temporary file is removed and the error raised: `path` is the old file or absent, never
    half a file."""
    folder, name = os.path.split(path)
    os.makedirs(folder or ".", exist_ok=True)
    tmp = os.path.join(folder, f".tmp-{secrets.token_hex(4)}-{name}")
    try:
        write_fn(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError) and e.filename is None:  # a write on an open file names no file: name ours
            e.filename = path
        raise
    fd = os.open(folder or ".", os.O_RDONLY)  # the rename itself reaches the disk too
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path, data):
    def write(p):
        with open(p, "w") as f:
            json.dump(data, f, indent=2)

    write_atomic(path, write)


def save_png(path, image):
    """image: [H, W, 3] RGB, [H, W, 4] RGBA or [H, W] grey, float in [0, 1] or uint8."""
    if image.dtype != np.uint8:
        image = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)

    def write(p):
        # encoded here and written by Python: cv2.imwrite crashes the process on a path that is not UTF-8
        if image.ndim == 3:  # OpenCV's channel order
            ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA if image.shape[2] == 4
                                                         else cv2.COLOR_RGB2BGR))
        else:
            ok, data = cv2.imencode(".png", image)
        if not ok:
            raise OSError(f"{p}: could not encode the image")
        with open(p, "wb") as f:
            f.write(data.tobytes())

    write_atomic(path, write)
