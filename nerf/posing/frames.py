"""Video -> still frames for structure from motion: the sharpest frame of every `step` consecutive ones, then
those much blurrier than their neighbours dropped (motion blur ruins features and, later, the photometric
loss). Decoded with imageio's ffmpeg plugin (imageio-ffmpeg ships its own ffmpeg binary)."""
import math
import os

import cv2
import numpy as np
from tqdm import tqdm

from ..files import save_png
from ..input_checks import error_line
from .errors import PosingError

SHARPNESS_SIZE = 640  # sharpness is measured on a grey copy at most this wide: enough to see blur, and cheap
NEIGHBOURS = 3  # each side: the kept frames a frame's sharpness is compared with


def sharpness(rgb):
    """Variance of the Laplacian of the grey image rgb [H, W, 3] uint8: high for crisp edges, low for blur."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    scale = SHARPNESS_SIZE / max(grey.shape)
    if scale < 1:
        grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def blurred(scores, ratio):
    """[K] bool: frames whose sharpness scores [K] are below `ratio` x the median of their NEIGHBOURS kept
    neighbours on each side (relative, because a whole video can be soft or crisp)."""
    scores = np.asarray(scores, dtype=np.float64)
    out = np.zeros(len(scores), dtype=bool)
    for i in range(len(scores)):
        near = np.concatenate([scores[max(0, i - NEIGHBOURS):i], scores[i + 1:i + 1 + NEIGHBOURS]])
        out[i] = len(near) > 0 and scores[i] < ratio * np.median(near)
    return out


def open_video(path):
    import imageio.v2 as imageio

    try:
        reader = imageio.get_reader(path, format="FFMPEG")
        meta = reader.get_meta_data()
    except Exception as e:  # imageio raises OSError, RuntimeError... with ffmpeg's whole log; keep its first line
        raise PosingError(f"{path}: video cannot be decoded ({error_line(e)})") from None
    return reader, meta


def check_video(path):
    """PosingError unless ffmpeg can open the video (before any folder is made for its frames)."""
    reader, _ = open_video(path)
    reader.close()


def extract_frames(video_path, out_dir, step=None, max_frames=150, blur_ratio=0.5, disable=None):
    """Write frames of the video as out_dir/000000.png... and return [(file name, frame index)].

    step: keep the sharpest of every `step` consecutive frames; None: chosen so that about `max_frames` are
    kept. blur_ratio: a kept frame less sharp than blur_ratio x its neighbours' median is dropped.
    disable: tqdm's (None: a bar only on a terminal)."""
    reader, meta = open_video(video_path)
    fps, duration = meta.get("fps"), meta.get("duration")
    estimate = int(round(fps * duration)) if fps and duration and math.isfinite(fps * duration) else None
    if step is None:
        step = max(1, math.ceil(estimate / max_frames)) if estimate else 1
    os.makedirs(out_dir, exist_ok=True)
    kept, scores = [], []  # (name, index) and sharpness of each frame written
    best = None  # (score, index, rgb) of the current window of `step` frames

    def flush():
        name = f"{len(kept):06d}.png"
        save_png(os.path.join(out_dir, name), best[2])
        kept.append((name, best[1]))
        scores.append(best[0])

    index = -1
    try:
        for index, frame in enumerate(tqdm(reader, total=estimate, desc="frames", unit="frame", disable=disable)):
            rgb = np.ascontiguousarray(frame[..., :3])
            score = sharpness(rgb)
            if best is None or score > best[0]:
                best = (score, index, rgb)
            if index % step == step - 1:
                flush()
                best = None
    except Exception as e:  # a damaged stream; the frames decoded before it are used if there are enough
        if not kept:
            raise PosingError(f"{video_path}: video cannot be decoded at frame {index + 1} ({error_line(e)})") from None
    finally:
        reader.close()
    if best is not None:
        flush()
    if index < 0:
        raise PosingError(f"{video_path}: video has no frames")
    drop = blurred(scores, blur_ratio)
    for (name, _), bad in zip(kept, drop):
        if bad:
            os.remove(os.path.join(out_dir, name))
    return [k for k, bad in zip(kept, drop) if not bad]
