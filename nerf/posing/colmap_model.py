"""An existing COLMAP model as input: read (binary or text), and checked against its images folder before
anything is written — every registered image present, readable, and of its camera's size."""
import os

from ..images import read_all, read_image
from ..input_checks import error_line
from .errors import PosingError
from .sfm import pycolmap_module, quiet_colmap


def read_model(model_dir, ext, image_dir):
    """The pycolmap.Reconstruction in model_dir (ext '.bin' or '.txt') whose images are in image_dir."""
    pycolmap = pycolmap_module()
    model = pycolmap.Reconstruction()
    try:
        with quiet_colmap(pycolmap):
            if ext == ".bin":
                model.read_binary(model_dir)
            else:
                model.read_text(model_dir)
    except Exception as e:  # pycolmap turns COLMAP's failed checks into ValueError/RuntimeError
        raise PosingError(f"{model_dir}: unreadable COLMAP model ({error_line(e, last=True)})") from None
    ids = sorted(model.reg_image_ids(), key=lambda i: model.image(i).name)
    if not ids:
        raise PosingError(f"{model_dir}: the COLMAP model has no registered images")
    paths = [os.path.join(image_dir, model.image(i).name) for i in ids]
    for path in paths:
        if not os.path.isfile(path):
            raise PosingError(f"{path}: image of the COLMAP model {model_dir} missing")
    sizes = read_all(lambda p: read_image(p)[0].shape[:2], paths)
    for i, path, (height, width) in zip(ids, paths, sizes):
        camera = model.camera(model.image(i).camera_id)
        if (camera.width, camera.height) != (width, height):
            raise PosingError(f"{path}: image is {width}x{height}, its camera in {model_dir} is "
                              f"{camera.width}x{camera.height}")
        if (height, width) != sizes[0]:
            raise PosingError(f"{path}: image is {width}x{height}, {paths[0]} is {sizes[0][1]}x{sizes[0][0]} "
                              f"(all images must have one size)")
    return model
