"""The live viewer (nerf/viewer.py) on a tiny CPU run: the page is served, a browser's camera is rendered and
sent back, the camera conversions are exact, and the time budget holds (with a fake clock)."""
import io
import math
import time
import urllib.request

import cv2
import numpy as np
import pytest
import torch
import trimesh

viser = pytest.importorskip("viser", reason="the live viewer needs viser (pip install viser==1.1.1)")

from nerf.evaluation import view_background  # noqa: E402
from nerf.provider import camera_rays  # noqa: E402
from nerf.viewer import (FAR_DEPTH, PLOT_POINTS, CameraRequest, Viewer, ViewerClient, WorkBudget,  # noqa: E402
                         c2w_from_viser, fov_from_intrinsics, intrinsics_from_fov, render_camera,
                         render_size, rotation_to_wxyz, viser_from_c2w, wxyz_to_rotation)
from train_helpers import TINY_MODEL, make_trainer  # noqa: E402


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.fixture(scope="module")
def trainer(small_scene, tmp_path_factory):
    root, _ = small_scene
    _, _, trainer = make_trainer(root, str(tmp_path_factory.mktemp("ws")), *TINY_MODEL, "--iters", "20",
                                 "--check_every", "1", device="cpu")
    return trainer


def random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def test_camera_conversions_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(200):
        c2w = np.eye(4)
        c2w[:3, :3], c2w[:3, 3] = random_rotation(rng), rng.normal(size=3)
        wxyz, position = viser_from_c2w(c2w)
        assert abs(np.linalg.norm(wxyz) - 1) < 1e-12 and wxyz[0] >= 0
        assert np.abs(c2w_from_viser(wxyz, position) - c2w).max() < 1e-12
        # The same quaternion convention as viser's own (w first, R_world_camera).
        assert np.abs(viser.transforms.SO3(wxyz).as_matrix() - c2w[:3, :3]).max() < 1e-12
    # The four branches of the matrix -> quaternion solve (rotations by pi about each axis, and the identity).
    for r in (np.eye(3), np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1])):
        assert np.abs(wxyz_to_rotation(rotation_to_wxyz(r)) - r).max() < 1e-12
    # Field of view <-> intrinsics, and the rays: the centre of the image looks along the camera's +z, and the
    # centre of the top row is half the field of view less half a pixel up.
    k = intrinsics_from_fov(math.radians(60), 161, 91)
    assert abs(fov_from_intrinsics(k, 91) - math.radians(60)) < 1e-12
    c2w = np.eye(4)
    c2w[:3, :3], c2w[:3, 3] = random_rotation(rng), [0.5, -2.0, 1.0]
    rays_o, rays_d = camera_rays(torch.tensor(c2w, dtype=torch.float64), torch.tensor(k), 161, 91)
    rays_d = rays_d.reshape(91, 161, 3).numpy()
    assert np.abs(rays_d[45, 80] - c2w[:3, 2]).max() < 1e-9
    top = rays_d[0, 80] @ c2w[:3, :3]  # in the camera's axes: y down
    assert top[1] < 0 and abs(math.atan2(-top[1], top[2]) - math.atan(45 / k[1, 1])) < 1e-9
    assert np.abs(rays_o.numpy() - c2w[:3, 3]).max() < 1e-12


def test_render_size_keeps_aspect_and_bounds():
    assert render_size(4 / 3, 256**2, 256) == (256, 192)  # the longest side is capped
    assert render_size(4 / 3, 1200, 256) == (43, 32)  # the shortest side is at least 32 (min_side)
    w, h = render_size(2.0, 20000, 256)
    assert abs(w / h - 2) < 0.02 and abs(w * h - 20000) < 300
    assert render_size(20.0, 100, 256) == (256, 13)  # the cap wins over the minimum for extreme aspects


def test_work_budget_keeps_the_share():
    clock = FakeClock()
    budget = WorkBudget(0.05, clock)
    works = 0
    for _ in range(4000):  # training steps of 10 ms; each allowed piece of work takes 200 ms
        clock.t += 0.01
        if budget.allows():
            with budget.work():
                clock.t += 0.2
            works += 1
    wall = clock.t - budget.first_start
    assert budget.spent <= 0.05 * wall + 0.2 + 1e-9
    assert works >= int(0.05 * wall / 0.2)  # and it is not stingier than it must be
    assert abs(budget.share() - 0.05) < 0.005
    with pytest.raises(ValueError, match="max_share"):
        WorkBudget(0.0)


def test_hook_renders_only_for_a_browser_within_the_budget(trainer):
    """With a fake clock (steps of 1/8 s, renders of 1/2 s, so the next render may start 10 s after the last
    began): no render without a browser; a moved camera is rendered as soon as the budget allows, never sooner;
    a still one every refresh_every (30 s)."""
    clock = FakeClock()
    viewer = Viewer(trainer, 0, max_share=0.05, refresh_every=30.0, plot_every=1e9, clock=clock)
    try:
        renders = []

        def fake_render(trainer, request):
            renders.append(clock.t)
            clock.t += 0.5

        viewer._render = fake_render
        for _ in range(100):
            clock.t += 0.125
            viewer(trainer)
        assert renders == []  # no browser
        client = type("Client", (), {"client_id": 7})()
        still = dict(client=client, wxyz=np.array([1.0, 0, 0, 0]), position=np.zeros(3), fov=1.0, aspect=1.0)
        viewer.requests[7] = CameraRequest(**still, version=0)
        for step in range(100, 1000):
            if step in (200, 210, 260):  # the user drags the camera
                viewer.requests[7] = CameraRequest(**still, version=viewer.requests[7].version + 1)
            clock.t += 0.125
            viewer(trainer)
        # Connected at step 100 (t = 1012.625): rendered at once; moved at step 200 (t = 1025.625, after the
        # budget's 10 s): at once; moved at steps 210 and 260: once, 10 s after the last render began; then
        # every 30 s.
        assert renders == [1012.625, 1025.625, 1035.625, 1065.625, 1095.625, 1125.625]
        assert viewer.budget.spent <= 0.05 * (clock.t - viewer.budget.first_start) + 0.5
        # The plot: a long history is thinned to at most PLOT_POINTS + 1 points, steps strictly increasing,
        # ending with the latest; a recovery (the step going back) drops the steps after it.
        viewer.history = [(step, 1.0 / step, 20.0) for step in range(10, 25010, 10)]
        viewer._update_status(clock.t)
        steps = viewer.plot.data[0]
        assert len(steps) <= PLOT_POINTS + 1 and np.all(np.diff(steps) > 0) and steps[-1] == 25000
        trainer.last_scalars = {"step": 24000, "train/loss": 0.5, "train/psnr": 10.0}
        viewer(trainer)
        assert viewer.history[-2:] == [(23990, 1.0 / 23990, 20.0), (24000, 0.5, 10.0)]
        trainer.last_scalars = {}
    finally:
        viewer.close()


def test_render_camera_sees_the_surface_at_its_depth(trainer):
    """From a training camera, a render of 40x30 shows the surface (inside the unit sphere) at a z-depth
    within 1 of the sphere's centre, and the background where the rays miss the sphere."""
    views = trainer.scene.train
    c2w = views.c2w[0].double().numpy()
    fov = fov_from_intrinsics(views.intrinsics[0].numpy(), views.height)
    bg = view_background("white", trainer.device)
    rgb, depth = render_camera(trainer.renderer, c2w, fov, 40, 30, bg, 4096)
    assert rgb.shape == (30, 40, 3) and rgb.dtype == np.uint8 and depth.shape == (30, 40)
    assert trainer.renderer.training
    hit = depth < FAR_DEPTH
    assert 0.05 < hit.mean() < 0.95
    # Every sample lies in the unit sphere, so the z-depth of a hit is within 1 of the z of the sphere's centre.
    centre_z = -c2w[:3, 3] @ c2w[:3, 2]
    assert np.all(np.abs(depth[hit] - centre_z) < 1 + 1e-4)
    # Rays that miss the unit sphere show exactly the background.
    k = torch.tensor(intrinsics_from_fov(fov, 40, 30)).float()
    rays_o, rays_d = camera_rays(torch.tensor(c2w).float(), k, 40, 30)
    miss = (torch.linalg.cross(rays_o, rays_d).norm(dim=-1) > 1.0).reshape(30, 40).numpy()
    assert miss.any() and np.all(rgb[miss] == 255) and np.all(depth[miss] == FAR_DEPTH)


def test_viewer_serves_the_page_and_renders_for_a_browser(trainer):
    viewer = Viewer(trainer, 0, max_side=64)
    trainer.step_hooks.append(viewer)
    browser = None
    try:
        trainer.train(until_step=trainer.step + 1)
        assert viewer.rendered == {}  # nobody connected: nothing rendered
        response = urllib.request.urlopen(viewer.url, timeout=10)
        page = response.read()
        assert response.status == 200 and response.headers.get_content_type() == "text/html"
        assert page.lstrip().lower().startswith(b"<!doctype html") and b'<div id="root">' in page

        browser = ViewerClient(viewer.port)
        views = trainer.scene.train
        c2w = views.c2w[1].double().numpy()
        browser.send_camera(c2w, fov_from_intrinsics(views.intrinsics[1].numpy(), views.height), 400, 300)
        end = time.time() + 10
        while not viewer.requests and time.time() < end:
            time.sleep(0.05)
        request = next(iter(viewer.requests.values()))
        assert np.abs(c2w_from_viser(request.wxyz, request.position) - c2w).max() < 1e-6
        assert abs(request.aspect - 4 / 3) < 1e-9

        trainer.train(until_step=trainer.step + 1)
        assert len(viewer.rendered) == 1
        # (viser first clears the background: a message without an image)
        message = browser.wait_for("BackgroundImageMessage", timeout=10, where=lambda m: m["rgb_data"])
        assert message is not None and message["format"] == "jpeg" and message["depth_data"]
        image = cv2.imdecode(np.frombuffer(message["rgb_data"], np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (48, 64, 3)  # max_side 64 at the browser's 4:3
        assert image.std() > 5  # the surface on the background, not a blank image

        # The mesh comes in the world frame (mm here) and is shown in the normalised space of the cameras.
        world = np.array([[0.0, 0, 0], [100, 0, 0], [0, 100, 0]])
        viewer.show_mesh(world, np.array([[0, 1, 2]]), np.full((3, 3), 200, np.uint8))
        message = browser.wait_for("GlbMessage", timeout=10)
        assert message is not None and message["name"] == "/mesh"
        shown = trimesh.load(io.BytesIO(message["props"]["glb_data"]), file_type="glb", force="mesh")
        to_normalised = np.linalg.inv(trainer.scene.to_world)
        expected = world @ to_normalised[:3, :3].T + to_normalised[:3, 3]
        assert np.abs(np.sort(shown.vertices, axis=0) - np.sort(expected, axis=0)).max() < 1e-5
        assert "mesh: 3 vertices, 1 faces" in viewer.status.content
    finally:
        trainer.step_hooks.remove(viewer)
        if browser is not None:
            browser.close()
        viewer.close()
