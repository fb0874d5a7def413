"""The part of a reconstructed mesh that no training camera sees, relaxed to the membrane its seen part spans
(`--unseen membrane`).

Where no camera looks (the underside of an object on a cap of cameras, the foot of a statue on a table) the
images constrain nothing and the field keeps whatever the optimisation left there. The least-committal guess is
the smoothest surface that meets the seen part: each unseen vertex is placed at the mean of its neighbours (a
discrete harmonic map, uniform weights) with the seen vertices fixed, a membrane spanning the seen rim; an
object's unseen base comes out flat, a closed-off hollow closed across its mouth, and a round underside flat too,
which is why it is not the default. Measured (49 views 800x600 on the 10-60 degree cap; BENCHMARKS.md, sessions
18-19), Chamfer over the whole true surface, the field's guess -> the membrane, same fields (H100, defaults,
`--cuda_ray`): bunny (flat base, 11 % unseen) 1.71 -> 0.73 mm, blade 1.71 -> 0.90 mm, but spot 0.34 -> 0.46 mm
and the relief shape (a round underside) 0.53 -> 2.16 mm; the seen parts within 0.03 mm. The true meshes with
their own unseen parts relaxed: bunny 0.36 mm, relief 1.49 mm from themselves.

Visibility is a z-buffer of the mesh's own vertices per camera (no rasteriser: the vertices are denser than the
buffer's pixels, so every pixel a surface covers holds one of its vertices): a vertex is seen when some camera
has it inside its image and no nearer vertex in its pixel by more than `SLACK_PIXELS` pixels' worth of depth.
"""
import warnings

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


def membrane(vertices, faces, free, device="cpu", tolerance=1e-7, max_iters=20_000):
    """vertices [V, 3] with those where free [V] bool is true moved to the discrete harmonic map (uniform
    weights) of the others: each free vertex the mean of its neighbours. Every connected group of free vertices
    must touch a fixed one (else the system is singular).

    The system (the graph Laplacian on the free vertices) is solved by conjugate gradients with a Jacobi
    preconditioner on `device`, from the vertices' own positions, to a residual `tolerance` times the right-hand
    side's: a GPU has no sparse direct solver here, and one solver serves both devices (on a 2-core CPU, 61 000
    free vertices of a 449 000-vertex mesh: 448 iterations, 1.1-2.1 s, within 1e-3 mm of scipy's factorisation,
    which takes 0.5-0.9 s there; on an H100 the whole relaxation of a 512^3 mesh takes 0.23 s)."""
    n = len(vertices)
    faces = torch.as_tensor(np.asarray(faces), dtype=torch.long, device=device)
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = torch.cat([edges, edges.flip(1)])
    edges = torch.unique(edges[:, 0] * n + edges[:, 1])
    start, end = edges // n, edges % n  # each directed edge once (an edge two faces share counts once)
    free = torch.as_tensor(np.asarray(free), device=device)
    points = torch.as_tensor(np.asarray(vertices), dtype=torch.float64, device=device)
    moved = free.nonzero().squeeze(1)
    index = torch.full((n,), -1, dtype=torch.long, device=device)
    index[moved] = torch.arange(len(moved), device=device)
    degree = torch.bincount(start, minlength=n)[moved].double()[:, None]  # [M, 1]
    inner = free[start] & free[end]  # the matrix's off-diagonal: edges between free vertices
    rows, cols = index[start[inner]], index[end[inner]]  # sorted by row, as `edges` by start
    row_starts = torch.zeros(len(moved) + 1, dtype=torch.long, device=device)
    row_starts[1:] = torch.bincount(rows, minlength=len(moved)).cumsum(0)
    with warnings.catch_warnings():  # CSR is "beta" in torch; its matrix product is 30x faster than index_add_
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
        adjacency = torch.sparse_csr_tensor(row_starts, cols, torch.ones(len(cols), dtype=torch.float64,
                                                                         device=device),
                                            (len(moved), len(moved)), check_invariants=True)
    rim = free[start] & ~free[end]  # edges to a fixed vertex: the right-hand side
    rhs = torch.zeros(len(moved), 3, dtype=torch.float64, device=device)
    rhs.index_add_(0, index[start[rim]], points[end[rim]])

    def laplacian(x):  # [M, 3] -> [M, 3]
        return degree * x - adjacency @ x

    def ratio(a, b):  # [3] / [3], 0 where b is: a coordinate already solved (a flat rim's) stays put
        return torch.where(b > 0, a / torch.where(b > 0, b, 1.0), 0.0)

    x = points[moved].clone()
    residual = rhs - laplacian(x)
    z = residual / degree
    direction, rz = z.clone(), (residual * z).sum(0)
    limit = tolerance * torch.maximum(rhs.norm(dim=0), residual.norm(dim=0))
    for step in range(max_iters):
        if step % 16 == 0 and bool((residual.norm(dim=0) <= limit).all()):  # a host sync: not every step
            break
        step_image = laplacian(direction)
        alpha = ratio(rz, (direction * step_image).sum(0))
        x += alpha * direction
        residual -= alpha * step_image
        z = residual / degree
        rz, rz_old = (residual * z).sum(0), rz
        direction = z + ratio(rz, rz_old) * direction
    out = points.clone()
    out[moved] = x
    return out.cpu().numpy()


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
    return membrane(vertices, faces, free, device), free
