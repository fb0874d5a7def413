"""Every input format loads into the same normalised cameras; broken folders fail with one clear line."""
import json
import os
import shutil

import cv2
import numpy as np
import pytest
import torch

import main_sdf
from nerf.camera_geometry import opengl_to_opencv
from nerf.input_checks import DatasetError
from nerf.provider import LENS_MODELS, image_rays, load_scene, pixel_rays

from conftest import save_heic, shared_data


def world_rays(scene, views, index):
    """Rays of a view mapped to the input's world frame: origins [H, W, 3], unit directions [H, W, 3]."""
    rays = image_rays(views, index)
    m = torch.from_numpy(scene.to_world).float()
    o = rays["rays_o"] @ m[:3, :3].T + m[:3, 3]
    d = torch.nn.functional.normalize(rays["rays_d"] @ m[:3, :3].T, dim=-1)
    return o, d


def test_neus_format_loads_and_holds_out(small_scene):
    root, info = small_scene
    scene = load_scene(root, holdout=8)
    assert scene.format == "neus"
    assert len(scene.train) + len(scene.test) == 16 and len(scene.test) == 2
    assert set(scene.train.names).isdisjoint(scene.test.names)
    assert scene.train.masks is not None and scene.train.images.shape[1:] == (72, 96, 3)
    # Every camera lies outside the unit sphere and looks towards the object.
    centres = scene.train.c2w[:, :3, 3]
    assert (centres.norm(dim=-1) > 1).all()
    forward = scene.train.c2w[:, :3, 2]
    assert ((forward * -centres).sum(-1) > 0).all()
    assert abs(scene.world_scale - info["scale_mat_radius"]) < 1e-6


def test_instant_ngp_format_matches_neus_cameras(small_scene, tmp_path):
    root, _ = small_scene
    ngp = tmp_path / "ngp"
    ngp.mkdir()
    shutil.copy(os.path.join(root, "transforms.json"), ngp / "transforms.json")
    shutil.copytree(os.path.join(root, "image"), ngp / "image")
    shutil.copytree(os.path.join(root, "mask"), ngp / "mask")  # per-frame mask_path
    neus = load_scene(root, holdout=8)
    scene = load_scene(str(ngp), holdout=8)
    assert scene.format == "instant-ngp"
    assert torch.equal(scene.train.masks, neus.train.masks)
    # Same pixels -> same world rays, although the two normalisations differ.
    for i in (0, 1):
        o1, d1 = world_rays(neus, neus.test, i)
        o2, d2 = world_rays(scene, scene.test, i)
        assert torch.allclose(o1, o2, atol=1e-2)  # mm
        assert torch.allclose(d1, d2, atol=1e-5)
    # The derived normalisation keeps every camera outside the unit sphere.
    assert (scene.train.c2w[:, :3, 3].norm(dim=-1) > 1).all()


def ngp_copy(small_scene, tmp_path, meta_update=None, masks=True):
    """The small scene as instant-ngp only (no cameras_sphere.npz), transforms.json updated by `meta_update`."""
    root, _ = small_scene
    ngp = tmp_path / "ngp"
    ngp.mkdir(parents=True)
    meta = json.load(open(os.path.join(root, "transforms.json")))
    meta.update(meta_update or {})
    if not masks:
        for frame in meta["frames"]:
            del frame["mask_path"]
    json.dump(meta, open(ngp / "transforms.json", "w"))
    os.symlink(os.path.join(root, "image"), ngp / "image")
    os.symlink(os.path.join(root, "mask"), ngp / "mask")
    return str(ngp)


def object_sphere(info):
    return np.array(info["object_centre"]), info["object_radius"]


def test_derived_region_of_interest_holds_the_object_tightly(small_scene, tmp_path):
    """With masks the sphere is the visual hull's (within ~10 % of the NeuS scale_mat's 1.15 x the object's
    radius); without masks, the sphere every camera sees whole: it still holds the object, and is not the
    common frustum (which reaches far past the object)."""
    _, info = small_scene
    centre, radius = object_sphere(info)
    masked = load_scene(ngp_copy(small_scene, tmp_path))
    unmasked = load_scene(ngp_copy(small_scene, tmp_path / "u", masks=False))
    for scene, lo, hi in ((masked, 1.0, 1.3), (unmasked, 1.05, 2.5)):
        r, c = scene.to_world[0, 0], scene.to_world[:3, 3]
        assert lo * radius < r < hi * radius, (scene.train.masks is None, r / radius)
        assert np.linalg.norm(c - centre) + radius < r  # the object is inside


def test_aabb_and_flags_set_the_region_of_interest(small_scene, tmp_path):
    """transforms.json's aabb (world units) gives the sphere around it; --center/--radius override any format,
    and the world rays stay the same."""
    root, info = small_scene
    centre, radius = object_sphere(info)
    box = [(centre - radius).tolist(), (centre + radius).tolist()]
    scene = load_scene(ngp_copy(small_scene, tmp_path, {"aabb": box}))
    assert np.allclose(scene.to_world[:3, 3], centre) and np.isclose(scene.to_world[0, 0], radius * 3**0.5)
    neus = load_scene(root)
    moved = load_scene(root, roi=((centre + 10).tolist(), 1.5 * radius))
    assert np.allclose(moved.to_world[:3, 3], centre + 10) and np.isclose(moved.to_world[0, 0], 1.5 * radius)
    for a, b in zip(world_rays(neus, neus.test, 0), world_rays(moved, moved.test, 0)):
        assert torch.allclose(a, b, atol=1e-3)


def test_bad_region_of_interest_flags_are_refused(small_scene, tmp_path, capsys):
    root, _ = small_scene
    for flags, message in ((["--center", "1,2"], "--center: give both"),
                           (["--center", "1,2", "--radius", "3"], "--center: expected three numbers"),
                           (["--center", "1,2,nan", "--radius", "3"], "--center: [1.0, 2.0, nan] is not three numbers"),
                           (["--center", "1e300,2,3", "--radius", "3"], "--center: [1e+300, 2.0, 3.0] is not three"),
                           (["--center", "1,2,3", "--radius", "0"], "--radius: 0.0 is not a number from 1e-09"),
                           (["--center", "1,2,3", "--radius", "1e-300"], "--radius: 1e-300 is not a number from"),
                           # a sphere that holds the cameras (the scene's are ~3 radii from its object)
                           (["--center", "0,0,0", "--radius", "1e6"], "--radius: the region of interest (--center, "
                                                                      "--radius) holds the camera of")):
        assert main_sdf.main([root, "--workspace", str(tmp_path / "ws"), "--device", "cpu", *flags]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: " + message), err
    assert not (tmp_path / "ws").exists()
    bad = ngp_copy(small_scene, tmp_path, {"aabb": [[0, 0, 0], [1, -1, 1]]})
    assert main_sdf.main([bad, "--workspace", str(tmp_path / "ws"), "--device", "cpu"]) == 2
    assert "aabb must be" in capsys.readouterr().err
    for k, (aabb, message) in enumerate(((
            [[0, 0, 0], [1e-300, 1e-300, 1e-300]], "aabb's radius: 0.0 is not a number from"),
            ([[-1e6] * 3, [1e6] * 3], "the sphere around aabb holds the camera of frame 0"))):
        bad = ngp_copy(small_scene, tmp_path / str(k), {"aabb": aabb})
        assert main_sdf.main([bad, "--workspace", str(tmp_path / "ws"), "--device", "cpu"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "ws").exists()


def test_nerf_synthetic_format_with_alpha_masks(small_scene, tmp_path):
    """NeRF-synthetic: square-pixel camera_angle_x, RGBA images whose alpha is the mask, its own test split."""
    root, _ = small_scene
    meta = json.load(open(os.path.join(root, "transforms.json")))
    out = tmp_path / "synthetic"
    (out / "train").mkdir(parents=True)
    (out / "test").mkdir()
    w = meta["w"]
    for split, frames in (("train", meta["frames"][:12]), ("test", meta["frames"][12:])):
        entries = []
        for j, frame in enumerate(frames):
            name = os.path.splitext(os.path.basename(frame["file_path"]))[0]
            rgb = cv2.imread(os.path.join(root, frame["file_path"]))
            mask = cv2.imread(os.path.join(root, "mask", sorted(os.listdir(os.path.join(root, "mask")))[
                meta["frames"].index(frame)]), cv2.IMREAD_GRAYSCALE)
            cv2.imwrite(str(out / split / f"{name}.png"), np.dstack([rgb, mask]))
            entries.append({"file_path": f"./{split}/{name}", "transform_matrix": frame["transform_matrix"]})
        angle = 2 * np.arctan(0.5 * w / meta["fl_x"])
        json.dump({"camera_angle_x": angle, "frames": entries}, open(out / f"transforms_{split}.json", "w"))
    scene = load_scene(str(out))
    assert scene.format == "nerf-synthetic"
    assert len(scene.train) == 12 and len(scene.test) == 4
    assert scene.train.masks is not None
    # cx = W/2 in NeRF's +0.5 convention is W/2 - 0.5 in ours.
    assert abs(float(scene.train.intrinsics[0, 0, 2]) - (w / 2 - 0.5)) < 1e-6
    mask_fraction = float((scene.train.masks > 0).float().mean())
    assert 0.05 < mask_fraction < 0.9


@pytest.mark.parametrize("downscale", [1, 2])
def test_without_masks_only_the_held_out_masks_are_kept_to_score(small_scene, downscale):
    """use_masks off (--no_masks): no view carries masks (training never sees them) and the normalisation is the
    same; the held-out views' masks are kept apart, equal to what a masked load gives those views."""
    root, _ = small_scene
    masked = load_scene(root, holdout=8, downscale=downscale)
    unmasked = load_scene(root, holdout=8, downscale=downscale, use_masks=False)
    assert unmasked.train.masks is None and unmasked.test.masks is None
    assert masked.test_score_masks is None
    assert torch.equal(unmasked.test_score_masks, masked.test.masks)
    assert unmasked.test_score_masks.shape == (2, 72 // downscale, 96 // downscale)
    np.testing.assert_array_equal(unmasked.to_world, masked.to_world)  # NeuS: the scale_mat, masks or not


def test_downscale_keeps_rays_through_the_same_points(small_scene):
    root, _ = small_scene
    full = load_scene(root, holdout=8)
    half = load_scene(root, holdout=8, downscale=2)
    assert half.train.images.shape[1:3] == (36, 48)
    # Pixel (u, v) of the half image covers full-resolution pixels 2u, 2u+1: its centre is 2u + 0.5.
    k_full, k_half = full.train.intrinsics[:1], half.train.intrinsics[:1]
    pose = full.train.c2w[:1]
    u, v = torch.tensor([10.0]), torch.tensor([7.0])
    _, d_half = pixel_rays(k_half, pose, u, v)
    _, d_full = pixel_rays(k_full, pose, 2 * u + 0.5, 2 * v + 0.5)
    assert torch.allclose(d_half, d_full, atol=1e-6)


@pytest.mark.skipif(shared_data("dtu_scan24") is None, reason="shared/data/dtu_scan24 not present")
def test_dtu_scan24_cameras_see_the_object():
    scene = load_scene(shared_data("dtu_scan24"), holdout=8, downscale=4)
    assert len(scene.train) + len(scene.test) == 49
    # The origin of the normalised space (the object's centre) projects inside every mask.
    for views in (scene.train, scene.test):
        w2c = torch.linalg.inv(views.c2w)
        cam = w2c[:, :3, 3]  # the origin in camera coordinates
        uv = torch.einsum("vij,vj->vi", views.intrinsics, cam)
        u, v = (uv[:, 0] / uv[:, 2]).round().long(), (uv[:, 1] / uv[:, 2]).round().long()
        assert (cam[:, 2] > 0).all()
        assert (views.masks[torch.arange(len(views)), v, u] > 0).float().mean() > 0.95
    assert 100 < scene.world_scale < 1000  # DTU millimetres


# ------------------------------------------------------------------------------------------------------
# Lenses: photos taken through a known distortion load as pinhole images of the same scene.

BLOB = (0.3, -0.2)  # the ray (x, y, 1), camera coordinates, through the centre of a blob in the blue channel
HOLE = (0.2, 0.05, 0.25)  # the mask's hole (not object): centre x, y and radius in the same coordinates


def pattern(x, y):
    """What every test lens photographs, as a function of the ray (x, y, 1): x, y [H, W] -> RGB [H, W, 3] uint8.
    Ramps with waves (~20 pixels long) in x (red) and y (green), a Gaussian blob at BLOB (blue); nothing darker
    than 38, so a black pixel is fill, not scene."""
    blob = np.exp(-((x - BLOB[0]) ** 2 + (y - BLOB[1]) ** 2) / (2 * 0.05**2))
    red, green = [128 + 50 * np.tanh(2 * t) + 40 * np.sin(25 * t) for t in (x, y)]
    rgb = np.stack([red, green, 60 + 150 * blob], axis=-1)
    return np.round(rgb).astype(np.uint8)


def hole_distance(x, y):
    """Signed distance [H, W] of rays x, y [H, W] from the rim of the mask's hole (negative inside it)."""
    return np.hypot(x - HOLE[0], y - HOLE[1]) - HOLE[2]


def distort(lens, x, y):
    """Rays (x, y, 1) [N] through a lens (the transforms.json fields in `lens`) -> normalised distorted image
    coordinates xd, yd [N], written out from the models' definitions: OpenCV's radial-tangential model (k3 the
    r^6 term, k4..k6 FULL_OPENCV's rational denominator) and the fisheye's theta_d polynomial."""
    c = {n: lens.get(n, 0.0) for n in ("k1", "k2", "k3", "k4", "k5", "k6", "p1", "p2")}
    r2 = x * x + y * y
    if lens.get("is_fisheye") or lens.get("camera_model") == "OPENCV_FISHEYE":
        theta = np.arctan(np.sqrt(r2))
        t2 = theta * theta
        theta_d = theta * (1 + c["k1"] * t2 + c["k2"] * t2**2 + c["k3"] * t2**3 + c["k4"] * t2**4)
        scale = np.where(r2 > 0, theta_d / np.sqrt(np.maximum(r2, 1e-30)), 1.0)
        return x * scale, y * scale
    numerator = 1 + c["k1"] * r2 + c["k2"] * r2**2 + c["k3"] * r2**3
    radial = numerator / (1 + c["k4"] * r2 + c["k5"] * r2**2 + c["k6"] * r2**3)
    xd = x * radial + 2 * c["p1"] * x * y + c["p2"] * (r2 + 2 * x * x)
    yd = y * radial + c["p1"] * (r2 + 2 * y * y) + 2 * c["p2"] * x * y
    return xd, yd


def undistort(lens, xd, yd):
    """The rays x, y [N] that `distort` takes to xd, yd [N] (Newton's method; checked to 1e-9)."""
    x, y = xd.copy(), yd.copy()
    step = 1e-7
    for _ in range(30):
        fx, fy = distort(lens, x, y)
        gx, gy = distort(lens, x + step, y)  # the Jacobian [[ax, bx], [ay, by]] by forward differences
        hx, hy = distort(lens, x, y + step)
        ax, ay, bx, by = (gx - fx) / step, (gy - fy) / step, (hx - fx) / step, (hy - fy) / step
        ex, ey, det = fx - xd, fy - yd, ax * by - bx * ay
        x, y = x - (by * ex - bx * ey) / det, y - (ax * ey - ay * ex) / det
    fx, fy = distort(lens, x, y)
    assert np.abs(fx - xd).max() < 1e-9 and np.abs(fy - yd).max() < 1e-9
    return x, y


def photographed_scene(small_scene, tmp_path, top, per_frame=None, drop=()):
    """The small scene's cameras (transforms.json without `drop`, updated by `top` and each frame by `per_frame`)
    photographing `pattern`, with masks of everything but HOLE, through the lens those fields describe; its
    region of interest from an aabb (the masks are no object's). -> (folder, meta, the lens's K [3, 3])."""
    root, info = small_scene
    meta = json.load(open(os.path.join(root, "transforms.json")))
    for key in drop:
        del meta[key]
    meta.update(top)
    lens = {**meta, **(per_frame or {})}
    k = np.array([[meta["fl_x"], 0, meta["cx"] - 0.5], [0, meta["fl_y"], meta["cy"] - 0.5], [0, 0, 1]])
    v, u = np.mgrid[0:meta["h"], 0:meta["w"]].astype(np.float64)
    x, y = undistort(lens, (u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1])
    folder = tmp_path / "lens"
    folder.mkdir()
    cv2.imwrite(str(folder / "photo.png"), pattern(x, y)[..., ::-1])
    cv2.imwrite(str(folder / "mask.png"), np.where(hole_distance(x, y) < 0, 0, 255).astype(np.uint8))
    for i, frame in enumerate(meta["frames"]):
        shutil.copy(folder / "photo.png", folder / f"{i:02d}.png")
        frame.update(file_path=f"{i:02d}.png", mask_path="mask.png", **(per_frame or {}))
    centre, radius = object_sphere(info)
    meta["aabb"] = [(centre - radius).tolist(), (centre + radius).tolist()]
    json.dump(meta, open(folder / "transforms.json", "w"))
    return str(folder), meta, k


FISHEYE = {"k1": 0.05, "k2": -0.02, "k3": 0.004, "k4": -0.001}


@pytest.mark.parametrize("top, per_frame, drop, zoom", [
    pytest.param({"camera_model": "OPENCV", "k1": -0.25, "k2": 0.08, "k3": -0.04, "p1": 2e-3, "p2": -1e-3}, None, (),
                 "out", id="OPENCV barrel with k3"),
    pytest.param({"camera_model": "OPENCV", "k1": 0.2, "k2": 0.05, "k3": 0.15, "p1": -1e-3, "p2": 1.5e-3}, None, (),
                 "in", id="OPENCV pincushion with k3"),
    pytest.param({"camera_model": "FULL_OPENCV", "k1": 0.05, "k2": 0.01, "k4": 0.3, "k5": 0.02, "k6": 1e-3}, None,
                 (), "out", id="FULL_OPENCV rational"),
    pytest.param({"is_fisheye": True, **FISHEYE}, None, ("camera_model",), "out", id="instant-ngp is_fisheye"),
    pytest.param({"is_fisheye": True}, None, ("camera_model",), "out", id="equidistant fisheye, no coefficients"),
    pytest.param({}, {"camera_model": "OPENCV_FISHEYE", **FISHEYE}, (), "out", id="per-frame OPENCV_FISHEYE"),
])
def test_a_distorted_lens_loads_as_a_pinhole_view(small_scene, tmp_path, top, per_frame, drop, zoom):
    """Photos of `pattern` through a lens load as pinhole images whose every pixel shows the pattern at the ray
    the returned K gives it; a 3D point projected by the loaded camera lands on the blob that marks it; the masks
    follow the same map; and no pixel is black fill (a barrel or fisheye view widens, a pincushion one narrows)."""
    folder, meta, k = photographed_scene(small_scene, tmp_path, top, per_frame, drop)
    scene = load_scene(folder, holdout=0)
    views = scene.train
    intrinsics = views.intrinsics.double().numpy()
    new_k = intrinsics[0]
    assert np.allclose(intrinsics, new_k)  # one lens, one undistortion
    assert np.allclose(new_k[:2, 2], k[:2, 2]) and np.isclose(new_k[0, 0] / new_k[1, 1], k[0, 0] / k[1, 1])
    assert (new_k[0, 0] < 0.99 * k[0, 0]) if zoom == "out" else (new_k[0, 0] > 1.01 * k[0, 0])
    v, u = np.mgrid[0:meta["h"], 0:meta["w"]].astype(np.float64)
    x, y = (u - new_k[0, 2]) / new_k[0, 0], (v - new_k[1, 2]) / new_k[1, 1]  # each loaded pixel's ray
    images = views.images.numpy()
    expected = pattern(x, y).astype(int)
    error = np.abs(images[0].astype(int) - expected)[2:-2, 2:-2]
    assert error.mean() < 0.6 and error.max() <= 3, (error.mean(), error.max())
    # (neither the photo itself nor the loaded image with the file's K would pass)
    raw = cv2.imread(os.path.join(folder, "photo.png"))[..., ::-1].astype(int)
    assert np.abs(raw - expected)[2:-2, 2:-2].mean() > 3.0
    file_view = pattern((u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1]).astype(int)
    assert np.abs(images[0].astype(int) - file_view)[2:-2, 2:-2].mean() > 6.0

    # The point 500 mm along BLOB's ray of frame 5's camera (file pose), projected by the loaded camera.
    j = 5
    c2w = opengl_to_opencv(np.array([meta["frames"][j]["transform_matrix"]]))[0]
    point = c2w @ np.array([500 * BLOB[0], 500 * BLOB[1], 500, 1.0])
    normalised = np.linalg.solve(scene.to_world, point)
    camera = np.linalg.solve(views.c2w[j].double().numpy(), normalised)
    target = (new_k @ camera[:3])[:2] / camera[2]
    blue = np.clip(images[j, ..., 2].astype(float) - 90, 0, None)  # the blob above the background's 60
    centroid = np.array([(blue * u).sum(), (blue * v).sum()]) / blue.sum()
    assert np.hypot(*(centroid - target)) < 0.15, (centroid, target)  # (through the file's K: ~2 pixels off)

    masks = views.masks.numpy()
    distance = hole_distance(x, y)
    sure = np.abs(distance) > 0.75 / new_k[0, 0]  # more than 0.75 pixels from the hole's rim
    assert (masks[:, sure] == np.where(distance < 0, 0, 255)[sure]).all()
    assert images.min() >= 30  # the pattern's darkest is 38: no black fill, also not at the edges
    assert (masks[:, [0, -1], :] == 255).all() and (masks[:, :, [0, -1]] == 255).all()


@pytest.mark.parametrize("model", ["EQUIRECTANGULAR", "FISHEYE624", "SUPER_WIDE"])
def test_an_unsupported_camera_model_is_refused(small_scene, tmp_path, capsys, model):
    """A lens model the loader cannot undo (nerfstudio's EQUIRECTANGULAR, FISHEYE624, or an unknown name; at the
    top level or per frame) stops main_sdf with one line naming transforms.json; it loaded as a pinhole before."""
    models = ", ".join(sorted(LENS_MODELS))
    top = ngp_copy(small_scene, tmp_path / "top", {"camera_model": model})
    err = run_main_expecting_error(top, tmp_path / "top", capsys)
    assert err == f"error: {top}/transforms.json: camera_model '{model}' is not supported ({models})"
    frame = ngp_copy(small_scene, tmp_path / "frame")
    meta = json.load(open(os.path.join(frame, "transforms.json")))
    meta["frames"][3]["camera_model"] = model
    json.dump(meta, open(os.path.join(frame, "transforms.json"), "w"))
    err = run_main_expecting_error(frame, tmp_path / "frame", capsys)
    assert err == f"error: {frame}/transforms.json: frame 3 camera_model '{model}' is not supported ({models})"


# ------------------------------------------------------------------------------------------------------
# Broken input: one line naming the file, non-zero exit, no workspace written.


def broken_copy(small_scene, tmp_path):
    root, _ = small_scene
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    return bad


def run_main_expecting_error(data, tmp_path, capsys):
    workspace = tmp_path / "ws"
    code = main_sdf.main([str(data), "--workspace", str(workspace), "--iters", "1", "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert not workspace.exists()
    return err


def test_missing_cameras_file(small_scene, tmp_path, capsys):
    bad = broken_copy(small_scene, tmp_path)
    os.remove(bad / "cameras_sphere.npz")
    os.remove(bad / "transforms.json")
    err = run_main_expecting_error(bad, tmp_path, capsys)
    assert str(bad) in err and "no cameras file" in err


def test_mask_count_mismatch(small_scene, tmp_path, capsys):
    bad = broken_copy(small_scene, tmp_path)
    os.remove(bad / "mask" / sorted(os.listdir(bad / "mask"))[-1])
    err = run_main_expecting_error(bad, tmp_path, capsys)
    assert str(bad / "mask") in err and "15 masks for 16 images" in err


@pytest.mark.parametrize("suffix", [".jpg", ".tif"])
def test_an_exif_rotation_is_ignored_by_images_and_masks_alike(tmp_path, suffix):
    """A phone stores landscape pixels with an EXIF rotation. COLMAP poses the pixels as stored, and so does
    read_image; a JPEG mask was read turned by its rotation, against its image (refused as the wrong size).
    OpenCV turns a TIFF by its orientation tag whatever the flags: it is turned back."""
    from PIL import Image

    from nerf.images import read_image, read_mask

    rng = np.random.default_rng(0)
    pixels = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (40, 30), interpolation=cv2.INTER_CUBIC)
    mask = np.zeros((30, 40), np.uint8)
    mask[5:20, 3:15] = 255
    for name, values in (("image", pixels), ("mask", mask)):
        image = Image.fromarray(values)
        exif = image.getexif()
        exif[0x0112] = 6  # Orientation: turn 90 degrees clockwise to view
        lossless = {"quality": 100, "subsampling": 0} if suffix == ".jpg" else {}
        image.save(tmp_path / (name + suffix), exif=exif, **lossless)
    rgb = read_image(str(tmp_path / ("image" + suffix)))[0]
    assert rgb.shape == (30, 40, 3) and np.abs(rgb.astype(int) - pixels).mean() < 3
    assert np.mean(read_mask(str(tmp_path / ("mask" + suffix)), rgb.shape[:2]) == mask) > 0.98


def test_an_rgba_tiff_gives_its_own_colours(tmp_path):
    """libtiff's RGBA reader, which OpenCV uses for 8-bit TIFFs, multiplies the colours by the alpha: a cut-out
    photo saved as TIFF came back half as bright where it was half transparent. An unmarked fourth channel (as
    OpenCV writes one) was already read as stored."""
    from PIL import Image

    from nerf.images import read_image

    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[..., 3] = np.where(np.arange(8) < 4, 128, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "pillow.tif")  # alpha marked as such (ExtraSamples 2)
    cv2.imwrite(str(tmp_path / "opencv.tif"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))  # unmarked
    for name in ("pillow.tif", "opencv.tif"):
        rgb, alpha = read_image(str(tmp_path / name))
        assert np.abs(rgb.astype(int) - (200, 100, 50)).max() <= 2, (name, rgb[0, 0])
        assert np.array_equal(alpha, rgba[..., 3])


def test_heic_photos_are_read_as_jpeg_photos_are(tmp_path):
    """A phone's HEIC photo (an iPhone's default): decoded by pillow-heif into what OpenCV gives for a JPEG, its
    alpha channel kept, a mask read as grey. As stored, its EXIF orientation told apart, as for a JPEG (libheif
    applies the file's rotation, which is turned back), so that photos held different ways are one camera."""
    from nerf.images import exif_orientation, imread, read_image, read_mask

    rng = np.random.default_rng(0)
    pixels = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (40, 30), interpolation=cv2.INTER_CUBIC)
    save_heic(pixels, tmp_path / "image.heic")
    rgb, alpha = read_image(str(tmp_path / "image.heic"))
    assert rgb.shape == (30, 40, 3) and alpha is None and np.abs(rgb.astype(int) - pixels).mean() < 3
    assert exif_orientation(str(tmp_path / "image.heic")) == 1
    side = np.ascontiguousarray(np.rot90(pixels, 1))  # stored on its side, as a phone held upright does
    save_heic(side, tmp_path / "side.HEIC", orientation=6)
    rgb = read_image(str(tmp_path / "side.HEIC"))[0]
    assert rgb.shape == (40, 30, 3) and np.abs(rgb.astype(int) - side).mean() < 3
    assert exif_orientation(str(tmp_path / "side.HEIC")) == 6
    bgr = imread(str(tmp_path / "side.HEIC"), cv2.IMREAD_COLOR, "image")  # as OpenCV's IMREAD_COLOR: turned
    assert bgr.shape == (30, 40, 3) and np.abs(bgr[..., ::-1].astype(int) - pixels).mean() < 3
    cut = np.dstack([pixels, np.where(np.arange(40) < 20, 255, 0).astype(np.uint8)[None].repeat(30, 0)])
    save_heic(cut, tmp_path / "cut.heic")
    rgb, alpha = read_image(str(tmp_path / "cut.heic"))
    assert alpha is not None and (alpha[:, :18] > 250).all() and (alpha[:, 22:] < 5).all()
    mask = np.zeros((30, 40, 1), np.uint8)
    mask[5:20, 3:15] = 255
    save_heic(np.ascontiguousarray(np.rot90(mask, 1)), tmp_path / "mask.heic", orientation=6)
    assert np.mean(read_mask(str(tmp_path / "mask.heic"), (40, 30)) == np.rot90(mask, 1)[..., 0]) > 0.98


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_heic_photo_is_named(tmp_path, damage):
    from nerf.images import read_image

    save_heic(np.full((30, 40, 3), 128, np.uint8), tmp_path / "photo.heic")
    data = (tmp_path / "photo.heic").read_bytes()
    data = data[: len(data) // 2] if damage == "truncated" else data[:16] + bytes(200)
    (tmp_path / "photo.heic").write_bytes(data)
    with pytest.raises(DatasetError, match=r"photo\.heic: unreadable image \(HEIF: .+\)$"):
        read_image(str(tmp_path / "photo.heic"))


@pytest.mark.parametrize("bits", [10, 12])
def test_a_grey_heic_of_more_than_8_bits_is_read(tmp_path, monkeypatch, bits):
    """pillow-heif reduces a 10- or 12-bit colour HEIF to 8 bits, but gives a grey one as 16-bit values: such a
    photo or mask was refused ('unsupported image (HEIF I;16)'), where a 16-bit grey PNG is read."""
    import pillow_heif
    from PIL import Image

    from nerf.images import read_image, read_mask

    monkeypatch.setattr(pillow_heif.options, "SAVE_HDR_TO_12_BIT", bits == 12)
    grey = (np.arange(30 * 40).reshape(30, 40) % 256).astype(np.uint8)
    pillow_heif.from_pillow(Image.fromarray(grey.astype(np.uint16) * 257)).save(str(tmp_path / "grey.heic"),
                                                                                quality=-1, chroma=444)
    assert pillow_heif.open_heif(str(tmp_path / "grey.heic")).info["bit_depth"] == bits
    rgb, alpha = read_image(str(tmp_path / "grey.heic"))
    assert alpha is None and rgb.dtype == np.uint8 and np.abs(rgb.astype(int) - grey[..., None]).max() <= 1
    assert (read_mask(str(tmp_path / "grey.heic"), (30, 40)) == np.where(grey > 127, 255, 0)).all()


def test_a_huge_heic_cropped_small_is_refused_before_decoding(tmp_path):
    """A HEIF's size after its crop ('clap') is what pillow-heif states, yet libheif decodes the whole coded image:
    a 20000x20000 one cropped to 40x30 passed the pixel-count limit and was decoded (gigabytes for a real one)."""
    from nerf.images import MAX_IMAGE_PIXELS, read_image

    save_heic(np.full((30, 40, 3), 128, np.uint8), tmp_path / "photo.heic")  # coded 64x64, cropped to 40x30
    data = (tmp_path / "photo.heic").read_bytes()
    at = data.index(b"ispe") + 8  # version and flags, then width and height
    (tmp_path / "photo.heic").write_bytes(data[:at] + (20000).to_bytes(4, "big") * 2 + data[at + 8:])
    too_large = rf"photo\.heic: image is too large \(20000x20000, at most {MAX_IMAGE_PIXELS} pixels\)$"
    with pytest.raises(DatasetError, match=too_large):
        read_image(str(tmp_path / "photo.heic"))


@pytest.mark.parametrize("stated", ["as_a_long_without_rotation", "as_none_beside_a_rotation"])
def test_a_heic_photo_is_turned_back_by_the_rotation_libheif_applied(tmp_path, stated):
    """libheif turns a HEIF's pixels by the file's own rotation ('irot', 'imir'), which HEIF viewers apply whatever
    its EXIF states. They were turned back by the EXIF orientation: where the two disagree (an orientation stated as
    a LONG, which pillow-heif writes no rotation for; one a converter reset to 1), the photo was read on its side."""
    import struct

    import pillow_heif
    from PIL import Image

    from nerf.images import UPRIGHT, exif_orientation, imread, read_image, read_mask

    rng = np.random.default_rng(0)
    pixels = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (40, 30), interpolation=cv2.INTER_CUBIC)
    long_value = stated == "as_a_long_without_rotation"
    value = struct.pack(">I", 6) if long_value else struct.pack(">HH", 6, 0)
    exif = b"MM\0*" + struct.pack(">IHHHI", 8, 1, 0x0112, 4 if long_value else 3, 1) + value + bytes(4)
    for name, values in (("photo.heic", pixels), ("mask.heic", pixels[..., 1])):
        pillow_heif.from_pillow(Image.fromarray(values)).save(str(tmp_path / name), quality=-1, chroma=444, exif=exif)
        if not long_value:  # the rotation kept, the EXIF orientation made 1
            data = (tmp_path / name).read_bytes()
            assert data.count(exif) == 1
            (tmp_path / name).write_bytes(data.replace(exif, exif.replace(value, struct.pack(">HH", 1, 0))))
    seen = 1 if long_value else 6  # as libheif, and so a viewer, shows it
    rgb = read_image(str(tmp_path / "photo.heic"))[0]
    assert rgb.shape == (30, 40, 3) and np.abs(rgb.astype(int) - pixels).mean() < 3  # as stored
    assert exif_orientation(str(tmp_path / "photo.heic")) == seen
    bgr = imread(str(tmp_path / "photo.heic"), cv2.IMREAD_COLOR, "image")
    assert np.abs(bgr[..., ::-1].astype(int) - UPRIGHT[seen](pixels)).mean() < 3
    assert np.mean(read_mask(str(tmp_path / "mask.heic"), (30, 40)) == np.where(pixels[..., 1] > 127, 255, 0)) > 0.98


def test_a_heic_photo_with_premultiplied_alpha_keeps_its_colours(tmp_path):
    """A HEIF may store its colours multiplied by its alpha (its 'prem' reference): libheif decodes them so, and a
    half transparent photo was read half as bright, a mask from it all black ('no object pixel')."""
    import pillow_heif
    from PIL import Image

    from nerf.images import read_image, read_mask

    pixels = np.full((30, 40, 3), (200, 120, 40), np.uint8)
    rgba = Image.fromarray(np.dstack([pixels, np.full((30, 40), 128, np.uint8)])).convert("RGBa")
    pillow_heif.from_pillow(rgba).save(str(tmp_path / "cut.heic"), quality=-1, chroma=444)
    assert pillow_heif.open_heif(str(tmp_path / "cut.heic")).premultiplied_alpha  # as a premultiplied file
    rgb, alpha = read_image(str(tmp_path / "cut.heic"))
    assert np.abs(alpha.astype(int) - 128).max() <= 2 and np.abs(rgb.astype(int) - pixels).max() <= 4
    assert read_mask(str(tmp_path / "cut.heic"), (30, 40)).all()  # grey 134 of the colours: the object's


def test_mask_size_mismatch(small_scene, tmp_path, capsys):
    bad = broken_copy(small_scene, tmp_path)
    name = sorted(os.listdir(bad / "mask"))[3]
    cv2.imwrite(str(bad / "mask" / name), np.zeros((10, 10), np.uint8))
    err = run_main_expecting_error(bad, tmp_path, capsys)
    assert name in err and "mask is 10x10" in err


def test_unreadable_image(small_scene, tmp_path, capsys):
    bad = broken_copy(small_scene, tmp_path)
    name = sorted(os.listdir(bad / "image"))[5]
    (bad / "image" / name).write_bytes(b"not a png")
    err = run_main_expecting_error(bad, tmp_path, capsys)
    assert name in err and "unreadable image" in err


def test_nan_in_camera_matrix(small_scene, tmp_path, capsys):
    bad = broken_copy(small_scene, tmp_path)
    cams = dict(np.load(bad / "cameras_sphere.npz"))
    cams["world_mat_4"] = cams["world_mat_4"].copy()
    cams["world_mat_4"][0, 1] = np.nan
    np.savez(bad / "cameras_sphere.npz", **cams)
    err = run_main_expecting_error(bad, tmp_path, capsys)
    assert "cameras_sphere.npz" in err and "world_mat_4 contains NaN" in err


def test_nan_in_transforms_pose(small_scene, tmp_path, capsys):
    bad = broken_copy(small_scene, tmp_path)
    os.remove(bad / "cameras_sphere.npz")
    meta = json.load(open(bad / "transforms.json"))
    meta["frames"][2]["transform_matrix"][1][3] = float("nan")
    json.dump(meta, open(bad / "transforms.json", "w"))
    err = run_main_expecting_error(bad, tmp_path, capsys)
    assert "transforms.json" in err and "frame 2 transform_matrix contains NaN" in err


def test_camera_count_mismatch(small_scene, tmp_path, capsys):
    bad = broken_copy(small_scene, tmp_path)
    os.remove(bad / "image" / sorted(os.listdir(bad / "image"))[0])
    err = run_main_expecting_error(bad, tmp_path, capsys)
    assert "cameras_sphere.npz" in err and "16 cameras" in err and "15 images" in err
