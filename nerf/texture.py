"""Baking a colour field into a UV texture: an atlas from xatlas, texels rasterised in UV space, each texel
coloured by the field at its 3D point; and the writers of a textured mesh (OBJ + MTL + PNG, GLB).

The colour field is a callable `color_fn(points [N, 3] float32) -> rgb [N, 3] in [0, 1]` taking points in the
frame of the vertices handed to `bake_texture` (the world frame of a written mesh). A model queried in its
normalised space is wrapped with `color_fn_in_frame`."""
import os

import numpy as np
import trimesh

from .files import write_atomic

# Texels whose centre lies within this many texels of a triangle are coloured from the triangle's nearest
# point: a bilinear lookup anywhere inside a triangle reads the 2x2 texels around it, whose centres are at
# most sqrt(2) texels away, so every texel a lookup can touch holds the true colour of the nearby surface.
NEAR_TEXELS = 1.5
# Further out, the gutter is filled by dilation (for mipmaps, which average wider footprints).
DILATE_STEPS = 8


def color_fn_in_frame(normalised_color_fn, to_world):
    """color_fn for points in the world frame, from one that takes the model's normalised frame;
    to_world [4, 4]: the similarity normalised -> world (as `nerf.mesh.extract_mesh` takes it)."""
    to_world = np.asarray(to_world, np.float64)
    to_normalised = np.linalg.inv(to_world)

    def color_fn(points):  # points [N, 3] in the world frame
        x = points.astype(np.float64) @ to_normalised[:3, :3].T + to_normalised[:3, 3]
        return normalised_color_fn(x.astype(np.float32))

    return color_fn


def evaluate_colors(color_fn, points, chunk=2**16):
    """color_fn on points [N, 3] float32 at most `chunk` at a time -> rgb [N, 3] float64 clipped to [0, 1]."""
    colors = np.empty((len(points), 3))
    for i in range(0, len(points), chunk):
        colors[i : i + chunk] = np.clip(np.asarray(color_fn(points[i : i + chunk]), np.float64), 0.0, 1.0)
    return colors


def uv_atlas(vertices, faces, size, padding=2, attempts=6):
    """Charts and packing of the mesh (vertices [V, 3], faces [F, 3]) into one atlas of at most size x size
    texels -> (vmapping [V'] original vertex of each atlas vertex, faces [F, 3] into atlas vertices, uv [V', 2]
    in [0, 1] with the origin at the image's top-left and v down, atlas (width, height)).

    Charts are capped in area: xatlas' chart growing slows down sharply with the faces in a chart (a 56k-face
    bunny: 53 s uncapped, 6 s capped at 1/200 of the surface). The cap is the area over which a chart spans ~50
    texels (smaller charts waste texels on padding), but at most ~1000 faces and at least 1/500 of the surface.
    The charts are packed into one atlas that grows as needed at a chosen texel density (xatlas, given the
    resolution instead, overflows it into a larger atlas or a second one), and packed again at a density
    corrected from the atlas sizes seen until the atlas fills 85-100 % of the size on its longer side."""
    import xatlas

    vertices = np.asarray(vertices, np.float64)
    area = float(np.linalg.norm(np.cross(vertices[faces[:, 1]] - vertices[faces[:, 0]],
                                         vertices[faces[:, 2]] - vertices[faces[:, 0]]), axis=1).sum() / 2)
    if not area > 0:
        raise ValueError("cannot bake a texture for a mesh of zero area")
    scale = area ** -0.5  # unit total area: the chart cap and the density in fractions of the surface
    positions = np.ascontiguousarray((vertices - vertices.mean(0)) * scale, np.float32)
    indices = np.ascontiguousarray(faces, np.uint32)
    charts = xatlas.ChartOptions()
    charts.max_chart_area = max(0.002, min(2.0 * (48.0 / size) ** 2, 1000.0 / len(faces)))
    density = (0.4 * size * size) ** 0.5  # texels per unit length; packed charts fill ~60 % of an atlas
    tried = []  # (density, longer side) of each packing
    for _ in range(attempts):
        atlas = xatlas.Atlas()
        atlas.add_mesh(positions, indices)
        pack = xatlas.PackOptions()
        pack.padding = padding
        pack.bilinear = True  # room between charts for the texels a bilinear lookup reads
        pack.texels_per_unit = density  # no resolution: one atlas, as large as the charts need
        atlas.generate(chart_options=charts, pack_options=pack)
        side = max(atlas.width, atlas.height)
        if 0.85 * size <= side <= size:
            vmapping, atlas_faces, uv = atlas[0]
            return vmapping.astype(np.int64), atlas_faces.astype(np.int64), uv.astype(np.float64), \
                (atlas.width, atlas.height)
        tried.append((density, side))
        goal = 0.95 * size
        (d0, s0), (d1, s1) = tried[-2:] if len(tried) > 1 else ((0.0, 0.0), tried[-1])
        # the side grows about linearly with the density (plus the padding's fixed texels): secant step
        slope = (s1 - s0) / (d1 - d0) if d1 != d0 and s1 != s0 else s1 / d1
        density = max(d1 + (goal - s1) / slope, 0.25 * d1)
    raise ValueError(f"xatlas could not pack the mesh into one atlas of {0.85 * size:.0f}..{size} texels")


def closest_points_on_triangles(p, a, b, c):
    """For 2D points p [M, 2] and triangles (a, b, c) [M, 2] each: distance [M] from p to the triangle (0
    inside) and barycentric weights [M, 3] of the triangle's point closest to p."""
    def edge(s, t, q):
        return (t[:, 0] - s[:, 0]) * (q[:, 1] - s[:, 1]) - (t[:, 1] - s[:, 1]) * (q[:, 0] - s[:, 0])

    area = edge(a, b, c)
    safe = np.where(np.abs(area) > 1e-20, area, 1.0)
    bary = np.stack([edge(b, c, p), edge(c, a, p), edge(a, b, p)], 1) / safe[:, None]
    inside = (np.abs(area) > 1e-20) & (bary >= 0).all(1)
    distance = np.full(len(p), np.inf)
    best = np.zeros((len(p), 3))
    corners = (a, b, c)
    for i in range(3):  # edge from corner i to corner i+1; a degenerate triangle still has its edges
        s, t = corners[i], corners[(i + 1) % 3]
        d = t - s
        along = np.clip(((p - s) * d).sum(1) / np.maximum((d * d).sum(1), 1e-30), 0.0, 1.0)
        dist = np.linalg.norm(s + along[:, None] * d - p, axis=1)
        closer = dist < distance
        distance[closer] = dist[closer]
        weights = np.zeros((len(p), 3))
        weights[:, i], weights[:, (i + 1) % 3] = 1.0 - along, along
        best[closer] = weights[closer]
    distance[inside] = 0.0
    best[inside] = bary[inside]
    return distance, best


def rasterize_uv(uv, faces, width, height, reach=NEAR_TEXELS, budget=4_000_000):
    """Texels of a width x height atlas near the UV triangles (uv [V, 2] in [0, 1], v down; faces [F, 3]) ->
    (texel index [T] row-major, triangle [T], barycentric weights [T, 3] of that triangle's point nearest the
    texel centre). A texel inside a triangle takes it; a texel outside all, within `reach` texels of some,
    takes the nearest one's closest point (the gutter a bilinear lookup reads). Texel (row r, column c) has
    its centre at uv ((c + 0.5) / width, (r + 0.5) / height)."""
    pixel = uv * np.array([width, height]) - 0.5  # texel-centre coordinates: centres at integers
    corners = pixel[faces]  # [F, 3, 2]
    lo = np.maximum(np.ceil(corners.min(1) - reach), 0).astype(np.int64)
    hi = np.minimum(np.floor(corners.max(1) + reach), [width - 1, height - 1]).astype(np.int64)
    side = np.maximum(hi - lo + 1, 1).max(1)
    order = np.argsort(side, kind="stable")  # similar boxes together: little padding per chunk
    # unit normals [F, 3, 2] of each edge (corner i to i+1) pointing into the triangle; zero for a degenerate one
    edges = np.roll(corners, -1, axis=1) - corners
    area = edges[:, 0, 0] * edges[:, 1, 1] - edges[:, 0, 1] * edges[:, 1, 0]
    inward = np.stack([-edges[..., 1], edges[..., 0]], -1) * np.sign(area)[:, None, None]
    inward /= np.maximum(np.linalg.norm(inward, axis=-1, keepdims=True), 1e-30)

    best = np.full(width * height, np.inf)
    texel_tri = np.full(width * height, -1, np.int64)
    texel_bary = np.zeros((width * height, 3))
    start = 0
    while start < len(order):
        # a chunk: as many triangles as `budget` candidates allow at the box side of its largest triangle
        guess = min(start + max(budget // int(side[order[start]]) ** 2, 1), len(order))
        s = int(side[order[guess - 1]])
        end = min(start + max(budget // (s * s), 1), len(order))
        s = int(side[order[end - 1]])
        tris = order[start:end]
        start = end
        offsets = np.arange(s)
        shape = (len(tris), s, s)
        cols = np.broadcast_to(lo[tris, 0, None, None] + offsets[None, None, :], shape).reshape(len(tris), -1)
        rows = np.broadcast_to(lo[tris, 1, None, None] + offsets[None, :, None], shape).reshape(len(tris), -1)
        inbox = (cols <= hi[tris, 0, None]) & (rows <= hi[tris, 1, None])
        k, j = np.nonzero(inbox)
        tri = tris[k]
        col, row = cols[k, j], rows[k, j]
        # cheap first cut: farther than `reach` outside any edge's line is farther from the triangle
        margin = np.min([inward[tri, i, 0] * (col - corners[tri, i, 0]) + inward[tri, i, 1] * (row - corners[tri, i, 1])
                         for i in range(3)], axis=0)
        close = np.nonzero(margin >= -reach)[0]
        tri, col, row = tri[close], col[close], row[close]
        p = np.stack([col, row], 1).astype(np.float64)
        dist, bary = closest_points_on_triangles(p, corners[tri, 0], corners[tri, 1], corners[tri, 2])
        near = dist <= reach
        texel = row[near] * width + col[near]
        tri, dist, bary = tri[near], dist[near], bary[near]
        np.minimum.at(best, texel, dist)
        win = np.nonzero(dist <= best[texel])[0]
        _, first = np.unique(texel[win], return_index=True)  # one winner per texel, its triangle and weights
        win = win[first]
        texel_tri[texel[win]] = tri[win]
        texel_bary[texel[win]] = bary[win]
    covered = np.nonzero(texel_tri >= 0)[0]
    return covered, texel_tri[covered], texel_bary[covered]


def dilate(image, filled, steps=DILATE_STEPS):
    """Grow the filled texels (filled [H, W] bool) of image [H, W, 3] float into the empty ones, each step by
    one texel (the mean of its filled 8-neighbours); what is still empty afterwards gets the mean colour, so
    no texel stays black."""
    import cv2

    image, filled = image.copy(), filled.copy()
    kernel = np.ones((3, 3), np.float32)
    for _ in range(steps):
        if filled.all():
            break
        weight = cv2.filter2D(filled.astype(np.float32), -1, kernel, borderType=cv2.BORDER_CONSTANT)
        total = cv2.filter2D((image * filled[..., None]).astype(np.float32), -1, kernel, borderType=cv2.BORDER_CONSTANT)
        grow = ~filled & (weight > 0)
        image[grow] = total[grow] / weight[grow, None]
        filled |= grow
    if filled.any() and not filled.all():
        image[~filled] = image[filled].mean(0)
    return image


def bake_texture(vertices, faces, color_fn, size, padding=2, chunk=2**16):
    """A UV-mapped copy of the mesh (vertices [V, 3], faces [F, 3]) with the colour field baked into a texture
    of size x size texels: trimesh.Trimesh with TextureVisuals (uv in the OBJ convention, v up) and a
    PBRMaterial whose baseColorTexture is the image. Vertices on chart seams are duplicated (one per chart).

    color_fn(points [N, 3] float32, in the vertices' frame) -> rgb [N, 3] in [0, 1] is called with at most
    `chunk` points at a time, the 3D points of the texels (barycentric on the flat triangles)."""
    from PIL import Image

    vertices = np.asarray(vertices, np.float64)
    faces = np.asarray(faces, np.int64)
    if len(faces) == 0:
        raise ValueError("cannot bake a texture for a mesh without faces")
    vmapping, atlas_faces, uv, (width, height) = uv_atlas(vertices, faces, size, padding)
    uv = uv * np.array([width, height]) / size  # the atlas in the top-left of a size x size image
    width = height = size  # square, a power of two when size is: what game engines want
    atlas_vertices = vertices[vmapping]
    texel, tri, bary = rasterize_uv(uv, atlas_faces, width, height)
    points = np.einsum("tk,tkd->td", bary, atlas_vertices[atlas_faces[tri]]).astype(np.float32)
    colors = evaluate_colors(color_fn, points, chunk)
    image = np.zeros((height * width, 3))
    image[texel] = colors
    filled = np.zeros(height * width, bool)
    filled[texel] = True
    image = dilate(image.reshape(height, width, 3), filled.reshape(height, width))
    image8 = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    uv_up = np.stack([uv[:, 0], 1.0 - uv[:, 1]], 1)  # trimesh and OBJ put v = 0 at the image's bottom
    material = trimesh.visual.material.PBRMaterial(
        name="baked", baseColorTexture=Image.fromarray(image8), metallicFactor=0.0, roughnessFactor=1.0)
    visual = trimesh.visual.TextureVisuals(uv=uv_up, material=material)
    return trimesh.Trimesh(atlas_vertices, atlas_faces, visual=visual, process=False)


def texture_image(mesh):
    """The base colour texture of a textured trimesh as uint8 [H, W, 3] (PBR or simple material), or None."""
    material = getattr(mesh.visual, "material", None)
    image = getattr(material, "baseColorTexture", None)
    if image is None:
        image = getattr(material, "image", None)
    return None if image is None else np.asarray(image.convert("RGB"))


def write_textured_obj(mesh, path):
    """OBJ + MTL + PNG of a textured mesh (bake_texture's): PATH, PATH's stem .mtl and .png beside it, each
    written atomically, the OBJ last (once it exists, what it names does). Returns the three paths. The MTL
    has a white diffuse factor: viewers multiply Kd by map_Kd."""
    from PIL import Image

    stem = os.path.splitext(path)[0]
    name = os.path.basename(stem)
    png, mtl = stem + ".png", stem + ".mtl"
    image = Image.fromarray(texture_image(mesh))
    write_atomic(png, lambda p: image.save(p, format="PNG"))
    material = (f"newmtl baked\nKa 0 0 0\nKd 1 1 1\nKs 0 0 0\nillum 1\nmap_Kd {name}.png\n")

    def write_mtl(p):
        with open(p, "w") as f:
            f.write(material)

    write_atomic(mtl, write_mtl)
    uv = np.asarray(mesh.visual.uv, np.float64)
    corners = np.asarray(mesh.faces, np.int64) + 1  # OBJ counts from 1; position and uv share the index

    def write_obj(p):
        with open(p, "w") as f:
            f.write(f"mtllib {name}.mtl\nusemtl baked\n")
            np.savetxt(f, np.asarray(mesh.vertices, np.float64), fmt="v %.8g %.8g %.8g")
            np.savetxt(f, uv, fmt="vt %.8f %.8f")
            np.savetxt(f, np.repeat(corners, 2, axis=1), fmt="f %d/%d %d/%d %d/%d")

    write_atomic(path, write_obj)
    return [png, mtl, path]


def write_textured_glb(mesh, path):
    """GLB of a textured mesh with its texture embedded (PNG), written atomically. Returns [path]."""
    data = trimesh.exchange.gltf.export_glb(mesh)

    def write(p):
        with open(p, "wb") as f:
            f.write(data)

    write_atomic(path, write)
    return [path]

