"""Pictures of a mesh from a camera on the CPU (the synthetic generator's z-buffer: exact visibility at pixel
centres, no anti-aliasing): head-light shading, vertex colours (interpolated), texture colours (unshaded,
bilinear); a NeuS-format scene's view to compare against, and PSNR inside its mask."""
import os
from dataclasses import dataclass

import cv2
import numpy as np

from .camera_geometry import downscale_intrinsics, read_world_mats, world_mat_camera
from .images import list_images, read_image, read_mask
from .input_checks import DatasetError
from .synthetic.appearance import sample_texture_bilinear
from .synthetic.rasterizer import perspective_barycentrics, rasterize
from .texture import texture_image


@dataclass
class Fragments:
    """What each covered pixel sees: pixel [M] row-major index, triangle [M] into the mesh's faces, barycentric
    weights [M, 3] (perspective-correct) of the surface point; points_cam [M, 3] that point in camera space."""
    width: int
    height: int
    pixel: np.ndarray
    triangle: np.ndarray
    bary: np.ndarray
    points_cam: np.ndarray


def rasterize_mesh(vertices, faces, K, w2c, width, height):
    """Fragments of the mesh (vertices [V, 3] world, faces [F, 3]) seen by the camera K [3, 3], w2c [4, 4]
    (OpenCV axes). Faces with a corner behind the camera are dropped (cameras are outside the object)."""
    verts_cam = np.asarray(vertices, np.float64) @ w2c[:3, :3].T + w2c[:3, 3]
    faces = np.asarray(faces, np.int64)
    front = np.nonzero((verts_cam[faces][:, :, 2] > 1e-6).all(1))[0]
    tri = rasterize(verts_cam, faces[front], K, width, height)
    pixel = np.nonzero(tri >= 0)[0]
    local = tri[pixel]
    u, v = (pixel % width).astype(np.float64), (pixel // width).astype(np.float64)
    bary = perspective_barycentrics(verts_cam, faces[front], local, u, v, K)
    points = np.einsum("mk,mkd->md", bary, verts_cam[faces[front][local]])
    return Fragments(width, height, pixel, front[local], bary, points)


def to_image(frags, values, background):
    """[H, W, C] image of per-fragment values [M, C], `background` [C] elsewhere."""
    image = np.tile(np.asarray(background, np.float64), (frags.width * frags.height, 1))
    image[frags.pixel] = values
    return image.reshape(frags.height, frags.width, -1)


def shade(mesh, frags, w2c):
    """Head-light Lambertian of face normals [M, 3] grey values (0.15 ambient)."""
    normals_cam = np.asarray(mesh.face_normals)[frags.triangle] @ w2c[:3, :3].T
    view = -frags.points_cam / np.linalg.norm(frags.points_cam, axis=1, keepdims=True)
    return np.repeat(np.abs((normals_cam * view).sum(1, keepdims=True)) * 0.85 + 0.15, 3, axis=1)


def surface_colors(mesh, frags):
    """Unshaded colour [M, 3] in [0, 1] at each fragment: texture (bilinear, OBJ uv convention, as a viewer
    samples it) for a textured mesh, barycentric vertex colours for a vertex-coloured one, face colours for a
    face-coloured one; None for a mesh without colours."""
    faces = np.asarray(mesh.faces)[frags.triangle]  # [M, 3]
    kind = mesh.visual.kind
    if kind == "texture":
        image = texture_image(mesh)
        uv = getattr(mesh.visual, "uv", None)
        if image is None or uv is None:
            return None
        uv = np.einsum("mk,mkd->md", frags.bary, np.asarray(uv, np.float64)[faces])
        return sample_texture_bilinear(image.astype(np.float64) / 255.0, uv)
    if kind == "vertex":
        colors = np.asarray(mesh.visual.vertex_colors, np.float64)[:, :3] / 255.0
        return np.einsum("mk,mkd->md", frags.bary, colors[faces])
    if kind == "face":
        return np.asarray(mesh.visual.face_colors, np.float64)[frags.triangle, :3] / 255.0
    return None


def render_colors(mesh, K, w2c, width, height, background=(0.0, 0.0, 0.0)):
    """(colour image [H, W, 3] in [0, 1] or None without colours, covered [H, W] bool) of the mesh."""
    frags = rasterize_mesh(mesh.vertices, mesh.faces, K, w2c, width, height)
    colors = surface_colors(mesh, frags)
    covered = np.zeros(width * height, bool)
    covered[frags.pixel] = True
    image = None if colors is None else to_image(frags, colors, background)
    return image, covered.reshape(height, width)


def render_shaded(mesh, K, w2c, width, height, background=(1.0, 1.0, 1.0)):
    """Shaded geometry [H, W, 3] in [0, 1]."""
    frags = rasterize_mesh(mesh.vertices, mesh.faces, K, w2c, width, height)
    return to_image(frags, shade(mesh, frags, w2c), background)


@dataclass
class SceneView:
    """One view of a NeuS-format scene: K [3, 3], w2c [4, 4], image [H, W, 3] float in [0, 1], mask [H, W]
    bool or None (no mask folder)."""
    K: np.ndarray
    w2c: np.ndarray
    image: np.ndarray
    mask: np.ndarray

    @property
    def size(self):
        return self.image.shape[1], self.image.shape[0]


def neus_world_mats(folder):
    """(path of cameras_sphere.npz, {view: world_mat [4, 4] float64, finite}) of the NeuS-format scene in
    `folder`. Raises DatasetError naming the file when it is missing or unreadable (camera_geometry's reader)."""
    cameras_path = os.path.join(folder, "cameras_sphere.npz")
    if not os.path.isfile(cameras_path):
        raise DatasetError(f"{cameras_path}: missing (not a NeuS-format scene)")
    return cameras_path, read_world_mats(cameras_path)


def load_neus_view(folder, view, downscale=1):
    """View `view` of the NeuS-format scene in `folder` (image/, optional mask/, cameras_sphere.npz),
    downscaled by an integer factor (area filter; pixel centres kept: u' = (u + 0.5) / s - 0.5). Raises
    DatasetError naming the file for a missing camera, image or mask, a world_mat that is no camera
    (camera_geometry.world_mat_camera) or an image that downscaling would leave without pixels."""
    cameras_path, world_mats = neus_world_mats(folder)
    key = f"world_mat_{view}"
    if view not in world_mats:
        count = len(world_mats)
        raise DatasetError(f"{cameras_path}: no {key} (the scene has {count} views, 0..{count - 1})")
    K, c2w = world_mat_camera(world_mats[view], cameras_path, key)
    images = list_images(os.path.join(folder, "image"), "images")
    if view >= len(images) or view < 0:
        raise DatasetError(f"{os.path.join(folder, 'image')}: no image for view {view} ({len(images)} images)")
    rgb, _ = read_image(images[view])
    height, width = rgb.shape[0] // downscale, rgb.shape[1] // downscale
    if min(width, height) < 1:
        raise DatasetError(f"{images[view]}: {rgb.shape[1]}x{rgb.shape[0]} pixels, too few to downscale by "
                           f"{downscale}")
    mask = None
    mask_folder = os.path.join(folder, "mask")
    if os.path.isdir(mask_folder):
        masks = list_images(mask_folder, "masks")
        if view >= len(masks):
            raise DatasetError(f"{mask_folder}: no mask for view {view} ({len(masks)} masks)")
        mask = read_mask(masks[view], rgb.shape[:2])
    if downscale > 1:
        rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
        if mask is not None:
            mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_AREA)
        K = downscale_intrinsics(K, downscale)
    return SceneView(K, np.linalg.inv(c2w), rgb.astype(np.float64) / 255.0, None if mask is None else mask > 127)


def masked_psnr(pred, target, where=None):
    """PSNR in dB of images [H, W, 3] in [0, 1] over the pixels where [H, W] is true (all if None)."""
    diff = (np.asarray(pred, np.float64) - np.asarray(target, np.float64)) ** 2
    if where is not None:
        diff = diff[where]
    return float(-10.0 * np.log10(max(diff.mean(), 1e-10)))
