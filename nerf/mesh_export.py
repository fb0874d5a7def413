"""A reconstructed mesh made ready for other tools: floaters removed, decimated, written as PLY, OBJ or GLB
(vertex colours, or a baked texture: nerf/texture.py). Meshes stay in the frame they come in (the world frame
of the scene, e.g. DTU millimetres)."""
import numpy as np
import torch
import trimesh

from .camera_geometry import in_image, project_points
from .files import write_atomic
from .config import MESH_FORMATS as FORMATS
from .texture import bake_texture, evaluate_colors, write_textured_glb, write_textured_obj
from .unseen_surface import relax_unseen


class EmptyMesh(ValueError):
    """No face is left to write: no camera sees any part of the mesh."""


def keep_faces(mesh, keep):
    """The mesh restricted to the faces where keep [F] bool is true, unused vertices dropped, vertex colours
    carried along; `mesh` itself when every face is kept."""
    if keep.all():
        return mesh
    faces = np.asarray(mesh.faces)[keep]
    used = np.zeros(len(mesh.vertices), bool)
    used[faces] = True
    new_index = np.cumsum(used) - 1  # old vertex -> its index among the used ones, in order
    colors = vertex_colors_of(mesh)
    return trimesh.Trimesh(np.asarray(mesh.vertices)[used], new_index[faces],
                           vertex_colors=None if colors is None else colors[used], process=False)


def vertex_colors_of(mesh):
    """Vertex colours uint8 [V, 4] of a vertex-coloured mesh, else None."""
    if mesh.visual.kind != "vertex":
        return None
    return np.asarray(mesh.visual.vertex_colors)


def component_labels(faces, n_vertices, device="cpu"):
    """Connected component [V] int64 numpy of each vertex (faces [F, 3] int numpy; vertices sharing a face are
    connected; a vertex no face uses is a component of its own), named by its smallest vertex index (labels are
    not consecutive). Found with torch on `device` (on a GPU in milliseconds for millions of faces, where scipy
    takes a quarter of a second): every vertex points at a root; each round hooks the larger of two linked
    roots under the smaller, then points every vertex at its new root, until no face links two roots. Pointers
    only ever go to smaller indices, so there are no cycles; a marching-cubes mesh takes a handful of rounds."""
    faces = torch.as_tensor(np.asarray(faces, np.int64), device=device)
    a, b = torch.cat([faces[:, 0], faces[:, 1]]), torch.cat([faces[:, 1], faces[:, 2]])  # each face's two edges
    root = torch.arange(n_vertices, device=device)
    while True:
        root_a, root_b = root[a], root[b]
        linked = root_a != root_b
        if not linked.any():
            return root.cpu().numpy()
        a, b, root_a, root_b = a[linked], b[linked], root_a[linked], root_b[linked]  # the others stay joined
        root = root.scatter_reduce(0, torch.maximum(root_a, root_b), torch.minimum(root_a, root_b), "amin")
        while not torch.equal(jumped := root[root], root):
            root = jumped


def clean_components(mesh, min_fraction, labels=None, device="cpu"):
    """Drop the connected components whose surface area is below min_fraction (0..1) of the largest one's:
    floaters of the reconstruction. 0 keeps everything, 1 only the largest part (and any as large). `labels`:
    the vertices' components (component_labels), if known; else found on `device`."""
    if not 0.0 <= min_fraction <= 1.0:
        raise ValueError(f"min_fraction must be in [0, 1], got {min_fraction}")
    faces = np.asarray(mesh.faces)
    if len(faces) == 0 or min_fraction == 0.0:
        return mesh
    labels = component_labels(faces, len(mesh.vertices), device) if labels is None else labels
    face_label = labels[faces[:, 0]]
    corners = np.asarray(mesh.vertices)[faces]  # [F, 3, 3]
    face_area = 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=-1)
    area = np.bincount(face_label, weights=face_area)
    keep = area[face_label] >= min_fraction * area.max()
    return keep_faces(mesh, keep)


def seen_vertices(vertices, intrinsics, c2w, size):
    """Whether each of vertices [N, 3] projects in front of some camera and inside its image (intrinsics
    [V, 3, 3], c2w [V, 4, 4], size (H, W)) -> [N] bool."""
    seen = np.zeros(len(vertices), bool)
    for k, pose in zip(np.asarray(intrinsics, np.float64), np.asarray(c2w, np.float64)):
        seen |= in_image(*project_points(vertices, k, np.linalg.inv(pose)), size)
    return seen


def drop_unseen(mesh, intrinsics, c2w, size, labels=None, probe=20_000, device="cpu"):
    """Drop the connected components that no camera sees: not one of their vertices projects in front of a
    camera and inside its image (intrinsics [V, 3, 3], c2w [V, 4, 4] in the mesh's frame, size (H, W)). In an
    unmasked scene such parts (under the floor, behind a wall) are guesses, not reconstruction. `labels`: the
    vertices' components (component_labels), if known; else found on `device`.

    A spread of about `probe` vertices is looked at first: a component one of them shows seen is kept, and only
    the vertices of the others are all looked at (the same answer, without projecting millions of vertices
    through every camera)."""
    faces = np.asarray(mesh.faces)
    if len(faces) == 0:
        return mesh
    vertices = np.asarray(mesh.vertices, np.float64)
    labels = component_labels(faces, len(vertices), device) if labels is None else labels
    component_seen = np.zeros(len(vertices), bool)  # by label: a component's smallest vertex index

    def look_at(chosen):  # vertex indices [N]: mark the components of those a camera sees
        component_seen[labels[chosen[seen_vertices(vertices[chosen], intrinsics, c2w, size)]]] = True

    look_at(np.arange(0, len(vertices), max(1, len(vertices) // probe)))
    look_at(np.flatnonzero(~component_seen[labels]))
    return keep_faces(mesh, component_seen[labels[faces[:, 0]]])


def relax_unseen_part(mesh, cameras, labels, color_fn, device="cpu"):
    """(mesh with the vertices no camera sees moved onto the membrane the seen ones span, nerf/unseen_surface.py,
    and recoloured there by color_fn; the vertices' components, found on `device` if `labels` is None). cameras:
    (intrinsics, c2w, (H, W)) in the mesh's frame."""
    faces = np.asarray(mesh.faces)
    if len(faces) == 0:
        return mesh, labels
    labels = component_labels(faces, len(mesh.vertices), device) if labels is None else labels
    vertices, moved = relax_unseen(mesh.vertices, faces, labels, *cameras, device=device)
    if not moved.any():
        return mesh, labels
    colors = vertex_colors_of(mesh)
    if colors is not None:
        colors = colors.copy()
        rgb = evaluate_colors(color_fn, vertices[moved].astype(np.float32))
        colors[moved, :3] = (rgb * 255 + 0.5).astype(np.uint8)
    return trimesh.Trimesh(vertices, faces, vertex_colors=colors, process=False), labels


def simplify(mesh, target_faces, color_fn=None, aggressiveness=7.0):
    """Quadric-error decimation (fast-simplification) to about target_faces faces; a mesh already that small is
    returned as it is. Vertex colours: with color_fn(points [N, 3] float32, in the mesh's frame) -> rgb [N, 3]
    in [0, 1] (the model's colour field) each new vertex is recoloured at its own position, which is truest
    (sphere, 20480 -> 2000 faces, smooth colour field: 48.0 dB against the field vs 43.3 dB); without it, each
    takes its nearest original vertex's colour (an area-weighted mean of the original vertices nearest each
    new one measured worse, 42.6 dB: linear interpolation over the coarse faces blurs it a second time)."""
    import fast_simplification

    if target_faces < 4:
        raise ValueError(f"target_faces must be at least 4, got {target_faces}")
    if len(mesh.faces) <= target_faces:
        return mesh
    vertices, faces = fast_simplification.simplify(
        np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64),
        target_count=int(target_faces), agg=aggressiveness)
    faces = np.asarray(faces, np.int64).reshape(-1, 3)
    used, inverse = np.unique(faces, return_inverse=True)  # collapses may leave vertices unreferenced
    vertices, faces = np.asarray(vertices, np.float64)[used], inverse.reshape(-1, 3)
    colors = None
    if color_fn is not None:
        colors = (evaluate_colors(color_fn, vertices.astype(np.float32)) * 255 + 0.5).astype(np.uint8)
    elif vertex_colors_of(mesh) is not None:
        colors = carry_colors(mesh, vertices)
    return trimesh.Trimesh(vertices, faces, vertex_colors=colors, process=False)


def carry_colors(mesh, new_vertices):
    """Colours uint8 [N, 4] for new_vertices [N, 3] of a decimated `mesh`: each takes its nearest original
    vertex's colour."""
    from scipy.spatial import cKDTree

    _, nearest = cKDTree(np.asarray(mesh.vertices, np.float64)).query(new_vertices)
    return vertex_colors_of(mesh)[nearest]


def parse_formats(text):
    """'ply,obj,glb' -> ('ply', 'obj', 'glb'), each once, in the given order; ValueError for an unknown one."""
    formats = []
    for name in (part.strip().lower() for part in text.split(",")):
        if name not in FORMATS:
            raise ValueError(f"unknown mesh format {name!r} (choose from {', '.join(FORMATS)})")
        if name not in formats:
            formats.append(name)
    if not formats:
        raise ValueError("no mesh format given")
    return tuple(formats)


def write_bytes(path, data):
    def write(p):
        with open(p, "wb") as f:
            f.write(data)

    write_atomic(path, write)


def write_mesh_files(mesh, stem, formats, textured=None):
    """Write the mesh as stem.ply / stem.obj / stem.glb for each of `formats`, each file atomically; returns the
    paths written. `mesh` has vertex colours; with `textured` (nerf.texture.bake_texture's mesh) OBJ and GLB
    carry the texture instead (OBJ with stem.mtl and stem.png beside it) while PLY keeps the vertex colours
    (PLY has no standard texture reference). OBJ vertex colours are the common 'v x y z r g b' extension
    (Blender, MeshLab read it); GLB has them as COLOR_0."""
    for fmt in formats:  # all checked before anything is written
        if fmt not in FORMATS:
            raise ValueError(f"unknown mesh format {fmt!r} (choose from {', '.join(FORMATS)})")
    paths = []
    for fmt in formats:
        path = f"{stem}.{fmt}"
        if fmt == "ply":
            write_atomic(path, lambda p: mesh.export(p, file_type="ply"))
            paths.append(path)
        elif fmt == "obj" and textured is not None:
            paths += write_textured_obj(textured, path)
        elif fmt == "obj":
            text = trimesh.exchange.obj.export_obj(mesh, include_normals=False, include_color=True,
                                                   include_texture=False, header=None)
            write_bytes(path, text.encode())
            paths.append(path)
        elif fmt == "glb" and textured is not None:
            paths += write_textured_glb(textured, path)
        elif fmt == "glb":
            write_bytes(path, trimesh.exchange.gltf.export_glb(mesh))
            paths.append(path)
    return paths


def export_meshes(mesh, color_fn, export, stem, cameras=None, device="cpu"):
    """The export stage: mesh (world frame, vertex colours) -> its cleaned, decimated, textured files as
    `export` (config.ExportConfig) says; color_fn(points [N, 3] world) -> rgb [N, 3] (the model's colours);
    cameras = (intrinsics, c2w in the world frame, (H, W)) to drop what no camera sees; connected components
    found on `device`. Returns (paths, mesh as written); EmptyMesh, before any file is written, if no camera sees
    any face of a mesh that had some."""
    needs_labels = len(mesh.faces) and (cameras is not None or export.mesh_clean > 0)
    labels = component_labels(np.asarray(mesh.faces), len(mesh.vertices), device) if needs_labels else None
    if cameras is not None:
        kept = drop_unseen(mesh, *cameras, labels=labels)
        if len(mesh.faces) and not len(kept.faces):
            raise EmptyMesh("no camera sees any part of the mesh")
        mesh, labels = kept, labels if kept is mesh else None  # components of what is left: found again
        if export.unseen == "membrane":
            mesh, labels = relax_unseen_part(mesh, cameras, labels, color_fn, device)
    if export.mesh_clean > 0:
        mesh = clean_components(mesh, export.mesh_clean, labels, device)
    if export.mesh_faces:
        mesh = simplify(mesh, export.mesh_faces, color_fn)
    textured = None
    if export.texture:
        textured = bake_texture(np.asarray(mesh.vertices), np.asarray(mesh.faces), color_fn, export.texture)
    return write_mesh_files(mesh, stem, parse_formats(export.mesh_format), textured), mesh
