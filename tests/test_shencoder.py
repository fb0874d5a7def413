"""Spherical-harmonics encoder: the PyTorch twin against the maths (CPU), the CUDA kernels against the twin (GPU)."""
import math

import numpy as np
import pytest
import torch

from shencoder import SHEncoder, sh_encode
from shencoder import torch_impl

DEGREES = list(range(1, torch_impl.MAX_DEGREE + 1))
SQRT_PI = math.sqrt(math.pi)
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def random_unit_dirs(num_dirs, dtype=torch.float64, device="cpu", seed=0):
    """[num_dirs, 3] directions uniform on the sphere."""
    generator = torch.Generator().manual_seed(seed)
    dirs = torch.randn(num_dirs, 3, generator=generator, dtype=torch.float64)
    return (dirs / dirs.norm(dim=-1, keepdim=True)).to(dtype=dtype, device=device)


# ----------------------------------------------------------------------------------------------------------
# The twin against closed forms, an independent library, and orthonormality.


def test_degree_1_is_the_constant_band():
    out = torch_impl.sh_encode(random_unit_dirs(10), 1)
    assert out.shape == (10, 1)
    torch.testing.assert_close(out, torch.full((10, 1), 0.28209479177387814, dtype=torch.float64))


def test_degrees_2_and_3_closed_forms():
    dirs = random_unit_dirs(32)
    x, y, z = dirs.unbind(-1)
    c1 = math.sqrt(3) / (2 * SQRT_PI)  # 0.4886
    c2 = math.sqrt(15) / (2 * SQRT_PI)  # 1.0925
    expected = torch.stack(
        [
            torch.full_like(x, 1 / (2 * SQRT_PI)),
            -c1 * y,
            c1 * z,
            -c1 * x,
            c2 * x * y,
            -c2 * y * z,
            math.sqrt(5) / (4 * SQRT_PI) * (3 * z * z - 1),
            -c2 * x * z,
            c2 / 2 * (x * x - y * y),
        ],
        dim=-1,
    )
    torch.testing.assert_close(torch_impl.sh_encode(dirs, 2), expected[:, :4])
    torch.testing.assert_close(torch_impl.sh_encode(dirs, 3), expected)


def test_high_degree_closed_forms():
    """A few outputs of bands 3..7 written out by hand: pins the order and signs where it is easy to slip."""
    dirs = random_unit_dirs(32)
    x, y, z = dirs.unbind(-1)
    x2, y2, z2 = x * x, y * y, z * z
    expected = {
        12: math.sqrt(7) / (4 * SQRT_PI) * z * (5 * z2 - 3),  # Y_{3,0}
        15: math.sqrt(70) / (8 * SQRT_PI) * x * (3 * y2 - x2),  # Y_{3,3}
        20: 3 / (16 * SQRT_PI) * (35 * z2 * z2 - 30 * z2 + 3),  # Y_{4,0}
        27: -math.sqrt(770) / (32 * SQRT_PI) * y * (3 * x2 - y2) * (9 * z2 - 1),  # Y_{5,-3}
        42: math.sqrt(13) / (32 * SQRT_PI) * (231 * z2**3 - 315 * z2**2 + 105 * z2 - 5),  # Y_{6,0}
        49: 3 * math.sqrt(715) / (64 * SQRT_PI) * y * (-7 * x2**3 + 35 * x2**2 * y2 - 21 * x2 * y2**2 + y2**3),
        56: math.sqrt(15) / (32 * SQRT_PI) * z * (429 * z2**3 - 693 * z2**2 + 315 * z2 - 35),  # Y_{7,0}
        63: 3 * math.sqrt(715) / (64 * SQRT_PI) * x * (-(x2**3) + 21 * x2**2 * y2 - 35 * x2 * y2**2 + 7 * y2**3),
    }
    out = torch_impl.sh_encode(dirs, 8)
    for column, values in expected.items():
        torch.testing.assert_close(out[:, column], values, msg=f"column {column}")


def test_matches_scipy_real_harmonics():
    """tiny-cuda-nn's real basis is sqrt(2) Re / Im of the complex Y_l^m with the Condon-Shortley phase."""
    special = pytest.importorskip("scipy.special")
    if not hasattr(special, "sph_harm_y"):
        pytest.skip("scipy too old for sph_harm_y")
    dirs = random_unit_dirs(64)
    x, y, z = dirs.numpy().T
    polar, azimuth = np.arccos(np.clip(z, -1, 1)), np.arctan2(y, x)
    expected = np.zeros((64, 64))
    for l in range(8):
        for m in range(-l, l + 1):
            complex_sh = special.sph_harm_y(l, abs(m), polar, azimuth)
            if m == 0:
                expected[:, l * l + l] = complex_sh.real
            else:
                expected[:, l * l + l + m] = math.sqrt(2) * (complex_sh.real if m > 0 else complex_sh.imag)
    torch.testing.assert_close(torch_impl.sh_encode(dirs, 8), torch.from_numpy(expected))


def test_orthonormal_over_the_sphere():
    """Integral of Y_i Y_j over the sphere is delta_ij, for all 64 functions of degree 8.

    The products are polynomials of degree <= 14, so Gauss-Legendre in z (16 nodes) times the uniform rule in
    the azimuth (32 nodes) integrates them exactly: every normalisation constant is tested to float64 rounding.
    """
    z_nodes, z_weights = np.polynomial.legendre.leggauss(16)
    azimuths = np.arange(32) * (2 * math.pi / 32)
    z = np.repeat(z_nodes, 32)
    radius = np.sqrt(1 - z * z)
    dirs = np.stack([radius * np.cos(np.tile(azimuths, 16)), radius * np.sin(np.tile(azimuths, 16)), z], axis=-1)
    weights = torch.from_numpy(np.repeat(z_weights, 32) * (2 * math.pi / 32))
    values = torch_impl.sh_encode(torch.from_numpy(dirs), 8)  # [512, 64]
    gram = values.T @ (weights[:, None] * values)
    torch.testing.assert_close(gram, torch.eye(64, dtype=torch.float64), atol=1e-12, rtol=0)


def test_lower_degrees_are_prefixes():
    dirs = random_unit_dirs(16)
    full = torch_impl.sh_encode(dirs, 8)
    for degree in DEGREES:
        torch.testing.assert_close(torch_impl.sh_encode(dirs, degree), full[:, : degree * degree])


@pytest.mark.parametrize("degree", DEGREES)
def test_twin_gradcheck(degree):
    dirs = random_unit_dirs(5, seed=degree).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda d: sh_encode(d, degree), (dirs,))
    assert torch.autograd.gradgradcheck(lambda d: sh_encode(d, degree), (dirs,))


def test_constant_band_stays_in_the_graph():
    """Degree 1 is constant, but its output must still require grad (zero gradient), as on the kernel path."""
    dirs = random_unit_dirs(4).requires_grad_(True)
    (grad,) = torch.autograd.grad(sh_encode(dirs, 1).sum(), dirs)
    assert torch.equal(grad, torch.zeros_like(dirs))


def test_twin_half_precision_rounds_float32_result():
    dirs = random_unit_dirs(9, dtype=torch.float16)
    out = sh_encode(dirs, 4)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out, torch_impl.sh_encode(dirs.float(), 4).half())


def test_module_and_leading_dims():
    encoder = SHEncoder(input_dim=3, degree=4)
    assert encoder.output_dim == 16
    dirs = random_unit_dirs(10, dtype=torch.float32).reshape(2, 5, 3)
    out = encoder(dirs)
    assert out.shape == (2, 5, 16)
    torch.testing.assert_close(out.reshape(10, 16), sh_encode(dirs.reshape(10, 3), 4))


def test_bad_arguments_are_reported():
    with pytest.raises(ValueError, match=r"\(4, 2\)"):
        sh_encode(torch.zeros(4, 2), 4)
    with pytest.raises(ValueError, match="degree"):
        sh_encode(torch.zeros(4, 3), 0)
    with pytest.raises(ValueError, match="degree"):
        sh_encode(torch.zeros(4, 3), 9)
    with pytest.raises(ValueError, match="float"):
        sh_encode(torch.zeros(4, 3, dtype=torch.int64), 2)
    with pytest.raises(ValueError, match="input_dim"):
        SHEncoder(input_dim=2)
    with pytest.raises(ValueError, match="degree"):
        SHEncoder(degree=9)


# ----------------------------------------------------------------------------------------------------------
# The CUDA kernels against the twin. The reference is the twin in float64 on the very same (rounded) inputs,
# so the tolerances only cover the kernel's float32 arithmetic and, for float16, the rounding of the result.

TOLERANCES = {torch.float32: 2e-5, torch.float16: 2e-3}


def kernel_backend():
    from shencoder.backend import get_backend

    backend = get_backend()
    assert backend is not None, "the CUDA extension failed to build or load"
    return backend


def assert_close_scaled(actual, expected, dtype):
    """Relative to the largest reference value, since the high bands reach magnitudes of tens."""
    tolerance = TOLERANCES[dtype]
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(actual.double(), expected, atol=tolerance * scale, rtol=tolerance)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("num_dirs", [1, 7, 1001])
@pytest.mark.parametrize("degree", DEGREES)
def test_cuda_matches_twin(degree, num_dirs, dtype):
    kernel_backend()
    dirs = random_unit_dirs(num_dirs, dtype=dtype, device="cuda", seed=num_dirs).requires_grad_(True)
    reference_dirs = dirs.detach().double().requires_grad_(True)
    out = sh_encode(dirs, degree)
    reference = torch_impl.sh_encode(reference_dirs, degree)
    assert out.dtype == dtype and out.shape == (num_dirs, degree * degree)
    assert_close_scaled(out, reference.detach(), dtype)

    cotangent = torch.randn(num_dirs, degree * degree, device="cuda", dtype=dtype)
    (grad,) = torch.autograd.grad(out, dirs, cotangent)
    (reference_grad,) = torch.autograd.grad(reference, reference_dirs, cotangent.double())
    assert grad.dtype == dtype
    assert_close_scaled(grad, reference_grad, dtype)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("num_dirs", [1, 7, 1001])
@pytest.mark.parametrize("degree", DEGREES)
def test_cuda_overwrites_every_output(degree, num_dirs, dtype):
    """The bindings write into buffers the Python side allocates with torch.empty: give them NaN instead."""
    backend = kernel_backend()
    dirs = random_unit_dirs(num_dirs, dtype=dtype, device="cuda")
    outputs = torch.full((num_dirs, degree * degree), float("nan"), dtype=dtype, device="cuda")
    backend.sh_forward(dirs, outputs, degree)
    assert not outputs.isnan().any()
    assert_close_scaled(outputs, torch_impl.sh_encode(dirs.double(), degree), dtype)

    grad_outputs = torch.randn(num_dirs, degree * degree, dtype=dtype, device="cuda")
    grad_dirs = torch.full((num_dirs, 3), float("nan"), dtype=dtype, device="cuda")
    backend.sh_backward(grad_outputs, dirs, grad_dirs, degree)
    assert not grad_dirs.isnan().any()


@requires_cuda
def test_cuda_leading_dims_non_contiguous_and_empty():
    kernel_backend()
    dirs = random_unit_dirs(30, dtype=torch.float32, device="cuda").reshape(3, 10, 3)
    strided = dirs.transpose(0, 1)  # [10, 3, 3], not contiguous
    out = sh_encode(strided, 4)
    assert out.shape == (10, 3, 16) and out.is_cuda
    assert_close_scaled(out, torch_impl.sh_encode(strided.double(), 4), torch.float32)
    empty = sh_encode(torch.zeros(0, 3, device="cuda"), 4)
    assert empty.shape == (0, 16)


@requires_cuda
def test_cuda_no_grad_input_and_double_backward():
    kernel_backend()
    out = sh_encode(random_unit_dirs(7, dtype=torch.float32, device="cuda"), 4)
    assert not out.requires_grad
    dirs = random_unit_dirs(7, dtype=torch.float32, device="cuda").requires_grad_(True)
    (grad,) = torch.autograd.grad(sh_encode(dirs, 4).square().sum(), dirs, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|twice"):
        grad.sum().backward()  # no second-order kernel: this must fail loudly, never return zeros


@requires_cuda
def test_cuda_bindings_check_their_inputs():
    backend = kernel_backend()
    dirs = random_unit_dirs(4, dtype=torch.float32, device="cuda")
    outputs = torch.empty(4, 16, device="cuda")
    with pytest.raises(RuntimeError, match="CUDA"):
        backend.sh_forward(dirs.cpu(), outputs.cpu(), 4)
    with pytest.raises(RuntimeError, match="float32 or float16"):
        backend.sh_forward(dirs.double(), outputs.double(), 4)
    with pytest.raises(RuntimeError, match="shape"):
        backend.sh_forward(dirs, torch.empty(4, 9, device="cuda"), 4)
    with pytest.raises(RuntimeError, match="contiguous"):
        backend.sh_forward(torch.empty(3, 4, device="cuda").T, outputs, 4)
    with pytest.raises(RuntimeError, match="degree"):
        backend.sh_forward(dirs, outputs, 9)


@requires_cuda
def test_torch_only_switch_uses_the_twin(monkeypatch):
    monkeypatch.setenv("INSTANT_NSR_TORCH_ONLY", "1")
    dirs = random_unit_dirs(7, dtype=torch.float32, device="cuda").requires_grad_(True)
    out = sh_encode(dirs, 4)
    assert out.grad_fn is not None and "SHEncodeCUDA" not in type(out.grad_fn).__name__
