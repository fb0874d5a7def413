"""Score a reconstructed mesh against a ground-truth mesh (CLI: scripts/eval_mesh.py).

Both surfaces are sampled uniformly by area (n_points each). The distance of a sample to the other surface is
point-to-TRIANGLE, not point-to-sample: the k nearest of the other surface's samples and triangle centroids
(cKDTree) nominate triangles, and the exact closest point on each nominated triangle is taken (an upper bound on
the true distance, never above the nearest-sample distance, and tight unless the nearest triangle is far from all
of the k nominators). Point-to-sample distances are biased upward by about half the sample spacing (~1 mm for a
200 mm object at 200k points, comparable to a 2 mm tau), which this removes; with `point_to_point=True` the plain
nearest-sample distance is used instead (as in the DTU evaluation).

accuracy     = mean distance pred -> gt   (are predicted points on the GT?)
completeness = mean distance gt -> pred   (is all of the GT covered?)
chamfer      = (accuracy + completeness) / 2
precision    = fraction of pred samples within tau of gt
recall       = fraction of gt samples within tau of pred
fscore       = 2 P R / (P + R)
normal_error_deg = mean of normal_error_pred_to_gt_deg and normal_error_gt_to_pred_deg: the mean angle
               between each sample's face normal and the normal of the nearest triangle of the other surface (the
               one that gave its distance), as lines (min(angle, 180 - angle), so winding does not matter)
thin_recall  = with a thin-part mesh (the truth's thin surfaces, e.g. gt_thin.ply of nerf.synthetic's blade and
               wire scenes): the fraction of its samples within tau of pred; None without one
seen_*       = with cameras (nerf.seen_surface): the scores above over the samples the cameras see (the truth's
               samples a camera's depth buffer shows; the prediction's not behind the truth's first surface), and
               seen_fraction, the share of the truth's samples seen: the underside of an object on a cap of
               cameras is a guess in any reconstruction
All distances are in the meshes' world units (mm for nerf.synthetic scenes).
"""
import mmap
import os
import re

import numpy as np

# nominators per query: 16 makes a missed nearest triangle rare (on a 20k-face sphere sampled at 200k points: mean
# excess 1e-4 mm at r = 200 mm)
NEIGHBOURS = 16

from .input_checks import DatasetError, check_file, error_line

# the largest vertex coordinate a mesh may have, in any unit: 1e12 mm is a million km, and the squares and
# products of such coordinates (areas, squared distances) stay far from float overflow
MAX_COORDINATE = 1e12

# the thin part's surface beside a scene's gt_mesh.ply (written by nerf.synthetic for shapes with a thin part)
THIN_MESH_FILE = "gt_thin.ply"
# the fewest samples of a thin part, however small a share of the truth's area it is
MIN_THIN_POINTS = 2000
# the thin part's recall map: bins along each of its two principal axes, and the fewest samples a bin needs
THIN_MAP_BINS = 6
MIN_MAP_POINTS = 20


class MeshReadError(DatasetError):
    """A mesh that cannot be used: missing or unreadable file, no triangles, bad faces, non-finite vertices or
    ones beyond MAX_COORDINATE, zero area. The message is one line, `PATH: problem`."""


def mesh_files(path):
    """The files a mesh at `path` is read from, for check_not_an_input: itself and, for an OBJ, the material
    libraries it names (`mtllib`) and the textures they name (`map_Kd` and the other `map_`/`bump` lines), where
    they exist beside it. Names only: an unreadable file is load_mesh's to refuse."""
    files = [path]
    if path is None or not str(path).lower().endswith(".obj") or not os.path.isfile(path):
        return files
    folder = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            libraries = re.findall(rb"^[ \t]*mtllib[ \t]+([^\r\n]+)", data, flags=re.M)
    except (OSError, ValueError):  # (an empty file cannot be mapped)
        return files
    # "mtllib a.mtl b.mtl" names two libraries, yet readers take a name with spaces whole: both readings count
    names = {part for line in libraries for part in [line.strip(), *line.split()]}
    for name in sorted(names):
        library = os.path.join(folder, os.fsdecode(name))
        files.append(library)
        try:
            with open(library, "rb") as f:
                text = f.read(1 << 24)  # a material library is small; more is no MTL
        except OSError:
            continue
        for line in re.findall(rb"^[ \t]*(?:map_\w+|bump|disp|decal|refl)[ \t]+([^\r\n]+)", text, flags=re.M):
            files.append(os.path.join(os.path.dirname(library), os.fsdecode(line.split()[-1])))
    return files


def load_mesh(mesh, label="mesh"):
    """A non-empty trimesh.Trimesh, unprocessed (vertex order, seams, UVs and textures kept), from a path (PLY,
    OBJ with its MTL, GLB...) or a Trimesh; `label` names an in-memory one in the MeshReadError message."""
    import trimesh

    if isinstance(mesh, trimesh.Trimesh):
        name, loaded = f"<{label}>", mesh
    else:
        name = str(mesh)
        check_file(name, f"a {label}", MeshReadError)
        try:
            loaded = trimesh.load(name, force="mesh", process=False)
        except Exception as err:  # trimesh raises many types for bad files
            raise MeshReadError(f"{name}: unreadable {label} ({error_line(err)})") from None
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        raise MeshReadError(f"{name}: the {label} has no triangles")
    if not np.isfinite(loaded.vertices).all():
        raise MeshReadError(f"{name}: the {label} has non-finite vertices")
    faces = np.asarray(loaded.faces)
    if faces.min() < 0 or faces.max() >= len(loaded.vertices):
        raise MeshReadError(f"{name}: the {label} has faces that index missing vertices")
    largest = np.abs(loaded.vertices).max()
    if largest > MAX_COORDINATE:  # checked before the area, which would overflow
        raise MeshReadError(f"{name}: the {label} has a vertex coordinate of {largest:.3g}, beyond "
                            f"{MAX_COORDINATE:g} (in any unit)")
    if loaded.area <= 0:
        raise MeshReadError(f"{name}: the {label} has zero surface area")
    return loaded


def closest_point_on_triangles(p, a, b, c):
    """Closest point [N, 3] to each point p [N, 3] on its triangle (a, b, c), corners [N, 3] each.

    Voronoi-region walk over vertices, edges and face (Ericson, Real-Time Collision Detection, 5.1.5), done
    branch-free with masks.
    """
    ab, ac, ap = b - a, c - a, p - a
    d1 = np.einsum("ij,ij->i", ab, ap)
    d2 = np.einsum("ij,ij->i", ac, ap)
    bp = p - b
    d3 = np.einsum("ij,ij->i", ab, bp)
    d4 = np.einsum("ij,ij->i", ac, bp)
    cp = p - c
    d5 = np.einsum("ij,ij->i", ab, cp)
    d6 = np.einsum("ij,ij->i", ac, cp)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2

    with np.errstate(divide="ignore", invalid="ignore"):
        # interior of the face (the default, overwritten by the cases below)
        denom = va + vb + vc
        v = vb / denom
        w = vc / denom
        result = a + ab * v[:, None] + ac * w[:, None]

        # regions are tested from the most general to the most specific, so later (more specific) assignments
        # take precedence
        edge_bc = (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0)
        t = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        result[edge_bc] = (b + (c - b) * t[:, None])[edge_bc]

        edge_ac = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
        t = d2 / (d2 - d6)
        result[edge_ac] = (a + ac * t[:, None])[edge_ac]

        edge_ab = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
        t = d1 / (d1 - d3)
        result[edge_ab] = (a + ab * t[:, None])[edge_ab]

    vert_c = (d6 >= 0) & (d5 <= d6)
    result[vert_c] = c[vert_c]
    vert_b = (d3 >= 0) & (d4 <= d3)
    result[vert_b] = b[vert_b]
    vert_a = (d1 <= 0) & (d2 <= 0)
    result[vert_a] = a[vert_a]
    # degenerate (zero-area) triangles: fall back to the nearest vertex
    bad = ~np.isfinite(result).all(1)
    if bad.any():
        corners = np.stack([a[bad], b[bad], c[bad]], 1)
        nearest = np.argmin(np.linalg.norm(corners - p[bad, None], axis=2), 1)
        result[bad] = corners[np.arange(bad.sum()), nearest]
    return result


def nearest_surface(samples, sample_faces, mesh, point_to_point=False, chunk=50_000):
    """A function mapping query points [Q, 3] to (distance [Q] to the surface of `mesh` (a Trimesh), index [Q] of
    the face the distance was measured to), given samples [S, 3] of that surface and the index [S] of the face
    each sample lies on; point_to_point: the nearest sample's distance and face. Its search tree is built once,
    for all the queries against one surface."""
    from scipy.spatial import cKDTree

    if point_to_point:
        sample_tree = cKDTree(samples)

        def nearest_sample(query):
            dist, nearest = sample_tree.query(query, k=1, workers=-1)
            return dist, sample_faces[nearest]

        return nearest_sample
    triangles = np.asarray(mesh.triangles)
    # Triangles are nominated by nearby samples AND by their centroids: when the mesh has more (or larger)
    # triangles than samples, a query's own triangle may hold no sample, and its neighbours' closest points (on
    # the shared edges) would overstate the distance.
    seeds = np.concatenate([samples, triangles.mean(axis=1)])
    seed_faces = np.concatenate([sample_faces, np.arange(len(triangles))])
    tree = cKDTree(seeds)
    k = min(NEIGHBOURS, len(seeds))

    def nearest_triangle(query):
        out = np.empty(len(query))
        out_faces = np.empty(len(query), dtype=np.int64)
        for start in range(0, len(query), chunk):
            q = query[start : start + chunk]
            _, nn_idx = tree.query(q, k=k, workers=-1)
            faces = np.sort(seed_faces[nn_idx.reshape(len(q), k)], axis=1)
            # neighbouring samples often share a triangle: test each one once
            first = np.ones(faces.shape, dtype=bool)
            first[:, 1:] = faces[:, 1:] != faces[:, :-1]
            rows, cols = np.nonzero(first)
            tri = triangles[faces[rows, cols]]
            closest = closest_point_on_triangles(q[rows], tri[:, 0], tri[:, 1], tri[:, 2])
            d = np.full(faces.shape, np.inf)
            d[rows, cols] = np.linalg.norm(closest - q[rows], axis=1)
            best = d.argmin(1)
            out[start : start + chunk] = d[np.arange(len(q)), best]
            out_faces[start : start + chunk] = faces[np.arange(len(q)), best]
        return out, out_faces

    return nearest_triangle


def unit_face_normals(mesh):
    """Unit normals [F, 3] of the faces of `mesh` (a Trimesh) from their corners' winding; NaN for zero-area
    faces (so they drop out of nanmean)."""
    tri = np.asarray(mesh.triangles)
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(cross, axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(length > 0, cross / length, np.nan)


def line_angle_deg(a, b):
    """Angle [N] in degrees (0..90) between the lines along unit vectors a [N, 3] and b [N, 3]: the angle between
    normals whatever way either surface is wound."""
    cos = np.abs(np.einsum("ij,ij->i", a, b))
    return np.degrees(np.arccos(np.clip(cos, 0.0, 1.0)))


def thin_part_beside(gt_path):
    """The thin-part mesh (THIN_MESH_FILE) in the folder of the ground-truth mesh file gt_path, or None."""
    if not isinstance(gt_path, (str, os.PathLike)):
        return None
    path = os.path.join(os.path.dirname(os.path.abspath(gt_path)), THIN_MESH_FILE)
    return path if os.path.isfile(path) else None


def thin_part_recall(thin, gt_mesh, to_pred, n_points, tau, seed):
    """Fraction of samples of the thin-part mesh `thin` (a path or a Trimesh) within tau of the predicted surface
    (to_pred: its nearest_surface function), the number of samples (as dense as the truth's samples: n_points
    over gt_mesh's area, at least MIN_THIN_POINTS) and the same recall mapped over the part (`recall_map`)."""
    import trimesh

    thin_mesh = load_mesh(thin, "thin-part mesh")
    n_thin = max(MIN_THIN_POINTS, int(round(n_points * thin_mesh.area / gt_mesh.area)))
    thin_pts, _ = trimesh.sample.sample_surface(thin_mesh, n_thin, seed=np.random.default_rng([seed, 2]))
    d_thin_to_pred, _ = to_pred(thin_pts)
    hit = d_thin_to_pred < tau
    return float(hit.mean()), n_thin, recall_map(thin_pts, hit)


def recall_map(points, hit, bins=THIN_MAP_BINS):
    """Where a thin part is lost: the recall of hit [N] (bool) over points [N, 3] binned on the points' principal
    plane, as bins lists of bins values (rows: the second axis from its high end down; columns: the first, the
    axis of largest spread, from its low end), None in a bin of fewer than MIN_MAP_POINTS samples. Each axis is
    signed so that its largest component is positive, so the map's orientation does not depend on the SVD."""
    centred = points - points.mean(0)
    _, _, vt = np.linalg.svd(centred[:: max(1, len(points) // 20000)], full_matrices=False)
    axes = vt[:2] * np.sign(vt[:2][np.arange(2), np.abs(vt[:2]).argmax(1)])[:, None]
    coords = centred @ axes.T  # [N, 2]
    lo, span = coords.min(0), np.maximum(np.ptp(coords, 0), 1e-12)
    cells = np.clip(((coords - lo) / span * bins).astype(int), 0, bins - 1)  # [N, 2]: (column, row)
    grid = []
    for row in range(bins - 1, -1, -1):
        in_row = cells[:, 1] == row
        grid.append([float(hit[sel].mean()) if (sel := in_row & (cells[:, 0] == col)).sum() >= MIN_MAP_POINTS
                     else None for col in range(bins)])
    return grid


def distance_scores(d_pred_to_gt, d_gt_to_pred, tau):
    """Accuracy, completeness, Chamfer, precision, recall and F-score at tau of the two directions' distances."""
    accuracy, completeness = float(d_pred_to_gt.mean()), float(d_gt_to_pred.mean())
    precision, recall = float((d_pred_to_gt < tau).mean()), float((d_gt_to_pred < tau).mean())
    fscore = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"accuracy": accuracy, "completeness": completeness, "chamfer": 0.5 * (accuracy + completeness),
            "precision": precision, "recall": recall, "fscore": float(fscore)}


def seen_scores(pred_pts, d_pred_to_gt, gt_pts, d_gt_to_pred, gt_mesh, cameras, tau):
    """`distance_scores` over the samples the cameras see (nerf.seen_surface: the truth's samples a camera's
    depth buffer shows, and the prediction's in front of the truth's first surface), prefixed 'seen_', with
    'seen_fraction', the share of the truth's samples seen."""
    from .seen_surface import first_surfaces, seen_points

    surfaces = first_surfaces(gt_mesh, cameras)
    gt_seen, pred_seen = seen_points(gt_pts, cameras, surfaces), seen_points(pred_pts, cameras, surfaces)
    if not gt_seen.any() or not pred_seen.any():
        return {"seen_fraction": float(gt_seen.mean())}
    scores = distance_scores(d_pred_to_gt[pred_seen], d_gt_to_pred[gt_seen], tau)
    return {"seen_fraction": float(gt_seen.mean()), **{f"seen_{k}": v for k, v in scores.items()}}


def evaluate_mesh(pred, gt, n_points=200_000, tau=2.0, seed=0, point_to_point=False, thin=None, cameras=None):
    """Accuracy / completeness / chamfer / precision / recall / F-score / normal error of mesh `pred` against
    mesh `gt` (each a path or a Trimesh), with n_points samples per surface and the F-score threshold tau in world
    units; with `thin` (a path or a Trimesh: the truth's thin part), also the thin part's recall; with `cameras`
    (nerf.seen_surface.Camera list, e.g. `neus_cameras` of the scene), the same scores over what they see too
    (`seen_scores`). Raises MeshReadError for a mesh that cannot be scored."""
    import trimesh

    pred_mesh = load_mesh(pred, "predicted mesh")
    gt_mesh = load_mesh(gt, "ground-truth mesh")
    # independent sample sets: a mesh scored against itself must come out ~0 because the distances are to
    # surfaces, not because samples coincide
    pred_pts, pred_faces = trimesh.sample.sample_surface(pred_mesh, n_points, seed=np.random.default_rng([seed, 0]))
    gt_pts, gt_faces = trimesh.sample.sample_surface(gt_mesh, n_points, seed=np.random.default_rng([seed, 1]))
    to_pred = nearest_surface(pred_pts, pred_faces, pred_mesh, point_to_point)
    d_pred_to_gt, gt_face_of_pred = nearest_surface(gt_pts, gt_faces, gt_mesh, point_to_point)(pred_pts)
    d_gt_to_pred, pred_face_of_gt = to_pred(gt_pts)
    pred_normals, gt_normals = unit_face_normals(pred_mesh), unit_face_normals(gt_mesh)
    normal_pred_to_gt = float(np.nanmean(line_angle_deg(pred_normals[pred_faces], gt_normals[gt_face_of_pred])))
    normal_gt_to_pred = float(np.nanmean(line_angle_deg(gt_normals[gt_faces], pred_normals[pred_face_of_gt])))
    thin_recall, n_thin, thin_map = ((None, None, None) if thin is None
                                     else thin_part_recall(thin, gt_mesh, to_pred, n_points, tau, seed))
    seen = {} if cameras is None else seen_scores(pred_pts, d_pred_to_gt, gt_pts, d_gt_to_pred, gt_mesh, cameras,
                                                  tau)
    return {
        **distance_scores(d_pred_to_gt, d_gt_to_pred, tau),
        "tau": float(tau),
        "n_points": int(n_points),
        "distance": "point_to_point" if point_to_point else "point_to_surface",
        "pred_faces": int(len(pred_mesh.faces)),
        "gt_faces": int(len(gt_mesh.faces)),
        "normal_error_deg": 0.5 * (normal_pred_to_gt + normal_gt_to_pred),
        "normal_error_pred_to_gt_deg": normal_pred_to_gt,
        "normal_error_gt_to_pred_deg": normal_gt_to_pred,
        "thin_recall": thin_recall,
        "thin_n_points": n_thin,
        "thin_recall_map": thin_map,
        **seen,
    }
