"""Triangle-mesh objects of the synthetic scenes (spot, bunny or any OBJ): found, turned z-up and placed,
rendered by z-buffer rasterisation at pixel centres, exported as the ground truth."""
import os

import numpy as np

from ..input_checks import DatasetError
from ..mesh_metrics import load_mesh
from .appearance import lambert, sample_texture_bilinear
from .geometry import normalize
from .rasterizer import perspective_barycentrics, rasterize

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# OBJ files from the usual sources are y-up; the cameras orbit the world z axis, so meshes are turned to z-up on
# load.
Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def shared_mesh_dirs():
    """Candidate folders holding the shared meshes (spot/, bunny.obj) that exist."""
    candidates = []
    if os.environ.get("NSR_SHARED_DATA"):
        candidates.append(os.path.join(os.environ["NSR_SHARED_DATA"], "meshes"))
    candidates += [
        "/work/shared/data/meshes",
        os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "meshes"),
        os.path.join(REPO_ROOT, "shared", "data", "meshes"),
    ]
    return [c for c in candidates if os.path.isdir(c)]


def resolve_mesh_path(shape):
    """Map 'spot'/'bunny' to the shared OBJ; any other string is a path (DatasetError naming --shape unless a
    file is there)."""
    if shape == "spot":
        rel = os.path.join("spot", "spot_triangulated.obj")
    elif shape == "bunny":
        rel = "bunny.obj"
    else:
        if not os.path.isfile(shape):
            raise DatasetError(f"{shape}: --shape is neither a shape name nor a mesh file")
        return shape
    for d in shared_mesh_dirs():
        if os.path.isfile(os.path.join(d, rel)):
            return os.path.join(d, rel)
    raise DatasetError(
        f"--shape {shape}: needs shared/data/meshes/{rel} (looked in /work/shared/data and ../shared/data; set "
        "NSR_SHARED_DATA)")


def seamless_normals(vertices, faces):
    """Unit face normals [F, 3] and area-weighted unit vertex normals [N, 3] of the mesh vertices [N, 3], faces
    [F, 3], accumulated over vertices at the same position: OBJ loaders split vertices at UV seams, and merging
    them by position keeps the shading free of seams."""
    _, position_index = np.unique(np.round(vertices, 6), axis=0, return_inverse=True)
    position_index = position_index.ravel()
    edge_1 = vertices[faces[:, 1]] - vertices[faces[:, 0]]
    edge_2 = vertices[faces[:, 2]] - vertices[faces[:, 0]]
    face_normals = normalize(np.cross(edge_1, edge_2))
    area_normals = 0.5 * np.cross(edge_1, edge_2)
    acc = np.zeros((position_index.max() + 1, 3))
    for k in range(3):
        np.add.at(acc, position_index[faces[:, k]], area_normals)
    return face_normals, normalize(acc[position_index])


def find_texture(mesh, path, texture_path):
    """RGB float texture [H, W, 3] of the trimesh `mesh` loaded from `path`: the image at texture_path, else the
    OBJ's material image, else the only PNG/JPG beside the OBJ (Spot ships its texture that way); None if none."""
    import cv2

    from ..images import imread, quiet_decoders

    if texture_path is None:
        material = getattr(mesh.visual, "material", None)
        image = getattr(material, "image", None)
        # trimesh substitutes a tiny placeholder when the OBJ has no mtl
        if image is not None and min(image.size) > 4:
            return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
        folder = os.path.dirname(os.path.abspath(path))
        images = [f for f in sorted(os.listdir(folder)) if f.lower().endswith((".png", ".jpg", ".jpeg"))]
        if len(images) != 1:
            return None
        texture_path = os.path.join(folder, images[0])
    with quiet_decoders():  # a damaged file's decoder messages: the DatasetError is the one line
        bgr = imread(texture_path, cv2.IMREAD_COLOR, "texture")
    return bgr[:, :, ::-1].astype(np.float64) / 255.0


class MeshShape:
    """A triangle mesh turned z-up, scaled to radius_mm and placed at offset [3]."""

    def __init__(self, path, radius_mm, offset, texture_path=None):
        self.name = os.path.splitext(os.path.basename(path))[0]
        # the scoring's loader: a mesh it refuses (no triangles, non-finite or huge vertices...) is refused here
        mesh = load_mesh(path, "--shape mesh")
        verts = np.asarray(mesh.vertices, dtype=np.float64) @ Y_UP_TO_Z_UP.T
        bb_centre = 0.5 * (verts.min(0) + verts.max(0))
        # bounding sphere about the bounding-box centre (a definition that is easy to reproduce; within a few % of
        # the minimal sphere)
        bound = np.linalg.norm(verts - bb_centre, axis=1).max()
        self.vertices = (verts - bb_centre) * (radius_mm / bound) + offset
        self.faces = np.asarray(mesh.faces, dtype=np.int64)
        self.centre = offset.copy()
        self.radius = radius_mm

        self.uv, self.texture = None, None
        uv = getattr(mesh.visual, "uv", None)
        if uv is not None and len(uv) == len(verts):
            image = find_texture(mesh, path, texture_path)
            if image is not None:
                self.uv, self.texture = np.asarray(uv, dtype=np.float64), image
        self.face_normals, self.vertex_normals = seamless_normals(self.vertices, self.faces)

    def render(self, K, R, t, width, height, albedo_fn):
        """Mask [H, W], shaded colours [M, 3] of the M hit pixels, and hit [H * W] (row-major) seen by the camera
        K [3, 3], R [3, 3], t [3]; albedo_fn maps world points [M, 3] to albedo [M, 3] (used without a texture)."""
        verts_cam = self.vertices @ R.T + t
        if verts_cam[:, 2].min() <= 1e-6:
            raise ValueError("mesh crosses the camera plane")
        tribuf = rasterize(verts_cam, self.faces, K, width, height)
        hit = tribuf >= 0
        pix = np.nonzero(hit)[0]
        tri = tribuf[pix]
        pu = (pix % width).astype(np.float64)
        pv = (pix // width).astype(np.float64)
        bary = perspective_barycentrics(verts_cam, self.faces, tri, pu, pv, K)
        corners = self.faces[tri]
        points = np.einsum("nk,nkd->nd", bary, self.vertices[corners])
        normals = normalize(np.einsum("nk,nkd->nd", bary, self.vertex_normals[corners]))
        face_n = self.face_normals[tri]
        # Make the shading normal agree with the winding, then face it toward the camera: on a closed, consistently
        # wound mesh the second flip never fires, so shading stays view-independent; it only rescues open or
        # inconsistently wound meshes.
        normals *= np.sign(np.sum(normals * face_n, 1, keepdims=True) + 1e-12)
        cam_pos = -R.T @ t
        toward = np.sum(face_n * (cam_pos - points), 1, keepdims=True)
        normals *= np.where(toward < 0, -1.0, 1.0)
        if self.texture is not None:
            uv = np.einsum("nk,nkd->nd", bary, self.uv[corners])
            albedo = sample_texture_bilinear(self.texture, uv)
        else:
            albedo = albedo_fn(points)
        return hit.reshape(height, width), lambert(albedo, normals), hit

    def gt_mesh(self, resolution=None):
        """The placed mesh as a trimesh.Trimesh with seam vertices merged (`resolution` is unused: the analytic
        shapes' marching-cubes grid)."""
        import trimesh

        mesh = trimesh.Trimesh(self.vertices, self.faces, process=False)
        mesh.merge_vertices(merge_tex=True, merge_norm=True)
        return mesh
