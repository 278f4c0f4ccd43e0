"""rotate_distance: gradients, agreement with the plain formula, chunking, dtypes, bad inputs.

The reference is the plain broadcast implementation (a gathered ``(B, C, 2d)`` difference and
``torch.norm`` of the real and imaginary parts), which autograd differentiates on its own.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch.autograd import gradcheck

from lightning_kge.kernels import rotate_chunks, rotate_native
from lightning_kge.kernels.gradient_buffer import gradient_buffer
from lightning_kge.kernels.rotate_distance import rotate_distance

B, E, D = 5, 9, 3
MODES = ["per_query", "shared", "all"]
VARIANTS = {
    "eager": {"backend": "torch", "compiled": False},
    "compiled": {"backend": "torch", "compiled": True},
    "native": {"backend": "native"},
}
"""The CPU backends, as ``rotate_distance`` keyword arguments."""


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


def inputs(dtype: torch.dtype = torch.float64, seed: int = 0, b: int = B, e: int = E, d: int = D):
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(b, 2 * d, generator=g, dtype=dtype).requires_grad_()
    table = torch.randn(e, 2 * d, generator=g, dtype=dtype).requires_grad_()
    return query, table


def index_for(mode: str, b: int = B, e: int = E, c: int = 7, seed: int = 1) -> torch.Tensor | None:
    g = torch.Generator().manual_seed(seed)
    if mode == "per_query":
        index = torch.randint(e, (b, c), generator=g)
        index[0, :3] = 2  # an entity repeated in one row and across rows
        index[1, 0] = 2
        return index
    if mode == "shared":
        return torch.tensor([4, 0, 4, 8, 1, 4, 3])[:c]  # repeated ids
    return None


def both_gradients(fn, query, table, index, upstream):
    out = fn(query, table, index)
    return (out, *torch.autograd.grad(out, (query, table), upstream))


# --- gradients -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_eager_gradients_pass_gradcheck_in_float64(mode: str) -> None:
    query, table = inputs()
    index = index_for(mode)
    assert gradcheck(lambda q, t: rotate_distance(q, t, index, compiled=False, chunk_size=4), (query, table))


@pytest.mark.parametrize("mode", MODES)
def test_compiled_gradients_pass_gradcheck_in_float64(mode: str) -> None:
    query, table = inputs()
    index = index_for(mode)
    assert gradcheck(lambda q, t: rotate_distance(q, t, index, backend="torch", compiled=True, chunk_size=4),
                     (query, table))
    assert not rotate_chunks.compile_failed(), "torch.compile fell back to eager"


# --- agreement with the plain implementation --------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("mode", MODES)
def test_float32_forward_and_gradients_match_the_plain_implementation(mode: str, variant: str) -> None:
    query, table = inputs(torch.float32, b=6, e=11, d=10)
    index = index_for(mode, b=6, e=11)
    upstream = torch.randn(6, 11 if index is None else index.shape[-1], generator=torch.Generator().manual_seed(3))
    ours = both_gradients(lambda q, t, i: rotate_distance(q, t, i, **VARIANTS[variant]), query, table, index, upstream)
    plain = both_gradients(plain_distance, query, table, index, upstream)
    for got, expected in zip(ours, plain):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_distances_equal_a_loop_over_pairs_of_complex_numbers() -> None:
    query, table = inputs()
    index = index_for("per_query")
    torch.testing.assert_close(rotate_distance(query, table, index), loop_distance(query.detach(), table.detach(), index))


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradient_at_a_zero_complex_difference_is_the_zero_subgradient(variant: str) -> None:
    query, table = inputs(torch.float32, d=4)
    with torch.no_grad():
        table[2] = query[0]  # q_0 = t_2 in every coordinate: |z| = 0
        table[5, [0, 4]] = query[1, [0, 4]]  # one coordinate only
    index = torch.tensor([[2, 5, 1], [5, 2, 2], [0, 1, 2], [3, 4, 5], [2, 2, 2]])
    upstream = torch.ones(B, 3)
    ours = both_gradients(lambda q, t, i: rotate_distance(q, t, i, **VARIANTS[variant]), query, table, index, upstream)
    plain = both_gradients(plain_distance, query, table, index, upstream)
    assert ours[0][0, 0] == 0
    for got, expected in zip(ours, plain):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("mode", ["per_query", "shared"])
def test_table_rows_that_no_pair_uses_get_zero_gradient(mode: str, variant: str) -> None:
    query, table = inputs()
    index = torch.tensor([[1, 3], [3, 3], [1, 1], [0, 3], [1, 0]]) if mode == "per_query" else torch.tensor([3, 1, 0, 1])
    rotate_distance(query, table, index, **VARIANTS[variant]).sum().backward()
    assert (table.grad[[2, 4, 5, 6, 7, 8]] == 0).all()
    assert (table.grad[[0, 1, 3]].abs().sum(1) > 0).all()


# --- chunking ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_chunk_size_does_not_change_results(mode: str) -> None:
    query, table = inputs(b=7, e=13, d=5)
    index = index_for(mode, b=7, e=13, c=7)
    upstream = torch.randn(7, 13 if index is None else 7, dtype=torch.float64)
    whole = both_gradients(lambda q, t, i: rotate_distance(q, t, i, compiled=False), query, table, index, upstream)
    for chunk_size in (1, 3, 10, 1000):
        chunked = both_gradients(
            lambda q, t, i: rotate_distance(q, t, i, compiled=False, chunk_size=chunk_size), query, table, index, upstream
        )
        for got, expected in zip(chunked, whole):
            torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_compiled_shared_tiles_cover_shapes_that_are_not_tile_multiples() -> None:
    # More rows than a tile and candidate counts off the tile grid; one row; one candidate.
    query, table = inputs(torch.float32, b=70, e=50, d=6)
    for rows, ids in ((70, torch.arange(50)), (1, torch.arange(50)), (70, torch.tensor([7])), (3, torch.tensor([1, 1, 2]))):
        got = rotate_distance(query[:rows], table, ids, backend="torch", compiled=True)
        torch.testing.assert_close(got, plain_distance(query[:rows], table, ids), rtol=1e-5, atol=1e-5)


# --- dtypes and autocast ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_are_computed_in_float32(dtype: torch.dtype) -> None:
    query, table = inputs(torch.float32, d=8)
    index = index_for("per_query")
    half = rotate_distance(query.to(dtype), table.to(dtype), index, compiled=False)
    assert half.dtype == dtype
    expected = plain_distance(query.to(dtype).float(), table.to(dtype).float(), index)
    torch.testing.assert_close(half, expected.to(dtype))


def test_autocast_bfloat16_keeps_float32_distances_and_gradients() -> None:
    query, table = inputs(torch.float32, d=8)
    index = index_for("shared")
    upstream = torch.randn(B, 7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = rotate_distance(query, table, index, compiled=False)
    assert out.dtype == torch.float32
    got = (out, *torch.autograd.grad(out, (query, table), upstream))
    for a, b in zip(got, both_gradients(plain_distance, query, table, index, upstream)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_mixed_float_dtypes_are_promoted() -> None:
    query, table = inputs(torch.float64)
    out = rotate_distance(query.float(), table, index_for("shared"))
    assert out.dtype == torch.float64


# --- bad inputs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "table", "index", "error"),
    [
        (torch.zeros(2, 6), torch.zeros(4, 4), None, ValueError),  # widths differ
        (torch.zeros(2, 5), torch.zeros(4, 5), None, ValueError),  # odd width
        (torch.zeros(6), torch.zeros(4, 6), None, ValueError),  # query not 2-D
        (torch.zeros(2, 6, dtype=torch.long), torch.zeros(4, 6, dtype=torch.long), None, ValueError),
        (torch.zeros(2, 6), torch.zeros(4, 6), torch.zeros(3, 2, dtype=torch.long), ValueError),  # B mismatch
        (torch.zeros(2, 6), torch.zeros(4, 6), torch.zeros(2, 2, 2, dtype=torch.long), ValueError),
        (torch.zeros(2, 6), torch.zeros(4, 6), torch.zeros(2, 2), ValueError),  # float ids
        (torch.zeros(2, 6), torch.zeros(4, 6), torch.ones(2, 2, dtype=torch.bool), ValueError),
        (torch.zeros(2, 6), torch.zeros(4, 6), torch.tensor([0, 4]), IndexError),
        (torch.zeros(2, 6), torch.zeros(4, 6), torch.tensor([[0], [-1]]), IndexError),
    ],
)
def test_bad_inputs_raise(query, table, index, error) -> None:
    with pytest.raises(error):
        rotate_distance(query, table, index)


def test_bad_options_raise() -> None:
    query, table = inputs()
    with pytest.raises(ValueError, match="chunk_size"):
        rotate_distance(query, table, chunk_size=0)
    with pytest.raises(ValueError, match="backend"):
        rotate_distance(query, table, backend="cuda")  # type: ignore[arg-type]


def test_triton_backend_without_triton_raises_import_error() -> None:
    try:
        import triton  # noqa: F401
    except ImportError:
        query, table = inputs()
        with pytest.raises(ImportError, match="gpu"):
            rotate_distance(query, table, backend="triton")
    else:
        pytest.skip("triton is installed")


def test_second_derivatives_are_refused() -> None:
    query, table = inputs()
    (grad_q,) = torch.autograd.grad(rotate_distance(query, table).sum(), query, create_graph=True)
    with pytest.raises(RuntimeError):
        grad_q.sum().backward()


# --- the native CPU backend ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_native_gradients_pass_gradcheck_in_float64(mode: str) -> None:
    query, table = inputs()
    index = index_for(mode)
    assert gradcheck(lambda q, t: rotate_distance(q, t, index, backend="native"), (query, table))


def test_native_kernels_are_the_default_on_cpu_unless_compilation_is_off(monkeypatch) -> None:
    from lightning_kge.kernels.rotate_distance import _backend

    query, _ = inputs()
    assert isinstance(_backend(query, E, 7, None, None, None), rotate_native.NativeBackend)
    assert not isinstance(_backend(query, E, 7, None, False, None), rotate_native.NativeBackend)
    monkeypatch.setenv("LIGHTNING_KGE_NO_COMPILE", "1")
    assert not isinstance(_backend(query, E, 7, None, None, None), rotate_native.NativeBackend)


@pytest.mark.parametrize("mode", ["per_query", "shared"])
def test_native_results_do_not_depend_on_the_thread_count(mode: str) -> None:
    query, table = inputs(b=33, e=40, d=9)
    index = index_for(mode, b=33, e=40)
    upstream = torch.randn(33, 7, dtype=torch.float64)
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


def test_native_kernels_accept_calls_without_pairs() -> None:
    query, table = inputs()
    out = rotate_distance(query, table, torch.zeros(B, 0, dtype=torch.long), backend="native")
    assert out.shape == (B, 0)
    grad_q, grad_t = torch.autograd.grad(out.sum(), (query, table), allow_unused=True)
    assert (grad_q == 0).all() and (grad_t == 0).all()


def test_native_table_gradients_accumulate_and_never_overwrite_a_held_gradient() -> None:
    query, table = inputs()
    index = index_for("per_query")
    rotate_distance(query, table, index, backend="native").sum().backward()
    once = table.grad.clone()
    rotate_distance(query, table, index, backend="native").sum().backward()  # accumulates (no zero_grad)
    torch.testing.assert_close(table.grad, 2 * once)
    held = table.grad
    table.grad = None  # what zero_grad(set_to_none=True) does, but a reference is still held
    rotate_distance(query, table, index + 0, backend="native").pow(2).sum().backward()
    torch.testing.assert_close(held, 2 * once)  # the held gradient was not reused as the new buffer
    assert table.grad.data_ptr() != held.data_ptr()
    # The same table twice in one graph: both gradients are summed, neither clobbers the other.
    table.grad = None
    out = rotate_distance(query, table, index, backend="native").sum() + rotate_distance(query, table, None,
                                                                                        backend="native").sum()
    out.backward()
    expected = torch.autograd.grad(plain_distance(query, table, index).sum() + plain_distance(query, table, None).sum(),
                                   table)[0]
    torch.testing.assert_close(table.grad, expected)


def test_a_gradient_buffer_is_reused_only_once_nothing_holds_it() -> None:
    from lightning_kge.kernels import gradient_buffer as module

    table = torch.zeros(4, 6)
    first = gradient_buffer(table)
    address = first.data_ptr()
    del first
    second = gradient_buffer(table)
    second_address = second.data_ptr()
    third = gradient_buffer(table)  # ``second`` is still held: fresh memory
    third_address = third.data_ptr()
    assert third_address != second_address
    if module._storage_use_count is not None:  # the reuse needs this torch internal; without it, fresh memory
        assert second_address == address


def test_native_build_failure_warns_once_and_falls_back_to_torch(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("LIGHTNING_KGE_CACHE", str(tmp_path / "cache"))
    with pytest.warns(RuntimeWarning, match="native CPU kernels unavailable"):
        assert rotate_native.library.__wrapped__() is None
    assert not any((tmp_path / "cache").glob("*"))  # nothing half-built left behind


# --- the Triton backend, run by Triton's interpreter on CPU tensors ---------------------------------
# Triton must be imported with TRITON_INTERPRET=1 already set (its standard library is jitted at
# import), so the interpreted tests run in a child pytest that the launcher test starts.


@pytest.fixture
def interpreted_triton():
    """Triton in interpreter mode: skipped when absent or when not started by the launcher."""
    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("run by test_triton_backend_passes_its_tests_under_the_interpreter")


def test_triton_backend_passes_its_tests_under_the_interpreter() -> None:
    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("already the child run")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "interpreted"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-2000:]


@pytest.mark.parametrize("mode", MODES)
def test_interpreted_triton_kernels_match_the_plain_implementation(interpreted_triton, mode: str) -> None:
    # d = 37 and C = 7 are not multiples of the tiles: masked tails are exercised.
    query, table = inputs(torch.float32, b=19, e=23, d=37)
    index = index_for(mode, b=19, e=23)
    upstream = torch.randn(19, 23 if index is None else 7, generator=torch.Generator().manual_seed(3))
    ours = both_gradients(lambda q, t, i: rotate_distance(q, t, i, backend="triton"), query, table, index, upstream)
    plain = both_gradients(plain_distance, query, table, index, upstream)
    for got, expected in zip(ours, plain):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_interpreted_triton_gradients_pass_gradcheck_in_float64(interpreted_triton, mode: str) -> None:
    query, table = inputs()
    index = index_for(mode)
    assert gradcheck(lambda q, t: rotate_distance(q, t, index, backend="triton"), (query, table))


def test_interpreted_triton_gradient_at_a_zero_complex_difference_is_zero(interpreted_triton) -> None:
    query, table = inputs(torch.float32, d=4)
    with torch.no_grad():
        table[2] = query[0]
    index = torch.tensor([[2, 5, 1], [5, 2, 2], [0, 1, 2], [3, 4, 5], [2, 2, 2]])
    ours = both_gradients(lambda q, t, i: rotate_distance(q, t, i, backend="triton"), query, table, index, torch.ones(B, 3))
    plain = both_gradients(plain_distance, query, table, index, torch.ones(B, 3))
    assert ours[0][0, 0] == 0
    for got, expected in zip(ours, plain):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:TRITON_DEFAULT_FP_FUSION")
@pytest.mark.parametrize("dtype", ["fp32", "fp64"])
def test_triton_kernels_compile_for_an_h100_without_a_gpu(dtype: str) -> None:
    """Ahead-of-time compilation to an sm_90 cubin catches what the interpreter does not check."""
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from lightning_kge.kernels import rotate_triton

    dist, grad = rotate_triton._jitted(False)
    pointers = {"x_ptr": f"*{dtype}", "y_ptr": f"*{dtype}", "ids_ptr": "*i64"}
    sizes = {"n": "i32", "k": "i32", "d": "i32"}
    constants = ("SHARED", "BLOCK_N", "BLOCK_K", "BLOCK_D")
    for shared in (True, False):
        for kernel, extra, tiles in (
            (dist, {"out_ptr": f"*{dtype}"}, rotate_triton.DIST_TILE[shared]),
            (grad, {"g_ptr": f"*{dtype}", "out_ptr": f"*{dtype}"}, rotate_triton.GRAD_TILE[shared]),
        ):
            signature = {**pointers, **extra, **sizes, **{name: "constexpr" for name in constants}}
            values = dict(zip(constants, (shared, *tiles)))
            compiled = triton.compile(ASTSource(kernel, signature, constexprs=values), target=GPUTarget("cuda", 90, 32))
            assert "cubin" in compiled.asm
