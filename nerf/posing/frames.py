"""Video -> still frames for structure from motion: the sharpest frame of every `step` consecutive ones, then
those much blurrier than their neighbours dropped (motion blur ruins features and, later, the photometric
loss). Decoded with imageio's ffmpeg plugin (imageio-ffmpeg ships its own ffmpeg binary)."""
import logging
import math
import os
from contextlib import contextmanager

import cv2
import numpy as np
from tqdm import tqdm

from ..files import save_png
from ..input_checks import error_line
from .errors import PosingError
from .sfm import check_feature_image_size

SHARPNESS_SIZE = 640  # sharpness is measured on a grey copy at most this wide: enough to see blur, and cheap
NEIGHBOURS = 3  # each side: the kept frames a frame's sharpness is compared with
UNKNOWN_LENGTH_READ_LIMIT = 100  # x max_frames: the frames read at most of a video that states no length


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


@contextmanager
def quiet_ffmpeg_log():
    """imageio-ffmpeg logs warnings that are no problem here: when ffmpeg's frames differ in size from the
    stream's, as they do for every video with rotation metadata (ffmpeg turns its frames upright), and when a
    reader closed before the video's end stops ffmpeg. A run prints one line at most."""
    logger = logging.getLogger("imageio_ffmpeg")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def open_video(path):
    import imageio.v2 as imageio

    try:
        with quiet_ffmpeg_log():
            reader = imageio.get_reader(path, format="FFMPEG")
            meta = reader.get_meta_data()
    except Exception as e:  # imageio raises OSError, RuntimeError... with ffmpeg's whole log; keep its first line
        raise PosingError(f"{path}: video cannot be decoded ({error_line(e)})") from None
    return reader, meta


def check_video(path):
    """PosingError unless ffmpeg can open the video and its frames are large enough to pose (before any folder
    is made for its frames, so that the error names the video, not a frame)."""
    reader, meta = open_video(path)
    with quiet_ffmpeg_log():
        reader.close()
    if meta.get("size"):
        check_feature_image_size(tuple(meta["size"]), path)


def frame_estimate(meta):
    """The number of frames the container's frame rate and duration imply, or None (a stream, a variable frame
    rate: either can be missing or 0)."""
    fps, duration = meta.get("fps"), meta.get("duration")
    return int(round(fps * duration)) if fps and duration and math.isfinite(fps * duration) else None


def extract_frames(video_path, out_dir, step=None, max_frames=150, blur_ratio=0.5, disable=None):
    """Write frames of the video as out_dir/000000.png... and return [(file name, frame index)].

    At most max_frames frames are kept, whatever the container says of its length. step: keep the sharpest of
    every `step` consecutive frames; None: chosen so that about `max_frames` are kept — from the container's
    frame rate and duration, or, when it states neither, doubled whenever 2 x max_frames are kept (the sharper
    of each two kept frames stays), reading at most UNKNOWN_LENGTH_READ_LIMIT x max_frames frames.
    blur_ratio: a kept frame less sharp than blur_ratio x its neighbours' median is dropped.
    disable: tqdm's (None: a bar only on a terminal)."""
    reader, meta = open_video(video_path)
    estimate = frame_estimate(meta)
    growing = step is None and estimate is None  # the step grows as frames come
    if step is None:
        step = max(1, math.ceil(estimate / max_frames)) if estimate else 1
    read_limit = UNKNOWN_LENGTH_READ_LIMIT * max_frames if growing else math.inf
    os.makedirs(out_dir, exist_ok=True)
    kept = []  # (sharpness, frame index, path) of each frame written, in frame order
    best = None  # (score, index, rgb) of the current window of `step` frames

    def flush():
        path = os.path.join(out_dir, f"frame-{best[1]:09d}.png")  # renamed 000000.png... at the end
        save_png(path, best[2])
        kept.append((best[0], best[1], path))

    def drop(frames):
        for _, _, path in frames:
            os.remove(path)

    index = -1
    try:
        for index, frame in enumerate(tqdm(reader, total=estimate, desc="frames", unit="frame", disable=disable,
                                           leave=False)):
            rgb = np.ascontiguousarray(frame[..., :3])
            score = sharpness(rgb)
            if best is None or score > best[0]:
                best = (score, index, rgb)
            if index % step == step - 1:
                flush()
                best = None
                if growing and len(kept) == 2 * max_frames:  # windows twice as long: the sharper of each pair
                    pairs = [sorted(kept[i:i + 2]) for i in range(0, len(kept), 2)]
                    drop(pair[0] for pair in pairs)
                    kept = [pair[1] for pair in pairs]
                    step *= 2
                if (len(kept) == max_frames and not growing) or index + 1 >= read_limit:
                    break
    except Exception as e:  # a damaged stream; the frames decoded before it are used if there are enough
        if not kept:
            raise PosingError(f"{video_path}: video cannot be decoded at frame {index + 1} ({error_line(e)})") from None
    finally:
        with quiet_ffmpeg_log():
            reader.close()
    if best is not None:
        flush()
    if index < 0:
        raise PosingError(f"{video_path}: video has no frames")
    if len(kept) > max_frames:  # a growing step's last doubling: evenly spread
        chosen = set(np.linspace(0, len(kept) - 1, max_frames).round().astype(int).tolist())
        drop(k for i, k in enumerate(kept) if i not in chosen)
        kept = [k for i, k in enumerate(kept) if i in chosen]
    bad = blurred([score for score, _, _ in kept], blur_ratio)
    drop(k for k, b in zip(kept, bad) if b)
    kept = [k for k, b in zip(kept, bad) if not b]
    frames = []
    for i, (_, frame_index, path) in enumerate(kept):
        name = f"{i:06d}.png"
        os.rename(path, os.path.join(out_dir, name))
        frames.append((name, frame_index))
    return frames
