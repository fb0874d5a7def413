"""Posing an input once per workspace: the posed scene is kept in the cache folder with a key of the input's
files (names, sizes, modification times) and the posing options, and reused while the key matches and its
scene is complete."""
import hashlib
import json
import os

from .inputs import MODEL_PARTS, classify_input, list_image_names
from .pipeline import pose_images

POSED_NAME = "posed"


def input_files(input_path):
    """The files posing reads from input_path: the images of a folder, the video, or a COLMAP model's files and
    its images folder's images."""
    source = classify_input(input_path)
    if source.kind == "video":
        return [input_path]
    if source.kind == "colmap":
        model = [os.path.join(source.model_dir, p + source.model_ext) for p in MODEL_PARTS]
        return model + [os.path.join(source.image_dir, n) for n in list_image_names(source.image_dir)]
    return [os.path.join(source.image_dir, n) for n in source.image_names]


def input_key(input_path, options):
    """A hex digest of input_path's files (path relative to it, size, mtime of each) and the options dict."""
    entries = []
    for path in input_files(input_path):
        stat = os.stat(path)
        entries.append([os.path.relpath(path, input_path), stat.st_size, stat.st_mtime_ns])
    text = json.dumps({"files": entries, "options": options}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def cached_key(posed_dir):
    """The key recorded in posed_dir/posing.json, or None."""
    try:
        with open(os.path.join(posed_dir, "posing.json")) as f:
            return json.load(f).get("input_key")
    except (OSError, ValueError, AttributeError):
        return None


def pose_folder_cached(images_dir, cache_dir, progress=None, **options):
    """cache_dir/posed: the images in images_dir (or any input pose_images takes) posed as a NeuS scene
    (pose_images with `options`), posed again only when the files or the options changed since the last time.
    Returns the posed folder's path; PosingError (one line) for a bad input or a scene that cannot be posed."""
    posed_dir = os.path.join(cache_dir, POSED_NAME)
    key = input_key(images_dir, options)
    complete = os.path.isfile(os.path.join(posed_dir, "cameras_sphere.npz")) and os.path.isdir(
        os.path.join(posed_dir, "image"))  # (a user may have deleted part of it: the key alone would still match)
    if complete and cached_key(posed_dir) == key:
        return posed_dir
    pose_images(images_dir, posed_dir, overwrite=True, progress=progress, extra_info={"input_key": key}, **options)
    return posed_dir
