"""Structure from motion with pycolmap (CPU): SIFT features at full resolution, matching (exhaustive, or
sequential for videos and long sequences), incremental mapping with one camera shared by all images, and
retries of the images it could not register. The camera refinement that follows is in refine.py.

The mapping runs with a SIMPLE_RADIAL camera (one focal length, one distortion term, principal point at the
centre): the two-view start and the first registrations cannot constrain more, and a richer model there
drifts (an OPENCV camera started from the default focal guess collapsed to fy = 0.56 fx on DTU). Nothing is
downloaded: no vocabulary tree, so loops in sequential matching are closed by also matching every
`loop_stride`-th image against all others of that stride."""
import os
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from ..interrupts import DeferredInterrupt
from ..native_stderr import native_stderr_silenced
from .errors import PosingError

MAPPING_CAMERA = "SIMPLE_RADIAL"


@dataclass(frozen=True)
class SfmOptions:
    matching: str = "auto"  # "exhaustive" | "sequential" | "auto" (sequential for videos and long sequences)
    exhaustive_limit: int = 300  # auto: exhaustive up to this many images (pairs grow as n^2)
    sequential_overlap: int = 10  # sequential: each image is matched with the next this many
    loop_stride: int = 5  # sequential: every stride-th image is also matched with all others of that stride
    max_image_size: int = 3200  # features on images downscaled to at most this side (full resolution below)
    max_num_features: int = 8192
    num_threads: int = -1  # -1: all cores
    seed: int = 0


MIN_FEATURE_IMAGE_SIDE = 32  # px: fewer rows or columns hold no SIFT feature (and 0 crashes COLMAP's resize)


def feature_image_size(size, options=SfmOptions()):
    """(width, height) of an image of `size` as feature extraction sees it: downscaled (COLMAP truncates the
    sides) until its longer side is at most options.max_image_size."""
    scale = min(1.0, options.max_image_size / max(size))
    return tuple(int(side * scale) for side in size)


def check_feature_image_size(size, path, options=SfmOptions()):
    """PosingError naming the image `path` unless its short side keeps MIN_FEATURE_IMAGE_SIDE pixels after that
    downscaling: an image too small or too elongated to pose."""
    scaled = feature_image_size(size, options)
    if min(scaled) < MIN_FEATURE_IMAGE_SIDE:
        raise PosingError(f"{path}: image is {size[0]}x{size[1]}, {scaled[0]}x{scaled[1]} as features are found on "
                          f"it (longer side at most {options.max_image_size} px); too small or too elongated to pose "
                          f"(need at least {MIN_FEATURE_IMAGE_SIDE} px on the short side)")


def pycolmap_module():
    # Ctrl-C while pycolmap is imported is held until the import ends: pycolmap turns it into a RuntimeError
    with DeferredInterrupt() as held:
        try:
            import pycolmap
        except ImportError:
            raise PosingError("pycolmap: not installed; structure from motion needs it (pip install "
                              "pycolmap==4.2.1)") from None
    if held.requested:
        raise KeyboardInterrupt
    return pycolmap


@contextmanager
def quiet_colmap(pycolmap):
    """COLMAP logs every step on stderr (and not all of it obeys glog's minloglevel: bundle adjustment does
    not); a run must print our progress bars and one-line errors only. Meanwhile file descriptor 2 points at
    /dev/null, and the stream yielded — the real stderr — is where progress bars go. Failed checks still
    raise (pycolmap turns them into Python exceptions), after stderr is back."""
    level = pycolmap.logging.minloglevel
    pycolmap.logging.minloglevel = 3
    try:
        with native_stderr_silenced() as stream:
            yield stream
    finally:
        pycolmap.logging.minloglevel = level


def image_pairs(n, sequential, overlap, loop_stride):
    """Index pairs (i < j) to match among n images: all of them, or each image with its next `overlap` ones,
    plus the quadratic overlap (i + 2^k) and every loop_stride-th image with all others of that stride."""
    if not sequential:
        return [(i, j) for i in range(n) for j in range(i + 1, n)]
    pairs = set()
    for i in range(n):
        for j in range(i + 1, min(n, i + 1 + overlap)):
            pairs.add((i, j))
        k = 1
        while i + 2**k < n and 2**k <= n // 2:
            pairs.add((i, i + 2**k))
            k += 1
    keys = list(range(0, n, max(1, loop_stride)))
    pairs.update((a, b) for x, a in enumerate(keys) for b in keys[x + 1:])
    return sorted(pairs)


def extract(pycolmap, database, image_dir, names, size, options, disable, stream):
    """Import the images with one shared camera, then SIFT features, a few images per call (a progress bar)."""
    width, height = size
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = MAPPING_CAMERA
    pycolmap.import_images(database, image_dir, camera_mode=pycolmap.CameraMode.SINGLE, image_names=names,
                           options=reader)
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.max_image_size = min(options.max_image_size, max(width, height))
    extraction.num_threads = options.num_threads
    extraction.sift.max_num_features = options.max_num_features
    chunk = 8
    with tqdm(total=len(names), desc="features", unit="image", disable=disable, file=stream, leave=False) as bar:
        for start in range(0, len(names), chunk):
            batch = names[start:start + chunk]
            pycolmap.extract_features(database, image_dir, image_names=batch, camera_mode=pycolmap.CameraMode.SINGLE,
                                      reader_options=reader, extraction_options=extraction, device=pycolmap.Device.cpu)
            bar.update(len(batch))


def match(pycolmap, database, names, pairs, work_dir, options, disable, stream):
    """Match and geometrically verify the image pairs (indices into names), in blocks (a progress bar)."""
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = options.num_threads
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.random_seed = options.seed
    pair_file = os.path.join(work_dir, "pairs.txt")
    block = 64
    with tqdm(total=len(pairs), desc="matching", unit="pair", disable=disable, file=stream, leave=False) as bar:
        for start in range(0, len(pairs), block):
            batch = pairs[start:start + block]
            with open(pair_file, "w") as f:
                f.writelines(f"{names[i]} {names[j]}\n" for i, j in batch)
            pairing = pycolmap.ImportedPairingOptions()
            pairing.match_list_path = pair_file
            pycolmap.match_image_pairs(database, matching_options=matching, pairing_options=pairing,
                                       verification_options=verification, device=pycolmap.Device.cpu)
            bar.update(len(batch))


def mapping_options(pycolmap, options, relaxed=False, fixed_distortion=False):
    mapper = pycolmap.IncrementalPipelineOptions()
    mapper.num_threads = options.num_threads
    mapper.random_seed = options.seed
    # One object, one model, but COLMAP stops at its first if it may build no other: where the first initial pair
    # ends in a dead end (a narrow field of view: the focal length's first guess is half the true one, and no
    # third image registers), it started from another pair only so. The largest is kept (`largest`).
    mapper.ba_refine_principal_point = False  # refined once all views are in (refine.py)
    if relaxed:  # continuing a model: fewer and less clean 2D-3D matches may register an image
        mapper.min_num_matches = 10
        mapper.mapper.abs_pose_min_num_inliers = 20  # COLMAP's defaults: 30 inliers, 25 %, 12 px
        mapper.mapper.abs_pose_min_inlier_ratio = 0.2
        mapper.mapper.abs_pose_max_error = 8.0  # but tighter: fewer inliers must fit better
        mapper.mapper.max_reg_trials = 10
    if fixed_distortion:  # the distortion term stays 0 while mapping (refine.py frees it)
        mapper.ba_refine_extra_params = False
        mapper.mapper.abs_pose_refine_extra_params = False
    return mapper


def largest(models):
    return max(models.values(), key=lambda r: r.num_reg_images()) if models else None


def map_once(pycolmap, database, image_dir, names, work_dir, options, fixed_distortion, registered):
    """One incremental mapping from scratch, continued once with relaxed registration thresholds for the
    images it left out. The Reconstruction, or None without an initial pair."""
    os.makedirs(work_dir, exist_ok=True)
    model = largest(pycolmap.incremental_mapping(
        database, image_dir, work_dir, next_image_callback=registered,
        options=mapping_options(pycolmap, options, fixed_distortion=fixed_distortion)))
    if model is None or model.num_reg_images() == len(names):
        return model
    start, retry = os.path.join(work_dir, "start"), os.path.join(work_dir, "retried")
    os.makedirs(start)
    os.makedirs(retry)
    model.write(start)
    retried = largest(pycolmap.incremental_mapping(
        database, image_dir, retry, input_path=start, next_image_callback=registered,
        options=mapping_options(pycolmap, options, relaxed=True, fixed_distortion=fixed_distortion)))
    return retried if retried is not None and retried.num_reg_images() > model.num_reg_images() else model


def map_images(pycolmap, database, image_dir, names, work_dir, options, disable, stream):
    """The Reconstruction with the most registered images (None if no initial pair was found) of: mapping with
    the distortion term free, then — if images were left out — mapping again with it fixed at 0. The first
    two-view adjustment can trade the focal length for an absurd distortion (on a rendered 320x240 scene it
    ran off to k = -2.9 with the focal length doubled), after which no other image registers."""
    with tqdm(total=len(names), desc="mapping", unit="image", disable=disable, file=stream, leave=False) as bar:
        def registered():
            bar.update(1 if bar.n < bar.total else 0)

        best = None
        for attempt, fixed_distortion in enumerate((False, True)):
            bar.reset()
            model = map_once(pycolmap, database, image_dir, names, os.path.join(work_dir, f"mapping{attempt}"),
                             options, fixed_distortion, registered)
            if model is not None and (best is None or model.num_reg_images() > best.num_reg_images()):
                best = model
            if best is not None and best.num_reg_images() == len(names):
                break
        bar.n = best.num_reg_images() if best is not None else 0
        bar.refresh()
    return best


def reconstruct(image_dir, names, size, work_dir, sequential, times, options=SfmOptions(), disable=None, where=None):
    """pycolmap.Reconstruction of the images `names` (files in image_dir, all of `size` (width, height)) with
    one SIMPLE_RADIAL camera, and what matching was done (dict). Work files go to work_dir; each stage is timed
    in `times` (timing.StageTimes). sequential: the images are in capture order (a video): sequential matching
    unless options.matching says otherwise."""
    pycolmap = pycolmap_module()
    where = where or image_dir
    os.makedirs(work_dir, exist_ok=True)
    database = os.path.join(work_dir, "database.db")
    if options.matching == "auto":
        sequential = sequential or len(names) > options.exhaustive_limit
    else:
        sequential = options.matching == "sequential"
    pairs = image_pairs(len(names), sequential, options.sequential_overlap, options.loop_stride)
    pycolmap.set_random_seed(options.seed)
    with quiet_colmap(pycolmap) as stream:
        pycolmap.Database.open(database).close()  # creates it
        with times.stage("features"):
            extract(pycolmap, database, image_dir, names, size, options, disable, stream)
        with times.stage("matching"):
            match(pycolmap, database, names, pairs, work_dir, options, disable, stream)
        with times.stage("mapping"):
            model = map_images(pycolmap, database, image_dir, names, work_dir, options, disable, stream)
    if model is None:
        raise PosingError(f"{where}: no model found: structure from motion found no pair of the {len(names)} images "
                          f"to start from (too little texture or overlap between the views?)")
    return model, {"matching": "sequential" if sequential else "exhaustive", "pairs": len(pairs)}


def registered_names(model):
    """{image name: pycolmap.Image} of the registered images of the Reconstruction."""
    return {model.image(i).name: model.image(i) for i in model.reg_image_ids()}


def camera_to_world(image):
    """[4, 4] camera-to-world pose (OpenCV axes, as COLMAP's) of a registered pycolmap.Image."""
    w2c = np.eye(4)
    w2c[:3] = image.cam_from_world().matrix()
    return np.linalg.inv(w2c)
