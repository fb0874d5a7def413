"""Marching cubes of an SDF on a fine lattice, evaluated finely only in the blocks the surface can reach and meshed
in slabs, so the fine lattices that thin parts need (600^3 and more) fit in memory."""
import numpy as np

# SDF evaluations per call (bounds the temporaries of the SDF's arithmetic)
EVAL_CHUNK = 500_000
# lattice values per slab before cropping (float64: ~100 MB)
SLAB_VALUES = 12_000_000
# vertices closer than this (lattice cells) are one vertex; far above float64 rounding at lattice indices < 2^16,
# far below any real vertex spacing
MERGE_QUANTUM = 2.0 ** -24


def evaluate_lattice(sdf, lo, step, i, j, k):
    """SDF values at lattice indices i, j, k (integer arrays that broadcast together) of the lattice
    lo [3] + step * (i, j, k); `sdf` maps world points [N, 3] to values [N]."""
    shape = np.broadcast(i, j, k).shape
    idx = np.stack([np.broadcast_to(a, shape).ravel() for a in (i, j, k)], axis=1)
    out = np.empty(len(idx))
    for s in range(0, len(idx), EVAL_CHUNK):
        out[s : s + EVAL_CHUNK] = sdf(lo + step * idx[s : s + EVAL_CHUNK].astype(np.float64))
    return out.reshape(shape)


def near_blocks(coarse, block, step):
    """Bool [n, n, n]: the blocks of block^3 cells that the surface can reach, from the SDF at the block corners
    coarse [n + 1, n + 1, n + 1]. A block whose corners all lie farther from the surface than 1.5 block diagonals
    holds no surface (the SDF is ~1-Lipschitz) and has one sign throughout."""
    n = coarse.shape[0] - 1
    corner_min = np.min(np.stack([np.abs(coarse[a : a + n, b : b + n, c : c + n])
                                  for a in (0, 1) for b in (0, 1) for c in (0, 1)]), axis=0)
    return corner_min < 1.5 * block * step * np.sqrt(3)


def exact_lattice_vertices(verts, values, offset):
    """Marching-cubes vertices verts [V, 3] (index coordinates of the lattice `values` [X, Y, Z]) moved to the
    global lattice (+ offset [3], integers), each re-interpolated from the values at its edge's two ends: a vertex
    on a plane two slabs share then comes out bit-identical from both slabs."""
    base = np.floor(verts).astype(np.int64)
    frac = verts - base
    axis = np.argmax(frac, axis=1)
    rows = np.nonzero(frac[np.arange(len(verts)), axis] > 0)[0]
    out = (base + offset).astype(np.float64)
    start = base[rows]
    end = start.copy()
    end[np.arange(len(rows)), axis[rows]] += 1
    v0 = values[start[:, 0], start[:, 1], start[:, 2]]
    v1 = values[end[:, 0], end[:, 1], end[:, 2]]
    out[rows, axis[rows]] += v0 / (v0 - v1)
    return out


def sparse_marching_cubes(sdf, lo, step, n_blocks, block=4):
    """Vertices [V, 3] (world) and faces [F, 3] (PyMCubes winding: inward for SDF < 0 inside) of the zero set of
    `sdf` (world points [N, 3] -> values [N], ~1-Lipschitz) on the lattice lo [3] + step * (i, j, k),
    0 <= i, j, k <= n_blocks * block.

    Blocks far from the surface (near_blocks) keep their coarse corner value spread over them (nearest neighbour:
    the right sign, all marching cubes needs there); near ones are evaluated at every lattice point. The lattice
    is meshed in slabs along x, each cropped in y and z to its near blocks, and the slabs' meshes are joined by
    merging the vertices they share.
    """
    import mcubes

    coarse_idx = np.arange(n_blocks + 1) * block
    coarse = evaluate_lattice(sdf, lo, step, coarse_idx[:, None, None], coarse_idx[None, :, None],
                              coarse_idx[None, None, :])
    near = near_blocks(coarse, block, step)
    offs = np.arange(block + 1)
    slab_blocks = max(1, SLAB_VALUES // ((n_blocks * block + 1) ** 2 * block))
    all_verts, all_faces, n_verts = [], [], 0
    for b0 in range(0, n_blocks, slab_blocks):
        b1 = min(b0 + slab_blocks, n_blocks)
        slab = near[b0:b1]
        if not slab.any():
            continue
        ys, zs = np.nonzero(slab.any(axis=(0, 2)))[0], np.nonzero(slab.any(axis=(0, 1)))[0]
        lo_block = np.array([b0, ys[0], zs[0]])
        hi_block = np.array([b1, ys[-1] + 1, zs[-1] + 1])
        ranges = [np.arange(lo_block[a] * block, hi_block[a] * block + 1) for a in range(3)]
        values = coarse[np.ix_(*(r // block for r in ranges))]
        blocks = np.argwhere(slab)
        blocks[:, 0] += b0
        for chunk in np.array_split(blocks, max(1, len(blocks) // 2000)):
            idx = [chunk[:, a, None, None, None] * block + o
                   for a, o in enumerate((offs[:, None, None], offs[None, :, None], offs[None, None, :]))]
            local = [idx[a] - lo_block[a] * block for a in range(3)]
            values[local[0], local[1], local[2]] = evaluate_lattice(sdf, lo, step, *idx)
        verts, faces = mcubes.marching_cubes(values, 0.0)
        if len(faces) == 0:
            continue
        all_verts.append(exact_lattice_vertices(verts, values, lo_block * block))
        all_faces.append(np.asarray(faces, dtype=np.int64) + n_verts)
        n_verts += len(verts)
    if not all_verts:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    verts = np.concatenate(all_verts)
    keys = np.round(verts / MERGE_QUANTUM).astype(np.int64)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    faces = inverse.ravel()[np.concatenate(all_faces)]
    # a vertex merged with its neighbour leaves zero-area faces behind
    keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    return lo + step * verts[first], faces[keep]
