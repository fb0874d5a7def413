"""Hash-grid encoder: the PyTorch twin against the maths (CPU), the autograd plumbing of the CUDA op against the
twin (CPU, with the kernels stood in by the twin), and the CUDA kernels against the twin in float64 (GPU)."""

import pytest
import torch

from hashencoder import HashEncoder, hash_encode
from hashencoder import hashgrid, torch_impl
from hashencoder.hashgrid import hash_encode_with_backend, level_layout

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def small_layout(input_dim, log2_table=4):
    """Three levels (res 2, 4, 8): the first dense, the others hashed into 2^log2_table rows."""
    resolutions, offsets = level_layout(input_dim, 3, 2, 2.0, log2_table)
    return torch.tensor(offsets, dtype=torch.int32), torch.tensor(resolutions, dtype=torch.int32)


def interior_points(num_points, input_dim, dtype=torch.float64, seed=0):
    """Random points in (0, 1); finite differences of 1e-6 almost surely stay inside their cells."""
    generator = torch.Generator().manual_seed(seed)
    return (0.02 + 0.96 * torch.rand(num_points, input_dim, generator=generator, dtype=torch.float64)).to(dtype)


def random_table(num_rows, level_dim, dtype=torch.float64, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return (2 * torch.rand(num_rows, level_dim, generator=generator, dtype=torch.float64) - 1).to(dtype)


# ----------------------------------------------------------------------------------------------------------
# The twin against the maths.


@pytest.mark.parametrize("input_dim", [2, 3])
def test_twin_gradcheck_and_gradgradcheck(input_dim):
    offsets, resolutions = small_layout(input_dim)
    inputs = interior_points(6, input_dim).requires_grad_()
    embeddings = random_table(int(offsets[-1]), 2).requires_grad_()

    def encode(x, table):
        return torch_impl.hash_encode(x, table, offsets, resolutions)

    assert torch.autograd.gradcheck(encode, (inputs, embeddings))
    assert torch.autograd.gradgradcheck(encode, (inputs, embeddings))


@pytest.mark.parametrize("input_dim", [2, 3])
def test_corner_weights_partition_of_unity(input_dim):
    """The 2^D corner weights of every point and level sum to one: a table of ones encodes every point as ones,
    with dense and hashed levels (and points on the unit cube's faces, beyond which cells are clamped)."""
    offsets, resolutions = small_layout(input_dim)
    inputs = torch.cat([interior_points(100, input_dim), torch.zeros(1, input_dim), torch.ones(1, input_dim)])
    out = torch_impl.hash_encode(inputs, torch.ones(int(offsets[-1]), 2, dtype=torch.float64), offsets, resolutions)
    torch.testing.assert_close(out, torch.ones_like(out), rtol=0, atol=1e-12)
    # A single corner's weight: embeddings one-hot on one row of the dense level 0 (res 2: rows = corners).
    frac = torch.tensor([[0.25, 0.5, 0.75][:input_dim]], dtype=torch.float64)
    one_hot = torch.zeros(int(offsets[-1]), 1, dtype=torch.float64)
    one_hot[1] = 1.0  # vertex (1, 0, ...): offset 1 along axis 0 only
    weight = torch_impl.hash_encode(frac, one_hot, offsets, resolutions)[0, 0]
    assert weight.item() == pytest.approx(0.25 * 0.5 * (0.25 if input_dim == 3 else 1.0))


@pytest.mark.parametrize("input_dim", [2, 3])
def test_dense_levels_interpolate_a_linear_function_exactly(input_dim):
    """Vertex features sampled from linear functions of the vertex position come back exactly at any point:
    D-linear interpolation reproduces linear functions, so this checks the dense row order (axis 0 fastest)."""
    resolutions = [3, 5]
    slopes = torch.tensor([[1.0, -2.0, 0.5], [0.25, 3.0, -1.0]], dtype=torch.float64)[:, :input_dim]  # [C=2, D]
    intercepts = torch.tensor([0.5, -0.25], dtype=torch.float64)
    tables, offsets = [], [0]
    for res in resolutions:
        axes = torch.meshgrid(*[torch.arange(res, dtype=torch.float64)] * input_dim, indexing="ij")
        # Row of vertex (c_0, ..., c_{D-1}) is sum_d c_d res^d: flatten with axis 0 varying fastest.
        vertices = torch.stack([a.permute(*reversed(range(input_dim))).reshape(-1) for a in axes], dim=-1)
        tables.append(vertices / (res - 1) @ slopes.T + intercepts)  # [res^D, 2]
        offsets.append(offsets[-1] + res**input_dim)
    embeddings = torch.cat(tables)
    inputs = torch.cat([interior_points(50, input_dim), torch.zeros(1, input_dim), torch.ones(1, input_dim)])
    out = torch_impl.hash_encode(
        inputs, embeddings, torch.tensor(offsets, dtype=torch.int32), torch.tensor(resolutions, dtype=torch.int32)
    )
    expected = inputs @ slopes.T + intercepts  # [N, 2]
    torch.testing.assert_close(out, torch.cat([expected, expected], dim=1), rtol=0, atol=1e-12)


def test_module_clamps_inputs_outside_the_bound():
    encoder = HashEncoder(input_dim=3, num_levels=4, level_dim=2, base_resolution=4, log2_hashmap_size=8,
                          desired_resolution=2048)
    with torch.no_grad():
        encoder.embeddings.uniform_(-1, 1)
    bound = 2.0
    inside = (torch.rand(64, 3) * 2 - 1) * bound
    outside = inside.clone()
    outside[:32] *= 3  # some coordinates beyond +-bound
    out = encoder(outside, bound=bound)
    torch.testing.assert_close(out, encoder(outside.clamp(-bound, bound), bound=bound))
    assert out.shape == (64, encoder.output_dim)


def eikonal_loss(encoder, head, points):
    """Eikonal loss on the analytic normals of sdf = head(encoding(points))."""
    points = points.clone().requires_grad_()
    sdf = head(encoder(points, bound=1.0))
    (normals,) = torch.autograd.grad(sdf.sum(), points, create_graph=True)
    return ((normals.norm(dim=-1) - 1) ** 2).mean()


def test_eikonal_loss_through_analytic_normals_trains_the_grid():
    torch.manual_seed(0)
    encoder = HashEncoder(input_dim=3, num_levels=4, level_dim=2, base_resolution=4, log2_hashmap_size=10,
                          desired_resolution=2048)
    head = torch.nn.Sequential(torch.nn.Linear(encoder.output_dim, 16), torch.nn.Softplus(), torch.nn.Linear(16, 1))
    eikonal_loss(encoder, head, torch.rand(256, 3) * 2 - 1).backward()
    grad = encoder.embeddings.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert grad.abs().max() > 0


def test_bad_arguments_raise_value_error_with_the_shape():
    offsets, resolutions = small_layout(3)
    table = torch.zeros(int(offsets[-1]), 2)
    with pytest.raises(ValueError, match=r"\[4, 4\]"):
        hash_encode(torch.rand(4, 4), table, offsets, resolutions)
    with pytest.raises(ValueError, match=r"\[%d, 3\]" % table.shape[0]):
        hash_encode(torch.rand(4, 3), torch.zeros(table.shape[0], 3), offsets, resolutions)
    with pytest.raises(ValueError, match=r"float32 or float64, got torch.float16"):
        hash_encode(torch.rand(4, 3), table.half(), offsets, resolutions)
    with pytest.raises(ValueError, match=r"\[3\] and \[3\]"):
        hash_encode(torch.rand(4, 3), table, offsets[:-1], resolutions)
    with pytest.raises(ValueError, match=r"\[4, 2\]"):
        HashEncoder(input_dim=3, num_levels=2, level_dim=2, base_resolution=4, log2_hashmap_size=8,
                    desired_resolution=8)(torch.rand(4, 2), bound=1.0)


# ----------------------------------------------------------------------------------------------------------
# The autograd plumbing of the CUDA op (hashgrid._HashEncode / _HashEncodeGrad), with the kernels stood in by the
# twin: runs on CPU, so routing of gradients, the [L, N, C] layout and need-flags are checked without a GPU.


class TwinKernels:
    """`_hashencoder_cuda`'s three entry points computed with the twin and autograd, writing into the caller's
    buffers (overwrite outputs, accumulate gradients) as the kernels do."""

    @staticmethod
    def _public(features):
        # [L, N, C] kernel layout -> [N, L * C]
        num_levels, num_points, level_dim = features.shape
        return features.permute(1, 0, 2).reshape(num_points, num_levels * level_dim)

    @staticmethod
    def _store(buffer, features):
        # [N, L * C] -> the [L, N, C] buffer
        num_levels, num_points, level_dim = buffer.shape
        buffer.copy_(features.reshape(num_points, num_levels, level_dim).permute(1, 0, 2))

    @staticmethod
    def forward(inputs, embeddings, offsets, resolutions, outputs):
        TwinKernels._store(outputs, torch_impl.hash_encode(inputs, embeddings, offsets, resolutions))

    @staticmethod
    def backward(grad_outputs, inputs, embeddings, offsets, resolutions, grad_embeddings, grad_inputs):
        with torch.enable_grad():
            x, table = inputs.detach().requires_grad_(), embeddings.detach().requires_grad_()
            out = torch_impl.hash_encode(x, table, offsets, resolutions)
            gx, gt = torch.autograd.grad(out, (x, table), TwinKernels._public(grad_outputs))
        if grad_inputs is not None:
            grad_inputs += gx
        if grad_embeddings is not None:
            grad_embeddings += gt

    @staticmethod
    def double_backward(grad_grad_inputs, grad_outputs, inputs, embeddings, offsets, resolutions,
                        grad_grad_outputs, grad_embeddings, grad_inputs):
        with torch.enable_grad():
            x, table = inputs.detach().requires_grad_(), embeddings.detach().requires_grad_()
            g = TwinKernels._public(grad_outputs).detach().requires_grad_()
            out = torch_impl.hash_encode(x, table, offsets, resolutions)
            (gx,) = torch.autograd.grad(out, x, g, create_graph=True)
            gg, gt, gxx = torch.autograd.grad((gx * grad_grad_inputs).sum(), (g, table, x), allow_unused=True)
        if grad_grad_outputs is not None:
            TwinKernels._store(grad_grad_outputs, gg)
        if grad_embeddings is not None:
            grad_embeddings += gt
        if grad_inputs is not None and gxx is not None:
            grad_inputs += gxx


@pytest.mark.parametrize("input_dim", [2, 3])
def test_autograd_functions_gradgradcheck_with_twin_kernels(monkeypatch, input_dim):
    monkeypatch.setattr(hashgrid, "_POISON_OUTPUTS", True)
    offsets, resolutions = small_layout(input_dim)
    inputs = interior_points(5, input_dim).requires_grad_()
    embeddings = random_table(int(offsets[-1]), 2).requires_grad_()

    def encode(x, table):
        return hash_encode_with_backend(x, table, offsets, resolutions, TwinKernels)

    torch.testing.assert_close(encode(inputs, embeddings), torch_impl.hash_encode(inputs, embeddings, offsets, resolutions))
    assert torch.autograd.gradcheck(encode, (inputs, embeddings))
    assert torch.autograd.gradgradcheck(encode, (inputs, embeddings))


def test_input_gradients_only_skips_the_table_scatter_and_keeps_every_gradient(monkeypatch):
    """Analytic normals as in training: the create_graph pass inside `input_gradients_only` asks the kernels for
    no table gradient, and the final table gradient (SDF loss + Eikonal loss) is unchanged."""
    offsets, resolutions = small_layout(3)
    calls = []
    backward = TwinKernels.backward

    def recording_backward(grad_outputs, inputs, embeddings, offsets_, resolutions_, grad_embeddings, grad_inputs):
        calls.append(grad_embeddings is not None)
        return backward(grad_outputs, inputs, embeddings, offsets_, resolutions_, grad_embeddings, grad_inputs)

    monkeypatch.setattr(TwinKernels, "backward", staticmethod(recording_backward))
    inputs = interior_points(7, 3)
    v = torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    table_grads = []
    for inputs_only in (False, True):
        calls.clear()
        table = random_table(int(offsets[-1]), 2).requires_grad_()
        mode = hashgrid.BackwardMode()
        x = inputs.detach().requires_grad_()
        out = hash_encode_with_backend(x, table, offsets, resolutions, TwinKernels, mode)
        sdf = (out * torch.linspace(-1, 1, out.shape[1], dtype=out.dtype)).sum(-1) ** 2  # not linear in out
        mode.inputs_only = inputs_only
        (normals,) = torch.autograd.grad(sdf.sum(), x, create_graph=True)
        mode.inputs_only = False
        assert calls == [not inputs_only]  # the create_graph pass scattered into the table only when asked
        ((sdf.sum() + (normals * v).sum()) * 1.0).backward()
        table_grads.append(table.grad.clone())
    torch.testing.assert_close(table_grads[1], table_grads[0])


# ----------------------------------------------------------------------------------------------------------
# CUDA kernels (float32, and float64 for gradcheck) against the twin run in float64.


@pytest.fixture
def cuda_backend(monkeypatch):
    from hashencoder.backend import get_backend

    backend = get_backend()
    # A CUDA machine without a working extension is a failure, not a skip.
    assert backend is not None, "hashencoder: the CUDA extension failed to build or load"
    monkeypatch.setattr(hashgrid, "_POISON_OUTPUTS", True)
    return backend


def coverage_layout(input_dim):
    """Levels covering the kernel paths: dense (res 2, 5, 9, and 17 in 2-D) with row counts not multiples of 8,
    hashed (power-of-two tables, as the twin requires), res - 1 powers of two (borders exactly representable)
    and res 100."""
    levels = [(2, None), (5, None), (9, None), (17, 4096), (100, 2048), (129, 4096), (2049, 4096)]
    resolutions, offsets = [], [0]
    for res, rows in levels:
        resolutions.append(res)
        offsets.append(offsets[-1] + (res**input_dim if rows is None else rows))
    return torch.tensor(offsets, dtype=torch.int32), torch.tensor(resolutions, dtype=torch.int32)


def grid_points(num_points, input_dim, seed=0):
    """fp32 points m / 4096 (m integer): x * (res - 1) is then exact in fp32 and fp64 alike (fewer than 24 bits),
    so the kernel and the float64 twin pick the same cells, which the gradients w.r.t. x depend on. Many points
    sit exactly on cell borders (x * (res - 1) integer); the first ones are the corners x = 0 and x = 1 and a
    point mixing 0, 1 and 1/2."""
    generator = torch.Generator().manual_seed(seed)
    points = torch.randint(0, 4097, (num_points, input_dim), generator=generator).float() / 4096
    special = torch.tensor([[0.0] * input_dim, [1.0] * input_dim, [0.0, 1.0, 0.5][:input_dim]])
    if num_points > 1:
        points[: min(num_points - 1, 3)] = special[: min(num_points - 1, 3)]
    return points


def assert_close_scaled(actual, expected, tol, name):
    """|actual - expected| <= tol * max|expected| elementwise: sums of many atomics have absolute, not relative,
    rounding errors."""
    actual = actual.double()
    scale = expected.abs().max().item() if expected.numel() else 0.0
    assert torch.isfinite(actual).all(), f"{name}: non-finite values"
    torch.testing.assert_close(actual, expected, rtol=0, atol=tol * max(scale, 1e-12), msg=lambda m: f"{name}: {m}")


def encode_and_differentiate(encode, inputs, embeddings, grad_outputs, grad_grad_inputs, grad_grad_embeddings):
    """Forward, first-order gradients, and the gradients of an Eikonal-style loss <grad_inputs, v> (alone and
    plus a loss <grad_embeddings, W> on the table gradient) w.r.t. embeddings, grad_outputs and inputs."""
    inputs = inputs.detach().requires_grad_()
    embeddings = embeddings.detach().requires_grad_()
    grad_outputs = grad_outputs.detach().requires_grad_()
    out = encode(inputs, embeddings)
    grad_inputs, grad_embeddings = torch.autograd.grad(out, (inputs, embeddings), grad_outputs, create_graph=True)
    v = grad_grad_inputs.to(grad_inputs.dtype)
    (eikonal_only,) = torch.autograd.grad(grad_inputs, embeddings, v, retain_graph=True)
    second = torch.autograd.grad(
        (grad_inputs, grad_embeddings), (embeddings, grad_outputs, inputs), (v, grad_grad_embeddings.to(embeddings.dtype))
    )
    return {
        "outputs": out,
        "grad_inputs": grad_inputs,
        "grad_embeddings": grad_embeddings,
        "eikonal grad_embeddings": eikonal_only,
        "second grad_embeddings": second[0],
        "second grad_outputs": second[1],
        "second grad_inputs": second[2],
    }


@requires_cuda
@pytest.mark.parametrize("level_dim", [1, 2, 4, 8])
@pytest.mark.parametrize("input_dim", [2, 3])
@pytest.mark.parametrize("num_points", [1, 7, 1001, 65537])
def test_cuda_matches_twin(cuda_backend, num_points, input_dim, level_dim):
    offsets, resolutions = coverage_layout(input_dim)
    offsets, resolutions = offsets.cuda(), resolutions.cuda()
    inputs = grid_points(num_points, input_dim).cuda()
    embeddings = random_table(int(offsets[-1]), level_dim, dtype=torch.float32, seed=2).cuda()
    num_levels = len(resolutions)
    generator = torch.Generator().manual_seed(3)
    # Cotangents of a mean-reduced loss (each scaled by 1/sqrt(N)), as in training.
    cotangent_scale = num_points**-0.5
    grad_outputs = (torch.randn(num_points, num_levels * level_dim, generator=generator) * cotangent_scale).cuda()
    grad_grad_inputs = (torch.randn(num_points, input_dim, generator=generator) * cotangent_scale).cuda()
    grad_grad_embeddings = torch.randn(embeddings.shape, generator=generator).cuda()

    def cuda_encode(x, table):
        return hash_encode_with_backend(x, table, offsets, resolutions, cuda_backend)

    def twin_encode(x, table):
        return torch_impl.hash_encode(x, table, offsets, resolutions)

    args = (grad_grad_inputs, grad_grad_embeddings)
    got = encode_and_differentiate(cuda_encode, inputs, embeddings, grad_outputs, *args)
    want = encode_and_differentiate(twin_encode, inputs.double(), embeddings.double(), grad_outputs.double(), *args)
    for name in want:
        # Sums of up to N fp32 atomics (rounding grows like a random walk), else per-point fp32 results.
        tol = 2e-5 if "grad_embeddings" in name else 2e-6
        assert got[name].dtype == torch.float32, name
        assert_close_scaled(got[name], want[name], tol, name)


@requires_cuda
@pytest.mark.parametrize("input_dim", [2, 3])
def test_cuda_gradcheck_and_gradgradcheck_float64(cuda_backend, input_dim):
    offsets, resolutions = (t.cuda() for t in small_layout(input_dim))
    inputs = interior_points(6, input_dim).cuda().requires_grad_()
    embeddings = random_table(int(offsets[-1]), 2).cuda().requires_grad_()

    def encode(x, table):
        return hash_encode_with_backend(x, table, offsets, resolutions, cuda_backend)

    # Atomics sum in varying order: allow reentrant runs to differ by rounding.
    assert torch.autograd.gradcheck(encode, (inputs, embeddings), nondet_tol=1e-12)
    assert torch.autograd.gradgradcheck(encode, (inputs, embeddings), nondet_tol=1e-12)


@requires_cuda
def test_cuda_dispatch_and_module(cuda_backend, monkeypatch):
    encoder = HashEncoder(input_dim=3, num_levels=8, level_dim=2, base_resolution=8, log2_hashmap_size=12,
                          desired_resolution=2048)
    with torch.no_grad():
        encoder.embeddings.uniform_(-1, 1)
    points = torch.rand(4096, 3) * 2.4 - 1.2  # some outside the bound, clamped
    expected = encoder(points, bound=1.0)

    def twin_must_not_run(*args):
        raise AssertionError("the PyTorch twin ran on CUDA inputs")

    monkeypatch.setattr(torch_impl, "hash_encode", twin_must_not_run)
    encoder.cuda()
    got = encoder(points.cuda(), bound=1.0)
    assert_close_scaled(got.cpu().double(), expected.double(), 2e-6, "module outputs")
    # Eikonal training through the kernels.
    head = torch.nn.Sequential(torch.nn.Linear(encoder.output_dim, 16), torch.nn.Softplus(), torch.nn.Linear(16, 1))
    eikonal_loss(encoder, head.cuda(), points.cuda()).backward()
    assert torch.isfinite(encoder.embeddings.grad).all() and encoder.embeddings.grad.abs().max() > 0


@requires_cuda
def test_cuda_rejects_bad_arguments(cuda_backend):
    offsets, resolutions = (t.cuda() for t in small_layout(3))
    embeddings = torch.zeros(int(offsets[-1]), 2, device="cuda")
    inputs = torch.zeros(4, 3, device="cuda")
    outputs = torch.empty(3, 4, 2, device="cuda")  # [L, N, C]
    with pytest.raises(RuntimeError, match="inputs must be Float, got Double"):
        cuda_backend.forward(inputs.double(), embeddings, offsets, resolutions, outputs)
    with pytest.raises(RuntimeError, match="embeddings must be float32 or float64"):
        cuda_backend.forward(inputs.half(), embeddings.half(), offsets, resolutions, outputs.half())
    with pytest.raises(RuntimeError, match=r"outputs must have shape \[3, 4, 2\], got \[4, 6\]"):
        cuda_backend.forward(inputs, embeddings, offsets, resolutions, torch.empty(4, 6, device="cuda"))
    with pytest.raises(RuntimeError, match="contiguous"):
        cuda_backend.forward(torch.zeros(3, 4, device="cuda").t(), embeddings, offsets, resolutions, outputs)
    with pytest.raises(RuntimeError, match="CUDA tensor"):
        cuda_backend.forward(inputs.cpu(), embeddings, offsets, resolutions, outputs)


@requires_cuda
def test_cuda_handles_no_points(cuda_backend):
    """A chunk with no samples (all rays miss the occupied cells) encodes to [0, L * C] and differentiates."""
    encoder = HashEncoder(input_dim=3, num_levels=4, level_dim=2, base_resolution=16, log2_hashmap_size=10,
                          desired_resolution=64).cuda()
    x = torch.zeros(0, 3, device="cuda", requires_grad=True)
    out = encoder(x, bound=1.0)
    assert out.shape == (0, encoder.output_dim)
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    (grad.sum() + out.sum()).backward()
    assert grad.shape == (0, 3) and torch.equal(encoder.embeddings.grad, torch.zeros_like(encoder.embeddings))
