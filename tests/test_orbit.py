"""The orbit video (nerf/orbit.py): the orbit's cameras keep the training cameras' elevation and distance, look
at the centre and make a full turn, for a ring and for a one-sided cap; the video has the frames asked for,
RGB on the left and normals on the right."""
import math
import os

import numpy as np
import pytest
import torch

from nerf.evaluation import normal_image, view_background
from nerf.orbit import NoOrbitAxis, capture_roll, orbit_axis, orbit_cameras, orbit_intrinsics, render_orbit
from nerf.provider import pixel_rays


def random_rotation(seed):
    """[3, 3] rotation, so that the world's up is no coordinate axis."""
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def capture(azimuth_deg, elevation_deg, distance, roll_deg, rotation):
    """OpenCV c2w [N, 4, 4] of cameras at (azimuth, elevation, distance) about z-up looking at the origin,
    rolled about their optical axes by roll_deg, then the whole capture rotated; also the true up [3]."""
    poses = []
    for az, el, d, roll in zip(*(np.radians(azimuth_deg), np.radians(elevation_deg), distance,
                                 np.radians(roll_deg))):
        eye = d * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        forward = -eye / d
        # Level right vector, without the library's cross-product convention: the horizontal tangent of the
        # azimuth circle, pointing to the right of someone looking at the origin with z up.
        right = np.array([-np.sin(az), np.cos(az), 0.0])
        down = np.cross(forward, right)
        c, s = np.cos(roll), np.sin(roll)
        right, down = c * right + s * down, -s * right + c * down
        pose = np.eye(4)
        pose[:3, :3] = rotation @ np.stack([right, down, forward], axis=1)
        pose[:3, 3] = rotation @ eye
        poses.append(pose)
    return torch.tensor(np.stack(poses), dtype=torch.float32), rotation @ np.array([0.0, 0.0, 1.0])


def orbit_geometry(poses, up):
    """(elevation deg [F], distance [F], azimuth rad [F] about `up` [3]) of c2w poses [F, 4, 4]."""
    eye = poses[:, :3, 3].double().numpy()
    distance = np.linalg.norm(eye, axis=1)
    elevation = np.degrees(np.arcsin(eye @ up / distance))
    e1 = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    return elevation, distance, np.arctan2(eye @ e2, eye @ e1)


def check_orbit(orbit, up, elevation_deg, distance, n_frames, angle_tol_deg, step_rel_tol):
    assert orbit.shape == (n_frames, 4, 4)
    elevation, dist, azimuth = orbit_geometry(orbit, up)
    assert np.abs(elevation - elevation_deg).max() < angle_tol_deg
    assert np.abs(dist - distance).max() < 1e-4
    rot = orbit[:, :3, :3].double().numpy()
    assert np.abs(rot.transpose(0, 2, 1) @ rot - np.eye(3)).max() < 1e-5
    assert np.abs(np.linalg.det(rot) - 1).max() < 1e-5
    # Looks at the centre: the optical axis (z) points from the camera to the origin.
    eye = orbit[:, :3, 3].double().numpy()
    assert np.min(np.sum(rot[:, :, 2] * -eye, axis=1) / np.linalg.norm(eye, axis=1)) > 1 - 1e-6
    # Upright and level: the right vector (x) is horizontal, the down vector (y) points down.
    assert np.abs(rot[:, :, 0] @ up).max() < math.sin(math.radians(angle_tol_deg))
    assert np.all(rot[:, :, 1] @ up < 0)
    # A full turn in equal steps, all one way; the last frame is one step from the first (the video loops).
    steps = np.angle(np.exp(1j * (np.roll(azimuth, -1) - azimuth)))  # wrapped to (-pi, pi], last -> first too
    assert np.abs(np.abs(steps) / (2 * np.pi / n_frames) - 1).max() < step_rel_tol
    assert np.all(np.sign(steps) == np.sign(steps[0]))
    assert abs(abs(steps.sum()) - 2 * np.pi) < 1e-3
    chord = 2 * distance * math.cos(math.radians(elevation_deg)) * math.sin(math.pi / n_frames)
    assert np.linalg.norm(eye[-1] - eye[0]) == pytest.approx(chord, rel=0.02)
    return azimuth


def test_a_ring_of_cameras_gives_an_orbit_at_its_elevation_and_distance():
    n = 12
    poses, up = capture(np.arange(n) * 30.0, np.full(n, 30.0), np.full(n, 3.0), np.zeros(n), random_rotation(0))
    check_orbit(orbit_cameras(poses, 60), up, 30.0, 3.0, 60, angle_tol_deg=1e-3, step_rel_tol=1e-4)
    # the poses' dtype and device are kept
    assert orbit_cameras(poses, 60).dtype == torch.float32


@pytest.mark.parametrize("roll, quarter", [(90.0, 1), (-90.0, 3)])
def test_cameras_on_their_side_give_the_true_up_and_orbit_frames_rolled_as_they_are(roll, quarter):
    """Photos a phone took upright keep their pixels on their side: every camera rolled a quarter turn. Their
    down vectors are level, the right vectors are not; the orbit turns about the true up (before: about a level
    axis, from the mean up vector) with its frames rolled as the photos are, so that it frames what they did."""
    rng = np.random.default_rng(3)
    n = 30
    ring = capture(np.arange(n) * 12.0, np.full(n, 25.0), np.full(n, 3.0), np.full(n, roll), random_rotation(4))
    cap = capture(rng.uniform(-40, 40, n), rng.uniform(15, 45, n), rng.uniform(2.5, 3.5, n),
                  roll + rng.uniform(-3, 3, n), random_rotation(5))
    for (poses, up), tolerance in ((ring, 1e-3), (cap, 1.5)):
        assert np.degrees(np.arccos(float(orbit_axis(poses.double()) @ torch.from_numpy(up)))) < tolerance
        assert capture_roll(poses.double(), torch.from_numpy(up)) == quarter
        orbit = orbit_cameras(poses, 36)
        assert capture_roll(orbit.double(), torch.from_numpy(up)) == quarter
        rot = orbit[:, :3, :3].double().numpy()
        assert np.abs(rot[:, :, 1] @ up).max() < math.sin(math.radians(tolerance))  # the down vector is level
        elevation = orbit_geometry(orbit, up)[0]
        assert np.abs(elevation - orbit_geometry(poses, up)[0].mean()).max() < tolerance


@pytest.mark.parametrize("roll, quarter", [(90.0, 1), (-90.0, 3)])
def test_a_cap_at_one_elevation_on_its_side_gives_the_true_up(roll, quarter):
    """On a one-sided cap at one elevation the tilted vectors lie on an arc of a cone, nearly a plane, as the
    level ones do: cameras on their side took their right vectors for the level ones (no orbit video)."""
    poses, up = capture(np.linspace(-60, 60, 12), np.full(12, 30.0), np.full(12, 3.0), np.full(12, roll),
                        random_rotation(3))
    axis = orbit_axis(poses.double())
    assert np.degrees(np.arccos(float(axis @ torch.from_numpy(up)))) < 1e-3
    assert capture_roll(poses.double(), axis) == quarter


@pytest.mark.parametrize("rolls, quarter", [([90.0] * 13 + [0.0] * 3, 1), ([0.0] * 13 + [90.0] * 3, 0),
                                            ([0.0] * 8 + [90.0] * 4 + [-90.0] * 4, 0)])
def test_cameras_rolled_different_quarter_turns_give_the_true_up(rolls, quarter):
    """One phone's photos, some taken upright and some level, are posed as stored (one sensor, one camera): the
    cameras are rolled different quarter turns. Their right vectors spread out of any plane, or lean into a false
    one: the mean up vector projected off their dominant direction gave a level axis (88 degrees off), then no
    video at all, and a cap's gave one 62 degrees off. Now the up is the direction one of each camera's right and
    down vectors is level with, and the frames are rolled as most photos are."""
    rng = np.random.default_rng(7)
    n = len(rolls)
    ring = capture(np.arange(n) * 360.0 / n, np.full(n, 20.0), np.full(n, 3.0), rolls, random_rotation(3))
    cap = capture(rng.uniform(-50, 50, n), rng.uniform(15, 45, n), rng.uniform(2.5, 3.5, n),
                  np.array(rolls) + rng.uniform(-3, 3, n), random_rotation(6))  # a hand-held phone's roll wanders
    for (poses, up), tolerance in ((ring, 1e-3), (cap, 2.0)):
        axis = orbit_axis(poses.double())
        assert np.degrees(np.arccos(float(axis @ torch.from_numpy(up)))) < tolerance
        assert capture_roll(orbit_cameras(poses, 24).double(), torch.from_numpy(up)) == quarter


def test_cameras_rolled_every_which_way_give_no_axis_rather_than_a_wrong_one():
    """Rolls that are no quarter turns (a camera tumbled in the hand): no up that most cameras are level with."""
    rolls = np.random.default_rng(2).uniform(0, 360, 16)
    poses, _ = capture(np.arange(16) * 22.5, np.full(16, 20.0), np.full(16, 3.0), rolls, random_rotation(3))
    with pytest.raises(NoOrbitAxis, match="rolled different ways"):
        orbit_axis(poses.double())


def test_a_cap_on_one_side_gives_a_full_turn_about_the_true_up():
    rng = np.random.default_rng(1)
    n = 40
    azimuth = rng.uniform(-40, 40, n)  # a DTU-like arc: the object is seen from one side only
    elevation = rng.uniform(15, 45, n)
    distance = rng.uniform(2.5, 3.5, n)
    poses, up = capture(azimuth, elevation, distance, rng.uniform(-3, 3, n), random_rotation(2))
    # The plain mean of the up vectors leans away from the captured side by ~elevation: > 20 degrees here.
    mean_up = -poses[:, :3, 1].double().mean(0).numpy()
    assert np.degrees(np.arccos(mean_up @ up / np.linalg.norm(mean_up))) > 20
    assert np.degrees(np.arccos(float(orbit_axis(poses.double()) @ torch.from_numpy(up)))) < 1.0
    cam_elevation = orbit_geometry(poses, up)[0]
    orbit = orbit_cameras(poses, 90)
    # The axis is off by the rolls' noise (0.7 degrees here), which the elevation and the azimuth steps about
    # the true up show.
    azimuths = check_orbit(orbit, up, cam_elevation.mean(), distance.mean(), 90, angle_tol_deg=1.5,
                           step_rel_tol=0.02)
    # It starts on the captured side.
    start = orbit_geometry(orbit[:1], up)[2][0]
    cap = orbit_geometry(poses, up)[2]
    assert cap.min() <= start <= cap.max()
    assert len(azimuths) == 90


def test_bad_orbit_input_is_refused():
    poses, _ = capture([0.0, 90.0], [30.0, 30.0], [3.0, 3.0], [0.0, 0.0], np.eye(3))
    with pytest.raises(ValueError, match="n_frames: 0, expected at least 1"):
        orbit_cameras(poses, 0)
    with pytest.raises(ValueError, match=r"expected \[N, 4, 4\] cameras"):
        orbit_cameras(poses[:, :3], 10)
    upside_down = poses.clone()
    upside_down[1, :3, :2] *= -1  # rolled by 180 degrees: the two up vectors cancel
    with pytest.raises(NoOrbitAxis, match="up vectors cancel out"):
        orbit_cameras(upside_down, 10)


def test_orbit_intrinsics_are_the_mean_camera_downscaled_to_even_sizes():
    k = torch.tensor([[[100.0, 0, 49.5], [0, 100.0, 37.0], [0, 0, 1]], [[110.0, 0, 50.5], [0, 110.0, 37.0], [0, 0, 1]]])
    scaled, w, h = orbit_intrinsics(k, 100, 75, 1)
    assert (w, h) == (100, 74)  # 75 rows cannot be H.264 yuv420p
    assert scaled[0, 0] == pytest.approx(105.0) and scaled[0, 2] == pytest.approx(50.0)
    assert scaled[1, 2] == pytest.approx(36.5)  # the cropped row is shared between top and bottom
    scaled, w, h = orbit_intrinsics(k, 100, 75, 4)
    assert (w, h) == (24, 18)
    assert scaled[0, 0] == pytest.approx(105.0 / 4)
    # the principal point stays where it was relative to the image: at the centre, (w - 1) / 2
    assert scaled[0, 2] == pytest.approx((50.0 + 0.5) / 4 - 0.5 - (25 - 24) / 2)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from nerf.synthetic import make_scene
    from train_helpers import TINY_MODEL, make_trainer

    root = str(tmp_path_factory.mktemp("orbit_scene"))
    make_scene(root, shape="torus", views=8, width=48, height=36, gt_resolution=32, seed=1, formats=("neus",))
    _, scene, trainer = make_trainer(root, str(tmp_path_factory.mktemp("ws")), *TINY_MODEL, device="cpu")
    return scene, trainer


def test_render_orbit_writes_an_mp4_of_rgb_and_normals(tiny_model, tmp_path):
    imageio = pytest.importorskip("imageio.v2")
    pytest.importorskip("imageio_ffmpeg", reason="the orbit video needs imageio-ffmpeg")
    scene, trainer = tiny_model
    bg = view_background("white", "cpu")
    path = str(tmp_path / "results" / "orbit.mp4")
    assert render_orbit(trainer.renderer, scene.train, bg, 3, 3, 4096, path, quiet=True) == path
    assert os.listdir(tmp_path / "results") == ["orbit.mp4"]  # no temporary file left behind
    reader = imageio.get_reader(path)
    try:
        assert reader.get_meta_data()["codec"] == "h264"
        frames = [frame for frame in reader]
    finally:
        reader.close()
    assert len(frames) == 3
    assert frames[0].shape == (12, 32, 3)  # 16 x 12 per half: the 48 x 36 views at a third
    # The halves are what the renderer shows from the first orbit camera, up to the codec's loss.
    k, w, h = orbit_intrinsics(scene.train.intrinsics, scene.train.width, scene.train.height, 3)
    pose = orbit_cameras(scene.train.c2w, 3)[0]
    row, col = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    rays_o, rays_d = pixel_rays(k.expand(h * w, 3, 3), pose.expand(h * w, 4, 4), col.reshape(-1).float(),
                                row.reshape(-1).float())
    out = trainer.renderer.render_chunked(rays_o, rays_d, bg, 4096)
    rgb = out["rgb"].reshape(h, w, 3).clamp(0, 1).numpy()
    normal = normal_image(out["normal"].reshape(h, w, 3), out["opacity"].reshape(h, w), pose).numpy()
    left, right = frames[0][:, :w] / 255.0, frames[0][:, w:] / 255.0
    assert np.abs(left - rgb).mean() < 0.03
    assert np.abs(right - normal).mean() < 0.03
    # On the object (the untrained field's sphere) the normals are not a copy of the colours, and vary.
    on_object = out["opacity"].reshape(h, w).numpy() > 0.5
    assert on_object.sum() >= 20
    assert np.abs(left - right)[on_object].mean() > 0.1
    assert normal[on_object][:, :2].std(axis=0).min() > 0.05  # x and y turn with the surface
