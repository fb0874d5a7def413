"""The DTU MVS scores of a mesh (CLI: scripts/eval_dtu.py): accuracy, completeness and overall, in mm, against
the official reference of one scan, with the protocol of the widely used Python re-implementation of the DTU
MATLAB evaluation (our own code; the steps and constants below are that protocol's).

Reference files, as laid out by the DTU MVS release (SampleSet + Points):
    DTU/Points/stl/stl{scan:03d}_total.ply   structured-light points [S, 3] (mm)
    DTU/ObsMask/ObsMask{scan}_10.mat         ObsMask [X, Y, Z] (observed voxels), BB [2, 3] (min; max), Res
    DTU/ObsMask/Plane{scan}.mat              P [4]: the table plane, P . [x, y, z, 1] > 0 above it

Frames: the mesh must be in the DTU frame, in millimetres. Our meshes are written in the input's world frame
(vertices mapped back through scale_mat_0), which for DTU data in the NeuS format is that frame, so no transform
is applied. A mesh in the normalised (unit-sphere) space has no point in the observation mask and is refused.

Steps:
1. Optional mask culling (NeuS/IDR-format scene: cameras_sphere.npz + mask/, as MonoSDF's and 2DGS's DTU
   scripts do, after UNISURF): every mask is dilated by a disk of DILATION_RADIUS_PX pixels at DTU's full
   1600-pixel width (scaled to the masks' width); each vertex is projected into every view of the scene; a
   vertex survives if, in every view where it falls strictly inside the image (0 < u < W-1, 0 < v < H-1, pixel
   centres at integers), the nearest pixel of the dilated mask is set; a face survives if its three vertices
   do. Views where the vertex falls outside the image (or behind the camera) do not vote.
2. Dense points on the surface: every (surviving) vertex, plus a grid per face with steps of about
   DOWNSAMPLE_MM along two of its edges (barycentric ((i + 1/2) / n1, (j + 1/2) / n2), inside the triangle).
3. Thinning to DOWNSAMPLE_MM: in a random order, a point that is still there removes every other point within
   DOWNSAMPLE_MM of it (the greedy rule; done here in parallel rounds that give the same result, see thin_points).
4. Accuracy = mean distance from the thinned points that fall in an observed voxel of ObsMask (voxel index
   round((p - BB[0]) / Res)) to their nearest reference point; completeness = mean distance from the reference
   points above the plane to their nearest thinned point (those inside BB[0] - PATCH_MM .. BB[1] + 2 PATCH_MM,
   a box that only saves time); distances >= MAX_DIST_MM (20) are left out of each mean (not clipped: the
   protocol's outlier rule); overall = (accuracy + completeness) / 2. Nearest neighbours by scipy's cKDTree.

Cost: a 1.3M-face mesh (8.5M points before thinning) against 2.5M reference points takes ~40 s of CPU and
1.4 GB; the reference's own per-point loop takes minutes on that many points.
"""
import os
import time
from dataclasses import dataclass

import numpy as np

from .input_checks import DatasetError, check_file, describe, error_line
from .mesh_metrics import MAX_COORDINATE, load_mesh

DOWNSAMPLE_MM = 0.2  # sampling step and thinning radius
MAX_DIST_MM = 20.0  # distances at or beyond this are outliers, left out of the means
PATCH_MM = 60.0  # margin of the box the thinned points are kept in for completeness (the protocol's)
DILATION_RADIUS_PX = 12  # disk radius of the mask dilation, in pixels of a 1600-pixel-wide DTU image
DILATION_REFERENCE_WIDTH = 1600
VIS_RANGE_MM = 10.0  # distance shown red in the visualisation point clouds
VIS_FILES = ("accuracy_points.ply", "completeness_points.ply")  # written by write_visualisation
# ObsMask's voxel size, mm: the voxel index of a point (its coordinates and BB's within MAX_COORDINATE) stays
# well within int64, without overflow warnings
RES_RANGE_MM = (1e-3, 1e4)
# --dilation's largest disk radius, in mask pixels: 8x the protocol's at full width; the dilation's time grows with
# the disk's area (~0.5 s a 1600x1200 mask at 100 px, minutes a view at thousands)
MAX_DILATION_PX = 100


@dataclass(frozen=True)
class DTUReference:
    """The official reference of one scan."""
    scan: int
    stl: np.ndarray  # [S, 3] float64, mm
    obs_mask: np.ndarray  # [X, Y, Z] bool, voxel (i, j, k) centred at BB[0] + Res (i, j, k)
    bb: np.ndarray  # [2, 3] float64: min corner, max corner
    res: float  # voxel size, mm
    plane: np.ndarray  # [4] float64: P . [x, y, z, 1] > 0 above the table
    paths: dict  # name -> file


# ----------------------------------------------------------------------------------------------------------
# Reading the inputs (each problem raises DatasetError "PATH: problem")


def read_mesh(mesh):
    """(vertices [N, 3] float64, faces [F, 3] int64) of a mesh file or a trimesh.Trimesh."""
    loaded = load_mesh(mesh)
    return np.asarray(loaded.vertices, dtype=np.float64), np.asarray(loaded.faces, dtype=np.int64)


def read_points(path):
    """Points [S, 3] float64 of a point-cloud (or mesh) PLY file."""
    import trimesh

    check_file(path, "a point cloud")
    try:
        loaded = trimesh.load(path, process=False)
        points = np.asarray(loaded.vertices, dtype=np.float64)
    except Exception as err:
        raise DatasetError(f"{path}: unreadable point cloud ({error_line(err)})") from None
    if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
        raise DatasetError(f"{path}: the point cloud has no points")
    if not np.isfinite(points).all():
        raise DatasetError(f"{path}: the point cloud has non-finite points")
    return points


def read_mat(path, names):
    """The variables `names` of a MATLAB file (v4, v5, or v7 with compression) as a dict of arrays."""
    from scipy.io import loadmat

    check_file(path, "a MATLAB file")
    try:
        contents = loadmat(path, variable_names=list(names))
    except NotImplementedError:  # scipy's answer to a v7.3 file, which is HDF5
        raise DatasetError(f"{path}: a MATLAB v7.3 (HDF5) file, which scipy cannot read; re-save it in MATLAB "
                           f"with save(..., '-v7')") from None
    except Exception as err:  # a truncated, damaged or non-MATLAB file
        raise DatasetError(f"{path}: unreadable MATLAB file ({error_line(err)})") from None
    for name in names:
        if name not in contents:
            raise DatasetError(f"{path}: variable {name} missing")
    return contents


def numeric(value, path, name):
    """value as a finite float64 array; DatasetError naming the variable otherwise."""
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
        raise DatasetError(f"{path}: variable {name} is {describe(value)}, expected numbers")
    array = value.astype(np.float64)
    if not np.isfinite(array).all():
        raise DatasetError(f"{path}: variable {name} contains NaN or Inf")
    return array


def reference_paths(dtu_root, scan):
    return {
        "stl": os.path.join(dtu_root, "Points", "stl", f"stl{scan:03d}_total.ply"),
        "obs_mask": os.path.join(dtu_root, "ObsMask", f"ObsMask{scan}_10.mat"),
        "plane": os.path.join(dtu_root, "ObsMask", f"Plane{scan}.mat"),
    }


def load_reference(dtu_root, scan):
    """The DTUReference of `scan` from the DTU folder `dtu_root` (layout in the module docstring)."""
    if not os.path.isdir(dtu_root):
        raise DatasetError(f"{dtu_root}: no such folder (the DTU reference: Points/stl/, ObsMask/)")
    paths = reference_paths(dtu_root, scan)
    mask_file = read_mat(paths["obs_mask"], ("ObsMask", "BB", "Res"))
    path = paths["obs_mask"]
    obs_mask = mask_file["ObsMask"]
    if not isinstance(obs_mask, np.ndarray) or obs_mask.dtype.kind not in "biuf" or obs_mask.ndim != 3:
        raise DatasetError(f"{path}: variable ObsMask is {describe(obs_mask)} of shape "
                           f"{getattr(obs_mask, 'shape', ())}, expected a 3-D array of voxels")
    bb = numeric(mask_file["BB"], path, "BB")
    if bb.shape != (2, 3):
        raise DatasetError(f"{path}: variable BB has shape {bb.shape}, expected 2x3 (min corner; max corner)")
    if not (bb[1] > bb[0]).all():
        raise DatasetError(f"{path}: variable BB has its max corner not above its min corner")
    if not np.abs(bb).max() <= MAX_COORDINATE:
        raise DatasetError(f"{path}: variable BB has a coordinate of {np.abs(bb).max():.3g}, beyond "
                           f"+-{MAX_COORDINATE:g} mm")
    res = numeric(mask_file["Res"], path, "Res")
    if res.size != 1 or res.item() <= 0:
        raise DatasetError(f"{path}: variable Res is {res.ravel()[:3].tolist()}, expected one positive number")
    low, high = RES_RANGE_MM
    if not low <= res.item() <= high:
        raise DatasetError(f"{path}: variable Res is {res.item():g} mm, expected a voxel size from {low:g} to "
                           f"{high:g} mm")
    path = paths["plane"]
    plane = numeric(read_mat(path, ("P",))["P"], path, "P").ravel()
    if plane.size != 4 or not np.any(plane[:3]):
        raise DatasetError(f"{path}: variable P has {plane.size} values, expected a plane (a, b, c, d) with a "
                           f"non-zero normal")
    stl = read_points(paths["stl"])
    return DTUReference(scan=int(scan), stl=stl, obs_mask=obs_mask != 0, bb=bb, res=float(res.item()),
                        plane=plane, paths=paths)


def load_mask_views(scene_dir):
    """The views of a NeuS/IDR-format scene for the culling: (world_mats [V, 3, 4] float64, world -> pixels;
    masks [V, H, W] bool, object = True)."""
    import cv2

    from .camera_geometry import read_world_mats, world_mat_camera
    from .images import imread, list_images, read_all

    if not os.path.isdir(scene_dir):
        raise DatasetError(f"{scene_dir}: no such folder (the scene whose masks cull the mesh)")
    cams_path = os.path.join(scene_dir, "cameras_sphere.npz")
    found = read_world_mats(cams_path)
    world_mats = []
    for i in range(len(found)):
        key = f"world_mat_{i}"
        if i not in found:
            raise DatasetError(f"{cams_path}: {key} missing")
        world_mat_camera(found[i], cams_path, key)  # a camera (full rank, positive focal lengths), or DatasetError
        world_mats.append(found[i][:3, :4])
    if not world_mats:
        raise DatasetError(f"{cams_path}: no world_mat_i")
    mask_dir = os.path.join(scene_dir, "mask")
    if not os.path.isdir(mask_dir):
        raise DatasetError(f"{mask_dir}: mask folder missing (the culling needs the object masks)")
    mask_paths = list_images(mask_dir, "masks")
    if len(mask_paths) != len(world_mats):
        raise DatasetError(f"{mask_dir}: {len(mask_paths)} masks for {len(world_mats)} cameras in {cams_path}")

    def read(path):
        check_file(path, "a mask")
        return imread(path, cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION, "mask")

    masks = read_all(read, mask_paths)
    for path, mask in zip(mask_paths, masks):
        if mask.shape != masks[0].shape:
            raise DatasetError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but {mask_paths[0]} is "
                               f"{masks[0].shape[1]}x{masks[0].shape[0]}")
    # any non-zero pixel is object, as in the protocol
    return np.stack(world_mats), np.stack(masks) > 0


# ----------------------------------------------------------------------------------------------------------
# The protocol's steps


def disk_kernel(radius):
    """[2r+1, 2r+1] uint8: the pixels within `radius` of the centre (x^2 + y^2 <= r^2)."""
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return (x * x + y * y <= radius * radius).astype(np.uint8)


def dilation_radius(mask_width):
    """The protocol's 12 pixels at DTU's 1600-pixel width, scaled to masks `mask_width` wide (at least 1)."""
    return max(1, int(round(DILATION_RADIUS_PX * mask_width / DILATION_REFERENCE_WIDTH)))


def dilate_masks(masks, radius):
    """masks [V, H, W] bool, each grown by a disk of `radius` pixels."""
    import cv2

    if radius <= 0:
        return masks
    kernel = disk_kernel(radius)
    return np.stack([cv2.dilate(m.astype(np.uint8), kernel) > 0 for m in masks])


def vertices_in_masks(vertices, world_mats, masks, chunk=1 << 16):
    """[N] bool: vertex [N, 3] kept by the culling rule (module docstring, step 1) over the views
    (world_mats [V, 3, 4], masks [V, H, W] bool, already dilated). Chunks of `chunk` vertices go through every
    view in turn, dropping the vertices already culled (in float32, as the reference: ~1e-4 px here)."""
    keep = np.ones(len(vertices), dtype=bool)
    height, width = masks.shape[1:]
    # P and -P are the same camera: scaled to det(M) > 0, the third row is positive in front
    mats = (world_mats * np.sign(np.linalg.det(world_mats[:, :, :3]))[:, None, None]).astype(np.float32)
    for start in range(0, len(vertices), chunk):
        index = np.arange(start, min(start + chunk, len(vertices)))
        points = vertices[index].astype(np.float32)
        for mat, mask in zip(mats, masks):
            p = points @ mat[:, :3].T + mat[:, 3]
            depth = p[:, 2]
            with np.errstate(divide="ignore", invalid="ignore"):
                u, v = p[:, 0] / depth, p[:, 1] / depth
            in_image = (depth > 0) & (u > 0) & (u < width - 1) & (v > 0) & (v < height - 1)
            # nearest pixel, rounding halves to even like the reference's grid_sample
            culled = np.zeros(len(index), dtype=bool)
            culled[in_image] = ~mask[np.rint(v[in_image]).astype(np.int64), np.rint(u[in_image]).astype(np.int64)]
            if culled.any():
                keep[index[culled]] = False
                index, points = index[~culled], points[~culled]
                if len(index) == 0:
                    break
    return keep


def cull_mesh(vertices, faces, keep):
    """The mesh (vertices [N, 3], faces [F, 3]) without the vertices where keep [N] is False and without every
    face that uses one; returns (vertices [N', 3], faces [F', 3])."""
    new_index = np.cumsum(keep) - 1
    kept_faces = faces[keep[faces].all(axis=1)]
    return vertices[keep], new_index[kept_faces]


def sample_surface(vertices, faces, step=DOWNSAMPLE_MM, max_candidates=4_000_000):
    """Points [P, 3]: every vertex [N, 3] plus, on every face [F, 3] of non-zero area, a grid of about `step`
    along its first two edges e1, e2 (n_k = floor(|e_k| sqrt(sin angle) / step) cells each, points at
    barycentric ((i + 1/2) / n1, (j + 1/2) / n2) that lie inside the triangle; a face smaller than a cell gets
    none, its vertices stand for it). Faces are processed in batches of at most `max_candidates` grid points."""
    corner = vertices[faces[:, 0]]
    e1 = vertices[faces[:, 1]] - corner
    e2 = vertices[faces[:, 2]] - corner
    l1 = np.linalg.norm(e1, axis=1)
    l2 = np.linalg.norm(e2, axis=1)
    area2 = np.linalg.norm(np.cross(e1, e2), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cell = step * np.sqrt(l1 * l2 / area2)
        n1 = np.where(area2 > 0, np.floor(l1 / cell), 0).astype(np.int64)
        n2 = np.where(area2 > 0, np.floor(l2 / cell), 0).astype(np.int64)
    counts = n1 * n2
    faces_with_points = np.nonzero(counts)[0]
    out = [vertices]
    # batch boundaries: consecutive faces whose grids together hold <= max_candidates points (a lone larger
    # face is its own batch)
    ends = np.cumsum(counts[faces_with_points])
    start = 0
    while start < len(faces_with_points):
        base = ends[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, base + max_candidates, side="right")))
        batch = faces_with_points[start:stop]
        face = np.repeat(batch, counts[batch])
        first = np.repeat(np.cumsum(counts[batch]) - counts[batch], counts[batch])
        local = np.arange(len(face)) - first
        a = (local // n2[face] + 0.5) / n1[face]
        b = (local % n2[face] + 0.5) / n2[face]
        inside = a + b < 1
        face, a, b = face[inside], a[inside, None], b[inside, None]
        out.append(corner[face] + a * e1[face] + b * e2[face])
        start = stop
    return np.concatenate(out)


def thin_points(points, radius=DOWNSAMPLE_MM, rng=None):
    """points [P, 3] -> [Q, 3]: the subset that the greedy rule keeps in a random order (each point, unless
    already removed, removes every other point within `radius`), so no two are closer than `radius`; in the
    input's order (spatially coherent, which keeps later k-d tree builds fast).

    The greedy pass is sequential; it is done in parallel rounds with the same result (Blelloch, Fineman,
    Shun 2012, "Greedy sequential maximal independent set and matching are parallel on average"): a point whose
    still-undecided neighbours all come later in the order is kept, and its neighbours are removed; repeat
    (3 rounds on a 1.3M-face sphere). Neighbour pairs come from cKDTree.query_pairs (distance <= radius, as the
    reference's radius search)."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(0) if rng is None else rng
    rank = rng.permutation(len(points))  # rank[i]: when point i comes in the random order
    # an unbalanced tree builds twice as fast here and queries as fast
    tree = cKDTree(points, balanced_tree=False, compact_nodes=False)
    pairs = tree.query_pairs(radius, output_type="ndarray")
    del tree
    source = np.concatenate([pairs[:, 0], pairs[:, 1]])
    target = np.concatenate([pairs[:, 1], pairs[:, 0]])
    del pairs
    undecided = np.ones(len(points), dtype=bool)
    kept = np.zeros(len(points), dtype=bool)
    while undecided.any():
        live = undecided[source] & undecided[target]
        source, target = source[live], target[live]
        earliest_neighbour = np.full(len(points), len(points))
        np.minimum.at(earliest_neighbour, source, rank[target])
        new = undecided & (rank < earliest_neighbour)
        kept |= new
        undecided &= ~new
        undecided[target[new[source]]] = False
    return points[kept]


def in_observation_mask(points, reference):
    """[P] bool: point [P, 3] falls in an observed voxel of the reference's ObsMask (index round((p - BB[0]) /
    Res), halves to even)."""
    grid = np.rint((points - reference.bb[0]) / reference.res).astype(np.int64)
    inside = ((grid >= 0) & (grid < np.array(reference.obs_mask.shape))).all(axis=1)
    result = np.zeros(len(points), dtype=bool)
    g = grid[inside]
    result[inside] = reference.obs_mask[g[:, 0], g[:, 1], g[:, 2]]
    return result


def in_patch_box(points, reference, patch=PATCH_MM):
    """[P] bool: point [P, 3] inside BB[0] - patch .. BB[1] + 2 patch (the protocol's box, lopsided as it is)."""
    return ((points >= reference.bb[0] - patch) & (points < reference.bb[1] + 2 * patch)).all(axis=1)


def above_plane(points, plane):
    """[P] bool: point [P, 3] strictly above the plane [4] (P . [x, y, z, 1] > 0)."""
    return points @ plane[:3] + plane[3] > 0


def nearest_distances(query, targets, max_dist):
    """Distance [Q] of each query point [Q, 3] to its nearest target point [T, 3]; inf at max_dist and
    beyond (those are left out of the means anyway, and the bound lets the search stop early)."""
    from scipy.spatial import cKDTree

    if len(query) == 0 or len(targets) == 0:
        return np.full(len(query), np.inf)
    tree = cKDTree(targets, balanced_tree=False, compact_nodes=False)
    return tree.query(query, k=1, distance_upper_bound=max_dist, workers=-1)[0]


# ----------------------------------------------------------------------------------------------------------
# The evaluation


def evaluate_dtu(mesh, reference, mask_views=None, downsample=DOWNSAMPLE_MM, max_dist=MAX_DIST_MM,
                 patch=PATCH_MM, dilation=None, seed=0, vis_dir=None):
    """The DTU scores of `mesh` (a path or a trimesh.Trimesh, DTU frame, mm) against `reference` (a
    DTUReference, see load_reference), culled first by the masks of a NeuS-format scene when `mask_views`
    (load_mask_views(scene)) is given; `dilation`: the masks' disk radius in their pixels (None: the protocol's,
    dilation_radius). `seed` fixes the thinning's random order. Returns a dict: accuracy, completeness, overall
    (mm), the point counts of each step, the parameters and the seconds of each stage. `vis_dir`: also write the
    scored points coloured by distance (write_visualisation). DatasetError for a bad mesh or one that cannot be
    scored."""
    timings = {}
    t = time.perf_counter()
    vertices, faces = read_mesh(mesh)
    mesh_name = "<mesh>" if not isinstance(mesh, (str, os.PathLike)) else str(mesh)
    counts = {"mesh_vertices": len(vertices), "mesh_faces": len(faces)}
    timings["read_mesh"] = time.perf_counter() - t

    if mask_views is not None:
        t = time.perf_counter()
        world_mats, masks = mask_views
        radius = dilation_radius(masks.shape[2]) if dilation is None else int(dilation)
        keep = vertices_in_masks(vertices, world_mats, dilate_masks(masks, radius))
        vertices, faces = cull_mesh(vertices, faces, keep)
        if len(faces) == 0:
            raise DatasetError(f"{mesh_name}: the mask culling removed every face (is the mesh in the scene's "
                               f"world frame?)")
        counts.update(culled_vertices=int((~keep).sum()), culled_faces=counts["mesh_faces"] - len(faces),
                      cull_views=len(world_mats))
        timings["cull"] = time.perf_counter() - t

    t = time.perf_counter()
    dense = sample_surface(vertices, faces, downsample)
    timings["sample"] = time.perf_counter() - t
    t = time.perf_counter()
    data = thin_points(dense, downsample, np.random.default_rng(seed))
    timings["thin"] = time.perf_counter() - t
    counts.update(dense_points=len(dense), thinned_points=len(data))
    del dense

    t = time.perf_counter()
    data_in_mask = data[in_observation_mask(data, reference)]
    data_in_box = data[in_patch_box(data, reference, patch)]
    stl_above = reference.stl[above_plane(reference.stl, reference.plane)]
    counts.update(data_in_mask=len(data_in_mask), data_in_box=len(data_in_box), stl=len(reference.stl),
                  stl_above_plane=len(stl_above))
    if len(data_in_mask) == 0:
        raise DatasetError(f"{mesh_name}: none of its {len(data)} surface points lies in the observation mask of "
                           f"scan {reference.scan} (the mesh must be in the DTU frame, in mm)")
    data_to_stl = nearest_distances(data_in_mask, reference.stl, max_dist)
    stl_to_data = nearest_distances(stl_above, data_in_box, max_dist)
    timings["distances"] = time.perf_counter() - t
    accuracy_used = data_to_stl < max_dist
    completeness_used = stl_to_data < max_dist
    if not accuracy_used.any():
        raise DatasetError(f"{mesh_name}: none of its points in the observation mask lies within {max_dist:g} mm "
                           f"of the reference points of scan {reference.scan}")
    if not completeness_used.any():
        raise DatasetError(f"{mesh_name}: no reference point of scan {reference.scan} above the plane lies "
                           f"within {max_dist:g} mm of the mesh")
    accuracy = float(data_to_stl[accuracy_used].mean())
    completeness = float(stl_to_data[completeness_used].mean())
    counts.update(accuracy_points=int(accuracy_used.sum()), completeness_points=int(completeness_used.sum()))
    if vis_dir is not None:
        t = time.perf_counter()
        write_visualisation(vis_dir, data_in_mask, data_to_stl, stl_above, stl_to_data, max_dist)
        timings["visualisation"] = time.perf_counter() - t
    return {
        "scan": reference.scan,
        "accuracy": accuracy,
        "completeness": completeness,
        "overall": 0.5 * (accuracy + completeness),
        "units": "mm",
        "counts": {k: int(v) for k, v in counts.items()},
        "parameters": {"downsample_mm": downsample, "max_dist_mm": max_dist, "patch_mm": patch, "seed": seed,
                       "culled_by_masks": mask_views is not None,
                       "dilation_px": None if mask_views is None else radius},
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }


def distance_colours(distances, max_dist):
    """[P, 3] uint8: blue at 0 to red at VIS_RANGE_MM and beyond; grey where the distance [P] is an outlier
    (>= max_dist, not scored)."""
    t = np.clip(distances / VIS_RANGE_MM, 0, 1)
    colours = np.stack([255 * t, np.zeros_like(t), 255 * (1 - t)], axis=1)
    colours[~(distances < max_dist)] = 128
    return colours.astype(np.uint8)


def write_visualisation(out_dir, data, data_to_stl, stl, stl_to_data, max_dist):
    """out_dir/accuracy_points.ply: the mesh points in the observation mask [P, 3] coloured by their distance
    [P] to the reference; out_dir/completeness_points.ply: the reference points above the plane [S, 3]
    coloured by their distance [S] to the mesh (colours: distance_colours)."""
    import trimesh

    from .files import write_atomic

    for name, points, distances in zip(VIS_FILES, (data, stl), (data_to_stl, stl_to_data)):
        cloud = trimesh.PointCloud(points, colors=distance_colours(distances, max_dist))
        write_atomic(os.path.join(out_dir, name), lambda p, c=cloud: c.export(p))
