"""pose_images: photos, a video or a COLMAP model in, a posed NeuS scene folder out.

Stages: input checks (inputs.py) -> frames of a video (frames.py) -> structure from motion (sfm.py) ->
camera refinement (refine.py) -> undistortion (undistort.py) -> region of interest (roi.py) -> NeuS files
(export.py). Everything is written into a hidden temporary folder beside OUT, renamed to OUT at the end: a bad
input or a failed reconstruction leaves nothing behind."""
import math
import os
import shutil
import sys
import tempfile
import time

import numpy as np
from tqdm import tqdm

from ..camera_geometry import check_camera_geometry, projection_camera, sphere_similarity, unit_projection
from ..camera_geometry import check_sphere as check_region
from ..files import outermost_missing, overlong_name, save_png, write_json
from ..images import UPRIGHT, is_heif, quiet_decoders, read_all, read_image
from .colmap_model import read_model
from .errors import PosingError
from .export import world_mat, write_cameras, write_points_ply
from .frames import check_video, extract_frames
from .inputs import COLMAP_SUFFIXES, MIN_IMAGES, check_images, classify_input, unreadable_kinds
from .refine import refine_cameras
from .roi import region_of_interest
from .sfm import SfmOptions, camera_to_world, pycolmap_module, reconstruct, registered_names
from ..interrupts import stop_signals_interrupt
from .timing import StageTimes, cpu_seconds
from .undistort import undistortion

CAMERA_MODELS = ("auto", "SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "FULL_OPENCV",
                 "OPENCV_FISHEYE", "SIMPLE_RADIAL_FISHEYE", "RADIAL_FISHEYE")
MIN_REGISTERED_FRACTION = 0.5
TEMPORARY_AFFIX = len(".tmp--") + 8  # what tempfile.mkdtemp adds to OUT's name beside it (.tmp-, .old-)


def output_target(out_dir):
    """The path the output folder out_dir will have: its parent resolved as the file system resolves it (links
    first, then '..'; missing folders as written), so that the temporary folder made beside it and the rename
    that puts it in place meet. PosingError for an out_dir ending in '.' or '..': that names another folder by
    its relation to this one, and no folder can be renamed to it."""
    head, last = os.path.split(out_dir.rstrip(os.sep) or os.sep)
    if last in (os.curdir, os.pardir):
        raise PosingError(f"{out_dir}: ends in {last!r}; name the output folder itself (such as "
                          f"{os.path.realpath(out_dir)})")
    return os.path.join(os.path.realpath(head or os.curdir), last)


def check_output(out_dir, target, overwrite):
    """The output folder out_dir (at the path `target`, output_target's) can be written: not a file, empty or
    absent (or overwrite), no name along it too long for its file system (OUT's own with the affix of the
    temporary folders beside it), its nearest existing parent a writable folder."""
    if os.path.isfile(target) or (os.path.islink(target) and not os.path.exists(target)):
        raise PosingError(f"{out_dir}: is a file (or a dangling link), expected an output folder")
    if os.path.isdir(target) and os.listdir(target) and not overwrite:
        raise PosingError(f"{out_dir}: exists and is not empty (pass --overwrite to replace it)")
    parent = os.path.dirname(target)
    missing = outermost_missing(parent)
    probe = parent if missing is None else os.path.dirname(missing)
    if not os.path.isdir(probe):
        raise PosingError(f"{out_dir}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PosingError(f"{out_dir}: {probe} is not writable")
    overlong = overlong_name(target, probe, TEMPORARY_AFFIX)
    if overlong:
        raise PosingError(f"{out_dir}: a name in it is too long ({overlong[1]} bytes with the temporary folder's "
                          f"affix; the file system allows {overlong[2]})")


def check_output_spares_input(out_dir, source):
    """out_dir is neither the input (its images or model folder included) nor a folder holding it: replacing
    out_dir would destroy the input."""
    out = os.path.realpath(out_dir)
    for path in (source.path, source.image_dir, source.model_dir):
        if path is not None and os.path.commonpath([out, os.path.realpath(path)]) == out:
            relation = "is" if os.path.realpath(path) == out else "holds"
            raise PosingError(f"{out_dir}: {relation} the input {path} (writing the output would replace it)")


def check_sphere(center, radius):
    """(centre [3], radius) of the override, or None; both or neither must be given."""
    if center is None and radius is None:
        return None
    if center is None or radius is None:
        missing = "--radius" if center is None else "--center"
        raise PosingError(f"{missing}: give --center x,y,z and --radius r together")
    check_region(center, radius)
    return np.asarray(center, dtype=np.float64), float(radius)


def replace_folder(tmp, out_dir):
    """Put the finished folder tmp at out_dir, replacing an old one (kept until the new one is in place)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it private; the result is an ordinary folder
    old = None
    if os.path.exists(out_dir):
        old = tempfile.mkdtemp(prefix=f".old-{os.path.basename(out_dir)}-", dir=os.path.dirname(tmp))
        os.rmdir(old)
        os.rename(out_dir, old)
    os.rename(tmp, out_dir)
    if old and os.path.islink(old):  # OUT was a link to a folder: the link is replaced, its target kept
        os.unlink(old)
    elif old:
        shutil.rmtree(old, ignore_errors=True)


def colmap_reads(path):
    """Whether COLMAP decodes the image file itself: of one of its formats by name, and no HEIF under such a name
    (apps that export or rename HEIC photos as .jpg), which we read by its content and COLMAP cannot."""
    with open(path, "rb") as f:
        return path.lower().endswith(COLMAP_SUFFIXES) and not is_heif(f.read(12))


def link_images(image_dir, names, link_dir, turns):
    """COLMAP names of the images: links 000000.png... in link_dir to the sources (no spaces or folders in
    the names COLMAP's pair lists and databases see), or PNG copies, their alpha channels kept, of those in
    turns {name: EXIF orientation}, turned upright (COLMAP reads the pixels as stored), and of those COLMAP
    cannot read (HEIC, whatever its name)."""
    os.makedirs(link_dir, exist_ok=True)
    copied = {name for name in names if name in turns or not colmap_reads(os.path.join(image_dir, name))}
    linked = [f"{i:06d}{'.png' if name in copied else os.path.splitext(name)[1].lower()}"
              for i, name in enumerate(names)]

    def link(name, target):
        source = os.path.abspath(os.path.join(image_dir, name))
        if name not in copied:
            os.symlink(source, os.path.join(link_dir, target))
        else:
            rgb, alpha = read_image(source)
            save_png(os.path.join(link_dir, target), UPRIGHT[turns.get(name, 1)](rgb if alpha is None else
                                                                                 np.dstack([rgb, alpha])))

    read_all(lambda pair: link(*pair), list(zip(names, linked)))
    return linked


def sparse_points(model):
    """points [N, 3], colours [N, 3] uint8, track lengths [N] of the Reconstruction's 3D points."""
    points = list(model.points3D.values())
    xyz = np.array([p.xyz for p in points], dtype=np.float64).reshape(-1, 3)
    colours = np.array([p.color for p in points], dtype=np.uint8).reshape(-1, 3)
    tracks = np.array([p.track.length() for p in points], dtype=np.int64)
    return xyz, colours, tracks


def reconstruct_input(source, input_path, size, work, camera_model, matching, frame_step, max_frames, blur_ratio,
                      num_threads, seed, times, disable):
    """Structure from motion on an image folder or a video: (Reconstruction, folder of its images,
    {COLMAP name: source name}, number of images, info dict)."""
    frames_dir = os.path.join(work, "images")
    copies = {}
    if source.kind == "video":
        with times.stage("frames"):
            frames = extract_frames(input_path, frames_dir, step=frame_step, max_frames=max_frames,
                                    blur_ratio=blur_ratio, disable=disable)
        sources = {name: f"frame {index}" for name, index in frames}
        checked = check_images(frames_dir, list(sources), input_path,
                               {name: f"{input_path} {source}" for name, source in sources.items()})
        size, names, copies = checked.size, checked.names, checked.copies
        sources = {name: sources[name] for name in names}
    else:
        names = link_images(source.image_dir, source.image_names, frames_dir, source.turns)
        sources = dict(zip(names, source.image_names))
    options = SfmOptions(matching=matching, num_threads=num_threads, seed=seed)
    model, sfm = reconstruct(frames_dir, names, size, os.path.join(work, "sfm"), sequential=source.kind == "video",
                             times=times, options=options, disable=disable, where=input_path)
    need = max(MIN_IMAGES, math.ceil(MIN_REGISTERED_FRACTION * len(names)))
    if model.num_reg_images() < need:
        raise PosingError(f"{input_path}: only {model.num_reg_images()} of {len(names)} images registered (need at "
                          f"least {need}); the others share too few features with them (more overlap or texture?)")
    with times.stage("refinement"):
        model, refinement = refine_cameras(model, camera_model, disable=disable)
    info = {"sfm": sfm, "refinement": refinement}
    if copies:  # (a folder's copies are found before, by pose_images)
        info["copies_left_out"] = copies
    return model, frames_dir, sources, len(names), info


@np.errstate(all="ignore")  # huge numbers overflow in the checks' arithmetic: they refuse the results instead
def check_loadable(intrinsics, c2w, scale_mat, size, labels, input_path):
    """The cameras (intrinsics [V, 3, 3], c2w [V, 4, 4], scale_mat [4, 4]) pass the checks the NeuS loader
    (nerf/provider.py _load_neus, load_scene) applies to cameras_sphere.npz, so that no scene is written that
    main_sdf.py refuses. size: (width, height); labels[i]: what camera i is called in the one-line error."""
    cameras = [projection_camera(unit_projection(world_mat(k, pose)[:3]) @ scale_mat, input_path, label)
               for k, pose, label in zip(intrinsics, c2w, labels)]
    check_camera_geometry(np.stack([k for k, _ in cameras]), np.stack([pose for _, pose in cameras]),
                          (size[1], size[0]), [(input_path, label) for label in labels], input_path,
                          unit_sphere=True)


def write_scene(folder, model, image_dir, sources, sphere, input_path, disable, cut_out=False):
    """The NeuS files of the Reconstruction (images in image_dir) into folder; returns posing.json's entries
    about them. sphere: the (centre, radius) override or None. cut_out: the images' alpha channels are written
    as the scene's masks (mask/)."""
    views = sorted(registered_names(model).items())  # (COLMAP name, image) in name (capture) order
    c2w = np.stack([camera_to_world(image) for _, image in views])
    points, colours, tracks = sparse_points(model)
    undistortions = {cid: undistortion(camera) for cid, camera in model.cameras.items()}
    intrinsics = np.stack([undistortions[image.camera_id].intrinsics for _, image in views])
    camera = model.camera(views[0][1].camera_id)
    if sphere is None:
        centre, radius = region_of_interest(points, tracks, intrinsics, c2w, (camera.width, camera.height), input_path)
        roi_from = "sparse points"
    else:
        (centre, radius), roi_from = sphere, "--center/--radius"
        inside = np.linalg.norm(c2w[:, :3, 3] - centre, axis=1) <= radius
        if inside.any():
            raise PosingError(f"--radius: the sphere holds the camera of {sources[views[int(np.argmax(inside))][0]]} "
                              f"(a camera must be outside the region of interest)")
    scale_mat = sphere_similarity(centre, radius)
    check_loadable(intrinsics, c2w, scale_mat, (camera.width, camera.height),
                   [f"the camera of {sources[name]}" for name, _ in views], input_path)
    os.makedirs(os.path.join(folder, "image"))
    if cut_out:
        os.makedirs(os.path.join(folder, "mask"))
    for i, (name, image) in enumerate(tqdm(views, desc="export", unit="image", disable=disable, leave=False)):
        with quiet_decoders():
            rgb, alpha = read_image(os.path.join(image_dir, name))
        undistort = undistortions[image.camera_id].apply
        save_png(os.path.join(folder, "image", f"{i:06d}.png"), undistort(rgb))
        if cut_out:
            save_png(os.path.join(folder, "mask", f"{i:06d}.png"), undistort(alpha))
    write_cameras(os.path.join(folder, "cameras_sphere.npz"), intrinsics, c2w, scale_mat)
    write_points_ply(os.path.join(folder, "points3D.ply"), points, colours)
    sparse_dir = os.path.join(folder, "sparse", "0")
    os.makedirs(sparse_dir)
    model.write_binary(sparse_dir)  # the distorted model, in COLMAP's image names (posing.json maps them)
    return {
        "registered": len(views),
        "masks_from_alpha": cut_out,
        "views": [{"image": f"{i:06d}.png", "source": sources[name], "colmap_name": name}
                  for i, (name, _) in enumerate(views)],
        "camera": {"model": camera.model_name, "width": camera.width, "height": camera.height,
                   "params": [float(x) for x in camera.params], "params_info": camera.params_info,
                   "cameras": len(model.cameras)},
        "undistorted_intrinsics": intrinsics[0].tolist(),
        "resampled": any(u.map_x is not None for u in undistortions.values()),
        "reprojection_error_px": float(model.compute_mean_reprojection_error()),
        "points": len(points),
        "roi": {"centre": [float(x) for x in centre], "radius": float(radius), "from": roi_from},
    }


def pose_images(input_path, out_dir, camera_model="auto", matching="auto", frame_step=None, max_frames=150,
                blur_ratio=0.5, center=None, radius=None, overwrite=False, num_threads=-1, seed=0, progress=None,
                extra_info=None):
    """Pose a folder of images, a video or a COLMAP model (input_path) and write the NeuS scene folder out_dir
    (image/, cameras_sphere.npz, points3D.ply, sparse/0/, posing.json). Returns posing.json's dict.

    camera_model: the shared camera structure from motion refines ("auto": the simplest of PINHOLE, RADIAL,
    OPENCV that fits, refine.py). matching: "auto" | "exhaustive" | "sequential". frame_step / max_frames /
    blur_ratio: video frames (see frames.extract_frames). center [3], radius: the region of interest in world
    units instead of the one found from the sparse points. progress: progress bars on stderr, each cleared when
    its stage ends so that none is left above an error line (None: on a terminal only).
    extra_info: more entries for posing.json. Photos (or frames) that copy an earlier one's pixels are left out,
    listed in posing.json's copies_left_out and, once posing has ended, in warning lines; so are photos beside
    them of a format we cannot read (AVIF, raw: unreadable_left_out). Raises PosingError (one line) for a bad
    input or a scene that cannot be posed; nothing is written then."""
    times = StageTimes()
    disable = None if progress is None else not progress  # tqdm's: None hides bars off a terminal
    t_start, cpu_start = time.perf_counter(), cpu_seconds()
    if camera_model not in CAMERA_MODELS:
        raise PosingError(f"--camera_model: {camera_model!r} is not one of {', '.join(CAMERA_MODELS)}")
    if matching not in ("auto", "exhaustive", "sequential"):
        raise PosingError(f"--matching: {matching!r} is not one of auto, exhaustive, sequential")
    sphere = check_sphere(center, radius)
    source = classify_input(input_path)
    if not out_dir:  # else it would be the current folder to the checks, and nothing to os.rename
        raise PosingError("OUT: empty path, expected an output folder")
    target = output_target(out_dir)
    check_output_spares_input(out_dir, source)
    check_output(out_dir, target, overwrite)
    pycolmap = pycolmap_module()  # imported before the handlers below: importing it installs COLMAP's own
    with stop_signals_interrupt():  # a kill stops as Ctrl-C does: one line, the temporary folder removed
        size, given, copies, unreadable = None, None, {}, ()
        if source.kind == "images":
            checked = check_images(source.image_dir, source.image_names, input_path)
            size, copies, unreadable = checked.size, checked.copies, checked.unreadable
            source.image_names, source.turns, source.cut_out = checked.names, checked.turns, checked.cut_out
        elif source.kind == "colmap":
            given = read_model(source.model_dir, source.model_ext, source.image_dir)
        else:
            check_video(input_path)

        parent = os.path.dirname(target)
        created = outermost_missing(parent)  # removed again if posing fails
        tmp = None
        try:
            try:
                os.makedirs(parent, exist_ok=True)
                tmp = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(target)}-", dir=parent)
            except OSError as e:  # what check_output could not foresee (a full disk, a path too long in all)
                raise PosingError(f"{out_dir}: cannot be created ({e.strerror})") from None
            info = {"input": os.path.abspath(input_path), "kind": source.kind, "copies_left_out": copies,
                    "unreadable_left_out": list(unreadable), "turned_upright": source.turns}
            if source.kind == "colmap":
                model, image_dir = given, source.image_dir
                sources = {name: name for name in registered_names(model)}
                total = len(sources)
            else:
                model, image_dir, sources, total, sfm_info = reconstruct_input(
                    source, input_path, size, os.path.join(tmp, "work"), camera_model, matching, frame_step,
                    max_frames, blur_ratio, num_threads, seed, times, disable)
                info.update(sfm_info)
            with times.stage("export"):
                info.update(write_scene(tmp, model, image_dir, sources, sphere, input_path, disable, source.cut_out))
            times.wall["total"], times.cpu["total"] = time.perf_counter() - t_start, cpu_seconds() - cpu_start
            info.update(total=total, times=times.as_dict(), pycolmap=pycolmap.__version__)
            info.update(extra_info or {})
            write_json(os.path.join(tmp, "posing.json"), info)
            shutil.rmtree(os.path.join(tmp, "work"), ignore_errors=True)
            replace_folder(tmp, target)
        except BaseException:
            if created or tmp:
                shutil.rmtree(created or tmp, ignore_errors=True)
            raise
    for copy, original in info["copies_left_out"].items():  # after, so that a refused input gets one line alone
        print(f"warning: {copy}: the same picture as {original}; left out", file=sys.stderr)
    if unreadable:
        print(f"warning: {source.image_dir}: {unreadable_kinds(unreadable)} left out, which neither OpenCV nor "
              f"COLMAP reads (convert them to JPEG to use them)", file=sys.stderr)
    return info
