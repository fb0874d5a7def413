"""What the input of posing is — a folder of images, a video file, or an existing COLMAP model — and the checks
that must pass before anything is computed or written: enough images, all readable, all one size, a model with
all its files."""
import hashlib
import os
from dataclasses import dataclass, field
from typing import NamedTuple, Optional

from ..images import MASK_THRESHOLD, QUARTER_TURNS, exif_orientation, read_all, read_image
from .errors import PosingError
from .sfm import check_feature_image_size

COLMAP_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")  # what both OpenCV and COLMAP decode
# and a phone's HEIC photos, which we decode (images.decode_heif) and hand to COLMAP as PNG copies
IMAGE_SUFFIXES = COLMAP_SUFFIXES + (".heic", ".heif")
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp")
# photos that neither we nor COLMAP decode: AVIF, cameras' raw files
UNREADABLE_PHOTO_SUFFIXES = (".avif", ".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf", ".rw2")
MODEL_PARTS = ("cameras", "images", "points3D")
MIN_IMAGES = 3  # two views pose each other but leave nothing to hold out or to check a third view against


class UnreadablePhotos(PosingError):
    """A folder whose photos are all of a format we cannot read (AVIF, raw): said as such, where a folder without
    any photo is left to the loader's 'no cameras file'."""


@dataclass
class PosingInput:
    kind: str  # "images" | "video" | "colmap"
    path: str  # as given
    image_dir: Optional[str] = None  # folder holding the images (a video's frames are extracted later)
    image_names: list = field(default_factory=list)  # file names inside image_dir, sorted
    model_dir: Optional[str] = None  # the COLMAP model folder (kind "colmap")
    model_ext: Optional[str] = None  # ".bin" or ".txt"
    turns: dict = field(default_factory=dict)  # CheckedImages.turns, set by check_images' caller
    cut_out: bool = False  # masks from the images' alpha channels (CheckedImages.cut_out)


def list_image_names(folder):
    """Names of the image files directly inside `folder`, sorted (the order of the views)."""
    return sorted(n for n in os.listdir(folder)
                  if n.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(os.path.join(folder, n)))


def unreadable_photo_names(folder):
    """Names of the photo files directly inside `folder` of a format we cannot read (UNREADABLE_PHOTO_SUFFIXES):
    files only, as list_image_names (a folder named x.dng, or a dangling link, is no photo)."""
    return sorted(n for n in os.listdir(folder)
                  if n.lower().endswith(UNREADABLE_PHOTO_SUFFIXES) and os.path.isfile(os.path.join(folder, n)))


def unreadable_kinds(names):
    """'N photos in AVIF/DNG' of the names (unreadable_photo_names')."""
    kinds = sorted({os.path.splitext(n)[1].upper().lstrip(".") for n in names})
    return f"{len(names)} photo{'s' if len(names) != 1 else ''} in {'/'.join(kinds)}"


def has_model_file(folder):
    return any(os.path.exists(os.path.join(folder, part + ext)) for part in MODEL_PARTS for ext in (".bin", ".txt"))


def model_extension(model_dir):
    """'.bin' or '.txt': the format in which all three model files exist; else the first one missing (of the
    format more of them are in) is named."""
    present = {ext: [p for p in MODEL_PARTS if os.path.isfile(os.path.join(model_dir, p + ext))]
               for ext in (".bin", ".txt")}
    for ext in (".bin", ".txt"):
        if len(present[ext]) == len(MODEL_PARTS):
            return ext
    ext = max((".bin", ".txt"), key=lambda e: len(present[e]))
    missing = next(p for p in MODEL_PARTS if p not in present[ext])
    raise PosingError(f"{os.path.join(model_dir, missing + ext)}: missing (a COLMAP model needs "
                      f"{', '.join(p + ext for p in MODEL_PARTS)})")


def find_model(path):
    """(model folder, images folder) of a COLMAP input, or None when `path` is not one. Accepted: the model
    folder itself (images in ../images or ../../images, as in PROJECT/sparse/0), or a project folder holding
    sparse/0 (or sparse/) and images/."""
    if has_model_file(path):
        parent = os.path.dirname(os.path.abspath(path))
        candidates = [os.path.join(path, "images"), os.path.join(parent, "images"),
                      os.path.join(os.path.dirname(parent), "images")]
        images = next((c for c in candidates if os.path.isdir(c)), candidates[-1])
        return path, images
    for sub in (os.path.join("sparse", "0"), "sparse"):
        model = os.path.join(path, sub)
        if os.path.isdir(model) and has_model_file(model):
            return model, os.path.join(path, "images")
    if os.path.isdir(os.path.join(path, "sparse")):
        raise PosingError(f"{os.path.join(path, 'sparse')}: no COLMAP model in it (expected sparse/0/ with "
                          f"cameras, images and points3D, .bin or .txt)")
    return None


def classify_input(path):
    """The PosingInput of `path`; PosingError for a path that is none of the three kinds."""
    if not os.path.exists(path):
        raise PosingError(f"{path}: no such file or folder")
    if not (os.path.isfile(path) or os.path.isdir(path)):  # a pipe or a device: reading it could block for ever
        raise PosingError(f"{path}: not a regular file or folder")
    if os.path.isfile(path):
        if not path.lower().endswith(VIDEO_SUFFIXES):
            what = "an image" if path.lower().endswith(IMAGE_SUFFIXES) else "a file"
            raise PosingError(f"{path}: {what}, expected a folder of images, a video ({', '.join(VIDEO_SUFFIXES)}) "
                              f"or a COLMAP model folder")
        if os.path.getsize(path) == 0:
            raise PosingError(f"{path}: empty video file (0 bytes)")
        return PosingInput("video", path)
    model = find_model(path)
    if model is not None:
        model_dir, image_dir = model
        ext = model_extension(model_dir)
        if not os.path.isdir(image_dir):
            raise PosingError(f"{image_dir}: images folder of the COLMAP model {model_dir} missing")
        return PosingInput("colmap", path, image_dir=image_dir, model_dir=model_dir, model_ext=ext)
    image_dir = path
    names = list_image_names(path)
    if not names and os.path.isdir(os.path.join(path, "images")):  # a COLMAP project not yet reconstructed
        image_dir = os.path.join(path, "images")
        names = list_image_names(image_dir)
    if not names:
        unreadable = unreadable_photo_names(image_dir)
        if unreadable:
            raise UnreadablePhotos(f"{image_dir}: {unreadable_kinds(unreadable)}, which neither OpenCV nor COLMAP "
                                   f"reads; convert them to JPEG or PNG first")
        raise PosingError(f"{path}: no images found ({', '.join(IMAGE_SUFFIXES)})")
    return PosingInput("images", path, image_dir=image_dir, image_names=names)


def too_few(where, count, copies=0, unreadable=()):
    """The PosingError of an input with `count` usable images (`copies` more that repeat one of them; the names
    `unreadable` of photos beside them of a format we cannot read, which the user may have counted on)."""
    what = "only one image" if count == 1 else f"only {count} images"
    if copies:
        of = "it" if count == 1 else "them"
        what = what.replace("image", "distinct image") + f" ({copies} more are copies of {of})"
    if unreadable:
        what += f" (and {unreadable_kinds(unreadable)}, which neither OpenCV nor COLMAP reads: convert them)"
    return PosingError(f"{where}: {what}; structure from motion needs at least {MIN_IMAGES} views of the object")


class ImageFacts(NamedTuple):
    """What check_images reads of one image."""

    size: tuple  # (height, width) as stored
    digest: bytes  # of its pixels: copies share it
    orientation: int  # its EXIF orientation (images.UPRIGHT)
    cut_out: bool  # an alpha channel transparent somewhere (at most MASK_THRESHOLD)


@dataclass
class CheckedImages:
    size: tuple  # (width, height) as posed: after the turns
    names: list  # the names kept, in order
    copies: dict  # {what a copy left out is called: what it copies}
    turns: dict  # {name: the EXIF orientation (images.UPRIGHT) it is turned upright by}; the others as stored
    cut_out: bool  # every image has a transparent background (alpha at most MASK_THRESHOLD): masks from it
    unreadable: tuple = ()  # names of photos beside them that we cannot read (AVIF, raw): left out


def check_images(image_dir, names, where, labels=None):
    """The CheckedImages of the images `names` in image_dir: every one decodable (a damaged file is named), all of
    one size (NeuS stacks them; structure from motion shares one camera), large enough to find features on
    (sfm.check_feature_image_size), and at least MIN_IMAGES of them distinct. Cut-out photos (an alpha channel
    transparent somewhere: a background removed) give masks, so all of them or none must be, and none may be
    transparent all over.

    An image whose pixels repeat an earlier one's adds no view (and a folder of copies kept structure from motion
    searching for a baseline for minutes before it failed): it is left out, and named in the copies by labels
    {name: what it is called} (a video's frames) or else by path. The kept decide the turns (`upright_turns`)."""
    # (a video's frames have none beside them)
    unreadable = unreadable_photo_names(image_dir) if labels is None else ()
    if len(names) < MIN_IMAGES:
        raise too_few(where, len(names), unreadable=unreadable)
    paths = [os.path.join(image_dir, n) for n in names]

    def facts(path):
        rgb, alpha = read_image(path)
        # background where the scene's mask will be (images.binary_mask: alpha at most half): judged by any other
        # threshold, an alpha half transparent all over gave a scene whose masks the loader refuses, and one
        # barely transparent (254 everywhere) gave masks all object
        background = None if alpha is None else alpha <= MASK_THRESHOLD
        if background is not None and background.all():
            raise PosingError(f"{path}: transparent all over (its alpha channel is at most {MASK_THRESHOLD} "
                              f"everywhere: no object pixel for the mask)")
        return ImageFacts(rgb.shape[:2], hashlib.blake2b(rgb.tobytes(), digest_size=16).digest(),
                          exif_orientation(path), background is not None and bool(background.any()))

    read = dict(zip(names, read_all(facts, paths)))
    path = dict(zip(names, paths))
    label = {name: labels[name] for name in names} if labels else path
    first, kept, copies = {}, [], {}
    for name in names:
        if read[name].digest in first:
            copies[label[name]] = label[first[read[name].digest]]
        else:
            first[read[name].digest] = name
            kept.append(name)
    # of the kept only: a copy stripped of its EXIF made the rotations differ, and all were posed on their side;
    # an opaque copy of a cut-out photo is no second kind of photo
    cut_out = [name for name in kept if read[name].cut_out]
    if cut_out and len(cut_out) < len(kept):
        other = next(name for name in kept if not read[name].cut_out)
        raise PosingError(f"{path[other]}: no transparent background, while {path[cut_out[0]]} has one (cut-out "
                          f"photos give the masks: all of them, or none)")
    turns, size = upright_turns(kept, [read[n].size for n in kept], [read[n].orientation for n in kept],
                                [path[n] for n in kept])
    check_feature_image_size(size, paths[0])
    if len(kept) < MIN_IMAGES:
        raise too_few(where, len(kept), len(copies), unreadable)
    return CheckedImages(size, kept, copies, turns, bool(cut_out), unreadable)


def upright_turns(names, sizes, orientations, paths):
    """({name: orientation} of the images to turn upright before posing, their common (width, height) then) of
    images with stored sizes [(height, width)] and EXIF orientations (images.UPRIGHT). Stored sizes alike:
    photos that all state one rotation (a phone held upright stores its pixels on their side) are turned, so
    that the scene's up is the cameras' (the orbit video's axis) and its renders stand upright; where the
    rotations differ, none (one sensor's pixels: the shared camera fits them all). Stored sizes that differ yet
    agree once each is turned (photos an editor turned, dropping the rotation): each is turned. Else the sizes
    differ as seen too: PosingError naming the first that differs (NeuS stacks the images; structure from
    motion shares one camera)."""
    seen = [size[::-1] if orientation in QUARTER_TURNS else size for size, orientation in zip(sizes, orientations)]
    if len(set(sizes)) == 1:
        common = set(orientations)
        orientation = common.pop() if len(common) == 1 else 1
        turns = {name: orientation for name in names} if orientation != 1 else {}
    elif len(set(seen)) == 1:
        turns = {name: orientation for name, orientation in zip(names, orientations) if orientation != 1}
    else:  # named as a viewer shows them (rotated)
        i = next(i for i, size in enumerate(seen) if size != seen[0])
        raise PosingError(f"{paths[i]}: image is {seen[i][1]}x{seen[i][0]}, {paths[0]} is {seen[0][1]}x"
                          f"{seen[0][0]} (all images must have one size)")
    height, width = seen[0] if turns else sizes[0]
    return turns, (width, height)
