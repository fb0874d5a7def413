"""The live viewer (`--viewer PORT`): a web page served by viser while training, showing the model rendered from
the camera the user drags, the training cameras as frustums, the loss and PSNR curves, and the mesh once the
run writes it. viser serves its client from its own package: nothing is downloaded at run time.

Everything that touches the model runs in the training thread, in the step hook (`Viewer.__call__`), between
two training steps (never beside one: GPU state, CUDA graphs). viser's callbacks run in its threads and only
record the camera each browser asks for. The hook works only while a browser is connected, and `WorkBudget`
keeps its share of the wall time at most `max_share`.

Frames: viser's world frame is our normalised space (the object inside the unit sphere), and viser's cameras use
OpenCV axes, as ours do: a viser camera (wxyz, position) is our camera-to-world rotation and centre; its field
of view is vertical. Only the display's up direction is set (to the training cameras' mean up), which viser
applies to the page, not to the coordinates it reports.
"""
import contextlib
import io
import math
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from .config import ConfigError
from .evaluation import view_background
from .provider import camera_rays

# z-depth sent where a ray hits nothing, in normalised units (viser's depth encoding holds up to 167).
FAR_DEPTH = 100.0
# Pixels of the first render, before the speed is known (the next ones are sized by the speed).
FIRST_RENDER_PIXELS = 64 * 48
# Points kept in the loss/PSNR plot (older ones thinned), so an update stays small.
PLOT_POINTS = 1000


# ----------------------------------------------------------------------------------------------------------
# Camera conversions (viser <-> our c2w, OpenCV axes in both)


def wxyz_to_rotation(wxyz):
    """Quaternion (w, x, y, z) [4] (normalised here) -> rotation matrix [3, 3]."""
    w, x, y, z = np.asarray(wxyz, dtype=np.float64) / np.linalg.norm(wxyz)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def rotation_to_wxyz(rotation):
    """Rotation matrix [3, 3] -> unit quaternion (w, x, y, z) [4], w >= 0. Solved from the largest of the four
    |w|, |x|, |y|, |z| candidates, so the division never comes near zero."""
    r = np.asarray(rotation, dtype=np.float64)
    trace = np.trace(r)
    if trace > max(r[0, 0], r[1, 1], r[2, 2]):
        s = 2 * math.sqrt(1 + trace)
        q = [s / 4, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
    elif r[0, 0] >= r[1, 1] and r[0, 0] >= r[2, 2]:
        s = 2 * math.sqrt(max(1 + r[0, 0] - r[1, 1] - r[2, 2], 1e-12))
        q = [(r[2, 1] - r[1, 2]) / s, s / 4, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s]
    elif r[1, 1] >= r[2, 2]:
        s = 2 * math.sqrt(max(1 + r[1, 1] - r[0, 0] - r[2, 2], 1e-12))
        q = [(r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, s / 4, (r[1, 2] + r[2, 1]) / s]
    else:
        s = 2 * math.sqrt(max(1 + r[2, 2] - r[0, 0] - r[1, 1], 1e-12))
        q = [(r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, s / 4]
    q = np.array(q) / np.linalg.norm(q)
    return q if q[0] >= 0 else -q


def c2w_from_viser(wxyz, position):
    """A viser camera (wxyz [4], position [3], world frame = our normalised space) -> c2w [4, 4] float64."""
    c2w = np.eye(4)
    c2w[:3, :3] = wxyz_to_rotation(wxyz)
    c2w[:3, 3] = position
    return c2w


def viser_from_c2w(c2w):
    """c2w [4, 4] (OpenCV axes) -> viser's (wxyz [4], position [3])."""
    c2w = np.asarray(c2w, dtype=np.float64)
    return rotation_to_wxyz(c2w[:3, :3]), c2w[:3, 3].copy()


def intrinsics_from_fov(fov_y, width, height):
    """[3, 3] pinhole camera of an image `width` x `height` whose vertical field of view (edge to edge) is
    `fov_y` radians, square pixels, pixel centres at integers (our convention)."""
    f = 0.5 * height / math.tan(0.5 * fov_y)
    return np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])


def fov_from_intrinsics(intrinsics, height):
    """Vertical field of view (radians) of intrinsics [3, 3] for an image `height` pixels high."""
    return 2 * math.atan(0.5 * height / float(intrinsics[1, 1]))


def render_size(aspect, pixels, max_side, min_side=32):
    """(width, height) with width / height = aspect, about `pixels` pixels, each side within [min_side,
    max_side] where the aspect allows."""
    height = math.sqrt(max(pixels, 1) / aspect)
    scale = min(1.0, max_side / max(height * aspect, height))
    scale = max(scale, min_side / min(height * aspect, height))
    scale = min(scale, max_side / max(height * aspect, height))  # max_side wins over min_side
    return max(1, round(height * aspect * scale)), max(1, round(height * scale))


@torch.no_grad()
def render_camera(renderer, c2w, fov_y, width, height, bg_color, chunk, use_amp=False):
    """The renderer's image from camera c2w [4, 4] (numpy, normalised space, OpenCV axes) with vertical field of
    view `fov_y` -> rgb [height, width, 3] uint8 and z-depth [height, width] float32 (along the camera's axis,
    normalised units; FAR_DEPTH where the ray hits nothing). bg_color: [3] on the renderer's device. The renderer
    is left in training mode."""
    device = bg_color.device
    c2w = torch.from_numpy(np.asarray(c2w)).float().to(device)
    k = torch.from_numpy(intrinsics_from_fov(fov_y, width, height)).float().to(device)
    rays_o, rays_d = camera_rays(c2w, k, width, height)
    renderer.eval()
    try:
        with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
            out = renderer.render_chunked(rays_o, rays_d, bg_color, chunk)
    finally:
        renderer.train()
    opacity = out["opacity"].float()
    z = out["depth"].float() / opacity.clamp_min(1e-6) * (rays_d @ c2w[:3, 2])  # distance along ray -> camera z
    z = torch.where(opacity > 0.5, z, torch.full_like(z, FAR_DEPTH))
    rgb = (out["rgb"].float().clamp(0, 1) * 255 + 0.5).byte().reshape(height, width, 3)
    return rgb.cpu().numpy(), z.reshape(height, width).cpu().numpy()


def scene_up(c2w):
    """The display's up direction [3]: the training cameras' mean up (-y in OpenCV axes), normalised; +z when
    the cameras disagree (their mean up is near zero). c2w: [V, 4, 4]."""
    up = -np.asarray(c2w)[:, :3, 1].mean(0)
    norm = np.linalg.norm(up)
    return up / norm if norm > 0.3 else np.array([0.0, 0.0, 1.0])


# ----------------------------------------------------------------------------------------------------------
# The time budget


class WorkBudget:
    """Keeps the viewer's work at most `max_share` of the wall time: work that starts at s and lasts d seconds
    lets the next start at s + d / max_share. So the work done up to any moment is at most max_share of the
    time since the first began, plus the piece in progress."""

    def __init__(self, max_share, clock=time.perf_counter):
        if not 0 < max_share <= 1:
            raise ValueError(f"max_share must be in (0, 1], got {max_share}")
        self.max_share, self.clock = max_share, clock
        self.next_start = -math.inf
        self.first_start = None
        self.spent = 0.0  # seconds of work so far

    def allows(self):
        return self.clock() >= self.next_start

    @contextlib.contextmanager
    def work(self):
        start = self.clock()
        if self.first_start is None:
            self.first_start = start
        try:
            yield
        finally:
            seconds = self.clock() - start
            self.spent += seconds
            self.next_start = start + seconds / self.max_share

    def share(self):
        """Work seconds / wall seconds since the first work began (0 before any)."""
        if self.first_start is None:
            return 0.0
        return self.spent / max(self.clock() - self.first_start, 1e-9)


# ----------------------------------------------------------------------------------------------------------
# The viewer


@dataclass
class CameraRequest:
    """The latest camera a browser showed (recorded by viser's thread, rendered by the training thread)."""

    client: object  # viser.ClientHandle
    wxyz: np.ndarray  # [4]
    position: np.ndarray  # [3]
    fov: float  # vertical, radians
    aspect: float  # width / height of the browser's canvas
    version: int  # counts the camera's moves


class Viewer:
    """A viser server on `host:port` showing the run of `trainer`; add it to `trainer.step_hooks`.

    max_share: most of the wall time the viewer may take (rendering, sending images, updating the plot).
    max_side: longest side of a render, pixels (smaller when a render this big would refresh less often than
        every `refresh_every` seconds within the budget).
    refresh_every: seconds after which a still camera is rendered again (the model keeps changing).
    plot_every: seconds between updates of the status text and the loss/PSNR plot.
    clock: seconds, for the budget and the schedules (tests pass a fake one).
    """

    def __init__(self, trainer, port, max_share=0.05, host="127.0.0.1", max_side=256, refresh_every=1.0,
                 plot_every=1.0, clock=time.perf_counter):
        try:
            import viser
        except ImportError:
            raise ConfigError("--viewer: the viser package is not installed (pip install viser==1.1.1)") from None
        self.budget = WorkBudget(max_share, clock)
        self.clock, self.max_side = clock, max_side
        self.refresh_every, self.plot_every = refresh_every, plot_every
        self.device = trainer.device
        self.bg_color = view_background(trainer.config.field.background, self.device)
        self.chunk = trainer.config.export.eval_chunk
        self.to_world = np.asarray(trainer.scene.to_world, dtype=np.float64)
        self.rays_per_second = None  # measured by each render; sizes the next
        self.renders, self.last_render_size = 0, None  # (width, height)
        self.lock = threading.Lock()  # guards `requests` (written by viser's threads)
        self.requests = {}  # client id -> CameraRequest
        self.rendered = {}  # client id -> (version, clock time) of its last render
        self.history = []  # (step, loss, PSNR) of each reported step
        self.last_plot, self.plotted_len = -math.inf, 0
        self.steps_seen, self.rate_mark = 0, (clock(), 0)  # for it/s
        self.mesh, self.mesh_note = None, None

        with contextlib.redirect_stdout(io.StringIO()):  # viser's banner; the caller prints `url` as it likes
            self.server = viser.ViserServer(host=host, port=port, label="instant-nsr", verbose=False)
        self.host, self.port = host, self.server.get_port()  # viser takes the next free port if `port` is busy
        self._add_training_cameras(trainer.scene.train)
        self._add_gui()
        self.server.on_client_connect(self._on_connect)
        self.server.on_client_disconnect(self._on_disconnect)
        trainer.logger.log(f"viewer: {self.url}")

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"

    # -- set-up -----------------------------------------------------------------------------------------

    def _add_training_cameras(self, views):
        """The training cameras as frustums (wireframes: an image on them would hide the object whenever the
        user looks from behind a camera), the page's up direction, and the initial view: along the first
        training camera's axis towards the axis point nearest the object's centre, from half as far again (so
        that the camera's own frustum is in view, not around it)."""
        c2w = views.c2w.cpu().numpy().astype(np.float64)  # [V, 4, 4]
        intrinsics = views.intrinsics.cpu().numpy()  # [V, 3, 3]
        h, w = views.height, views.width
        self.server.scene.set_up_direction(scene_up(c2w))
        size = 0.1 * float(np.median(np.linalg.norm(c2w[:, :3, 3], axis=1)))
        for i, name in enumerate(views.names):
            wxyz, position = viser_from_c2w(c2w[i])
            self.server.scene.add_camera_frustum(
                f"/training_cameras/{name}", fov=fov_from_intrinsics(intrinsics[i], h), aspect=w / h, scale=size,
                thickness=1.5, thickness_units="screen", color=(40, 90, 200), wxyz=wxyz, position=position)
        position, forward = c2w[0, :3, 3], c2w[0, :3, 2]
        along = max(-float(position @ forward), 0.1)  # distance to the axis point nearest the origin
        look_at = position + along * forward
        initial = self.server.initial_camera
        initial.position = look_at - 1.5 * along * forward
        initial.look_at = look_at
        initial.fov = fov_from_intrinsics(intrinsics[0], h)

    def _add_gui(self):
        gui = self.server.gui
        self.status = gui.add_markdown("waiting for the first training steps", order=0)
        self.plot = None  # made with its first two points: a uPlot shown empty never draws later data
        self.mesh_checkbox = gui.add_checkbox("show mesh", initial_value=True, disabled=True, order=2)
        self.mesh_checkbox.on_update(self._on_mesh_checkbox)

    def _show_plot(self, data):
        """Show `data` (steps, loss, PSNR: [N] float64 each) in the plot, making it the first time."""
        if self.plot is not None:
            self.plot.data = data
            return
        self.plot = self.server.gui.add_uplot(
            data=data, order=1, title="training", aspect=1.4,
            series=({"label": "step"}, {"label": "loss", "stroke": "#d9480f", "scale": "loss"},
                    {"label": "PSNR", "stroke": "#1c7ed6", "scale": "psnr"}),
            scales={"x": {"time": False}, "loss": {"distr": 3}, "psnr": {}},
            axes=({}, {"scale": "loss", "label": "loss (log)"}, {"scale": "psnr", "side": 1, "label": "PSNR dB"}))

    # -- viser's threads: record only ---------------------------------------------------------------------

    def _on_connect(self, client):
        client.camera.on_update(lambda camera: self._record(client))
        self._record(client)

    def _on_disconnect(self, client):
        with self.lock:
            self.requests.pop(client.client_id, None)

    def _record(self, client):
        camera = client.camera
        with self.lock:
            old = self.requests.get(client.client_id)
            self.requests[client.client_id] = CameraRequest(
                client, np.array(camera.wxyz), np.array(camera.position), float(camera.fov),
                camera.image_width / max(camera.image_height, 1), version=old.version + 1 if old else 0)

    def _on_mesh_checkbox(self, event):
        if self.mesh is not None:
            self.mesh.visible = self.mesh_checkbox.value

    # -- the training thread --------------------------------------------------------------------------------

    def __call__(self, trainer):
        """The step hook: note the latest scalars; while a browser is connected and the budget allows, render
        the most stale camera that moved (or is older than `refresh_every`), and refresh the status and plot
        every `plot_every` seconds."""
        self.steps_seen += 1
        scalars = trainer.last_scalars
        if scalars and (not self.history or self.history[-1][0] != scalars["step"]):
            while self.history and self.history[-1][0] >= scalars["step"]:  # a recovery went back in steps
                self.history.pop()
            self.history.append((scalars["step"], scalars["train/loss"], scalars["train/psnr"]))
        if not self.requests or not self.budget.allows():
            return
        now = self.clock()
        request = self._due_request(now)
        status_due = now - self.last_plot >= self.plot_every
        if request is None and not status_due:
            return
        with self.budget.work():
            if request is not None and self.device.type == "cuda":
                # The render waits for the GPU anyway; waiting here first keeps the training steps still queued
                # on it out of the render's measured speed (which sizes the next render). The wait is spent
                # from the budget: it drains the queue, and the GPU idles until the next step is launched.
                torch.cuda.synchronize(self.device)
            if request is not None:
                self._render(trainer, request)
                self.rendered[request.client.client_id] = (request.version, now)
            if status_due:
                self._update_status(now)
                self.last_plot = now

    def _due_request(self, now):
        """The connected camera to render now (moved since its last render first, then the oldest render), or
        None."""
        with self.lock:
            requests = list(self.requests.values())
        best, best_key = None, None
        for request in requests:
            version, at = self.rendered.get(request.client.client_id, (None, -math.inf))
            moved = version != request.version
            if not moved and now - at < self.refresh_every:
                continue
            key = (not moved, at)
            if best_key is None or key < best_key:
                best, best_key = request, key
        return best

    def _render_pixels(self):
        """Pixels of the next render: what the budget can refresh every `refresh_every` seconds at the measured
        speed; the first is small, since one render is all the budget allows for 1 / max_share times as long."""
        if self.rays_per_second is None:
            return FIRST_RENDER_PIXELS
        return self.rays_per_second * self.budget.max_share * self.refresh_every

    def _render(self, trainer, request):
        """Render `request`'s camera and send it to its browser as the background, with its z-depth so that the
        frustums and the mesh are hidden behind the surface."""
        start = time.perf_counter()
        width, height = render_size(request.aspect, self._render_pixels(), self.max_side)
        c2w = c2w_from_viser(request.wxyz, request.position)
        rgb, depth = render_camera(trainer.renderer, c2w, request.fov, width, height, self.bg_color, self.chunk,
                                   trainer.use_amp)
        if request.client.client_id in self.requests:  # not if the page left meanwhile (viser would warn)
            request.client.scene.set_background_image(rgb, format="jpeg", jpeg_quality=85, depth=depth)
        self.renders, self.last_render_size = self.renders + 1, (width, height)
        speed = width * height / max(time.perf_counter() - start, 1e-6)
        self.rays_per_second = speed if self.rays_per_second is None else 0.5 * (self.rays_per_second + speed)

    def _update_status(self, now):
        """The status text (latest scalars, it/s, the viewer's share) and the plot, if anything new."""
        mark_time, mark_steps = self.rate_mark
        its = (self.steps_seen - mark_steps) / max(now - mark_time, 1e-9)
        self.rate_mark = (now, self.steps_seen)
        if self.history and len(self.history) != self.plotted_len:
            stride = max(1, math.ceil(len(self.history) / PLOT_POINTS))
            points = self.history[::stride]
            if (len(self.history) - 1) % stride:  # the latest point too (uPlot wants x strictly increasing)
                points.append(self.history[-1])
            if len(points) >= 2:
                self._show_plot(tuple(np.array(c, dtype=np.float64) for c in zip(*points)))
                self.plotted_len = len(self.history)
        lines = []
        if self.history:
            step, loss, psnr = self.history[-1]
            lines += [f"**step {step}** · loss {loss:.4f} · PSNR {psnr:.2f} dB",
                      f"{its:.1f} it/s · viewer {100 * self.budget.share():.1f} % of the time"]
        if self.mesh_note:
            lines.append(self.mesh_note)
        if lines:
            self.status.content = "  \n".join(lines)

    def show_mesh(self, vertices, faces, colors=None):
        """Add (or replace) the mesh in the scene.

        vertices: [V, 3] in the input's world frame, as written to mesh.ply; faces: [F, 3] int; colors: [V, 3]
        (or [V, 4], alpha ignored) uint8 RGB, or None for grey."""
        import trimesh

        to_normalised = np.linalg.inv(self.to_world)
        vertices = np.asarray(vertices, dtype=np.float64) @ to_normalised[:3, :3].T + to_normalised[:3, 3]
        faces = np.asarray(faces)
        if np.linalg.det(self.to_world[:3, :3]) < 0:  # undo the orientation flip extract_mesh made
            faces = faces[:, ::-1]
        colors = np.full((len(vertices), 3), 180, np.uint8) if colors is None else np.asarray(colors)[:, :3]
        mesh = trimesh.Trimesh(vertices, faces, vertex_colors=colors, process=False)
        self.mesh = self.server.scene.add_mesh_trimesh("/mesh", mesh, visible=self.mesh_checkbox.value)
        self.mesh_checkbox.disabled = False
        self.mesh_note = f"mesh: {len(vertices)} vertices, {len(faces)} faces"
        self._update_status(self.clock())  # the last scalars too: training has ended when the mesh is written

    def close(self):
        """Stop the server (the page loses its connection)."""
        with contextlib.redirect_stdout(io.StringIO()):  # "(viser) Server stopped"
            self.server.stop()


class ViewerClient:
    """A stand-in for the web page, for tests and benchmarks (nothing else uses it): it speaks viser's websocket
    protocol to report a camera, and reads what the server sends (each frame: two sizes, zstd-compressed msgpack
    of the messages, then raw binary buffers)."""

    def __init__(self, port, host="127.0.0.1"):
        import viser
        from websockets.sync.client import connect

        self.ws = connect(f"ws://{host}:{port}", subprotocols=[f"viser-v{viser.__version__}"], max_size=None)

    def send_camera(self, c2w, fov_y, width, height):
        """Show camera c2w [4, 4] (normalised space, OpenCV axes) with vertical field of view `fov_y` on a canvas
        of width x height."""
        import msgspec
        from viser._messages import ViewerCameraMessage

        wxyz, position = viser_from_c2w(c2w)
        message = ViewerCameraMessage(wxyz=tuple(wxyz), position=tuple(position), fov=float(fov_y), near=0.01,
                                      far=100.0, image_height=int(height), image_width=int(width),
                                      look_at=tuple(position + c2w[:3, 2]), up_direction=tuple(-c2w[:3, 1]))
        self.ws.send(msgspec.msgpack.encode(message.as_serializable_dict()))

    def messages(self, timeout):
        """The messages (dicts with a "type") of the next frame the server sends; [] after `timeout` seconds."""
        import msgspec
        import zstandard

        try:
            raw = self.ws.recv(timeout=timeout)
        except TimeoutError:
            return []
        size, compressed = int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:16], "little")
        inner = zstandard.ZstdDecompressor().decompress(raw[16 : 16 + compressed], max_output_size=size)
        return msgspec.msgpack.decode(inner)["messages"]

    def wait_for(self, message_type, timeout, where=lambda message: True):
        """The first message of `message_type` for which `where` holds, within `timeout` seconds, or None."""
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            for message in self.messages(left):
                if message["type"] == message_type and where(message):
                    return message
        return None

    def close(self):
        self.ws.close()
