"""Pure-PyTorch twin of the CUDA spherical-harmonics encoder.

Same basis, order and constants as tiny-cuda-nn / instant-ngp: "degree" is the number of bands, so the
encoding of one direction has degree**2 values, band l occupying indices l*l .. l*l + 2l, in the order
m = -l .. l. The functions are real spherical harmonics with the Condon-Shortley phase:

    Y_{l, 0}  = N_{l,0} Q_l^0(z)
    Y_{l, +m} = N_{l,m} Q_l^m(z) Re((x + iy)^m)        m > 0
    Y_{l, -m} = N_{l,m} Q_l^m(z) Im((x + iy)^m)

where Q_l^m(z) = P_l^m(z) / sin^m(theta) is the associated Legendre function with the sin factor removed (a
polynomial in z; it carries the (-1)^m phase), N_{l,0} = sqrt((2l+1)/(4 pi)) and
N_{l,m} = sqrt(2 (2l+1)/(4 pi) (l-m)!/(l+m)!). For example Y_{1,-1} = -0.4886 y, Y_{1,0} = 0.4886 z,
Y_{1,1} = -0.4886 x.

The z-parts Pn_l^m = N_{l,m} Q_l^m come from the three-term Legendre recurrence in l (`legendre_recurrence`,
normalisation folded into its coefficients). The CUDA kernel evaluates that recurrence per direction with the
same table, computed independently in C++. The twin instead expands it once into polynomial coefficients and
evaluates all outputs as one matrix product (`sh_encode`), which is much faster on a CPU than many narrow
column operations; the tests compare the two evaluations.

These are polynomials in (x, y, z) that equal the spherical harmonics only on the unit sphere, and their
gradients are those of the polynomials (as in tiny-cuda-nn): inputs must be unit vectors; nothing here
normalises them.
"""
import functools
import math

import torch

MAX_DEGREE = 8


@functools.lru_cache(maxsize=None)
def legendre_recurrence(max_degree: int = MAX_DEGREE):
    """Coefficients of the normalised Legendre recurrence, in float64 Python floats.

    With Pn_l^m(z) = N_{l,m} Q_l^m(z) (the z-part of Y_{l,±m}, normalisation included):

        Pn_m^m     = diag[m]                                         (a constant)
        Pn_l^m     = a[l][m] * z * Pn_{l-1}^m - b[l][m] * Pn_{l-2}^m   for l > m  (b[m+1][m] = 0)

    The unnormalised recurrence is Q_m^m = (-1)^m (2m-1)!!, Q_{m+1}^m = (2m+1) z Q_m^m and
    (l-m) Q_l^m = (2l-1) z Q_{l-1}^m - (l+m-1) Q_{l-2}^m; multiplying by N_{l,m} gives a and b as below.

    Returns (diag [max_degree], a [max_degree][max_degree], b [max_degree][max_degree]), a and b indexed
    [l][m] and zero where unused.
    """

    def norm(l, m):
        base = (2 * l + 1) / (4 * math.pi) * math.factorial(l - m) / math.factorial(l + m)
        return math.sqrt(base if m == 0 else 2.0 * base)

    diag = []
    a = [[0.0] * max_degree for _ in range(max_degree)]
    b = [[0.0] * max_degree for _ in range(max_degree)]
    for m in range(max_degree):
        double_factorial = math.prod(range(2 * m - 1, 0, -2))  # (2m-1)!!, 1 for m = 0
        diag.append((-1) ** m * double_factorial * norm(m, m))
        for l in range(m + 1, max_degree):
            a[l][m] = norm(l, m) / norm(l - 1, m) * (2 * l - 1) / (l - m)
            if l >= m + 2:
                b[l][m] = norm(l, m) / norm(l - 2, m) * (l + m - 1) / (l - m)
    return diag, a, b


@functools.lru_cache(maxsize=None)
def legendre_polynomials(degree: int):
    """Pn_l^m(z) for 0 <= m <= l < degree as coefficient lists [c_0, .., c_{degree-1}] of powers of z.

    Obtained by running `legendre_recurrence` on coefficient lists (z * p shifts p by one power).
    Returns {(l, m): coefficients}, float64 Python floats.
    """
    diag, a, b = legendre_recurrence()
    polynomials = {}
    for m in range(degree):
        zero = [0.0] * degree
        prev2, prev = zero, [diag[m]] + [0.0] * (degree - 1)
        polynomials[(m, m)] = prev
        for l in range(m + 1, degree):
            current = [a[l][m] * (prev[j - 1] if j > 0 else 0.0) - b[l][m] * prev2[j] for j in range(degree)]
            polynomials[(l, m)] = current
            prev2, prev = prev, current
    return polynomials


@functools.lru_cache(maxsize=None)
def feature_to_sh_matrix(degree: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[degree**2, degree**2] matrix W with outputs = features @ W (see `_features` for the feature order).

    Feature z^j Re((x+iy)^m) contributes to Y_{l,+m} (Y_{l,0} for m = 0) with the z^j coefficient of Pn_l^m, and
    z^j Im((x+iy)^m) likewise to Y_{l,-m}; every output is a combination of features of its own order m.
    """
    polynomials = legendre_polynomials(degree)
    matrix = torch.zeros(degree * degree, degree * degree, dtype=torch.float64)
    feature = 0
    for m in range(degree):
        for j in range(degree - m):
            for l in range(m, degree):
                centre = l * l + l
                matrix[feature, centre + m] = polynomials[(l, m)][j]
                if m > 0:
                    matrix[feature + 1, centre - m] = polynomials[(l, m)][j]
            feature += 1 if m == 0 else 2
    return matrix.to(dtype=dtype, device=device)


def _features(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, degree: int) -> torch.Tensor:
    """[degree**2, N] rows z^j Re((x+iy)^m), z^j Im((x+iy)^m) for m + j < degree; m = 0 has only the Re row.

    Order: m = 0 rows for j = 0..degree-1, then for each m >= 1 and j = 0..degree-1-m the pair (Re, Im).
    Rows (not columns) so that each is one contiguous elementwise product and `stack` stays a plain copy.
    """
    rows = []
    # z^j, starting from z^0 = 1 computed from z so that, as on the kernel path, the output stays in the autograd
    # graph even for degree 1 (whose gradient is zero).
    power = z * 0.0 + 1.0
    rows.append(power)
    for _ in range(1, degree):
        power = power * z
        rows.append(power)
    cos_m = sin_m = None  # Re and Im of (x + iy)^m
    for m in range(1, degree):
        if m == 1:
            cos_m, sin_m = x, y
        else:
            cos_m, sin_m = x * cos_m - y * sin_m, x * sin_m + y * cos_m
        cos_row, sin_row = cos_m, sin_m
        for j in range(degree - m):
            if j > 0:
                cos_row, sin_row = cos_row * z, sin_row * z
            rows += [cos_row, sin_row]
    return torch.stack(rows, dim=0)


def sh_encode(dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """Real spherical harmonics of unit directions (PyTorch twin of the CUDA kernel).

    Args:
        dirs: unit direction vectors, [..., 3] (typically [N, 3]); any float dtype. Half and bfloat16 are
            computed in float32 and rounded back, like the kernel. Not normalised here.
        degree: number of SH bands, 1..8.

    Returns:
        [..., degree**2] in the dtype of `dirs`, band l at columns l*l .. l*l+2l ordered m = -l..l.
        Differentiable (plain autograd, any order).
    """
    if not 1 <= degree <= MAX_DEGREE:
        raise ValueError(f"degree must be in 1..{MAX_DEGREE}, got {degree}")
    if dirs.shape[-1] != 3:
        raise ValueError(f"dirs must have shape [..., 3], got {tuple(dirs.shape)}")
    in_dtype = dirs.dtype
    compute_dtype = torch.promote_types(in_dtype, torch.float32)
    flat = dirs.reshape(-1, 3).to(compute_dtype)
    x, y, z = flat.unbind(-1)
    features = _features(x, y, z.contiguous(), degree)  # [degree**2, N]
    # features.T is a transposed view; the matrix product reads it as is and writes [N, degree**2] contiguously.
    outputs = features.T @ feature_to_sh_matrix(degree, compute_dtype, dirs.device)
    return outputs.reshape(*dirs.shape[:-1], degree * degree).to(in_dtype)
