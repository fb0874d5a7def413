"""An orbit video of the trained model: cameras on a full circle at the training cameras' mean elevation and
distance around the scene's centre (the origin of the normalised space), RGB and normals side by side, written as
an H.264 mp4 through imageio's ffmpeg plugin (imageio-ffmpeg, which ships its own ffmpeg)."""
import math

import torch
import tqdm

from .camera_geometry import downscale_intrinsics
from .evaluation import normal_image
from .files import write_atomic
from .provider import camera_rays

# Above this elevation (degrees) the optical axis nears the up axis and the camera's roll is ill-defined.
MAX_ELEVATION_DEG = 85.0
# Cameras rolled different quarter turns: a camera agrees with an up direction when its right or down vector is
# this close to level (degrees; a hand-held phone's roll wanders by a few), and an up needs this share of them.
MIXED_ROLL_TOLERANCE_DEG = 5.0
MIXED_ROLL_AGREEMENT = 0.75


class NoOrbitAxis(ValueError):
    """The training cameras give no up direction to turn about (their rolls disagree): no orbit video."""


def orbit_cameras(c2w, n_frames):
    """c2w [N, 4, 4] training cameras (normalised space, OpenCV axes) -> c2w [n_frames, 4, 4] of a full turn.

    The turn is about `orbit_axis` (the cameras' common up direction) through the origin, at the mean of
    their elevations above the plane normal to that axis and at their mean distance from the origin; each
    camera looks at the origin with no roll. Per-camera elevations (not the elevation of the mean position)
    keep a ring of cameras, whose mean position is the centre, and a one-sided cap (DTU) alike. The turn
    starts at the azimuth of the cameras' mean direction (the captured side of a cap; the first camera's for
    a ring, whose mean direction vanishes) and steps 2 pi / n_frames, so the last frame is one step from the
    first and the video loops. The frames are rolled as most training cameras are (`capture_roll`: a quarter
    turn for photos a phone took upright and stored on their side), so that they frame the object as the
    photos do.
    """
    if c2w.dim() != 3 or c2w.shape[1:] != (4, 4) or c2w.shape[0] == 0:
        raise ValueError(f"c2w: expected [N, 4, 4] cameras, got {list(c2w.shape)}")
    if n_frames < 1:
        raise ValueError(f"n_frames: {n_frames}, expected at least 1")
    poses = c2w.detach().double().cpu()
    positions = poses[:, :3, 3]  # [N, 3]
    distances = positions.norm(dim=-1)  # [N]
    if distances.min() <= 1e-9:
        raise ValueError("c2w: a camera is at the scene's centre")
    up = orbit_axis(poses)
    directions = positions / distances[:, None]  # [N, 3]
    elevation = torch.asin((directions @ up).clamp(-1, 1)).mean()
    limit = math.radians(MAX_ELEVATION_DEG)
    elevation = elevation.clamp(-limit, limit)
    distance = distances.mean()

    # In-plane basis: e1 towards the start azimuth, e2 = up x e1 (a right-handed turn about up).
    start = _in_plane(directions.mean(0), up)
    if start is None:
        start = _in_plane(directions[0], up)
    if start is None:  # the first camera is right above the centre: any direction in the plane will do
        start = _in_plane(torch.eye(3, dtype=up.dtype)[int(up.abs().argmin())], up)
    e1, e2 = start, torch.cross(up, start, dim=0)
    azimuth = torch.arange(n_frames, dtype=up.dtype) * (2 * math.pi / n_frames)  # [F]
    ring = torch.cos(azimuth)[:, None] * e1 + torch.sin(azimuth)[:, None] * e2  # [F, 3]
    eye = distance * (torch.cos(elevation) * ring + torch.sin(elevation) * up)  # [F, 3]

    forward = -eye / eye.norm(dim=-1, keepdim=True)  # [F, 3] towards the origin
    right = torch.cross(forward, up.expand_as(forward), dim=-1)
    right = right / right.norm(dim=-1, keepdim=True)
    down = torch.cross(forward, right, dim=-1)
    quarter = capture_roll(poses, up)
    c, s = round(math.cos(quarter * math.pi / 2)), round(math.sin(quarter * math.pi / 2))
    right, down = c * right + s * down, c * down - s * right
    out = torch.eye(4, dtype=up.dtype).repeat(n_frames, 1, 1)
    out[:, :3, 0], out[:, :3, 1], out[:, :3, 2], out[:, :3, 3] = right, down, forward, eye
    return out.to(device=c2w.device, dtype=c2w.dtype)


def capture_roll(c2w, up):
    """The quarter turns (0-3) by which most cameras c2w [N, 4, 4] are rolled about their optical axes from
    level with `up` [3], turning the right vector towards the down vector (1 or 3: a phone held upright whose
    photos keep their pixels on their side)."""
    return int(torch.bincount(camera_quarters(c2w, up), minlength=4).argmax())


def camera_quarters(c2w, up):
    """[N] int: the quarter turns (0-3, nearest) by which each camera c2w [N, 4, 4] is rolled from level with up
    [3] (capture_roll)."""
    along_right, along_down = c2w[:, :3, 0] @ up, c2w[:, :3, 1] @ up  # [N] the up in each image's axes
    return torch.round(torch.atan2(-along_right, -along_down) / (math.pi / 2)).long() % 4


def level_normal(vectors):
    """[3] unit normal of the plane that vectors [N, 3] (unit) lie in, or None where they do not span one
    (nearly all parallel, or spread out of any plane)."""
    eigenvalues, eigenvectors = torch.linalg.eigh(vectors.T @ vectors / len(vectors))  # ascending
    if eigenvalues[1] > 0.01 and eigenvalues[0] < 0.1 * eigenvalues[1]:
        return eigenvectors[:, 0]
    return None


def orbit_axis(c2w):
    """c2w [N, 4, 4] (OpenCV axes) -> [3] unit: the up direction the cameras share, on the side of the mean of
    their up vectors (-y).

    The mean up vector itself is tilted on a one-sided capture: a camera looking down at the object has its
    up vector tilted away from it, which cancels out only over a full ring (a DTU-like cap at 30 degrees of
    elevation tilts it by ~25 degrees). An unrolled camera's right vector (x) is level instead, so the up
    direction is the one most nearly perpendicular to every right vector: the least eigenvector of their
    second moment. Cameras rolled a quarter turn (a phone held upright whose photos keep their pixels on
    their side) have the down vector (y) level instead: where the right vectors span no plane and the down
    vectors do, the up is the normal of theirs, on the side the cameras look down from (more often than up).
    Where both span one (a one-sided cap at one elevation: the tilted vectors lie on an arc of a cone, nearly a
    plane), the level ones are those whose normal the others lean along. Where neither spans a plane (one
    camera, a vertical arc), the mean up vector is projected onto the plane normal to the right vectors'
    dominant direction, where they are nearly parallel. Cameras rolled different ways by quarter turns (one phone
    held both ways) spread their right vectors out of any plane, or lean them into a false one: `mixed_roll_axis`
    finds their up, taken where no other is found or where the cameras are far nearer level with it (up to
    quarter turns: roll_residual) than with the other. Else NoOrbitAxis (right vectors spread out of any plane:
    that projection gave a level axis)."""
    try:
        axis, error = single_roll_axis(c2w), None
    except NoOrbitAxis as e:
        axis, error = None, e
    mixed = mixed_roll_axis(c2w)
    if mixed is not None and (axis is None or roll_residual(c2w, mixed) < 0.5 * roll_residual(c2w, axis)):
        return mixed
    if axis is None:
        raise error
    quarters = camera_quarters(c2w, axis)
    if torch.bincount(quarters, minlength=4).max() < MIXED_ROLL_AGREEMENT * len(c2w):
        # cameras rolled different ways, which mixed_roll_axis could not resolve: that up is likely a false one
        raise NoOrbitAxis("the cameras are rolled different ways and no up direction is level with them all: no "
                          "up direction to turn about")
    return axis


def level_with(c2w, axes):
    """[N, C] bool: whether camera c2w [N, 4, 4]'s right or down vector is level with axes [C, 3] (unit), within
    MIXED_ROLL_TOLERANCE_DEG."""
    return tilts(c2w, axes) < math.sin(math.radians(MIXED_ROLL_TOLERANCE_DEG))


def tilts(c2w, axes):
    """[N, C]: the sine of the angle between axes [C, 3] (unit) and the plane normal to whichever of camera c2w
    [N, 4, 4]'s right and down vectors is nearer level with it (0: a camera level with it, up to quarter turns)."""
    return torch.minimum((c2w[:, :3, 0] @ axes.T).abs(), (c2w[:, :3, 1] @ axes.T).abs())


def roll_residual(c2w, axis):
    """How far the cameras c2w [N, 4, 4] are from level with `axis` [3], up to quarter turns: the upper quartile of
    their tilts (a few cameras may be off)."""
    return float(torch.quantile(tilts(c2w, axis[None])[:, 0], 0.75))


def single_roll_axis(c2w):
    """orbit_axis for cameras rolled alike (up to the roll's noise); NoOrbitAxis where they give none."""
    up = -c2w[:, :3, 1].mean(0)  # OpenCV y points down
    rights, downs = c2w[:, :3, 0], c2w[:, :3, 1]
    level_right, level_down = level_normal(rights), level_normal(downs)
    if level_right is not None and level_down is not None and \
            (rights @ level_down).abs().mean() > (downs @ level_right).abs().mean():
        level_right = None  # (the cameras are rolled a quarter turn: their right vectors are the tilted ones)
    if level_right is not None:
        axis = level_right if level_right @ up >= 0 else -level_right
    elif level_down is not None:  # (the mean up vector is level then: no side to take from it)
        return looked_down_on(c2w, level_down)
    else:
        eigenvalues, eigenvectors = torch.linalg.eigh(rights.T @ rights / len(rights))
        if eigenvalues[1] > 0.01:  # (the projection gave a level axis: the mean up of cameras on their side)
            raise NoOrbitAxis("the cameras' right vectors spread out of any plane (rolled different ways, not by "
                              "quarter turns?): no up direction to turn about")
        dominant = eigenvectors[:, 2]
        axis = up - (up @ dominant) * dominant
    if axis.norm() < 1e-6 or axis @ up <= 1e-6:
        raise NoOrbitAxis("the cameras' up vectors cancel out (rolled different ways?): no up direction to turn "
                          "about")
    return axis / axis.norm()


def mixed_roll_axis(c2w):
    """c2w [N, 4, 4] (OpenCV axes) -> [3] unit or None: the up of cameras rolled by different quarter turns (one
    phone's photos, some taken upright and some level, posed as stored), for which one of each camera's right and
    down vectors is level. Each pair of level-vector candidates of two cameras gives a normal; the one that most
    cameras hold a level vector for (MIXED_ROLL_TOLERANCE_DEG) is refined as the least eigenvector of theirs,
    on the side the cameras look down from. None where fewer than MIXED_ROLL_AGREEMENT of them, or than three,
    agree on any, or where a camera is more than twice the tolerance off level with the result."""
    rights, downs = c2w[:, :3, 0], c2w[:, :3, 1]
    n = len(c2w)
    pairs = torch.combinations(torch.arange(n), 2)  # [P, 2]
    if len(pairs) > 512:  # enough to meet a pair of agreeing cameras many times over
        pairs = pairs[torch.randperm(len(pairs), generator=torch.Generator().manual_seed(0))[:512]]
    ends = torch.stack([rights, downs], 1)  # [N, 2, 3]
    normals = torch.cross(ends[pairs[:, 0]][:, :, None], ends[pairs[:, 1]][:, None], dim=-1).reshape(-1, 3)
    normals = normals[normals.norm(dim=-1) > 0.2]  # (nearly parallel vectors span no plane)
    if len(normals) == 0:
        return None
    normals = normals / normals.norm(dim=-1, keepdim=True)  # [C, 3]
    # a false up (e.g. the normal of tilted vectors) has some cameras look up at it
    normals = looked_down_on(c2w, normals)
    looks_down = (c2w[:, :3, 2] @ normals.T <= math.sin(math.radians(MIXED_ROLL_TOLERANCE_DEG))).all(0)  # [C]
    agree = level_with(c2w, normals) & looks_down  # [N, C]
    best = int(agree.sum(0).argmax())
    if agree[:, best].sum() < max(3, MIXED_ROLL_AGREEMENT * n):  # (the pair itself always agrees)
        return None
    axis = normals[best]
    level = torch.where(((rights @ axis).abs() < (downs @ axis).abs())[:, None], rights, downs)[agree[:, best]]
    axis = torch.linalg.eigh(level.T @ level)[1][:, 0]
    # every camera near level with it: a false up that most cameras happen to agree with leaves a few far off
    if tilts(c2w, axis[None]).max() > math.sin(math.radians(2 * MIXED_ROLL_TOLERANCE_DEG)):
        return None
    return looked_down_on(c2w, axis)


def looked_down_on(c2w, axes):
    """axes [3] or [C, 3], each turned to the side the cameras c2w [N, 4, 4] look down from (more often than up:
    their mean optical axis does not lean towards it)."""
    lean = axes @ c2w[:, :3, 2].mean(0)  # [] or [C]
    return axes * torch.where(lean <= 0, 1.0, -1.0).to(axes.dtype)[..., None]


def _in_plane(vector, normal):
    """vector [3] projected onto the plane normal to `normal` [3] (unit), normalised; None if it nearly vanishes."""
    v = vector - (vector @ normal) * normal
    return v / v.norm() if v.norm() > 1e-3 else None


def orbit_intrinsics(intrinsics, width, height, downscale):
    """intrinsics [N, 3, 3] of width x height images -> (K [3, 3], width', height'): the mean camera matrix
    with the image `downscale` times smaller (pixel centres at integers: u' = (u + 0.5) / s - 0.5), cropped
    to even sizes (H.264 yuv420p needs them) about the same centre."""
    if downscale <= 0:
        raise ValueError(f"downscale: {downscale}, expected > 0")
    k = intrinsics.detach().double().cpu().mean(0)
    new_w, new_h = (max(2, 2 * int(n / downscale // 2)) for n in (width, height))
    scaled = downscale_intrinsics(k, downscale)
    scaled[0, 2] -= (width / downscale - new_w) / 2  # the crop takes equal shares off both sides
    scaled[1, 2] -= (height / downscale - new_h) / 2
    return scaled.to(device=intrinsics.device, dtype=intrinsics.dtype), new_w, new_h


@torch.no_grad()
def render_orbit(renderer, views, bg_color, n_frames, downscale, chunk, path, fps=30, use_amp=False, quiet=False):
    """Render an orbit of `n_frames` around the object seen by `views` (the training views) and write it to
    `path` (mp4, H.264 yuv420p): each frame is RGB on `bg_color` [3] | normals in the camera frame, at the
    training resolution divided by `downscale` (made even). Frames stream to ffmpeg one by one; the file
    appears complete or not at all. Returns `path`."""
    import imageio.v2 as imageio  # optional: only the video needs it

    renderer.eval()
    device = bg_color.device
    poses = orbit_cameras(views.c2w, n_frames).to(device)
    k, width, height = orbit_intrinsics(views.intrinsics, views.width, views.height, downscale)
    k = k.to(device)

    def render_frame(pose):
        """pose [4, 4] -> [H, 2W, 3] uint8: rgb | normals."""
        rays_o, rays_d = camera_rays(pose, k, width, height)
        with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
            out = renderer.render_chunked(rays_o, rays_d, bg_color, chunk)
        rgb = out["rgb"].float().reshape(height, width, 3).clamp(0, 1)
        normal = normal_image(out["normal"].float().reshape(height, width, 3),
                              out["opacity"].float().reshape(height, width), pose)
        frame = torch.cat([rgb, normal], dim=1)
        return (frame * 255 + 0.5).to(torch.uint8).cpu().numpy()

    def write(tmp_path):
        # write_atomic's temporary name keeps the .mp4 extension; "-f mp4" says the container all the same.
        writer = imageio.get_writer(tmp_path, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                    pixelformat="yuv420p", macro_block_size=2, output_params=["-f", "mp4"])
        try:
            for pose in tqdm.tqdm(poses, desc="orbit video", disable=quiet):
                writer.append_data(render_frame(pose))
        finally:
            writer.close()

    write_atomic(path, write)
    return path
