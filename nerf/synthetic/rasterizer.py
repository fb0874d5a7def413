"""Z-buffer rasterisation of triangle meshes at pixel centres (exact visibility, no anti-aliasing); also used by
scripts/render_mesh.py."""
import numpy as np


def edge_function(ax, ay, bx, by, px, py):
    """Twice the signed area [...] of the screen triangles (a, b, p), coordinates [...] each."""
    return (bx - ax) * (py - ay) - (by - ay) * (px - ax)


def project(verts_cam, K):
    """Pixel coordinates u [N], v [N] of camera-space vertices verts_cam [N, 3] (z > 0) through K [3, 3]."""
    z = verts_cam[:, 2]
    return K[0, 0] * verts_cam[:, 0] / z + K[0, 2], K[1, 1] * verts_cam[:, 1] / z + K[1, 2]


def rasterize(verts_cam, faces, K, width, height, budget=3_000_000):
    """Visible triangle id per pixel centre [H * W] (row-major; -1 = background).

    verts_cam: [N, 3] camera-space vertices, all with z > 0 (the cameras are outside the bounding sphere); faces
    [F, 3] vertex indices; K [3, 3]. Screen-space barycentrics give 1/z exactly (1/z is affine in screen space for
    a planar triangle), so the depth test is exact at pixel centres. Candidate pixels of many triangles are handled
    at once: triangles sorted by bounding-box size, each chunk padded to its largest box, at most `budget`
    candidates per chunk.
    """
    u, v = project(verts_cam, K)
    fu, fv, fz = u[faces], v[faces], verts_cam[:, 2][faces]
    area = edge_function(fu[:, 0], fv[:, 0], fu[:, 1], fv[:, 1], fu[:, 2], fv[:, 2])
    umin = np.maximum(np.ceil(fu.min(1)), 0).astype(np.int64)
    umax = np.minimum(np.floor(fu.max(1)), width - 1).astype(np.int64)
    vmin = np.maximum(np.ceil(fv.min(1)), 0).astype(np.int64)
    vmax = np.minimum(np.floor(fv.max(1)), height - 1).astype(np.int64)
    ok = (umax >= umin) & (vmax >= vmin) & (np.abs(area) > 1e-12)
    tri_ids = np.nonzero(ok)[0]
    side = np.maximum(umax - umin + 1, vmax - vmin + 1)[tri_ids]
    order = np.argsort(side, kind="stable")
    tri_ids, side = tri_ids[order], side[order]

    zbuf = np.full(width * height, np.inf)
    tribuf = np.full(width * height, -1, dtype=np.int64)
    start = 0
    while start < tri_ids.size:
        guess = min(start + max(budget // int(side[start]) ** 2, 1), tri_ids.size)
        s = int(side[guess - 1])
        end = min(start + max(budget // (s * s), 1), tri_ids.size)
        s = int(side[end - 1])
        tris = tri_ids[start:end]
        start = end

        offs = np.arange(s)
        cu = umin[tris][:, None, None] + offs[None, None, :]
        cv = vmin[tris][:, None, None] + offs[None, :, None]
        cu = np.broadcast_to(cu, (tris.size, s, s)).reshape(tris.size, -1)
        cv = np.broadcast_to(cv, (tris.size, s, s)).reshape(tris.size, -1)
        inbox = (cu <= umax[tris][:, None]) & (cv <= vmax[tris][:, None])
        rows, cols = np.nonzero(inbox)
        px = cu[rows, cols].astype(np.float64)
        py = cv[rows, cols].astype(np.float64)
        tri = tris[rows]
        a = area[tri]
        su, sv = fu[tri], fv[tri]
        l0 = edge_function(su[:, 1], sv[:, 1], su[:, 2], sv[:, 2], px, py) / a
        l1 = edge_function(su[:, 2], sv[:, 2], su[:, 0], sv[:, 0], px, py) / a
        l2 = 1.0 - l0 - l1
        inside = (l0 >= 0) & (l1 >= 0) & (l2 >= 0)
        zt = fz[tri[inside]]
        inv_depth = l0[inside] / zt[:, 0] + l1[inside] / zt[:, 1] + l2[inside] / zt[:, 2]
        depth = 1.0 / inv_depth
        pix = cv[rows, cols][inside] * width + cu[rows, cols][inside]
        tri = tri[inside]
        np.minimum.at(zbuf, pix, depth)
        win = depth <= zbuf[pix]
        tribuf[pix[win]] = tri[win]
    return tribuf


def perspective_barycentrics(verts_cam, faces, tri, pix_u, pix_v, K):
    """Barycentric weights [M, 3] (in 3D) of the surface point of triangle tri [M] seen at pixel (pix_u [M],
    pix_v [M]), for camera-space vertices verts_cam [N, 3], faces [F, 3] and K [3, 3]."""
    u, v = project(verts_cam, K)
    fu, fv, fz = u[faces[tri]], v[faces[tri]], verts_cam[:, 2][faces[tri]]
    a = edge_function(fu[:, 0], fv[:, 0], fu[:, 1], fv[:, 1], fu[:, 2], fv[:, 2])
    l0 = edge_function(fu[:, 1], fv[:, 1], fu[:, 2], fv[:, 2], pix_u, pix_v) / a
    l1 = edge_function(fu[:, 2], fv[:, 2], fu[:, 0], fv[:, 0], pix_u, pix_v) / a
    screen = np.stack([l0, l1, 1 - l0 - l1], 1)
    w = screen / fz
    return w / w.sum(1, keepdims=True)
