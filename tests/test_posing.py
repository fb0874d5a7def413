"""Photos / video / COLMAP model -> posed NeuS scene (nerf/posing, scripts/colmap2neus.py), on the CPU.

A small scene is rendered from a textured blob (a generated OBJ with a high-frequency luminance texture: the
synthetic scenes' procedural colours are too smooth for SIFT) and posed by structure from motion; the recovered
cameras are compared with the true ones after a similarity alignment. Bad inputs must stop with exit code 2, one
line `error: PATH: problem` and nothing written."""
import json
import math
import os
import re
import shutil
import sys

import cv2
import numpy as np
import pytest
import torch

pycolmap = pytest.importorskip("pycolmap", reason="structure from motion needs pycolmap (pip install pycolmap==4.2.1)")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))

import colmap2neus  # noqa: E402

from nerf.posing import PosingError, compare_poses, pose_folder_cached, pose_images  # noqa: E402
from nerf.posing import cache as posing_cache  # noqa: E402
from nerf.posing.alignment import pose_errors, umeyama  # noqa: E402
from nerf.posing.colmap_model import check_projection_folds  # noqa: E402
from nerf.posing.frames import blurred, extract_frames  # noqa: E402
from nerf.posing.inputs import check_images  # noqa: E402
from nerf.posing.roi import region_of_interest  # noqa: E402
from nerf.posing.undistort import undistortion  # noqa: E402
from nerf.provider import load_scene  # noqa: E402

from conftest import shared_data  # noqa: E402

VIEWS, WIDTH, HEIGHT = 16, 320, 240
# bounds for the rendered scene: over scene seeds 0-5 the medians were 0.37-0.55 deg, 0.68-1.13 % of the
# scale_mat radius, focal lengths within 1.2 % (all 16 views registered every time)
MAX_ROTATION_DEG = 1.0
MAX_CENTRE_ERROR = 0.03  # of the scene's scale_mat radius
MAX_FOCAL_ERROR = 0.03


def write_textured_blob(folder, seed=0, rings=32, segments=64):
    """A lumpy torus as an OBJ with UVs, and its texture: grey noise at several scales (strong corners for SIFT
    everywhere) tinted by a smooth colour. A torus, because a sphere's UV poles squeeze the texture into a
    starburst that looks alike from every azimuth and registers views wrongly. Paths (obj, png)."""
    rng = np.random.default_rng(seed)
    tube = np.linspace(0, 2 * np.pi, rings + 1)  # the seam row and column are doubled: they have two uv values
    around = np.linspace(0, 2 * np.pi, segments + 1)
    t, p = np.meshgrid(tube, around, indexing="ij")
    minor = 0.45 * (1 + 0.15 * np.cos(3 * p + 1) + 0.1 * np.sin(2 * t))
    major = 1 + 0.1 * np.sin(2 * p)
    xyz = np.stack([(major + minor * np.cos(t)) * np.cos(p), minor * np.sin(t),
                    (major + minor * np.cos(t)) * np.sin(p)], -1).reshape(-1, 3)
    uv = np.stack([p / (2 * np.pi), t / (2 * np.pi)], -1).reshape(-1, 2)
    idx = np.arange((rings + 1) * (segments + 1)).reshape(rings + 1, segments + 1)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    faces = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([b, d, c], -1).reshape(-1, 3)])
    obj, png = os.path.join(folder, "blob.obj"), os.path.join(folder, "blob.png")
    with open(obj, "w") as f:
        f.writelines(f"v {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in xyz)
        f.writelines(f"vt {u:.6f} {v:.6f}\n" for u, v in uv)
        f.writelines(f"f {i + 1}/{i + 1} {j + 1}/{j + 1} {k + 1}/{k + 1}\n" for i, j, k in faces)
    grey = np.zeros((512, 1024))
    for s in (4, 8, 16, 32):
        grey += cv2.resize(rng.uniform(-1, 1, (512 // s, 1024 // s)), (1024, 512), interpolation=cv2.INTER_CUBIC)
    grey = 1 / (1 + np.exp(-4 * grey / grey.std()))
    tint = cv2.resize(rng.uniform(0.6, 1, (4, 8, 3)), (1024, 512), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(png, (255 * np.clip(grey[..., None] * tint, 0, 1)).astype(np.uint8))
    return obj, png


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from nerf.synthetic import make_scene

    root = tmp_path_factory.mktemp("blob")
    obj, png = write_textured_blob(str(root))
    make_scene(str(root / "scene"), shape=obj, texture=png, views=VIEWS, width=WIDTH, height=HEIGHT,
               formats=("neus",), gt_resolution=16)
    return root / "scene"


@pytest.fixture(scope="module")
def posed(scene, tmp_path_factory):
    out = tmp_path_factory.mktemp("posed") / "out"
    info = pose_images(str(scene / "image"), str(out), progress=False)
    return out, info


def run_script(argv, capfd):
    """(exit code, stdout, stderr lines) of scripts/colmap2neus.py run in this process."""
    try:
        code = colmap2neus.main([str(a) for a in argv])
    except SystemExit as stop:  # a bad flag value: the parser's exit
        code = stop.code
    captured = capfd.readouterr()  # file descriptors: COLMAP logs from C++, past sys.stderr
    return code, captured.out, captured.err.splitlines()


# ------------------------------------------------------------------------------------------------------------
# The route, on the rendered scene


def test_route_recovers_the_poses(scene, posed):
    out, info = posed
    assert info["registered"] == VIEWS == info["total"]
    result = compare_poses(str(out), str(scene))
    assert result["registered"] == VIEWS
    assert result["rotation_deg"]["median"] < MAX_ROTATION_DEG, result
    assert result["centre_error_pct"]["median"] < 100 * MAX_CENTRE_ERROR, result
    assert max(abs(e) for e in result["focal_error_pct"]) < 100 * MAX_FOCAL_ERROR, result
    # the rendered cameras are pinhole: the simplest model is chosen, and nothing is resampled
    assert info["camera"]["model"] == "PINHOLE" and not info["resampled"], info["refinement"]


def reference_c2w(scene):
    """Camera-to-world [V, 4, 4] (world mm, OpenCV axes) of the rendered scene."""
    from nerf.camera_geometry import decompose_projection

    with np.load(scene / "cameras_sphere.npz") as cams:
        return np.stack([decompose_projection(cams[f"world_mat_{i}"][:3])[1] for i in range(VIEWS)])


def test_written_folder_loads_and_holds_the_object(scene, posed):
    import trimesh

    out, info = posed
    assert len(load_scene(str(out)).test) == 2  # the default split loads too
    loaded = load_scene(str(out), holdout=0)
    assert len(loaded.train) == VIEWS and (loaded.train.width, loaded.train.height) == (WIDTH, HEIGHT)
    assert os.path.getsize(out / "points3D.ply") > 1000
    assert not [n for n in os.listdir(out.parent) if n.startswith(".tmp-")]
    # the region of interest holds the object: the true surface mapped into the posed normalised space (through
    # the similarity of the camera centres) lies inside the unit sphere, and the sphere is not much larger
    views = [int(v["source"][:6]) for v in info["views"]]
    s, rot, t = umeyama(reference_c2w(scene)[views][:, :3, 3], loaded.train.c2w.numpy()[:, :3, 3])
    vertices = trimesh.load(scene / "gt_mesh.ply").vertices
    distance = np.linalg.norm(s * vertices @ rot.T + t, axis=1)
    assert (distance <= 1.0).mean() > 0.99, (distance <= 1.0).mean()
    assert distance.max() > 0.6, distance.max()


def colmap_project(scene, posed_dir, info, folder):
    """A COLMAP project (sparse/0 and images/) made of the posed folder's model (the distorted one, in COLMAP's
    image names) and the rendered images."""
    shutil.copytree(posed_dir / "sparse", folder / "sparse")
    (folder / "images").mkdir()
    for view in info["views"]:
        shutil.copy(scene / "image" / view["source"], folder / "images" / view["colmap_name"])
    return folder


def test_colmap_model_input_gives_the_same_cameras(scene, posed, tmp_path, capfd):
    """The model as a COLMAP project (binary files), and as a model folder itself (text files)."""
    out, info = posed
    project = colmap_project(scene, out, info, tmp_path / "project")
    code, stdout, err = run_script([project, tmp_path / "from_bin"], capfd)
    assert code == 0 and err == [], err
    text_model = tmp_path / "text" / "sparse" / "0"
    text_model.mkdir(parents=True)
    pycolmap.Reconstruction(str(project / "sparse" / "0")).write_text(str(text_model))
    shutil.copytree(project / "images", tmp_path / "text" / "images")
    code, stdout, err = run_script([text_model, tmp_path / "from_txt"], capfd)
    assert code == 0 and err == [], err
    expected = compare_poses(str(out), str(scene))
    for folder in ("from_bin", "from_txt"):
        result = compare_poses(str(tmp_path / folder), str(scene))
        assert result["registered"] == VIEWS
        assert abs(result["rotation_deg"]["median"] - expected["rotation_deg"]["median"]) < 1e-3
        assert len(load_scene(str(tmp_path / folder), holdout=0).train) == VIEWS


def test_override_sphere(scene, posed, tmp_path):
    out, info = posed
    centre, radius = info["roi"]["centre"], 0.5 * info["roi"]["radius"]
    project = colmap_project(scene, out, info, tmp_path / "project")
    again = pose_images(str(project), str(tmp_path / "again"), center=centre, radius=radius)
    assert again["roi"] == {"centre": centre, "radius": radius, "from": "--center/--radius"}
    with np.load(tmp_path / "again" / "cameras_sphere.npz") as cams:
        np.testing.assert_allclose(cams["scale_mat_0"][:3, 3], centre)
        np.testing.assert_allclose(np.diag(cams["scale_mat_0"])[:3], radius)
    with pytest.raises(PosingError, match="^--radius: the sphere holds the camera of "):
        pose_images(str(project), str(tmp_path / "huge"), center=centre, radius=100 * radius)
    assert not os.path.exists(tmp_path / "huge")


# ------------------------------------------------------------------------------------------------------------
# Pieces


def test_umeyama_recovers_a_similarity():
    rng = np.random.default_rng(0)
    source = rng.normal(size=(20, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rotation = q * np.sign(np.linalg.det(q))
    target = 2.5 * source @ rotation.T + [1, -2, 3]
    scale, r, t = umeyama(source, target)
    assert abs(scale - 2.5) < 1e-9 and np.abs(r - rotation).max() < 1e-9 and np.abs(t - [1, -2, 3]).max() < 1e-9


def test_pose_errors_measure_a_known_tilt():
    rng = np.random.default_rng(1)
    c2w = np.tile(np.eye(4), (10, 1, 1))
    c2w[:, :3, 3] = rng.normal(size=(10, 3)) * 5
    tilted = c2w.copy()
    angle = np.radians(0.5)
    tilted[3, :3, :3] = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    errors = pose_errors(tilted, c2w, scene_radius=1.0)
    assert abs(errors["rotation_deg"][3] - 0.5) < 1e-6 and errors["rotation_deg"][0] < 1e-6
    assert errors["centre_error"].max() < 1e-9


def test_region_of_interest_ignores_background_and_outliers():
    rng = np.random.default_rng(2)
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    c2w = np.tile(np.eye(4), (24, 1, 1))
    for i, a in enumerate(angles):  # a ring of cameras 5 units away, looking at (1, 2, 0)
        centre = np.array([5 * np.cos(a) + 1, 5 * np.sin(a) + 2, 1.5])
        forward = (np.array([1, 2, 0]) - centre) / np.linalg.norm(np.array([1, 2, 0]) - centre)
        right = np.cross(forward, [0, 0, 1])
        right /= np.linalg.norm(right)
        c2w[i, :3, :3] = np.stack([right, np.cross(forward, right), forward], 1)
        c2w[i, :3, 3] = centre
    direction = rng.normal(size=(2000, 3))
    obj = [1, 2, 0] + direction / np.linalg.norm(direction, axis=1, keepdims=True)  # the unit sphere's surface
    background = rng.uniform(-30, 30, size=(300, 3))  # far clutter
    stray = [1, 2, 0] + rng.normal(size=(30, 3)) * 3  # wrong triangulations, seen by two cameras only
    points = np.concatenate([obj, background, stray])
    tracks = np.concatenate([rng.integers(3, 12, 2000), rng.integers(2, 5, 300), np.full(30, 2)])
    intrinsics = np.tile([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]], (24, 1, 1))
    centre, radius = region_of_interest(points, tracks, intrinsics, c2w, (640, 480), "test")
    assert np.linalg.norm(centre - [1, 2, 0]) < 0.1
    assert 1.2 <= radius < 1.45  # the farthest object point (1) times the margin (1.25)


def test_undistortion_of_a_distorted_camera():
    """An OPENCV camera with barrel distortion: the pinhole output keeps the size and the focal length, and
    a point projected by the distorted camera lands where the pinhole camera sees it."""
    camera = pycolmap.Camera.create_from_model_name(1, "OPENCV", 300.0, 320, 240)
    camera.params = [300.0, 310.0, 161.0, 119.0, -0.2, 0.05, 0.001, -0.002]
    u = undistortion(camera)
    assert u.map_x.shape == (240, 320)
    assert u.intrinsics[0, 0] == 300.0 and u.intrinsics[0, 2] == 160.5  # COLMAP's +0.5 pixel centres removed
    image = np.zeros((240, 320, 3), np.uint8)
    point = np.array([[0.3, -0.2, 1.0]])
    src = camera.img_from_cam(point)[0] - 0.5  # the distorted pixel, our convention
    image[int(round(src[1])), int(round(src[0]))] = 255
    out = u.apply(image)
    target = u.intrinsics @ point[0]
    found = np.unravel_index(np.argmax(out[..., 0]), out.shape[:2])
    assert abs(found[1] - target[0] / target[2]) <= 1.0 and abs(found[0] - target[1] / target[2]) <= 1.0
    pinhole = pycolmap.Camera.create_from_model_name(1, "PINHOLE", 300.0, 320, 240)
    assert undistortion(pinhole).map_x is None  # nothing to resample


def test_pincushion_undistortion_leaves_no_blank_pixel():
    camera = pycolmap.Camera.create_from_model_name(1, "SIMPLE_RADIAL", 200.0, 320, 240)
    camera.params = [200.0, 160.0, 120.0, 0.3]
    u = undistortion(camera)
    assert u.intrinsics[0, 0] > 200.0  # zoomed in just enough
    inside = (u.map_x >= -0.5) & (u.map_x <= 319.5) & (u.map_y >= -0.5) & (u.map_y <= 239.5)
    assert inside.all()


def write_video(path, frames, fps=10):
    import imageio.v2 as imageio

    with imageio.get_writer(str(path), format="FFMPEG", fps=fps, macro_block_size=1, quality=9) as writer:
        for frame in frames:
            writer.append_data(frame)


def test_video_frames_drop_the_blurred_ones(scene, tmp_path):
    """A pan over the texture image (consecutive frames alike, as in a video) with frames 2 and 5 blurred."""
    pytest.importorskip("imageio_ffmpeg", reason="video decoding needs imageio-ffmpeg")
    texture = cv2.cvtColor(cv2.imread(str(scene.parent / "blob.png")), cv2.COLOR_BGR2RGB)
    frames = [texture[100:340, 40 * i:40 * i + 320] for i in range(8)]
    frames = [cv2.GaussianBlur(f, (0, 0), 2) if i in (2, 5) else f for i, f in enumerate(frames)]
    write_video(tmp_path / "pan.mp4", frames)
    kept = extract_frames(str(tmp_path / "pan.mp4"), str(tmp_path / "frames"), step=1, disable=True)
    assert [index for _, index in kept] == [0, 1, 3, 4, 6, 7]
    assert sorted(os.listdir(tmp_path / "frames")) == [name for name, _ in kept]
    first = cv2.cvtColor(cv2.imread(str(tmp_path / "frames" / kept[0][0])), cv2.COLOR_BGR2RGB)
    assert first.shape == (240, 320, 3) and np.abs(first.astype(int) - frames[0]).mean() < 8  # lossy video
    # the sharper of every two frames: never a blurred one
    kept = extract_frames(str(tmp_path / "pan.mp4"), str(tmp_path / "pairs"), step=2, disable=True)
    assert [index for _, index in kept] in ([0, 3, 4, 6], [0, 3, 4, 7], [1, 3, 4, 6], [1, 3, 4, 7])


def test_video_route(scene, tmp_path, capfd):
    """The rendered views in azimuth order as a video (a walk around the object), through the script: frames,
    sequential matching, the poses; nothing on stderr (COLMAP's own logging is silenced)."""
    pytest.importorskip("imageio_ffmpeg", reason="video decoding needs imageio-ffmpeg")
    c2w = reference_c2w(scene)
    with np.load(scene / "cameras_sphere.npz") as cams:
        centre, radius = cams["scale_mat_0"][:3, 3], cams["scale_mat_0"][0, 0]
    order = np.argsort(np.arctan2(c2w[:, 1, 3] - centre[1], c2w[:, 0, 3] - centre[0]))
    frames = [cv2.cvtColor(cv2.imread(str(scene / "image" / f"{i:06d}.png")), cv2.COLOR_BGR2RGB) for i in order]
    write_video(tmp_path / "orbit.mp4", frames, fps=4)
    # the views differ by ~22 degrees, so their sharpness does too (this is no video of a still scene)
    code, stdout, err = run_script([tmp_path / "orbit.mp4", tmp_path / "out", "--frame_step", "1",
                                    "--blur_ratio", "0"], capfd)
    assert code == 0 and err == [], err
    assert stdout.startswith(f"posed {VIEWS} of {VIEWS} images: ") or stdout.startswith(f"posed {VIEWS - 1} of ")
    with open(tmp_path / "out" / "posing.json") as f:
        info = json.load(f)
    assert info["kind"] == "video" and info["sfm"]["matching"] == "sequential"
    assert info["registered"] >= VIEWS - 1, info["registered"]
    views = [order[int(v["source"].split()[1])] for v in info["views"]]  # "frame N" -> rendered view
    from nerf.posing.compare import read_neus_cameras

    _, _, posed_c2w, _ = read_neus_cameras(str(tmp_path / "out"))
    errors = pose_errors(posed_c2w, c2w[views], radius)
    assert np.median(errors["rotation_deg"]) < 2 * MAX_ROTATION_DEG
    assert np.median(errors["centre_error_rel"]) < 2 * MAX_CENTRE_ERROR
    assert len(load_scene(str(tmp_path / "out")).train) > 0


def test_blur_is_relative_to_the_neighbours():
    assert blurred([100, 100, 30, 100, 100], 0.5).tolist() == [False, False, True, False, False]
    assert not blurred([10, 10, 9, 10, 10], 0.5).any()  # a soft video is no reason to drop frames


def test_cached_posing_is_reused_until_the_images_change_or_it_is_incomplete(scene, tmp_path, monkeypatch):
    images = tmp_path / "images"
    shutil.copytree(scene / "image", images)
    calls = []

    def fake_pose(input_path, out_dir, overwrite, progress, extra_info, **options):
        calls.append(input_path)
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "posing.json"), "w") as f:
            json.dump(extra_info, f)
        os.makedirs(os.path.join(out_dir, "image"), exist_ok=True)
        open(os.path.join(out_dir, "cameras_sphere.npz"), "wb").close()

    monkeypatch.setattr(posing_cache, "pose_images", fake_pose)
    posed_dir = pose_folder_cached(str(images), str(tmp_path / "workspace"))
    assert posed_dir == str(tmp_path / "workspace" / "posed") and len(calls) == 1
    assert pose_folder_cached(str(images), str(tmp_path / "workspace")) == posed_dir and len(calls) == 1
    first = images / "000003.png"
    os.utime(first, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns + 10**9))  # an edited image
    pose_folder_cached(str(images), str(tmp_path / "workspace"))
    assert len(calls) == 2
    pose_folder_cached(str(images), str(tmp_path / "workspace"), camera_model="OPENCV")  # other options
    assert len(calls) == 3
    os.remove(os.path.join(posed_dir, "cameras_sphere.npz"))  # part of the posed scene deleted: posed again
    pose_folder_cached(str(images), str(tmp_path / "workspace"), camera_model="OPENCV")
    assert len(calls) == 4


# ------------------------------------------------------------------------------------------------------------
# Bad inputs: exit 2, one line, nothing written


def nearest_existing(path):
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def assert_refused(argv, capfd, expected_path, expected_text):
    """Exit code 2, one line naming expected_path, and nothing written where OUT would go: no OUT, no folder
    above it, no temporary folder beside it."""
    existing = nearest_existing(argv[1])
    before = sorted(os.listdir(existing))
    code, stdout, err = run_script(argv, capfd)
    assert code == 2
    assert len(err) == 1, err
    assert err[0].startswith(f"error: {expected_path}: "), err[0]
    assert expected_text in err[0], err[0]
    assert sorted(os.listdir(existing)) == before


def copy_views(scene, folder, indices):
    os.makedirs(folder, exist_ok=True)
    for i in indices:
        shutil.copy(scene / "image" / f"{i:06d}.png", os.path.join(folder, f"{i:06d}.png"))


def test_refuses_a_folder_without_images(tmp_path, capfd):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    assert_refused([tmp_path / "empty", tmp_path / "out"], capfd, tmp_path / "empty", "no images found")


def test_photos_of_a_format_we_cannot_read_are_named(tmp_path, capfd):
    """AVIF photos (or raw files): neither we nor COLMAP read them. Both routes say so, where main_sdf.py said 'no
    cameras file'."""
    (tmp_path / "phone").mkdir()
    for i in range(5):
        (tmp_path / "phone" / f"IMG_{i:04d}.AVIF").write_bytes(b"\x00\x00\x00\x18ftypavif")
    (tmp_path / "phone" / "IMG_0005.DNG").write_bytes(b"II*\x00")
    expected = "6 photos in AVIF/DNG, which neither OpenCV nor COLMAP reads; convert them to JPEG or PNG first"
    assert_refused([tmp_path / "phone", tmp_path / "out"], capfd, tmp_path / "phone", expected)
    import main_sdf

    assert main_sdf.main([str(tmp_path / "phone"), "--workspace", str(tmp_path / "ws"), "--device", "cpu"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'phone'}: {expected}"], err
    assert not (tmp_path / "ws").exists()


def test_only_files_count_as_photos_we_cannot_read(scene, tmp_path, capfd):
    """A folder named like a raw photo, or a dangling link, is no photo: a folder holding only those has no
    images (it was refused as '1 photos in DNG'). Raw photos beside too few readable ones are named in the
    refusal, which said 'only one image' of a folder of five photos."""
    (tmp_path / "odd" / "x.dng").mkdir(parents=True)
    os.symlink(tmp_path / "missing.dng", tmp_path / "odd" / "gone.DNG")
    assert_refused([tmp_path / "odd", tmp_path / "out"], capfd, tmp_path / "odd", "no images found")
    copy_views(scene, tmp_path / "mixed", [0])
    for i in range(4):
        (tmp_path / "mixed" / f"IMG_{i:04d}.DNG").write_bytes(b"II*\x00")
    assert_refused([tmp_path / "mixed", tmp_path / "out"], capfd, tmp_path / "mixed",
                   "only one image (and 4 photos in DNG, which neither OpenCV nor COLMAP reads")


def test_refuses_one_image(scene, tmp_path, capfd):
    copy_views(scene, tmp_path / "one", [0])
    assert_refused([tmp_path / "one", tmp_path / "out"], capfd, tmp_path / "one", "only one image")


def test_refuses_a_folder_of_copies_of_one_picture_at_once(scene, tmp_path, capfd):
    """200 copies of one photo: structure from motion searched for a baseline for over 300 s, then failed."""
    import time

    copy_views(scene, tmp_path / "copies", [0, 1])
    for i in range(2, 200):
        shutil.copy(tmp_path / "copies" / "000000.png", tmp_path / "copies" / f"{i:06d}.png")
    t0 = time.perf_counter()
    assert_refused([tmp_path / "copies", tmp_path / "out"], capfd, tmp_path / "copies",
                   "only 2 distinct images (198 more are copies of them)")
    assert time.perf_counter() - t0 < 60


def test_copies_among_the_photos_are_left_out(scene, tmp_path, capfd):
    """Copies of a photo (the same pixels, even written again in another encoding) add no view: the first of each
    is kept, the others left out, each named in a warning line once posing has ended, and in posing.json."""
    copy_views(scene, tmp_path / "views", range(VIEWS))
    again = cv2.imread(str(tmp_path / "views" / "000001.png"))
    cv2.imwrite(str(tmp_path / "views" / "000001 copy.png"), again, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    shutil.copy(tmp_path / "views" / "000003.png", tmp_path / "views" / "z_copy.png")
    (tmp_path / "views" / "IMG_0001.DNG").write_bytes(b"II*\x00")  # unreadable: left out too
    capfd.readouterr()
    info = pose_images(str(tmp_path / "views"), str(tmp_path / "out"), progress=False)
    views = tmp_path / "views"
    copies = {str(views / "000001.png"): str(views / "000001 copy.png"),
              str(views / "z_copy.png"): str(views / "000003.png")}
    assert info["copies_left_out"] == copies
    assert json.loads((tmp_path / "out" / "posing.json").read_text())["copies_left_out"] == copies
    assert sorted(info["views"][i]["source"] for i in range(len(info["views"]))) == sorted(
        ["000001 copy.png"] + [f"{i:06d}.png" for i in range(VIEWS) if i != 1])
    err = [line for line in capfd.readouterr().err.splitlines() if line.startswith("warning")]
    assert err == [f"warning: {c}: the same picture as {o}; left out" for c, o in copies.items()] + [
        f"warning: {views}: 1 photo in DNG left out, which neither OpenCV nor COLMAP reads (convert them to JPEG to "
        f"use them)"], err
    assert info["unreadable_left_out"] == ["IMG_0001.DNG"]


def save_on_its_side(rgb, path, orientation=6):
    """rgb [H, W, 3] written as a JPEG whose pixels are turned as a phone stores them, with the EXIF orientation
    that turns them back ((6) a quarter turn clockwise, (8) counter-clockwise, (1) none: stored as given)."""
    from PIL import Image

    stored = {1: rgb, 6: np.rot90(rgb, 1), 8: np.rot90(rgb, -1)}[orientation]
    image = Image.fromarray(np.ascontiguousarray(stored))
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(path, exif=exif, quality=98, subsampling=0)


def test_photos_stored_on_their_side_are_posed_upright(scene, tmp_path):
    """A phone held upright stores its pixels on their side with an EXIF rotation; COLMAP reads them as stored.
    Posed as stored, the cameras were rolled a quarter turn: renders lay on their side and the orbit video turned
    about a level axis. Turned upright first, they pose as the upright photos do."""
    (tmp_path / "photos").mkdir()
    (tmp_path / "ref" / "image").mkdir(parents=True)
    shutil.copy(scene / "cameras_sphere.npz", tmp_path / "ref")
    for i in range(VIEWS):
        rgb = cv2.cvtColor(cv2.imread(str(scene / "image" / f"{i:06d}.png")), cv2.COLOR_BGR2RGB)
        save_on_its_side(rgb, tmp_path / "photos" / f"{i:06d}.jpg")
        os.symlink(scene / "image" / f"{i:06d}.png", tmp_path / "ref" / "image" / f"{i:06d}.jpg")  # names only
    check_posed_upright(scene, tmp_path, pose_images(str(tmp_path / "photos"), str(tmp_path / "out"),
                                                     progress=False))


def check_posed_upright(scene, tmp_path, info):
    """`scene`'s views, given on their side with EXIF rotation 6, posed into tmp_path/out: every one registered and
    turned upright, the images as the scene's, the cameras as those of tmp_path/ref (the scene's, under the
    photos' names)."""
    assert set(info["turned_upright"].values()) == {6} and info["registered"] == VIEWS
    first = cv2.imread(str(tmp_path / "out" / "image" / "000000.png"))
    assert first.shape == (HEIGHT, WIDTH, 3)
    assert np.abs(first.astype(int) - cv2.imread(str(scene / "image" / "000000.png"))).mean() < 3
    result = compare_poses(str(tmp_path / "out"), str(tmp_path / "ref"))
    assert result["rotation_deg"]["median"] < MAX_ROTATION_DEG, result
    assert result["centre_error_pct"]["median"] < 100 * MAX_CENTRE_ERROR, result


def test_heic_photos_from_a_phone_are_posed(scene, tmp_path, capfd):
    """An iPhone's photos are HEIC, stored on their side with a rotation. They are turned upright as its JPEGs are,
    handed to COLMAP (which reads no HEIC) as PNG copies, and pose as the PNG photos do; main_sdf.py poses such a
    folder by the same route. Before, both routes refused them ('convert them to JPEG or PNG first')."""
    from conftest import save_heic

    from nerf.images import read_image
    from nerf.posing.inputs import classify_input

    (tmp_path / "phone").mkdir()
    (tmp_path / "ref" / "image").mkdir(parents=True)
    shutil.copy(scene / "cameras_sphere.npz", tmp_path / "ref")
    for i in range(VIEWS):
        rgb = cv2.cvtColor(cv2.imread(str(scene / "image" / f"{i:06d}.png")), cv2.COLOR_BGR2RGB)
        save_heic(np.ascontiguousarray(np.rot90(rgb, 1)), tmp_path / "phone" / f"IMG_{i:04d}.HEIC", orientation=6)
        os.symlink(scene / "image" / f"{i:06d}.png", tmp_path / "ref" / "image" / f"IMG_{i:04d}.HEIC")  # names only
    assert classify_input(str(tmp_path / "phone")).kind == "images"  # main_sdf.py's test for photos to pose
    info = pose_images(str(tmp_path / "phone"), str(tmp_path / "out"), progress=False)
    check_posed_upright(scene, tmp_path, info)
    assert not info["unreadable_left_out"]
    # the folder itself is untouched: the copies live in posing's work folder, gone once it has ended
    assert sorted(os.listdir(tmp_path / "phone")) == [f"IMG_{i:04d}.HEIC" for i in range(VIEWS)]
    # one phone's photos held different ways share its sensor's stored size: posed as stored, as its JPEGs are
    (tmp_path / "held").mkdir()
    for i in range(4):
        shutil.copy(tmp_path / "phone" / f"IMG_{i:04d}.HEIC", tmp_path / "held")
    stored = read_image(str(tmp_path / "phone" / "IMG_0004.HEIC"))[0]  # [WIDTH, HEIGHT, 3]: on its side
    save_heic(stored, tmp_path / "held" / "IMG_0004.HEIC", orientation=1)  # the phone held level
    checked = check_images(str(tmp_path / "held"), sorted(os.listdir(tmp_path / "held")), "held")
    assert checked.turns == {} and checked.size == (HEIGHT, WIDTH)  # (width, height): on their side


def test_heic_photos_named_as_jpeg_or_png_are_posed(scene, tmp_path, capfd):
    """A HEIC photo under a .jpg or .png name (apps that export or rename them so) is read by its content, but was
    handed to COLMAP by its name, as a link COLMAP cannot decode: left unposed without a word ('posed 13 of 16')."""
    from conftest import save_heic

    (tmp_path / "phone").mkdir()
    for i in range(VIEWS):
        rgb = cv2.cvtColor(cv2.imread(str(scene / "image" / f"{i:06d}.png")), cv2.COLOR_BGR2RGB)
        save_heic(rgb, tmp_path / "phone" / f"IMG_{i:04d}{({3: '.jpg', 5: '.png'}).get(i, '.HEIC')}")
    code, out, err = run_script([tmp_path / "phone", tmp_path / "out"], capfd)
    assert code == 0 and f"posed {VIEWS} of {VIEWS} images" in out, (out, err)
    third = cv2.imread(str(tmp_path / "out" / "image" / "000003.png"))  # IMG_0003.jpg's view
    assert np.abs(third.astype(int) - cv2.imread(str(scene / "image" / "000003.png"))).mean() < 3


@pytest.mark.skipif(shared_data("dtu_scan24") is None, reason="shared/data/dtu_scan24 not present")
def test_photos_of_one_camera_held_both_ways_pose_and_orbit(tmp_path):
    """DTU scan24's 49 photos cropped square about the principal point, every third turned a quarter turn: one
    camera held both ways (a phone's photos, posed as stored). Structure from motion stopped at its first initial
    pair, a dead end with half the focal length (COLMAP builds no second model unless allowed to): 2 of 49
    registered. The orbit video found no up ('rolled different ways'); now it turns about the up of the level
    photos, rolled as most are. (~90 s on two cores.)"""
    from nerf.orbit import capture_roll, orbit_axis, single_roll_axis

    dtu = shared_data("dtu_scan24")
    (tmp_path / "held").mkdir()
    k = load_scene(dtu, holdout=0).train.intrinsics[0].numpy()
    cx, cy = int(round(k[0, 2])), int(round(k[1, 2]))
    for i, name in enumerate(sorted(os.listdir(os.path.join(dtu, "image")))):
        padded = cv2.copyMakeBorder(cv2.imread(os.path.join(dtu, "image", name)), 300, 300, 300, 300,
                                    cv2.BORDER_CONSTANT)
        square = padded[cy:cy + 600, cx:cx + 600]  # about the principal point, black past the photo's edge
        cv2.imwrite(str(tmp_path / "held" / name), np.rot90(square, -1) if i % 3 == 1 else square)
    info = pose_images(str(tmp_path / "held"), str(tmp_path / "out"), progress=False)
    assert info["registered"] == 49
    c2w = load_scene(str(tmp_path / "out"), holdout=0).train.c2w.double()
    level = torch.tensor([int(view["source"][:6]) % 3 != 1 for view in info["views"]])
    up = single_roll_axis(c2w[level])
    assert float(orbit_axis(c2w) @ up) > math.cos(math.radians(1.0))
    assert capture_roll(c2w, up) == 0


def test_cut_out_photos_give_the_scene_masks(scene, tmp_path, capfd):
    """Photos with their background removed (transparent: an alpha channel) pose as before and their alpha
    channels become the scene's masks, so that training uses them; all of them or none must be cut out."""
    (tmp_path / "cut").mkdir()
    for i in range(VIEWS):
        rgb = cv2.imread(str(scene / "image" / f"{i:06d}.png"))
        mask = cv2.imread(str(scene / "mask" / f"{i:03d}.png"), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(tmp_path / "cut" / f"{i:06d}.png"), np.dstack([rgb * (mask[..., None] > 0), mask]))
    info = pose_images(str(tmp_path / "cut"), str(tmp_path / "out"), progress=False)
    assert info["masks_from_alpha"] and info["registered"] == VIEWS
    loaded = load_scene(str(tmp_path / "out"), holdout=0)
    for i, view in enumerate(info["views"]):
        truth = cv2.imread(str(scene / "mask" / f"{int(view['source'][:6]):03d}.png"), cv2.IMREAD_GRAYSCALE) > 127
        got = loaded.train.masks[i].numpy() > 127
        assert (got & truth).sum() / (got | truth).sum() > 0.98  # (no resampling: pinhole cameras)
    cut_rgb = cv2.imread(str(tmp_path / "cut" / "000003.png"))  # an opaque copy of a cut-out is only a copy
    cv2.imwrite(str(tmp_path / "cut" / "z_copy.png"), np.dstack([cut_rgb, np.full(cut_rgb.shape[:2], 255, np.uint8)]))
    checked = check_images(str(tmp_path / "cut"), sorted(os.listdir(tmp_path / "cut")), "cut")
    assert checked.cut_out and list(checked.copies) == [str(tmp_path / "cut" / "z_copy.png")]
    os.remove(tmp_path / "cut" / "z_copy.png")
    opaque = cv2.imread(str(scene / "image" / "000003.png"))
    cv2.imwrite(str(tmp_path / "cut" / "000003.png"), np.dstack([opaque, np.full(opaque.shape[:2], 255, np.uint8)]))
    assert_refused([tmp_path / "cut", tmp_path / "out2"], capfd, tmp_path / "cut" / "000003.png",
                   "no transparent background, while")
    cv2.imwrite(str(tmp_path / "cut" / "000003.png"), np.dstack([opaque, np.zeros(opaque.shape[:2], np.uint8)]))
    assert_refused([tmp_path / "cut", tmp_path / "out2"], capfd, tmp_path / "cut" / "000003.png",
                   "transparent all over")


def test_cut_out_photos_are_judged_by_the_masks_threshold(scene, tmp_path, capfd):
    """The masks are the alpha channels above half (images.binary_mask), so the photos are judged so too: an alpha
    half transparent all over was posed into a scene whose masks the loader refused, and one barely transparent
    everywhere (254: an editor's opacity) gave masks all object, the background trained as the object."""
    for name, alpha in (("faint", 100), ("nearly", 254)):
        (tmp_path / name).mkdir()
        for i in range(4):
            rgb = cv2.imread(str(scene / "image" / f"{i:06d}.png"))
            cv2.imwrite(str(tmp_path / name / f"{i:06d}.png"),
                        np.dstack([rgb, np.full(rgb.shape[:2], alpha, np.uint8)]))
    assert_refused([tmp_path / "faint", tmp_path / "out"], capfd, tmp_path / "faint" / "000000.png",
                   "transparent all over")
    assert not check_images(str(tmp_path / "nearly"), sorted(os.listdir(tmp_path / "nearly")), "nearly").cut_out


def test_a_copy_of_other_exif_does_not_decide_the_orientation(scene, tmp_path):
    """A copy left out (the same pixels, its EXIF stripped: a photo sent back through a messaging app) has no say
    in the photos' orientation: it made the rotations differ, and the photos were posed on their side."""
    (tmp_path / "photos").mkdir()
    for i in range(5):
        rgb = cv2.cvtColor(cv2.imread(str(scene / "image" / f"{i:06d}.png")), cv2.COLOR_BGR2RGB)
        save_on_its_side(rgb, tmp_path / "photos" / f"{i:06d}.jpg")
    cv2.imwrite(str(tmp_path / "photos" / "sent.png"), cv2.imread(str(tmp_path / "photos" / "000000.jpg"),
                                                                  cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION))
    checked = check_images(str(tmp_path / "photos"), sorted(os.listdir(tmp_path / "photos")), "photos")
    assert checked.copies == {str(tmp_path / "photos" / "sent.png"): str(tmp_path / "photos" / "000000.jpg")}
    assert set(checked.turns.values()) == {6} and checked.size == (WIDTH, HEIGHT)


def test_photos_turned_different_ways_are_turned_when_that_makes_them_alike(scene, tmp_path):
    """Stored alike but rotated different ways (a phone turned either way): as stored, one sensor, one camera.
    Stored differently but alike once turned upright (some photos turned by an editor, which dropped the
    rotation): each turned. Different as seen: refused, naming the first that differs."""
    (tmp_path / "photos").mkdir()
    for i, orientation in enumerate((6, 8, 1, 6, 6)):
        rgb = cv2.cvtColor(cv2.imread(str(scene / "image" / f"{i:06d}.png")), cv2.COLOR_BGR2RGB)
        save_on_its_side(rgb, tmp_path / "photos" / f"{i:06d}.jpg", orientation)
    photos = sorted(os.listdir(tmp_path / "photos"))
    checked = check_images(str(tmp_path / "photos"), photos, "photos")
    assert checked.turns == {"000000.jpg": 6, "000001.jpg": 8, "000003.jpg": 6, "000004.jpg": 6}
    assert checked.size == (WIDTH, HEIGHT)
    checked = check_images(str(tmp_path / "photos"), ["000000.jpg", "000001.jpg", "000003.jpg"], "photos")
    assert checked.turns == {} and checked.size == (HEIGHT, WIDTH)  # as stored: on their side
    checked = check_images(str(tmp_path / "photos"), ["000000.jpg", "000003.jpg", "000004.jpg"], "photos")
    assert set(checked.turns.values()) == {6} and checked.size == (WIDTH, HEIGHT)  # all alike: upright
    sideways = cv2.cvtColor(cv2.imread(str(scene / "image" / "000005.png")), cv2.COLOR_BGR2RGB)
    save_on_its_side(np.rot90(sideways, 1), tmp_path / "photos" / "000005.jpg", 1)  # on its side as seen
    with pytest.raises(PosingError, match="000005.jpg: image is 240x320, .*000000.jpg is 320x240"):
        check_images(str(tmp_path / "photos"), sorted(os.listdir(tmp_path / "photos")), "photos")


def save_tiff_on_its_side(rgb, path, orientation):
    """rgb [H, W, 3] written as a TIFF whose pixels are stored turned, with the orientation tag that turns them
    back (6 or 8)."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(np.rot90(rgb, 1 if orientation == 6 else -1)))
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(path, exif=exif)


def test_tiff_photos_on_their_side_are_read_as_stored(scene, tmp_path):
    """OpenCV's TIFF decoder turns the pixels by the orientation tag whatever the flags; COLMAP reads them as
    stored. Taken as stored, photos that all state one rotation were turned twice (posed on their side), and
    photos turned different ways were posed by COLMAP as stored while image/ held them turned: images and
    cameras of different sizes."""
    for name, orientations in (("alike", [6] * VIEWS), ("mixed", [6, 8] * (VIEWS // 2))):
        (tmp_path / name).mkdir()
        for i, orientation in enumerate(orientations):
            rgb = cv2.cvtColor(cv2.imread(str(scene / "image" / f"{i:06d}.png")), cv2.COLOR_BGR2RGB)
            save_tiff_on_its_side(rgb, tmp_path / name / f"{i:06d}.tif", orientation)
    checked = check_images(str(tmp_path / "alike"), sorted(os.listdir(tmp_path / "alike")), "alike")
    assert set(checked.turns.values()) == {6} and checked.size == (WIDTH, HEIGHT)
    info = pose_images(str(tmp_path / "mixed"), str(tmp_path / "out"), progress=False)
    assert info["turned_upright"] == {} and (info["camera"]["width"], info["camera"]["height"]) == (HEIGHT, WIDTH)
    assert cv2.imread(str(tmp_path / "out" / "image" / "000000.png")).shape[:2] == (WIDTH, HEIGHT)  # as stored


def exif_orientation_of_type(value_type, payload):
    """Raw EXIF (little-endian TIFF) holding only an orientation tag of TIFF type value_type (5: RATIONAL,
    12: DOUBLE), its value's bytes `payload` (stored after the directory: both are longer than 4 bytes)."""
    import struct

    entry = struct.pack("<HHII", 0x0112, value_type, 1, 8 + 2 + 12 + 4)  # the value's offset: after the directory
    return b"Exif\0\0II*\0" + struct.pack("<IH", 8, 1) + entry + struct.pack("<I", 0) + payload


@pytest.mark.parametrize("value_type, payload", [(5, b"\x06\0\0\0\x01\0\0\0"), (12, b"\0" * 6 + b"\x18\x40")],
                         ids=["rational 6/1", "double 6.0"])
def test_an_orientation_stated_in_another_type_is_an_int(scene, tmp_path, value_type, payload):
    """An orientation tag of type RATIONAL (6/1) or DOUBLE (6.0) equals 6: Pillow's IFDRational was taken as the
    orientation, and writing posing.json failed with a traceback."""
    from PIL import Image

    (tmp_path / "photos").mkdir()
    for i in range(VIEWS):
        rgb = cv2.cvtColor(cv2.imread(str(scene / "image" / f"{i:06d}.png")), cv2.COLOR_BGR2RGB)
        Image.fromarray(np.ascontiguousarray(np.rot90(rgb, 1))).save(
            tmp_path / "photos" / f"{i:06d}.jpg", exif=exif_orientation_of_type(value_type, payload), quality=98)
    info = pose_images(str(tmp_path / "photos"), str(tmp_path / "out"), progress=False)
    assert all(type(o) is int for o in info["turned_upright"].values()) and len(info["turned_upright"]) == VIEWS
    with open(tmp_path / "out" / "posing.json") as f:
        assert set(json.load(f)["turned_upright"].values()) == {6}


def test_refuses_images_of_different_sizes(scene, tmp_path, capfd):
    copy_views(scene, tmp_path / "mixed", [0, 1, 2, 3])
    small = cv2.resize(cv2.imread(str(scene / "image" / "000002.png")), (160, 120))
    cv2.imwrite(str(tmp_path / "mixed" / "000002.png"), small)
    assert_refused([tmp_path / "mixed", tmp_path / "out"], capfd, tmp_path / "mixed" / "000002.png",
                   "image is 160x120")


def test_refuses_a_damaged_image(scene, tmp_path, capfd):
    copy_views(scene, tmp_path / "damaged", [0, 1, 2, 3])
    (tmp_path / "damaged" / "000001.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    assert_refused([tmp_path / "damaged", tmp_path / "out"], capfd, tmp_path / "damaged" / "000001.png",
                   "unreadable image")


def test_refuses_a_video_that_cannot_be_decoded(tmp_path, capfd):
    """Before any folder is made, the ones above OUT included."""
    (tmp_path / "broken.mp4").write_bytes(b"this is not a video" * 100)
    assert_refused([tmp_path / "broken.mp4", tmp_path / "new" / "deeper" / "out"], capfd, tmp_path / "broken.mp4",
                   "video cannot be decoded")


def colmap_project_without_images(posed_out, tmp_path):
    """A COLMAP project folder holding the posed scene's sparse/ model and an empty images/."""
    project = tmp_path / "project"
    shutil.copytree(posed_out / "sparse", project / "sparse")
    (project / "images").mkdir()
    return project


def test_refuses_a_colmap_model_with_a_missing_file(posed, tmp_path, capfd):
    project = colmap_project_without_images(posed[0], tmp_path)
    os.remove(project / "sparse" / "0" / "points3D.bin")
    assert_refused([project, tmp_path / "out"], capfd, project / "sparse" / "0" / "points3D.bin",
                   "missing")


def test_refuses_a_colmap_model_without_its_images(posed, tmp_path, capfd):
    out, info = posed
    project = colmap_project_without_images(out, tmp_path)
    first = info["views"][0]["colmap_name"]
    assert_refused([project, tmp_path / "out"], capfd, project / "images" / first,
                   "image of the COLMAP model")


BINARY_DAMAGE = {  # file of the model, what is done to its bytes, what the error says
    "cameras truncated": ("cameras.bin", lambda b: b[:30], "truncated"),
    "images truncated": ("images.bin", lambda b: b[:100], "truncated"),
    "points truncated": ("points3D.bin", lambda b: b[:300], "truncated"),  # pycolmap looped, allocating GBs
    "points with bytes after them": ("points3D.bin", lambda b: b + b"\0\0", "2 bytes after its"),
    "unknown camera model": ("cameras.bin", lambda b: b[:12] + (99).to_bytes(4, "little") + b[16:],
                             "unknown camera model id 99"),
}


@pytest.mark.parametrize("name, damage, expected_text", BINARY_DAMAGE.values(), ids=BINARY_DAMAGE.keys())
def test_refuses_a_damaged_binary_colmap_model(posed, tmp_path, capfd, name, damage, expected_text):
    project = colmap_project_without_images(posed[0], tmp_path)
    path = project / "sparse" / "0" / name
    path.write_bytes(damage(path.read_bytes()))
    assert_refused([project, tmp_path / "out"], capfd, path, expected_text)


def test_refuses_a_binary_model_whose_frames_name_images_it_lacks(posed, tmp_path, capfd):
    """images.bin with no records while frames.bin still names them: well formed, but no model."""
    project = colmap_project_without_images(posed[0], tmp_path)
    (project / "sparse" / "0" / "images.bin").write_bytes(bytes(8))
    assert_refused([project, tmp_path / "out"], capfd, project / "sparse" / "0", "unreadable COLMAP model")


def text_project(posed_out, tmp_path):
    """A COLMAP project holding the posed scene's model as text files as COLMAP before 3.12 wrote them (no rigs
    or frames: the poses are in images.txt) and an empty images/."""
    project = tmp_path / "project"
    model = project / "sparse" / "0"
    model.mkdir(parents=True)
    pycolmap.Reconstruction(str(posed_out / "sparse" / "0")).write_text(str(model))
    os.remove(model / "rigs.txt")
    os.remove(model / "frames.txt")
    (project / "images").mkdir()
    return project


def edit_first_record(path, values):
    """Replace fields {index: text} of the first data line of the COLMAP text file path; returns its old fields."""
    lines = path.read_text().splitlines()
    i = next(k for k, line in enumerate(lines) if not line.startswith("#"))
    fields = lines[i].split()
    lines[i] = " ".join(values.get(k, field) for k, field in enumerate(fields))
    path.write_text("\n".join(lines) + "\n")
    return fields


IMPOSSIBLE_CAMERAS = {  # file of the model, fields of its first record, what the error says
    "zero focal length": ("cameras.txt", {4: "0", 5: "0"}, "camera 1 is impossible"),
    "negative focal length": ("cameras.txt", {5: "-300"}, "camera 1 is impossible"),
    "zero quaternion": ("images.txt", {1: "0", 2: "0", 3: "0", 4: "0"}, "has an impossible pose"),
}


@pytest.mark.parametrize("name, fields, expected_text", IMPOSSIBLE_CAMERAS.values(), ids=IMPOSSIBLE_CAMERAS.keys())
def test_refuses_impossible_cameras_of_a_colmap_model(posed, tmp_path, capfd, name, fields, expected_text):
    project = text_project(posed[0], tmp_path)
    path = project / "sparse" / "0" / name
    edit_first_record(path, fields)
    assert_refused([project, tmp_path / "out"], capfd, path, expected_text)


def test_colmap_model_quaternions_are_normalised(posed, tmp_path):
    from nerf.posing.colmap_model import normalise_poses

    model_dir = text_project(posed[0], tmp_path) / "sparse" / "0"
    fields = edit_first_record(model_dir / "images.txt", {k: "2" for k in range(1, 5)})
    model = pycolmap.Reconstruction(str(model_dir))
    image_id = int(fields[0])
    normalise_poses(pycolmap, model, model.reg_image_ids(), "test")
    np.testing.assert_allclose(model.image(image_id).cam_from_world().rotation.quat, [0.5, 0.5, 0.5, 0.5])


@pytest.mark.parametrize("flag, value", [("--seed", "-1"), ("--seed", str(2**70)), ("--threads", "-7"),
                                         ("--threads", "100000")])  # 100000 threads: COLMAP aborted
def test_refuses_bad_sfm_flags(scene, tmp_path, capfd, flag, value):
    copy_views(scene, tmp_path / "views", [0, 1, 2])
    assert_refused([tmp_path / "views", tmp_path / "out", flag, value], capfd, flag, "is not in")


def tree_snapshot(folder):
    """{path: (size, mtime)} of every file and folder under folder."""
    snapshot = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            stat = os.stat(os.path.join(root, name))
            snapshot[os.path.join(root, name)] = (stat.st_size, stat.st_mtime_ns)
    return snapshot


OUTPUT_IS_INPUT = [  # input, output (relative to tmp_path), --overwrite given
    ("project", "project", False),
    ("project", "project", True),
    ("project", "project/images", True),
    ("project", "project/sparse", True),  # holds the model folder
    ("project/sparse/0", ".", True),  # holds the model folder given itself
    ("views", "views", True),
]


@pytest.mark.parametrize("given, out, overwrite", OUTPUT_IS_INPUT)
def test_refuses_an_output_that_is_or_holds_the_input(scene, posed, tmp_path, capfd, given, out, overwrite):
    colmap_project(scene, *posed, tmp_path / "project")
    copy_views(scene, tmp_path / "views", [0, 1, 2])
    before = tree_snapshot(tmp_path)
    code, _, err = run_script([tmp_path / given, tmp_path / out] + ["--overwrite"] * overwrite, capfd)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: {tmp_path / out}: ") and " the input " in err[0], err[0]
    assert tree_snapshot(tmp_path) == before


def noise_images(folder, count, seed):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for i in range(count):
        noise = cv2.resize(rng.integers(0, 256, (HEIGHT // 4, WIDTH // 4, 3), dtype=np.uint8), (WIDTH, HEIGHT),
                           interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(os.path.join(folder, f"noise_{i:02d}.png"), noise)


def test_refuses_images_without_a_common_scene(tmp_path, capfd):
    """Unrelated pictures: no pair to start structure from motion from. The folders made above OUT for the
    attempt are removed again."""
    noise_images(tmp_path / "noise", 4, seed=3)
    assert_refused([tmp_path / "noise", tmp_path / "new" / "out"], capfd, tmp_path / "noise", "no model found")


def test_main_failed_posing_leaves_an_existing_workspace_empty(tmp_path, capfd):
    import main_sdf

    noise_images(tmp_path / "noise", 4, seed=3)
    (tmp_path / "ws").mkdir()
    argv = [str(tmp_path / "noise"), "--workspace", str(tmp_path / "ws"), "--device", "cpu", "--quiet"]
    assert main_sdf.main(argv) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {tmp_path / 'noise'}: ") and "no model found" in err[0], err
    assert os.listdir(tmp_path / "ws") == []


def test_refuses_when_too_few_images_register(scene, tmp_path, capfd):
    """Seven neighbouring views of the object and nine unrelated pictures: at most 7 of 16 register, 8 are
    needed."""
    centres = reference_c2w(scene)[:, :3, 3]
    nearest = np.argsort(np.linalg.norm(centres - centres[0], axis=1))[:7]
    copy_views(scene, tmp_path / "few", nearest)
    noise_images(tmp_path / "few", 9, seed=4)
    code, stdout, err = run_script([tmp_path / "few", tmp_path / "out"], capfd)
    assert code == 2 and len(err) == 1, err
    assert re.fullmatch(f"error: {re.escape(str(tmp_path / 'few'))}: only [3-7] of 16 images registered "
                        r"\(need at least 8\); .*", err[0]), err[0]
    assert not os.path.exists(tmp_path / "out")
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]


def test_refuses_an_existing_output_and_a_half_sphere_flag(scene, tmp_path, capfd):
    copy_views(scene, tmp_path / "views", [0, 1, 2])
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    code, _, err = run_script([tmp_path / "views", tmp_path / "taken"], capfd)
    assert code == 2 and err == [f"error: {tmp_path / 'taken'}: exists and is not empty (pass --overwrite to "
                                 f"replace it)"]
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"
    code, _, err = run_script([tmp_path / "views", tmp_path / "out", "--radius", "2"], capfd)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: --radius: give --center")
    assert not os.path.exists(tmp_path / "out")
    # A negative coordinate is the value of --center: the error is about the input, not the flag.
    code, _, err = run_script([tmp_path / "missing", tmp_path / "out", "--center", "-1,2,-3", "--radius", "2"], capfd)
    assert code == 2 and err == [f"error: {tmp_path / 'missing'}: no such file or folder"]


def test_main_poses_a_folder_of_plain_photos_once_and_trains(scene, tmp_path, capfd, monkeypatch):
    """main_sdf.py on photos without cameras: posed into WORKSPACE/posing/posed, trained (background field: no
    masks), and on resume the cached posing is reused, not redone; one photo is refused with one line and no
    workspace left behind."""
    import main_sdf
    from train_helpers import TINY_MODEL

    photos = tmp_path / "photos"
    copy_views(scene, photos, range(VIEWS))
    workspace = tmp_path / "ws"
    flags = ["--workspace", str(workspace), "--device", "cpu", "--quiet", "--iters", "4", "--mc_resolution", "24",
             "--bg_num_levels", "4", "--bg_log2_hashmap_size", "12", "--bg_desired_resolution", "64", *TINY_MODEL]
    assert main_sdf.main([str(photos), *flags]) == 0
    posed = workspace / "posing" / "posed"
    assert (posed / "cameras_sphere.npz").is_file() and (workspace / "meshes" / "mesh.ply").is_file()
    assert len(os.listdir(posed / "image")) == VIEWS  # every photo registered

    def no_second_posing(*args, **kwargs):
        raise AssertionError("posed again although the photos did not change")

    monkeypatch.setattr(posing_cache, "pose_images", no_second_posing)
    assert main_sdf.main([str(photos), *flags, "--iters", "6"]) == 0
    monkeypatch.undo()
    capfd.readouterr()
    one = tmp_path / "one"
    copy_views(scene, one, [0])
    assert main_sdf.main([str(one), "--workspace", str(tmp_path / "ws1"), "--device", "cpu"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {one}") and "only one image" in err[0], err
    assert not (tmp_path / "ws1").exists()


# ------------------------------------------------------------------------------------------------------------
# Fuzzed inputs: huge numbers, duplicate names, elongated images, awkward OUT paths, bad posing.json


def test_refuses_an_image_too_elongated_for_feature_extraction(tmp_path, capfd):
    """20000x3 images are 3200x0 once downscaled for SIFT: COLMAP's resize crashed (segfault)."""
    os.makedirs(tmp_path / "thin")
    for i in range(3):
        cv2.imwrite(str(tmp_path / "thin" / f"{i:06d}.png"), np.full((3, 20000, 3), 40 * i, np.uint8))
    assert_refused([tmp_path / "thin", tmp_path / "out"], capfd, tmp_path / "thin" / "000000.png",
                   "too small or too elongated to pose")


HUGE_VALUES = {  # file of the model, fields of its first record, extra flags, what the error says
    "huge point": ("points3D.txt", {1: "1e300", 2: "1e300", 3: "1e300"}, [], "expected coordinates within"),
    "huge point, given sphere": ("points3D.txt", {1: "1e300"}, ["--center", "0,0,0", "--radius", "1"],
                                 "expected coordinates within"),
    "huge translation": ("images.txt", {5: "1e308"}, ["--center", "0,0,0", "--radius", "1"],
                         "has an impossible pose"),
    "tiny focal length": ("cameras.txt", {4: "1e-300", 5: "1e-300"}, [], "camera 1 is impossible"),
}


@pytest.mark.parametrize("name, fields, flags, expected_text", HUGE_VALUES.values(), ids=HUGE_VALUES.keys())
def test_refuses_huge_or_tiny_values_of_a_colmap_model(posed, tmp_path, capfd, name, fields, flags, expected_text):
    project = text_project(posed[0], tmp_path)
    path = project / "sparse" / "0" / name
    edit_first_record(path, fields)
    assert_refused([project, tmp_path / "out"] + flags, capfd, path, expected_text)


@pytest.mark.parametrize("center, radius, flag", [("0,0,0", "1e-300", "--radius"), ("1e300,0,0", "1", "--center")])
def test_refuses_an_unusable_sphere(posed, tmp_path, capfd, center, radius, flag):
    project = text_project(posed[0], tmp_path)
    assert_refused([project, tmp_path / "out", "--center", center, "--radius", radius], capfd, flag, "")


def test_written_cameras_pass_the_loader_checks(scene, posed, tmp_path, capfd):
    """A sphere far beside every camera: no camera is inside it, but none sees it, which the NeuS loader
    refuses; so is the posing, naming a camera."""
    project = colmap_project(scene, *posed, tmp_path / "project")
    assert_refused([project, tmp_path / "out", "--center", "1e6,0,0", "--radius", "1"], capfd, project,
                   ": the camera of ")


def test_refuses_duplicate_image_names(posed, tmp_path, capfd):
    project = text_project(posed[0], tmp_path)
    images = project / "sparse" / "0" / "images.txt"
    lines = images.read_text().splitlines()
    records = [i for i, line in enumerate(lines) if not line.startswith("#")][::2]  # pose lines, not 2D points
    first, second = lines[records[0]].split(), lines[records[1]].split()
    lines[records[1]] = " ".join(second[:-1] + [first[-1]])
    images.write_text("\n".join(lines) + "\n")
    assert_refused([project, tmp_path / "out"], capfd, images, f"both named {first[-1]!r}")


@pytest.mark.parametrize("out", ["x" * 250, os.path.join("newdir", "y" * 300, "x")])
def test_refuses_an_output_name_too_long(posed, tmp_path, capfd, out):
    project = text_project(posed[0], tmp_path)
    assert_refused([project, tmp_path / out], capfd, tmp_path / out, "too long")
    assert not os.path.exists(tmp_path / "newdir")


def test_refuses_an_empty_output_path(posed, tmp_path, capfd, monkeypatch):
    project = text_project(posed[0], tmp_path)
    monkeypatch.chdir(tmp_path)
    before = tree_snapshot(tmp_path)
    code, _, err = run_script([project, ""], capfd)
    assert code == 2 and err == ["error: OUT: empty path, expected an output folder"], err
    assert tree_snapshot(tmp_path) == before


def test_overwriting_a_linked_output_leaves_no_stray_link(scene, posed, tmp_path, capfd):
    project = colmap_project(scene, *posed, tmp_path / "project")
    (tmp_path / "target").mkdir()
    os.symlink(tmp_path / "target", tmp_path / "link")
    code, _, err = run_script([project, tmp_path / "link", "--overwrite"], capfd)
    assert code == 0, err
    assert sorted(os.listdir(tmp_path)) == ["link", "project", "target"]
    assert (tmp_path / "link" / "cameras_sphere.npz").is_file() and not os.path.islink(tmp_path / "link")


def test_a_path_with_a_newline_is_one_error_line(tmp_path, capfd):
    code, _, err = run_script([tmp_path / "no\nwhere", tmp_path / "out"], capfd)
    assert code == 2 and err == [f"error: {tmp_path}/no\\nwhere: no such file or folder"], err


def edit_posing_json(folder, text):
    (folder / "posing.json").write_text(text)


def edit_first_world_mat(folder, value):
    with np.load(folder / "cameras_sphere.npz") as cams:
        arrays = dict(cams)
    arrays["world_mat_0"] = np.full((4, 4), value)
    np.savez(folder / "cameras_sphere.npz", **arrays)


BAD_POSED_FOLDERS = {  # what is done to a copy of the posed folder, the file the error names, what it says
    "posing.json not JSON": (lambda f: edit_posing_json(f, "{bad"), "posing.json", "unreadable posing record"),
    "views a number": (lambda f: edit_posing_json(f, '{"views": 5}'), "posing.json", "views is the number 5"),
    "a list": (lambda f: edit_posing_json(f, "[]"), "posing.json", "the file is an empty list"),
    "a view without source": (lambda f: edit_posing_json(f, json.dumps({"views": [{"image": "000000.png"}] * VIEWS})),
                              "posing.json", "views[0].source is null"),
    "too few views": (lambda f: edit_posing_json(f, '{"views": [{"source": "000000.png"}]}'), "posing.json",
                      "1 views for 16 images"),
    "infinite camera": (lambda f: edit_first_world_mat(f, np.inf), "cameras_sphere.npz", "contains NaN or Inf"),
    "singular camera": (lambda f: edit_first_world_mat(f, 1.0), "cameras_sphere.npz", "world_mat_0 is singular"),
}


@pytest.mark.parametrize("damage, name, expected_text", BAD_POSED_FOLDERS.values(), ids=BAD_POSED_FOLDERS.keys())
def test_eval_poses_refuses_a_bad_posed_folder(scene, posed, tmp_path, capfd, damage, name, expected_text):
    import eval_poses

    shutil.copytree(posed[0], tmp_path / "posed")
    damage(tmp_path / "posed")
    code = eval_poses.main([str(tmp_path / "posed"), str(scene), "--json", str(tmp_path / "result.json")])
    err = capfd.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: {tmp_path / 'posed' / name}: ") and expected_text in err[0], err[0]
    assert sorted(os.listdir(tmp_path)) == ["posed"]


# ------------------------------------------------------------------------------------------------------------
# Fuzz pass D: special files, awkward videos, unsupported or folding COLMAP cameras, rigs, OUT ending in '.',
# stop signals


def test_refuses_an_input_that_is_neither_a_file_nor_a_folder(scene, tmp_path, capfd):
    """A pipe, a device, a video name linked to a device: reading them blocks or never ends (os.listdir raised
    NotADirectoryError). A pipe named like an image among the photos is no photo."""
    os.mkfifo(tmp_path / "pipe.mp4")
    os.symlink("/dev/zero", tmp_path / "zero.mp4")
    for given in (tmp_path / "pipe.mp4", tmp_path / "zero.mp4", "/dev/null"):
        assert_refused([given, tmp_path / "out"], capfd, given, "not a regular file or folder")
    copy_views(scene, tmp_path / "views", [0, 1])
    os.mkfifo(tmp_path / "views" / "x.png")
    assert_refused([tmp_path / "views", tmp_path / "out"], capfd, tmp_path / "views", "only 2 images")


def ffmpeg(*args, stdout=None):
    import subprocess

    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg", reason="video decoding needs imageio-ffmpeg")
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", *map(str, args)], check=True,
                   stdout=stdout)


def test_a_rotated_video_gives_upright_frames_and_no_warning(tmp_path, capfd, caplog):
    """ffmpeg turns the frames of a video with rotation metadata upright; imageio-ffmpeg logged a warning line
    about their size each time the video was opened (on stderr; under pytest in caplog)."""
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[:8, :16] = 255  # a mark in the top left corner
    write_video(tmp_path / "flat.mp4", [frame])
    ffmpeg("-display_rotation", "90", "-i", tmp_path / "flat.mp4", "-c", "copy", tmp_path / "turned.mp4")
    assert_refused([tmp_path / "turned.mp4", tmp_path / "out"], capfd, tmp_path / "turned.mp4", "only one image")
    kept = extract_frames(str(tmp_path / "turned.mp4"), str(tmp_path / "frames"), disable=True)
    upright = cv2.cvtColor(cv2.imread(str(tmp_path / "frames" / kept[0][0])), cv2.COLOR_BGR2RGB)
    assert np.abs(upright.astype(int) - np.rot90(frame)).mean() < 2  # 90 degrees counter-clockwise
    assert capfd.readouterr().err == ""
    assert [r.getMessage() for r in caplog.records] == []


def test_max_frames_holds_for_a_video_that_states_no_length(tmp_path):
    """A Matroska stream written to a pipe has no duration: every frame was kept (a 10-hour gap in a variable
    frame rate video wrote 43 576 of them). Now at most max_frames, spread over the whole video."""
    video = tmp_path / "stream.mkv"
    with open(video, "wb") as f:  # not seekable: no duration written
        ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=30:duration=3", "-c:v", "ffv1", "-f", "matroska",
               "pipe:1", stdout=f)
    from nerf.posing.frames import open_video

    reader, meta = open_video(str(video))
    reader.close()
    assert not meta["duration"], meta  # the case at hand
    kept = extract_frames(str(video), str(tmp_path / "spread"), max_frames=5, blur_ratio=0, disable=True)
    indices = [index for _, index in kept]
    assert len(kept) == 5 and indices[0] < 18 and indices[-1] >= 72, indices
    assert sorted(os.listdir(tmp_path / "spread")) == [name for name, _ in kept]
    kept = extract_frames(str(video), str(tmp_path / "stepped"), step=1, max_frames=5, blur_ratio=0, disable=True)
    assert [index for _, index in kept] == [0, 1, 2, 3, 4]


def test_a_video_too_small_to_pose_is_named(tmp_path, capfd):
    """The error named a frame in the temporary folder, gone by then."""
    rng = np.random.default_rng(5)
    write_video(tmp_path / "tiny.mp4", [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(4)])
    assert_refused([tmp_path / "tiny.mp4", tmp_path / "out"], capfd, tmp_path / "tiny.mp4", "image is 16x16")


def test_a_video_of_a_still_picture_is_refused_by_its_frames(scene, tmp_path, capfd):
    """A camera that never moved (a lossless video, so that its frames decode the same): the error counts the
    copies and names the video, not its frames in the temporary folder, and no warning line comes before it."""
    import imageio.v2 as imageio

    texture = cv2.cvtColor(cv2.imread(str(scene.parent / "blob.png")), cv2.COLOR_BGR2RGB)[:240, :320]
    with imageio.get_writer(str(tmp_path / "still.avi"), format="FFMPEG", fps=10, codec="ffv1",
                            macro_block_size=1) as writer:
        for _ in range(12):
            writer.append_data(texture)
    assert_refused([tmp_path / "still.avi", tmp_path / "out", "--frame_step", "1"], capfd, tmp_path / "still.avi",
                   "only one distinct image (11 more are copies of it)")


def test_failed_posing_leaves_no_progress_bar_line(tmp_path, capfd):
    """main_sdf.py shows the bars (progress=True): a failed stage's bar is cleared, not left above the error."""
    write_video(tmp_path / "two.mp4", [np.full((48, 64, 3), 60 * i, np.uint8) for i in range(2)])
    capfd.readouterr()
    with pytest.raises(PosingError, match="only 2 images"):
        pose_images(str(tmp_path / "two.mp4"), str(tmp_path / "out"), progress=True)
    err = capfd.readouterr().err
    assert "frames" in err and "\n" not in err, repr(err)


def rewrite_first_camera(path, model, params):
    """The first camera of the COLMAP text file path made one of `model` with `params`, its size kept."""
    lines = path.read_text().splitlines()
    i = next(k for k, line in enumerate(lines) if not line.startswith("#"))
    fields = lines[i].split()
    lines[i] = " ".join(fields[:1] + [model] + fields[2:4] + [str(p) for p in params(*map(float, fields[2:4]))])
    path.write_text("\n".join(lines) + "\n")


UNUSABLE_CAMERAS = {  # the first camera's model, its parameters from the size (w, h), what the error says
    "no focal length (pycolmap segfaulted)": ("EQUIRECTANGULAR", lambda w, h: [w, h], "EQUIRECTANGULAR, which has no"),
    "folding OPENCV": ("OPENCV", lambda w, h: [w, w, w / 2, h / 2, -5, 0, 0, 0], "folds the image"),
    "absurd RADIAL": ("RADIAL", lambda w, h: [w, w / 2, h / 2, 1e6, 0], "scales the image's edge"),
    "folding FULL_OPENCV (k3)": ("FULL_OPENCV", lambda w, h: [w, w, w / 2, h / 2, 0, 0, 0, 0, -40, 0, 0, 0],
                                 "k3 -40 folds the image"),
    "folding OPENCV_FISHEYE": ("OPENCV_FISHEYE", lambda w, h: [w, w, w / 2, h / 2, -3, 0, 0, 0],
                               "fisheye distortion k1 -3, k2 0 folds the image"),
    "folding RADIAL_FISHEYE": ("RADIAL_FISHEYE", lambda w, h: [w, w / 2, h / 2, 0, -30], "folds the image"),
    "folding THIN_PRISM_FISHEYE": ("THIN_PRISM_FISHEYE", lambda w, h: [w, w, w / 2, h / 2, -3] + [0] * 7,
                                   "fisheye distortion k1 -3, k2 0 folds the image"),
    "folding RAD_TAN_THIN_PRISM_FISHEYE": ("RAD_TAN_THIN_PRISM_FISHEYE",
                                           lambda w, h: [w, w, w / 2, h / 2, -3] + [0] * 11,
                                           "folds the image (its projection turns back"),
    "DIVISION that fails": ("DIVISION", lambda w, h: [w, w, w / 2, h / 2, 5.0], "folds the image (its projection"),
    "folding EUCM": ("EUCM", lambda w, h: [w / 2, w / 2, w / 2, h / 2, 3.0, 1.0], "folds the image (its projection"),
    # lenses that fold nothing but show the view in a few pixels, or a sliver of it over the whole image: their
    # undistorted images were of one colour
    "DIVISION of a view a few pixels wide": ("DIVISION", lambda w, h: [w, w, w / 2, h / 2, -1e9],
                                             "focal lengths out, at the image's edge"),
    "FOV of a sliver of the view": ("FOV", lambda w, h: [w, w, w / 2, h / 2, 1e9], "focal lengths out, at the"),
    "RAD_TAN_THIN_PRISM_FISHEYE of a huge k0": ("RAD_TAN_THIN_PRISM_FISHEYE",
                                                lambda w, h: [w, w, w / 2, h / 2, 1e30] + [0] * 11,
                                                "focal lengths out, at the image's edge"),
    "FOV wider than a half turn (turned inside out)": ("FOV", lambda w, h: [w, w, w / 2, h / 2, 5.0],
                                                       "crosses the axis"),
    # tangential and thin-prism terms, which the radial check leaves out
    "OPENCV of a huge p1": ("OPENCV", lambda w, h: [w, w, w / 2, h / 2, 0, 0, 1e9, 0], "focal lengths out, at the"),
    "THIN_PRISM_FISHEYE of a huge s1": ("THIN_PRISM_FISHEYE", lambda w, h: [w, w, w / 2, h / 2] + [0] * 6 + [1e9, 0],
                                        "focal lengths out, at the image's edge"),
}


SANE_OTHER_LENSES = {  # models check_projection_folds checks, with parameters a real lens could have
    "FOV": [0.8], "DIVISION": [-0.2], "DIVISION beyond 180 degrees": [-5.0], "EUCM": [0.6, 1.1],
    "RAD_TAN_THIN_PRISM_FISHEYE": [0.05, -0.02, 0.003, 0, 0, 0, 1e-4, -1e-4, 1e-4, 0, 0, 0],
    "FOV of a fisheye": [3.0], "SIMPLE_DIVISION": [0.5], "OPENCV": [-0.1, 0.02, 1e-3, -1e-3],
    "THIN_PRISM_FISHEYE": [0.05, -0.01, 1e-3, -1e-3, 0.01, 0, 1e-4, -1e-4],
}


@pytest.mark.parametrize("model, extra", SANE_OTHER_LENSES.items(), ids=SANE_OTHER_LENSES.keys())
def test_a_sane_lens_of_another_model_is_not_refused(model, extra):
    pinhole = [300, 201, 149] if model.startswith("SIMPLE") else [300, 310, 201, 149]
    camera = pycolmap.Camera(model=model.split()[0], width=400, height=300, params=pinhole + extra)
    check_projection_folds(camera, "cameras.txt", "camera 1")  # raises PosingError if it folds


@pytest.mark.parametrize("model, params, expected_text", UNUSABLE_CAMERAS.values(), ids=UNUSABLE_CAMERAS.keys())
def test_refuses_unusable_cameras_of_a_colmap_model(posed, tmp_path, capfd, model, params, expected_text):
    project = text_project(posed[0], tmp_path)
    cameras = project / "sparse" / "0" / "cameras.txt"
    rewrite_first_camera(cameras, model, params)
    assert_refused([project, tmp_path / "out"], capfd, cameras, expected_text)


@pytest.mark.parametrize("name", ["images.txt", "images.bin"])
def test_refuses_an_image_name_that_is_not_utf8(posed, tmp_path, capfd, name):
    project = text_project(posed[0], tmp_path) if name.endswith(".txt") else colmap_project_without_images(
        posed[0], tmp_path)
    path = project / "sparse" / "0" / name
    data = path.read_bytes()
    first = posed[1]["views"][0]["colmap_name"].encode()
    path.write_bytes(data.replace(first, b"\xff\xfe" + first[2:], 1))  # the same length: the records still fit
    assert_refused([project, tmp_path / "out"], capfd, path, "a name that is not UTF-8")


def test_a_huge_binary_model_file_is_not_read_whole(posed, tmp_path, capfd):
    """A cameras.bin padded (sparsely) to 12 GB: read whole, a MemoryError, here within an address space of
    2 GB more than the process has."""
    import resource

    project = colmap_project_without_images(posed[0], tmp_path)
    cameras = project / "sparse" / "0" / "cameras.bin"
    os.truncate(cameras, 12 << 30)
    with open("/proc/self/status") as f:
        used_kb = next(int(line.split()[1]) for line in f if line.startswith("VmSize:"))
    limits = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, ((used_kb << 10) + (2 << 30), limits[1]))
    try:
        assert_refused([project, tmp_path / "out"], capfd, cameras, "bytes after its 1 records")
    finally:
        resource.setrlimit(resource.RLIMIT_AS, limits)


@pytest.mark.parametrize("kept", [1, 2])
def test_refuses_a_colmap_model_with_too_few_registered_images(posed, tmp_path, capfd, kept):
    """The photo route needs 3 views; a 1-view scene was written that main_sdf.py then refused."""
    model = pycolmap.Reconstruction(str(posed[0] / "sparse" / "0"))
    for image_id in sorted(model.images)[kept:]:
        model.deregister_frame(model.image(image_id).frame_id)
    project = tmp_path / "project"
    (project / "sparse" / "0").mkdir(parents=True)
    (project / "images").mkdir()
    model.write_text(str(project / "sparse" / "0"))
    assert_refused([project, tmp_path / "out"], capfd, project / "sparse" / "0",
                   f"has {kept} registered image{'s' if kept > 1 else ''}; at least 3")


def rig_project(posed_out, tmp_path, pose):
    """A COLMAP text project whose rig 1 holds a second camera at `pose` ('QW QX QY QZ TX TY TZ' from the
    reference camera), which took the second image."""
    project = tmp_path / "project"
    model = project / "sparse" / "0"
    model.mkdir(parents=True)
    (project / "images").mkdir()
    pycolmap.Reconstruction(str(posed_out / "sparse" / "0")).write_text(str(model))

    def edit(name, change):
        lines = (model / name).read_text().splitlines()
        data = [i for i, line in enumerate(lines) if line.strip() and not line.startswith("#")]
        change(lines, data)
        (model / name).write_text("\n".join(lines) + "\n")

    def second_camera(lines, data):
        lines.append("2 " + lines[data[0]].split(" ", 1)[1])

    def rig(lines, data):
        lines[data[0]] = f"1 2 CAMERA 1 CAMERA 2 1 {pose}"

    def second_image(lines, data):  # pose lines and 2D point lines alternate
        fields = lines[data[2]].split()
        lines[data[2]] = " ".join(fields[:8] + ["2"] + fields[9:])

    def second_frame(lines, data):
        fields = lines[data[1]].split()
        lines[data[1]] = " ".join(fields[:-2] + ["2", fields[-1]])

    edit("cameras.txt", second_camera)
    edit("rigs.txt", rig)
    edit("images.txt", second_image)
    edit("frames.txt", second_frame)
    return project


@pytest.mark.parametrize("pose", ["0 0 0 0 0 0 0", "1e200 1e200 0 0 0 0 0", "1 0 0 0 1e300 0 0"],
                         ids=["zero quaternion", "huge quaternion", "huge translation"])
def test_refuses_an_impossible_camera_pose_in_a_rig(posed, tmp_path, capfd, pose):
    """A zero quaternion was taken as no rotation, a huge one gave a LinAlgError traceback, a huge translation
    RuntimeWarning lines."""
    project = rig_project(posed[0], tmp_path, pose)
    assert_refused([project, tmp_path / "out", "--center", "0,0,0", "--radius", "1"], capfd,
                   project / "sparse" / "0" / "rigs.txt", "camera 2 of rig 1 has an impossible pose")


def test_rig_camera_quaternions_are_normalised(posed, tmp_path):
    from nerf.posing.colmap_model import normalise_rigs

    project = rig_project(posed[0], tmp_path, "2 0 0 0 0.5 0 0")
    model = pycolmap.Reconstruction(str(project / "sparse" / "0"))
    normalise_rigs(pycolmap, model, "test")
    (pose,) = model.rig(1).non_ref_sensors.values()
    np.testing.assert_allclose(pose.rotation.quat, [0, 0, 0, 1])
    np.testing.assert_allclose(pose.translation, [0.5, 0, 0])


@pytest.mark.parametrize("out", ["new/..", "empty/.", "."])
def test_refuses_an_output_ending_in_a_dot(posed, tmp_path, capfd, monkeypatch, out):
    """The posing ran to the end, then os.rename failed with a traceback."""
    project = text_project(posed[0], tmp_path)
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path / "empty")
    before = tree_snapshot(tmp_path)
    given = out if out == "." else os.path.join(tmp_path, "empty", out)  # pathlib would drop a trailing '.'
    code, _, err = run_script([project, given, "--overwrite"], capfd)
    assert code == 2 and len(err) == 1 and f"ends in '{out.split('/')[-1]}'" in err[0], err
    assert tree_snapshot(tmp_path) == before


def test_an_output_through_a_missing_folder_and_dotdot(scene, posed, tmp_path, capfd):
    """'missing/../out' is tmp_path/out, as the checks took it; the final rename failed on it."""
    project = colmap_project(scene, *posed, tmp_path / "project")
    code, _, err = run_script([project, tmp_path / "missing" / ".." / "out"], capfd)
    assert code == 0 and err == [], err
    assert sorted(os.listdir(tmp_path)) == ["out", "project"]


STOPPED_POSING = """
import os, signal, sys, time
sys.path.insert(0, {scripts!r})
import colmap2neus
from nerf.posing import pipeline

def stopped(*args, **kwargs):  # structure from motion under way: the work folder is there
    assert any(n.startswith(".tmp-out-") for n in os.listdir({folder!r}))
    os.kill(os.getpid(), {signum})
    time.sleep(60)

pipeline.reconstruct_input = stopped
sys.exit(colmap2neus.main([{views!r}, {out!r}]))
"""


@pytest.mark.parametrize("signum", [2, 15, 1], ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_stopped_posing_leaves_nothing_and_says_so_in_one_line(scene, tmp_path, signum):
    """SIGTERM and SIGHUP killed the process where it stood, leaving the hidden work folder beside OUT for
    good; Ctrl-C printed a KeyboardInterrupt traceback."""
    import subprocess

    copy_views(scene, tmp_path / "views", [0, 1, 2])
    code = STOPPED_POSING.format(scripts=os.path.dirname(colmap2neus.__file__), folder=str(tmp_path),
                                 signum=signum, views=str(tmp_path / "views"), out=str(tmp_path / "out"))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 128 + signum and run.stderr.splitlines() == ["interrupted; nothing written"], run.stderr
    assert os.listdir(tmp_path) == ["views"]
