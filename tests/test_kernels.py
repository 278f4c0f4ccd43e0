"""rotate_distance: the custom op, its backends against the plain formula, dtypes, bad inputs.

The reference is the plain broadcast implementation (a gathered ``(B, C, 2d)`` difference and
``torch.norm`` of the real and imaginary parts), which autograd differentiates on its own, and a
loop over Python complex numbers.

The oracle tests run for every backend on every device where it can run: ``reference`` and
``native`` on CPU; ``triton`` on CPU tensors under Triton's interpreter, in a child pytest that
``test_triton_kernels_pass_the_oracle_tests_under_the_interpreter`` starts (Triton reads
``TRITON_INTERPRET`` when it is imported); ``reference`` and ``triton`` on CUDA tensors, marked
``cuda`` and skipped where no CUDA device is present.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch.autograd import gradcheck

from lightning_kge.errors import ArgumentError
from lightning_kge.kernels import backends, rotate_native, rotate_reference, rotate_triton
from lightning_kge.kernels.rotate_distance import BackendUnavailableError, rotate_distance

B, E, D = 5, 9, 3
MODES = ["per_query", "shared", "all"]
HAS_CUDA = torch.cuda.is_available()
INTERPRETED = rotate_triton.interpreting()
CUDA = [pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device; none is present here")]

CASES = [
    pytest.param(("reference", "cpu"), id="reference_cpu"),
    pytest.param(("native", "cpu"), id="native_cpu"),
    pytest.param(("triton", "cpu"), id="triton_interpreted"),
    pytest.param(("reference", "cuda"), id="reference_cuda", marks=CUDA),
    pytest.param(("triton", "cuda"), id="triton_cuda", marks=CUDA),
]
"""(backend, device) pairs of the oracle tests."""


def _skip_unless_runnable(backend: str, device: str) -> None:
    """Skip (saying why) where ``backend`` cannot run for ``device`` tensors here."""
    if backend == "native" and rotate_native.unavailable() is not None:
        pytest.skip(f"the native kernels did not build: {rotate_native.unavailable()}")
    if backend == "triton":
        if rotate_triton.unavailable() is not None:
            pytest.skip(f"triton does not import: {rotate_triton.unavailable()}")
        if device == "cpu" and HAS_CUDA and not INTERPRETED:
            pytest.skip("CUDA is present: the triton_cuda cases run the kernels on the GPU instead")
        if device == "cpu" and not INTERPRETED:
            pytest.skip("run under TRITON_INTERPRET=1 by "
                        "test_triton_kernels_pass_the_oracle_tests_under_the_interpreter")


@pytest.fixture(params=CASES)
def case(request) -> tuple[str, str]:
    """A (backend, device) pair that can run here."""
    _skip_unless_runnable(*request.param)
    return request.param


UNCHECKED = {("triton", "cpu"), ("reference", "cuda"), ("triton", "cuda")}
"""Cases whose ids are not range-checked (no host sync): out-of-range ids give NaN."""


@pytest.fixture(params=[c for c in CASES if c.values[0] in UNCHECKED])
def unchecked_case(request) -> tuple[str, str]:
    """A (backend, device) pair whose ids are not range-checked (no host sync), that can run here."""
    _skip_unless_runnable(*request.param)
    return request.param


def plain_distance(query: torch.Tensor, table: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """``Σ_i |q_i − t_i|`` with every ``(B, C, 2d)`` intermediate materialised."""
    candidates = table if index is None else table[index]
    if candidates.dim() == 2:
        candidates = candidates[None].expand(query.shape[0], -1, -1)
    re_q, im_q = query[:, None, :].chunk(2, dim=-1)
    re_c, im_c = candidates.chunk(2, dim=-1)
    return torch.stack([re_q - re_c, im_q - im_c], dim=0).norm(dim=0).sum(dim=-1)


def loop_distance(query: torch.Tensor, table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The same, one (query, candidate) pair at a time with Python complex numbers."""
    d = query.shape[1] // 2
    out = torch.zeros(index.shape, dtype=torch.float64)
    for b in range(index.shape[0]):
        for c in range(index.shape[1]):
            row = table[index[b, c]]
            out[b, c] = sum(
                abs(complex(query[b, i], query[b, d + i]) - complex(row[i], row[d + i])) for i in range(d)
            )
    return out


def inputs(dtype: torch.dtype = torch.float64, seed: int = 0, b: int = B, e: int = E, d: int = D,
           device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(b, 2 * d, generator=g, dtype=dtype).to(device).requires_grad_()
    table = torch.randn(e, 2 * d, generator=g, dtype=dtype).to(device).requires_grad_()
    return query, table


def index_for(mode: str, b: int = B, e: int = E, c: int = 7, seed: int = 1, device: str = "cpu") -> torch.Tensor | None:
    g = torch.Generator().manual_seed(seed)
    if mode == "per_query":
        index = torch.randint(e, (b, c), generator=g)
        index[0, :3] = 2  # an entity repeated in one row and across rows
        index[1, 0] = 2
        return index.to(device)
    if mode == "shared":
        return torch.tensor([4, 0, 4, 8, 1, 4, 3])[:c].to(device)  # repeated ids
    return None


def both_gradients(fn, query, table, index, upstream):
    out = fn(query, table, index)
    return (out, *torch.autograd.grad(out, (query, table), upstream))


def on_cpu(tensors, dtype=torch.float64):
    return [t.detach().to("cpu", dtype) for t in tensors]


# --- the oracle tests, per backend and device ----------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_forward_and_gradients_match_the_plain_implementation(case, mode: str) -> None:
    # d = 37 and C = 7 are not multiples of any tile: masked tails are exercised.
    backend, device = case
    query, table = inputs(torch.float32, b=19, e=23, d=37, device=device)
    index = index_for(mode, b=19, e=23, device=device)
    upstream = torch.randn(19, 23 if index is None else 7, generator=torch.Generator().manual_seed(3)).to(device)
    ours = both_gradients(lambda q, t, i: rotate_distance(q, t, i, backend=backend), query, table, index, upstream)
    cpu = [x.detach().double().cpu().requires_grad_() for x in (query, table)]
    plain = both_gradients(plain_distance, *cpu, None if index is None else index.cpu(), upstream.double().cpu())
    assert [x.dtype for x in ours] == [torch.float32] * 3
    for got, expected in zip(on_cpu(ours), plain):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("mode", MODES)
def test_gradients_pass_gradcheck_in_float64(case, mode: str) -> None:
    backend, device = case
    query, table = inputs(device=device)
    index = index_for(mode, device=device)
    # The interpreter runs each kernel launch in Python: check one random projection (fast mode).
    fast = backend == "triton" and device == "cpu"
    assert gradcheck(lambda q, t: rotate_distance(q, t, index, backend=backend), (query, table), fast_mode=fast)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_are_computed_in_float32(case, dtype: torch.dtype) -> None:
    backend, device = case
    query, table = inputs(torch.float32, d=8, device=device)
    index = index_for("per_query", device=device)
    half_query, half_table = query.detach().to(dtype).requires_grad_(), table.detach().to(dtype).requires_grad_()
    upstream = torch.randn(B, 7, generator=torch.Generator().manual_seed(3)).to(device)
    ours = both_gradients(lambda q, t, i: rotate_distance(q, t, i, backend=backend), half_query, half_table, index,
                          upstream.to(dtype))
    assert [x.dtype for x in ours] == [dtype] * 3
    # Expected: the float32 maths on the rounded inputs, rounded to ``dtype`` at the end.
    exact = [x.detach().to(dtype).double().cpu().requires_grad_() for x in (query, table)]
    plain = both_gradients(plain_distance, *exact, index.cpu(), upstream.to(dtype).double().cpu())
    for got, expected in zip(ours, plain):
        torch.testing.assert_close(got.cpu(), expected.to(dtype))


def test_gradient_at_a_zero_complex_difference_is_the_zero_subgradient(case) -> None:
    backend, device = case
    query, table = inputs(torch.float32, d=4)
    with torch.no_grad():
        table[2] = query[0]  # q_0 = t_2 in every coordinate: |z| = 0
        table[5, [0, 4]] = query[1, [0, 4]]  # one coordinate only
    index = torch.tensor([[2, 5, 1], [5, 2, 2], [0, 1, 2], [3, 4, 5], [2, 2, 2]])
    plain = both_gradients(plain_distance, query, table, index, torch.ones(B, 3))
    query, table = (x.detach().to(device).requires_grad_() for x in (query, table))
    ours = on_cpu(both_gradients(lambda q, t, i: rotate_distance(q, t, i, backend=backend), query, table,
                                 index.to(device), torch.ones(B, 3, device=device)), torch.float32)
    assert ours[0][0, 0] == 0
    for got, expected in zip(ours, plain):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["per_query", "shared"])
def test_table_rows_that_no_pair_uses_get_zero_gradient(case, mode: str) -> None:
    backend, device = case
    query, table = inputs(device=device)
    ids = [[1, 3], [3, 3], [1, 1], [0, 3], [1, 0]] if mode == "per_query" else [3, 1, 0, 1]
    rotate_distance(query, table, torch.tensor(ids, device=device), backend=backend).sum().backward()
    grad = table.grad.cpu()
    assert (grad[[2, 4, 5, 6, 7, 8]] == 0).all()
    assert (grad[[0, 1, 3]].abs().sum(1) > 0).all()


@pytest.mark.parametrize("mode", ["per_query", "shared"])
def test_sparse_row_gradients_equal_the_touched_rows_of_the_dense_gradient(case, mode: str) -> None:
    # RotatE's sparse path: the kernel scores against the unique candidate rows, read by a sparse lookup.
    backend, device = case
    query, table = inputs(device=device)
    index = index_for(mode, device=device)
    upstream = torch.randn(B, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(3)).to(device)
    dense = both_gradients(lambda q, t, i: rotate_distance(q, t, i, backend=backend), query, table, index, upstream)
    weight = table.detach().clone().requires_grad_()
    unique, inverse = torch.unique(index, return_inverse=True)
    rows = torch.nn.functional.embedding(unique, weight, sparse=True)
    out = rotate_distance(query, rows, inverse, backend=backend)
    grad_query, grad_table = torch.autograd.grad(out, (query, weight), upstream)
    assert grad_table.is_sparse
    grad_table = grad_table.coalesce()
    assert torch.equal(grad_table.indices()[0], unique)  # one row per touched entity, each once
    got = on_cpu([out, grad_query, grad_table.values()])
    expected = on_cpu([dense[0], dense[1], dense[2][unique]])
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    untouched = torch.ones(E, dtype=torch.bool, device=device)
    untouched[unique] = False
    assert (dense[2][untouched] == 0).all()
    fast = backend == "triton" and device == "cpu"  # one random projection under the interpreter
    rows = rows.detach().requires_grad_()
    assert gradcheck(lambda q, t: rotate_distance(q, t, inverse, backend=backend), (query, rows), fast_mode=fast)


@pytest.mark.parametrize("shape", [(B, 0), (0, 4), (0,)])
def test_calls_without_pairs_give_empty_distances_and_zero_gradients(case, shape: tuple[int, ...]) -> None:
    backend, device = case
    query, table = inputs(device=device)
    if shape[0] == 0 and len(shape) == 2:
        query = query[:0]
    index = torch.zeros(shape, dtype=torch.long, device=device)
    out = rotate_distance(query, table, index, backend=backend)
    assert out.shape == (query.shape[0], shape[-1])
    grad_q, grad_t = torch.autograd.grad(out.sum(), (query, table))
    assert (grad_q == 0).all() and (grad_t == 0).all()


def test_unchecked_ids_outside_the_table_give_nan_and_no_gradient(unchecked_case) -> None:
    # The backend is called directly: rotate_distance range-checks CPU tensors before any backend.
    backend, device = unchecked_case
    module = {"reference": rotate_reference, "triton": rotate_triton}[backend]
    query, table = inputs(device=device)
    index = torch.tensor([[0, E, 1], [-1, 2, 2], [1, 1, 1], [3, 4, 5], [E + 7, 0, 0]], device=device)
    good = index.clamp(0, E - 1)
    out = module.forward(query.detach(), table.detach(), index)
    bad = (index < 0) | (index >= E)
    assert out[bad].isnan().all()
    torch.testing.assert_close(out[~bad], plain_distance(query, table, good)[~bad].detach())
    grad = torch.ones(B, 3, dtype=query.dtype, device=device)
    grad_q, grad_t = module.backward(grad, query.detach(), table.detach(), index, True, True)
    expected = torch.autograd.grad(plain_distance(query, table, good), (query, table), grad.masked_fill(bad, 0))
    torch.testing.assert_close(grad_q, expected[0])
    torch.testing.assert_close(grad_t, expected[1])


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device; none is present here")
@pytest.mark.parametrize("backend", ["auto", "reference", "triton"])
def test_cuda_forward_and_backward_never_synchronise_with_the_host(backend: str) -> None:
    if backend == "triton" and rotate_triton.unavailable() is not None:
        pytest.skip(f"triton does not import: {rotate_triton.unavailable()}")
    query, table = inputs(torch.float32, b=64, e=100, d=16, device="cuda")
    index = torch.randint(100, (64, 32), device="cuda")

    def step() -> None:
        rotate_distance(query, table, index, backend=backend).sum().backward()
        rotate_distance(query, table, index[0], backend=backend).sum().backward()

    step()  # autotuning times the kernels (it synchronises) on the first call of each size
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")


# --- the op --------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["reference", "native"])
@pytest.mark.parametrize("mode", MODES)
def test_the_op_and_its_backward_pass_opcheck(backend: str, mode: str) -> None:
    if backend == "native" and rotate_native.unavailable() is not None:
        pytest.skip(f"the native kernels did not build: {rotate_native.unavailable()}")
    query, table = inputs()
    index = index_for(mode)
    torch.library.opcheck(torch.ops.lightning_kge.rotate_distance.default, (query, table, index, backend))
    grad = torch.randn(B, E if index is None else index.shape[-1], dtype=torch.float64)
    for need_query, need_table in ((True, True), (True, False), (False, True)):
        torch.library.opcheck(torch.ops.lightning_kge.rotate_distance_backward.default,
                              (grad, query.detach(), table.detach(), index, backend, need_query, need_table))


def test_a_compiled_training_step_traces_through_the_op_without_a_graph_break() -> None:
    torch.manual_seed(0)
    entity, relation = torch.nn.Embedding(20, 8), torch.nn.Embedding(4, 4)

    def loss_of(h: torch.Tensor, r: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        re, im = entity(h).chunk(2, dim=-1)
        cos, sin = torch.cos(relation(r)), torch.sin(relation(r))
        query = torch.cat([re * cos - im * sin, re * sin + im * cos], dim=-1)
        return torch.nn.functional.logsigmoid(6.0 - rotate_distance(query, entity.weight, index)).mean()

    h, r, index = torch.randint(20, (5,)), torch.randint(4, (5,)), torch.randint(20, (5, 7))
    explanation = torch._dynamo.explain(loss_of)(h, r, index)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    assert "lightning_kge.rotate_distance" in str(explanation.graphs[0].graph)
    torch._dynamo.reset()
    compiled = torch.compile(loss_of, fullgraph=True, backend="aot_eager")  # AOTAutograd traces the backward op too
    compiled(h, r, index).backward()
    got = entity.weight.grad.clone(), relation.weight.grad.clone()
    entity.weight.grad = relation.weight.grad = None
    loss_of(h, r, index).backward()
    torch.testing.assert_close(got, (entity.weight.grad, relation.weight.grad))


def test_distances_equal_a_loop_over_pairs_of_complex_numbers() -> None:
    query, table = inputs()
    index = index_for("per_query")
    expected = loop_distance(query.detach(), table.detach(), index)
    torch.testing.assert_close(rotate_distance(query, table, index), expected)


def test_reference_chunking_does_not_change_results(monkeypatch) -> None:
    query, table = inputs(b=7, e=13, d=5)
    for mode in MODES:
        index = index_for(mode, b=7, e=13, c=7)
        upstream = torch.randn(7, 13 if index is None else 7, dtype=torch.float64)
        whole = both_gradients(lambda q, t, i: rotate_distance(q, t, i, backend="reference"), query, table, index,
                               upstream)
        for pairs in (1, 3, 10):  # chunks of 1, 3 and 10 (query, candidate) pairs
            monkeypatch.setattr(rotate_reference, "CHUNK_BYTES", pairs * 10 * 8)
            chunked = both_gradients(lambda q, t, i: rotate_distance(q, t, i, backend="reference"), query, table,
                                     index, upstream)
            for got, expected in zip(chunked, whole):
                torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
        monkeypatch.undo()


def test_autocast_bfloat16_keeps_float32_distances_and_gradients() -> None:
    query, table = inputs(torch.float32, d=8)
    index = index_for("shared")
    upstream = torch.randn(B, 7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = rotate_distance(query, table, index)
    assert out.dtype == torch.float32
    got = (out, *torch.autograd.grad(out, (query, table), upstream))
    for a, b in zip(got, both_gradients(plain_distance, query, table, index, upstream)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_mixed_float_dtypes_are_promoted() -> None:
    query, table = inputs(torch.float64)
    out = rotate_distance(query.float(), table, index_for("shared"))
    assert out.dtype == torch.float64
    grad_q, grad_t = torch.autograd.grad(out.sum(), (query, table))
    assert grad_q.dtype == grad_t.dtype == torch.float64


def test_second_derivatives_are_refused() -> None:
    query, table = inputs()
    (grad_q,) = torch.autograd.grad(rotate_distance(query, table).sum(), query, create_graph=True)
    with pytest.raises(RuntimeError, match="no autograd formula"):
        grad_q.sum().backward()


# --- choosing a backend ------------------------------------------------------------------------------


def test_auto_picks_native_on_cpu_where_it_builds_else_the_reference(monkeypatch) -> None:
    cpu = torch.device("cpu")
    expected = "native" if rotate_native.unavailable() is None else "reference"
    assert backends.resolve("auto", cpu) == expected
    monkeypatch.setattr(rotate_native, "unavailable", lambda: "no C++ compiler")
    assert backends.resolve("auto", cpu) == "reference"
    query, table = inputs()
    torch.testing.assert_close(rotate_distance(query, table), plain_distance(query, table, None))


def test_auto_picks_triton_for_cuda_tensors_where_triton_imports(monkeypatch) -> None:
    cuda = torch.device("cuda")
    assert backends.resolve("auto", cuda) == ("triton" if rotate_triton.unavailable() is None else "reference")
    monkeypatch.setattr(rotate_triton, "unavailable", lambda: "ModuleNotFoundError: No module named 'triton'")
    backends._warn_once.cache_clear()
    with pytest.warns(RuntimeWarning, match="triton does not import"):
        assert backends.resolve("auto", cuda) == "reference"


@pytest.mark.parametrize(
    ("backend", "device", "patch", "why"),
    [
        ("native", "cuda", None, "takes CPU tensors"),
        ("native", "cpu", "native", "did not build .no C.. compiler"),
        ("triton", "cpu", "triton", "triton does not import"),
        ("triton", "meta", None, "takes CUDA tensors"),
    ],
)
def test_an_unavailable_backend_asked_for_by_name_raises_saying_why(monkeypatch, backend, device, patch, why) -> None:
    if patch == "native":
        monkeypatch.setattr(rotate_native, "unavailable", lambda: "no C++ compiler")
    if patch == "triton":
        monkeypatch.setattr(rotate_triton, "unavailable", lambda: "ModuleNotFoundError: No module named 'triton'")
    if backend == "triton" and patch is None and rotate_triton.unavailable() is not None:
        pytest.skip("triton is not installed: the 'does not import' case covers it")
    with pytest.raises(BackendUnavailableError, match=why) as error:
        backends.resolve(backend, torch.device(device))
    assert f"backend='{backend}'" in str(error.value)


def test_triton_for_cpu_tensors_outside_the_interpreter_raises(monkeypatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(rotate_triton, "unavailable", lambda: None)
    query, table = inputs()
    with pytest.raises(BackendUnavailableError, match="TRITON_INTERPRET=1"):
        rotate_distance(query, table, backend="triton")


def test_an_unknown_backend_name_raises_naming_the_choices() -> None:
    query, table = inputs()
    with pytest.raises(ArgumentError, match="backend='cuda'.*'auto', 'reference', 'native', 'triton'"):
        rotate_distance(query, table, backend="cuda")


# --- bad inputs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "table", "index", "error", "match"),
    [
        (torch.zeros(2, 6), torch.zeros(4, 4), None, ValueError, "share an even width"),
        (torch.zeros(2, 5), torch.zeros(4, 5), None, ValueError, "even width"),
        (torch.zeros(6), torch.zeros(4, 6), None, ValueError, "even width"),
        (torch.zeros(2, 6, dtype=torch.long), torch.zeros(4, 6, dtype=torch.long), None, ValueError, "floating"),
        (torch.zeros(2, 6), torch.zeros(4, 6), torch.zeros(3, 2, dtype=torch.long), ValueError, "B = 2"),
        (torch.zeros(2, 6), torch.zeros(4, 6), torch.zeros(2, 2, 2, dtype=torch.long), ValueError, "B = 2"),
        (torch.zeros(2, 6), torch.zeros(4, 6), torch.zeros(2, 2), ValueError, "integer ids"),
        (torch.zeros(2, 6), torch.zeros(4, 6), torch.ones(2, 2, dtype=torch.bool), ValueError, "integer ids"),
        (torch.zeros(2, 6), torch.zeros(4, 6, device="meta"), None, ValueError, "share a device"),
        (torch.zeros(2, 6), torch.zeros(4, 6), torch.zeros(2, 2, dtype=torch.long, device="meta"), ValueError,
         "device of query"),
    ],
)
def test_bad_inputs_raise(query, table, index, error, match) -> None:
    with pytest.raises(error, match=match):
        rotate_distance(query, table, index)


@pytest.mark.parametrize("backend", ["reference", "native"])
@pytest.mark.parametrize("index", [torch.tensor([0, 4]), torch.tensor([[0], [-1]])])
def test_ids_outside_the_table_raise_on_cpu(backend: str, index: torch.Tensor) -> None:
    if backend == "native" and rotate_native.unavailable() is not None:
        pytest.skip(f"the native kernels did not build: {rotate_native.unavailable()}")
    with pytest.raises(IndexError, match=r"outside \[0, 4\)"):
        rotate_distance(torch.zeros(2, 6), torch.zeros(4, 6), index, backend=backend)


# --- the native CPU backend ---------------------------------------------------------------------------


@pytest.fixture
def native() -> None:
    if rotate_native.unavailable() is not None:
        pytest.skip(f"the native kernels did not build: {rotate_native.unavailable()}")


@pytest.mark.parametrize("mode", ["per_query", "shared"])
def test_native_results_do_not_depend_on_the_thread_count(native, mode: str) -> None:
    query, table = inputs(b=33, e=400, d=40)  # large enough to be split among threads
    g = torch.Generator().manual_seed(2)
    index = torch.randint(400, (33, 300) if mode == "per_query" else (300,), generator=g)
    upstream = torch.randn(33, 300, dtype=torch.float64, generator=g)
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 3):
            torch.set_num_threads(threads)
            results.append(both_gradients(lambda q, t, i: rotate_distance(q, t, i, backend="native"),
                                          query, table, index, upstream))
    finally:
        torch.set_num_threads(before)
    for got, expected in zip(*results):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_native_table_gradients_accumulate_and_never_overwrite_a_held_gradient(native) -> None:
    query, table = inputs()
    index = index_for("per_query")
    rotate_distance(query, table, index, backend="native").sum().backward()
    once = table.grad.clone()
    rotate_distance(query, table, index, backend="native").sum().backward()  # accumulates (no zero_grad)
    torch.testing.assert_close(table.grad, 2 * once)
    held = table.grad
    table.grad = None  # what zero_grad(set_to_none=True) does, while a reference is still held
    rotate_distance(query, table, index, backend="native").pow(2).sum().backward()
    torch.testing.assert_close(held, 2 * once)
    table.grad = None  # the same table twice in one graph: both gradients are summed
    (rotate_distance(query, table, index, backend="native").sum()
     + rotate_distance(query, table, None, backend="native").sum()).backward()
    expected = torch.autograd.grad(plain_distance(query, table, index).sum() + plain_distance(query, table, None).sum(),
                                   table)[0]
    torch.testing.assert_close(table.grad, expected)


def test_native_build_failure_warns_once_and_says_why(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("LIGHTNING_KGE_CACHE", str(tmp_path / "cache"))
    with pytest.warns(RuntimeWarning, match="native CPU kernels are unavailable.*reference backend") as caught:
        reason = rotate_native.unavailable.__wrapped__()
    assert reason and len([w for w in caught if "native CPU kernels" in str(w.message)]) == 1


def test_native_kernels_cost_the_ids_range_not_the_table_and_zero_the_rest(monkeypatch) -> None:
    """A chunk of consecutive ids (as evaluation scores them) in a large table: the distances and the
    table gradient equal the reference's, with every row outside the chunk's range zero."""
    if rotate_native.unavailable() is not None:
        pytest.skip(f"the native kernels did not build: {rotate_native.unavailable()}")
    generator = torch.Generator().manual_seed(3)
    table = torch.randn(50, 8, generator=generator, dtype=torch.float64, requires_grad=True)
    query = torch.randn(4, 8, generator=generator, dtype=torch.float64, requires_grad=True)
    for index in (torch.arange(20, 30), torch.randint(20, 30, (4, 6), generator=generator)):
        got = rotate_distance(query, table, index, backend="native")
        want = rotate_distance(query, table, index, backend="reference")
        torch.testing.assert_close(got, want)
        weights = torch.randn(got.shape, generator=generator, dtype=torch.float64)
        grad = torch.autograd.grad((got * weights).sum(), table)[0]
        torch.testing.assert_close(grad, torch.autograd.grad((want * weights).sum(), table)[0])
        assert (grad[:20] == 0).all() and (grad[30:] == 0).all()


def test_a_native_build_announces_itself_in_one_line(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("LIGHTNING_KGE_CACHE", str(tmp_path / "cache"))
    with pytest.warns(RuntimeWarning):
        rotate_native.unavailable.__wrapped__()
    lines = [line for line in capsys.readouterr().err.splitlines() if "building the native CPU kernels" in line]
    assert len(lines) == 1 and str(tmp_path / "cache" / "kernels") in lines[0]


# --- the Triton backend without a GPU ------------------------------------------------------------------


def test_triton_kernels_pass_the_oracle_tests_under_the_interpreter() -> None:
    if rotate_triton.unavailable() is not None:
        pytest.skip(f"triton does not import: {rotate_triton.unavailable()}")
    if HAS_CUDA:
        pytest.skip("CUDA is present: the cuda-marked tests run the Triton kernels on the GPU instead")
    if INTERPRETED:
        pytest.skip("already the interpreter run")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "triton_interpreted"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-2000:]


def _signature(kernel: str) -> dict[str, str]:
    pointers = ["q_ptr", "t_ptr"]
    pointers += ["order_ptr", "starts_ptr", "g_ptr"] if kernel == "table_gradient" else ["ids_ptr"]
    pointers += ["g_ptr"] if kernel == "query_gradient" else []
    ints = ("ids_ptr", "order_ptr", "starts_ptr")
    signature = {name: "*i64" if name in ints else "*fp32" for name in [*pointers, "out_ptr"]}
    return {**signature, "B": "i32", "C": "i32", "E": "i32", "d": "i32", "SHARED": "constexpr"}


@pytest.mark.filterwarnings("ignore:TRITON_DEFAULT_FP_FUSION")
@pytest.mark.parametrize("kernel", ["distance", "query_gradient", "table_gradient"])
def test_triton_kernels_compile_for_an_h100_without_a_gpu(kernel: str) -> None:
    """Ahead-of-time compilation to an sm_90 cubin catches what the interpreter does not check.

    Each kernel is compiled in both index modes with its largest tile (the configuration most
    likely to exceed the registers or shared memory of a multiprocessor).
    """
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    autotuned = rotate_triton.kernels(False)[kernel]
    config = max(autotuned.configs, key=lambda c: torch.tensor(list(c.kwargs.values())).prod().item())
    for shared in (True, False):
        signature = {**_signature(kernel), **{name: "constexpr" for name in config.kwargs}}
        source = ASTSource(autotuned.fn, signature, constexprs={"SHARED": shared, **config.kwargs})
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": config.num_warps})
        assert "cubin" in compiled.asm



def test_the_kernel_benchmark_prints_a_table_of_every_variant_and_case() -> None:
    script = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "kernel_speed.py")
    command = [sys.executable, script, "--quick", "--variants", "reference", "native"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    rows = [line.split("|")[1:3] for line in lines if line.startswith("| ") and "variant" not in line]
    expected = {(case, variant) for case in ("per-query", "shared", "all entities")
                for variant in ("reference", "native")}
    assert {(case.strip(), variant.strip()) for case, variant in rows} == expected
