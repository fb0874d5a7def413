"""The part of a reconstructed mesh that no training camera sees, relaxed to the membrane its seen part spans
(`--unseen membrane`).

Where no camera looks (the underside of an object on a cap of cameras, the foot of a statue on a table) the
images constrain nothing and the field keeps whatever the optimisation left there. The least-committal guess is
the smoothest surface that meets the seen part: each unseen vertex is placed at the mean of its neighbours (a
discrete harmonic map, uniform weights) with the seen vertices fixed, a membrane spanning the seen rim; an
object's unseen base comes out flat, a closed-off hollow closed across its mouth. Measured on the bunny scene
(49 views 800x600 on the 10-60 degree cap, 11 % of the true surface unseen; BENCHMARKS.md, session 18): a CPU
reconstruction 3.09 -> 2.30 mm Chamfer over the whole surface (seen part unchanged), the true mesh with its own
unseen part relaxed this way 0.36 mm from itself, its visual hull's underside 14 mm off. Not the default: the
sparse solve took 3.1 s for the 61 000 unseen vertices of a 449 000-vertex mesh on a busy 2-core CPU.

Visibility is a z-buffer of the mesh's own vertices per camera (no rasteriser: the vertices are denser than the
buffer's pixels, so every pixel a surface covers holds one of its vertices): a vertex is seen when some camera
has it inside its image and no nearer vertex in its pixel by more than `SLACK_PIXELS` pixels' worth of depth.
"""
import numpy as np
import torch

# The buffer's pixel spans this many median edge lengths at the mesh's median depth: coarse enough that a
# surface leaves no pixel empty (a back face showing through a hole in the front), fine enough for concavities.
PIXEL_EDGES = 2.5
# Depth slack of the test, in buffer pixels' width: a surface tilted by up to ~60 degrees to the view still sees
# its own vertices behind the nearest one of its pixel.
SLACK_PIXELS = 2.0


def unoccluded_vertices(vertices, intrinsics, c2w, size, pixel_size, device="cpu"):
    """Whether some camera sees each of vertices [N, 3] (world frame) unoccluded by the others: intrinsics
    [V, 3, 3], c2w [V, 4, 4] (OpenCV axes, world frame), image size (H, W); pixel_size: the buffer's pixel width
    in world units at the vertices' median depth -> [N] bool numpy."""
    points = torch.as_tensor(np.asarray(vertices), dtype=torch.float32, device=device)
    height, width = size
    seen = torch.zeros(len(points), dtype=torch.bool, device=device)
    for K, pose in zip(np.asarray(intrinsics, np.float64), np.asarray(c2w, np.float64)):
        w2c = torch.as_tensor(np.linalg.inv(pose), dtype=torch.float32, device=device)
        cam = torch.addmm(w2c[:3, 3], points, w2c[:3, :3].T.contiguous())
        z = cam[:, 2]
        front = z > 0
        if not front.any():
            continue
        scale = max(1.0, pixel_size * K[0, 0] / float(z[front].median()))  # image pixels per buffer pixel
        rows, cols = int(np.ceil(height / scale)), int(np.ceil(width / scale))
        focal = torch.as_tensor(K[[0, 1], [0, 1]], dtype=torch.float32, device=device)
        centre = torch.as_tensor(K[:2, 2], dtype=torch.float32, device=device)
        uv = (cam[:, :2] / z.clamp_min(1e-12)[:, None] * focal + centre + 0.5) / scale  # floor: the nearest pixel
        inside = front & (uv[:, 0] >= 0) & (uv[:, 1] >= 0) & (uv[:, 0] < width / scale) & (uv[:, 1] < height / scale)
        pixel = uv[:, 1].long().clamp(0, rows - 1) * cols + uv[:, 0].long().clamp(0, cols - 1)
        nearest = torch.full((rows * cols,), torch.inf, dtype=z.dtype, device=device)
        nearest.scatter_reduce_(0, pixel[inside], z[inside], "amin")
        slack = SLACK_PIXELS * scale * z / K[0, 0]  # buffer pixels' width in depth units at each vertex
        seen |= inside & (z <= nearest[pixel] + slack)
    return seen.cpu().numpy()


def median_edge_length(vertices, faces, sample=100_000):
    """Median length of the first edge of up to `sample` faces spread over faces [F, 3]."""
    faces = np.asarray(faces)[:: max(1, len(faces) // sample)]
    return float(np.median(np.linalg.norm(vertices[faces[:, 1]] - vertices[faces[:, 0]], axis=-1)))


def membrane(vertices, faces, free):
    """vertices [V, 3] with those where free [V] bool is true moved to the discrete harmonic map (uniform
    weights) of the others: each free vertex the mean of its neighbours. Every connected group of free vertices
    must touch a fixed one (else the system is singular)."""
    import scipy.sparse as sp  # only this option needs it
    import scipy.sparse.linalg as spla

    n = len(vertices)
    faces = np.asarray(faces)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = np.concatenate([edges, edges[:, ::-1]])
    adjacency = sp.csr_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    adjacency.data[:] = 1.0  # an edge two faces share counts once
    laplacian = sp.diags(np.asarray(adjacency.sum(1)).ravel()) - adjacency
    moved, fixed = np.flatnonzero(free), np.flatnonzero(~free)
    solve = spla.factorized(laplacian[moved][:, moved].tocsc())
    rhs = -(laplacian[moved][:, fixed] @ vertices[fixed])
    out = np.array(vertices, np.float64)
    out[moved] = np.stack([solve(rhs[:, k]) for k in range(3)], axis=1)
    return out


def relax_unseen(vertices, faces, labels, intrinsics, c2w, size, device="cpu"):
    """vertices [V, 3] (world frame) with those no camera sees moved onto the membrane the seen ones span, and
    which moved [V] bool. Components without a seen vertex stay as they are (nothing to span from); labels [V]:
    each vertex's component (mesh_export.component_labels); cameras as in `unoccluded_vertices`."""
    vertices = np.asarray(vertices, np.float64)
    pixel_size = PIXEL_EDGES * median_edge_length(vertices, faces)
    seen = unoccluded_vertices(vertices, intrinsics, c2w, size, pixel_size, device)
    component_seen = np.zeros(len(vertices), bool)
    component_seen[labels[seen]] = True
    free = ~seen & component_seen[labels]
    if not free.any():
        return vertices, free
    return membrane(vertices, faces, free), free
