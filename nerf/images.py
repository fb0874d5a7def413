"""Reading images and masks: 8-bit RGB and binary masks, decoded on a few threads, with the decoders' own
warnings silenced so that a bad file gives one line (ours, a DatasetError naming it)."""
import glob
import io
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import cv2
import numpy as np

from .camera_geometry import downscale_intrinsics
from .input_checks import DatasetError, check_file, error_line
from .native_stderr import native_stderr_silenced


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".JPG", ".PNG", ".exr", ".heic", ".HEIC", ".heif", ".HEIF")
# Pixels of one image, checked in its header before decoding: beyond any camera's (~100 MP), and small enough
# that a few decoded at once fit in memory (a 16000 x 16000 PNG of a few hundred kB decodes to gigabytes).
MAX_IMAGE_PIXELS = 2**27
MASK_THRESHOLD = 127  # mask (or alpha) values above it are the object's


# EXIF orientation -> the stored pixels [H, W, ...] turned as they are meant to be seen (1: as stored)
UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored
    3: lambda a: a[::-1, ::-1],  # turned 180 degrees
    4: lambda a: a[::-1],  # mirrored upside down
    5: lambda a: a.swapaxes(0, 1),  # mirrored about the main diagonal
    6: lambda a: np.rot90(a, -1),  # turned 90 degrees clockwise (a phone held upright)
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),  # mirrored about the other diagonal
    8: lambda a: np.rot90(a, 1),  # turned 90 degrees counter-clockwise
}
QUARTER_TURNS = (5, 6, 7, 8)  # the orientations that swap width and height
# EXIF orientation -> the pixels turned as seen [H, W, ...] back as stored (UPRIGHT's inverse)
AS_STORED = {orientation: UPRIGHT[{6: 8, 8: 6}.get(orientation, orientation)] for orientation in UPRIGHT}
TIFF_SIGNATURES = (b"II*\0", b"MM\0*")
# HEIF files (a phone's HEIC photos) by the brand of their first box, 'ftyp': decoded by pillow-heif, not OpenCV
HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")


def is_heif(data):
    return data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS


@contextmanager
def quiet_decoders():
    """Silence what image decoders print while reading: libpng and libjpeg write their own warnings
    ('libpng error: Read Error') straight to the process's stderr, and OpenCV logs a WARN line for a file it
    cannot open; a bad input must give one line, ours. OpenCV's log level is set to silent and file
    descriptor 2 points at /dev/null meanwhile (entered from one thread only: `read_all`)."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        with native_stderr_silenced():
            yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def list_images(folder: str, what: str):
    files = sorted(f for f in glob.glob(os.path.join(folder, "*")) if f.endswith(IMAGE_EXTENSIONS))
    if not files:
        raise DatasetError(f"{folder}: no {what} found")
    return files


def check_jpeg_complete(data, path, what):
    """libjpeg decodes a truncated JPEG with a warning and fills the missing rows grey: catch it by the
    end-of-image marker, which a complete file ends with (a few bytes of padding after it are tolerated)."""
    if b"\xff\xd9" not in data[-64:]:
        raise DatasetError(f"{path}: truncated {what} (the JPEG has no end-of-image marker)")


def check_pixel_count(data, path, what):
    """DatasetError if the image's header (read by Pillow, which parses headers without decoding) claims more
    than MAX_IMAGE_PIXELS; formats Pillow does not know are left to OpenCV's own limit."""
    from PIL import Image

    with warnings.catch_warnings():  # Pillow's own "decompression bomb" warning: ours is the error below
        warnings.simplefilter("ignore")
        try:
            with Image.open(io.BytesIO(data)) as header:
                width, height = header.size
        except Image.DecompressionBombError:  # Pillow's own limit (above ours)
            width = height = None
        except Exception:  # not a format Pillow reads (EXR...), or damaged: OpenCV decides
            return
    check_size(width, height, path, what)


def check_size(width, height, path, what):
    """DatasetError if width x height is more than MAX_IMAGE_PIXELS (None: more than the decoder's own limit)."""
    if width is None or width * height > MAX_IMAGE_PIXELS:
        size = "" if width is None else f"{width}x{height}, "
        raise DatasetError(f"{path}: {what} is too large ({size}at most {MAX_IMAGE_PIXELS} pixels)")


def imread(path, flags, what):
    """The decoded file (cv2.imdecode `flags`). Its bytes are read by Python: cv2.imread crashes the process on a
    file name that is not UTF-8 (one Python holds with surrogate escapes)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DatasetError(f"{path}: unreadable {what} ({e.strerror})") from None
    if is_heif(data):
        return decode_heif(data, flags, path, what)
    if data[:2] == b"\xff\xd8":  # a JPEG by its start-of-image marker, whatever its name says
        check_jpeg_complete(data, path, what)
    check_pixel_count(data, path, what)
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as e:
        raise DatasetError(f"{path}: unreadable {what} (OpenCV: {error_line(e, last=True)})") from None
    if img is None or img.size == 0:
        raise DatasetError(f"{path}: unreadable {what} (damaged, or not a format OpenCV decodes)")
    if flags & cv2.IMREAD_IGNORE_ORIENTATION and data[:4] in TIFF_SIGNATURES:  # (IMREAD_UNCHANGED has every bit)
        # OpenCV's TIFF decoder turns the pixels by their orientation tag whatever the flags say: back as stored
        img = np.ascontiguousarray(AS_STORED[exif_orientation(io.BytesIO(data))](img))
    if data[:4] in TIFF_SIGNATURES and img.ndim == 3 and img.shape[2] == 4 and img.dtype == np.uint8 and \
            tiff_alpha_premultiplied(data):
        img = cv2.cvtColor(img, cv2.COLOR_mRGBA2RGBA)  # straight colours, as every other format gives them
    return img


def tiff_alpha_premultiplied(data):
    """Whether OpenCV gives an 8-bit RGBA TIFF's colours multiplied by its alpha: libtiff's RGBA reader, which it
    uses for them, multiplies by an alpha that the file marks as one (ExtraSamples 2, as Pillow and most editors
    write it), and one marked 1 is stored so; an unmarked fourth channel comes as stored."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with Image.open(io.BytesIO(data)) as header:
                extra = header.tag_v2.get(338, ())
            return any(value in (1, 2) for value in (extra if isinstance(extra, tuple) else (extra,)))
        except Exception:  # a header Pillow cannot read: as OpenCV gave it
            return False


def decode_heif(data, flags, path, what):
    """A HEIF file's primary image as cv2.imdecode(`flags`) gives a JPEG: BGR, BGRA or grey as stored with
    IMREAD_UNCHANGED, grey with IMREAD_GRAYSCALE; 8 bits (10- and 12-bit photos reduced); as stored with
    IMREAD_UNCHANGED or IMREAD_IGNORE_ORIENTATION, else turned by its own rotation. libheif always applies the
    file's own rotation (which a phone writes as its EXIF orientation too): turned back as stored here, so that a
    phone's HEIC photos are taken as its JPEGs are (read_image, exif_orientation, posing's upright_turns)."""
    import pillow_heif

    try:
        heif = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=True)
        # from the header, before decoding; of the whole coded image, which libheif decodes before its crop ('clap'),
        # not the cropped size pillow-heif states (a huge image cropped to a few pixels)
        crops = [t[-2:] for t in heif_transformations(heif) if t[0] == "clap"]
        check_size(*max([heif.size, *crops], key=lambda size: size[0] * size[1]), path, what)
        pixels = np.asarray(heif)  # [H, W] grey or [H, W, 3 or 4] RGB(A), as seen, decoded here
    except DatasetError:
        raise
    except Exception as e:  # libheif's errors for a damaged or unsupported file (ValueError, RuntimeError...)
        raise DatasetError(f"{path}: unreadable {what} (HEIF: {error_line(e)})") from None
    if heif.mode == "I;16":  # a 10- or 12-bit grey image, which pillow-heif gives scaled to 16 bits (colour: 8)
        pixels = (pixels >> 8).astype(np.uint8)
    if pixels.dtype != np.uint8 or not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] in (3, 4))):
        raise DatasetError(f"{path}: unsupported {what} (HEIF {heif.mode})")
    if heif.premultiplied_alpha:  # colours stored multiplied by the alpha ('prem'): as libheif decodes them
        pixels = cv2.cvtColor(pixels, cv2.COLOR_mRGBA2RGBA)
    if flags == cv2.IMREAD_UNCHANGED or flags & cv2.IMREAD_IGNORE_ORIENTATION:
        pixels = np.ascontiguousarray(AS_STORED[heif_orientation(heif)](pixels))
    grey = flags & ~cv2.IMREAD_IGNORE_ORIENTATION == cv2.IMREAD_GRAYSCALE
    if pixels.ndim == 2:
        return pixels if grey or flags == cv2.IMREAD_UNCHANGED else cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR)
    if grey:
        return cv2.cvtColor(np.ascontiguousarray(pixels[..., :3]), cv2.COLOR_RGB2GRAY)
    if flags == cv2.IMREAD_UNCHANGED and pixels.shape[2] == 4:
        return cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA)
    return cv2.cvtColor(np.ascontiguousarray(pixels[..., :3]), cv2.COLOR_RGB2BGR)


def heif_orientation(heif):
    """The orientation (a key of UPRIGHT) that libheif turns a HEIF file's (pillow_heif.HeifFile) primary image by:
    the file's own rotation and mirroring ('irot', 'imir'), which HEIF viewers apply and a phone also writes as its
    EXIF orientation. Not the EXIF itself, which may disagree (stated as a LONG, for which pillow-heif writes no
    rotation; reset to 1 by a converter) and then turned libheif's pixels back onto their side."""
    stored = np.arange(6).reshape(2, 3)  # a probe whose turns and mirrorings all differ
    probe = stored
    for kind, *values in heif_transformations(heif):
        if kind == "irot":  # counter-clockwise, in degrees
            probe = np.rot90(probe, values[0] // 90)
        elif kind == "imir":  # 0: top and bottom swapped, 1: left and right
            probe = probe[::-1] if values[0] == 0 else probe[:, ::-1]
    return next(key for key, turn in UPRIGHT.items() if np.array_equal(turn(stored), probe))


def heif_transformations(heif):
    """[(kind, *values)]: what libheif applies to a HEIF file's (pillow_heif.HeifFile) primary image, in order
    ('irot', 'imir', 'clap'). pillow-heif (pinned, requirements.txt) has them on its C image only: [] where another
    version does not (the image is then taken as libheif gives it, unrotated and uncropped)."""
    try:
        return list(heif[heif.primary_index]._c_image.transformations)
    except AttributeError:
        return []


def orientation_key(value):
    """An EXIF orientation value as a key of UPRIGHT (an int); 1 for one of no key. A tag of another type than
    SHORT equals a key as a rational 6/1 or a float 6.0 does: Pillow's IFDRational then reached posing.json,
    which cannot hold it."""
    return int(value) if value in UPRIGHT else 1


def exif_orientation(path):
    """The EXIF orientation of an image file (a path, or its bytes as a file object; a key of UPRIGHT, an int); 1
    where it states none or one of no key, or its header cannot be read. Reads the header only. A HEIF's is its
    own rotation (heif_orientation)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if isinstance(path, io.BytesIO):
                head = path.getvalue()[:12]
            else:
                with open(path, "rb") as f:
                    head = f.read(12)
            if is_heif(head):  # Pillow reads no HEIF
                import pillow_heif

                return heif_orientation(pillow_heif.open_heif(path))
            with Image.open(path) as header:
                return orientation_key(header.getexif().get(0x0112, 1))
        except Exception:  # not a format Pillow reads, or damaged (imread names it); an unhashable value
            return 1


def read_image(path: str):
    """(rgb [H, W, 3] uint8, alpha [H, W] uint8 or None); 16-bit images are reduced to 8 bits, float images
    (values in [0, 1]) quantised. The pixels as stored: an EXIF rotation is not applied, as COLMAP does not
    apply it, so that the cameras of a dataset fit them (masks are read so too; posing turns plain photos
    upright itself, nerf/posing/inputs.py). HEIC photos too (decode_heif)."""
    check_file(path, "an image")
    img = imread(path, cv2.IMREAD_UNCHANGED, "image")
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
    check_file(path, "a mask")
    img = imread(path, cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION, "mask")  # as read_image: raw pixels
    if img.shape != shape:
        raise DatasetError(f"{path}: mask is {img.shape[1]}x{img.shape[0]} but its image is {shape[1]}x{shape[0]}")
    return binary_mask(img, path, "mask")


def binary_mask(values, path, what):
    """Mask values [H, W] uint8 -> {0, 255} (object = 255); a mask without a single object pixel is a
    mistake (an inverted or wrong file, or a view that does not see the object), not a view to train on."""
    mask = np.where(values > MASK_THRESHOLD, 255, 0).astype(np.uint8)
    if not mask.any():
        raise DatasetError(f"{path}: {what} has no object pixel (all black: an object mask is white on the object)")
    return mask


def read_all(read_fn, paths):
    """[read_fn(p) for p in paths], decoded on a few threads (OpenCV releases the GIL while decoding) with the
    decoders' own messages silenced; the first failing path in order raises, as a loop would."""
    with quiet_decoders(), ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(read_fn, paths))


def stack_images(paths):
    """Read images that must all share one size; returns (rgb [V,H,W,3], alpha [V,H,W] or None)."""
    rgbs, alphas = [], []
    for path, (rgb, alpha) in zip(paths, read_all(read_image, paths)):
        if rgbs and rgb.shape != rgbs[0].shape:
            raise DatasetError(f"{path}: image is {rgb.shape[1]}x{rgb.shape[0]}, others are {rgbs[0].shape[1]}x{rgbs[0].shape[0]}")
        rgbs.append(rgb)
        alphas.append(alpha)
    has_alpha = all(a is not None for a in alphas)
    masks = np.stack([binary_mask(a, p, "alpha channel") for a, p in zip(alphas, paths)]) if has_alpha else None
    return np.stack(rgbs), masks


def downscale_images(images, masks, intrinsics, factor):
    h, w = images.shape[1] // factor, images.shape[2] // factor
    images = np.stack([cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA) for im in images])
    if masks is not None:
        masks = np.stack([np.where(cv2.resize(m, (w, h), interpolation=cv2.INTER_AREA) > 127, 255, 0).astype(np.uint8) for m in masks])
    return images, masks, downscale_intrinsics(intrinsics, factor)
