"""Writing outputs so that a killed run never leaves half a file: a temporary name, then an atomic rename."""
import json
import os

import cv2
import numpy as np


def write_atomic(path, write_fn):
    """write_fn(tmp_path) writes the file; it then replaces `path` in one rename. The temporary file is hidden
    ('.tmp-' + name: it can never match a pattern for the real files, such as ckpt_*.pth) and keeps the
    extension, from which some writers pick the format."""
    folder, name = os.path.split(path)
    os.makedirs(folder or ".", exist_ok=True)
    tmp = os.path.join(folder, f".tmp-{name}")
    write_fn(tmp)
    os.replace(tmp, path)


def write_json(path, data):
    def write(p):
        with open(p, "w") as f:
            json.dump(data, f, indent=2)

    write_atomic(path, write)


def save_png(path, image):
    """image: [H, W, 3] float in [0, 1] or uint8, RGB."""
    if image.dtype != np.uint8:
        image = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    write_atomic(path, lambda p: cv2.imwrite(p, cv2.cvtColor(image, cv2.COLOR_RGB2BGR)))
