"""Fused, memory-light RotatE distance with a hand-written backward.

RotatE (Sun et al., 2019, "RotatE: Knowledge Graph Embedding by Relational Rotation in Complex
Space") scores a triple by the distance between the rotated head ``q = h ∘ r`` and the tail ``t``:

    D(q, t) = Σ_i |q_i − t_i| = Σ_i sqrt((q_re,i − t_re,i)² + (q_im,i − t_im,i)²)

Complex vectors of dimension ``d`` are stored as real rows of width ``2d``: the first ``d``
columns hold the real parts, the last ``d`` the imaginary parts (the layout of the paper's code).

Scoring ``B`` queries against ``C`` candidates the plain way gathers a ``(B, C, 2d)`` block and
keeps several tensors of that size for autograd (several GB at the paper's wn18rr setting).
:func:`rotate_distance` saves only its inputs and recomputes in backward, through one of three
backends with the same interface (forward and backward of shared and per-query candidates):

* :class:`~lightning_kge.kernels.rotate_native.NativeBackend`, two C kernels built once with the
  system C compiler, used on CPU: the pairs are grouped by entity so that each pass reads every
  used table row once, and one backward pass yields both gradients;
* :class:`~lightning_kge.kernels.rotate_torch.TorchBackend`, chunks of torch code, compiled on
  CPU by ``torch.compile`` for large calls (eager when compilation is off, fails or would cost
  more than it saves); used where the native kernels cannot be built, and on other devices;
* :class:`~lightning_kge.kernels.rotate_triton.TritonBackend`, two Triton kernels, used for CUDA
  tensors when ``triton`` is installed.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from lightning_kge.kernels import rotate_chunks, rotate_native
from lightning_kge.kernels.rotate_torch import TorchBackend

__all__ = ["rotate_distance"]

Backend = Literal["native", "torch", "triton"]

CHUNK_BYTES = 4 * 2**20
"""Budget for the largest temporary of one chunk of the torch backend."""

BLOCK_PAIRS = 2**18
"""Pairs per call of the compiled shared-candidate forward kernel (it holds no temporary)."""

COMPILE_MIN_WORK = 2**24
"""Fewest ``queries × candidates × d`` of one call for which ``compiled=None`` compiles."""

COMPILE_MIN_TABLE = 2**23
"""Fewest ``entities × d`` for which ``compiled=None`` compiles calls of at least
:data:`WARM_MIN_WORK` (ranking a query against such a table costs as much as a large call)."""

WARM_MIN_WORK = 2**16
"""Fewest ``queries × candidates × d`` for which ``compiled=None`` uses kernels already compiled."""

NO_COMPILE_ENV = "LIGHTNING_KGE_NO_COMPILE"
"""Set this environment variable to 1 to never compile (always use the eager chunked path)."""


def _no_compile() -> bool:
    return os.environ.get(NO_COMPILE_ENV, "0") not in ("", "0")


class _RotatEDistance(torch.autograd.Function):
    """Autograd function behind :func:`rotate_distance`; saves only its tensor inputs."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx, query: Tensor, table: Tensor, index: Tensor, shared: bool, backend: Any
    ) -> Tensor:
        ctx.save_for_backward(query, table, index)
        ctx.shared, ctx.backend = shared, backend  # type: ignore[attr-defined]
        query, table = query.detach(), table.detach()
        with torch.autocast(query.device.type, enabled=False):
            if shared:
                return backend.shared_forward(query, table, index)
            return backend.per_query_forward(query, table, index)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        query, table, index = ctx.saved_tensors  # type: ignore[attr-defined]
        need_q, need_table = ctx.needs_input_grad[:2]  # type: ignore[attr-defined]
        backend = ctx.backend  # type: ignore[attr-defined]
        step = backend.shared_backward if ctx.shared else backend.per_query_backward  # type: ignore[attr-defined]
        with torch.autocast(query.device.type, enabled=False):
            grad_q, grad_table = step(
                query.detach(), table.detach(), index, grad.to(query.dtype).contiguous(), need_q, need_table
            )
        return grad_q, grad_table, None, None, None


def _use_compile(query: Tensor, num_entities: int, num_candidates: int, compiled: bool | None) -> bool:
    if compiled is not None:
        return compiled
    if _no_compile() or not hasattr(torch, "compile"):
        return False
    if query.device.type != "cpu" or rotate_chunks.compile_failed():
        return False
    d = query.shape[1] // 2
    work = query.shape[0] * num_candidates * d
    warm = query.dtype in rotate_chunks.WARM or num_entities * d >= COMPILE_MIN_TABLE
    return work >= (WARM_MIN_WORK if warm else COMPILE_MIN_WORK)


def _backend(query: Tensor, num_entities: int, num_candidates: int, backend: Backend | None,
             compiled: bool | None, chunk_size: int | None) -> Any:
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if backend is None:
        backend = "triton" if query.is_cuda and _triton_available() else "torch"
        if query.device.type == "cpu" and compiled is not False and not _no_compile() and rotate_native.library():
            backend = "native"
    if backend == "triton":
        from lightning_kge.kernels.rotate_triton import TritonBackend

        return TritonBackend()
    if backend == "native":
        lib = rotate_native.library()
        if lib is None or query.device.type != "cpu":
            raise RuntimeError("the native backend needs CPU tensors and a C compiler (see the warning above)")
        return rotate_native.NativeBackend(lib)
    if backend != "torch":
        raise ValueError(f"backend must be 'native', 'torch', 'triton' or None, got {backend!r}")
    use_compile = _use_compile(query, num_entities, num_candidates, compiled)
    # A compiled per-pair kernel writes (pairs / GROUP, 2d) partial sums; eager ones (pairs, 2d).
    per_pair = query.shape[1] * query.element_size() // (rotate_chunks.GROUP if use_compile else 1)
    pairs = chunk_size or max(rotate_chunks.GROUP, CHUNK_BYTES // max(per_pair, 1))
    block_pairs = chunk_size or (BLOCK_PAIRS if use_compile else pairs)
    return TorchBackend(use_compile, pairs, block_pairs)


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _check(query: Tensor, table: Tensor, index: Tensor | None) -> None:
    if query.dim() != 2 or table.dim() != 2 or query.shape[1] != table.shape[1]:
        raise ValueError(
            f"query (B, 2d) and table (E, 2d) must share 2d, got {tuple(query.shape)} and {tuple(table.shape)}"
        )
    if query.shape[1] % 2:
        raise ValueError(f"the embedding width 2d must be even, got {query.shape[1]}")
    if not (query.is_floating_point() and table.is_floating_point()):
        raise ValueError(f"query and table must be floating point, got {query.dtype} and {table.dtype}")
    if query.device != table.device:
        raise ValueError(f"query and table must share a device, got {query.device} and {table.device}")
    if index is None:
        return
    if index.dim() not in (1, 2) or (index.dim() == 2 and index.shape[0] != query.shape[0]):
        raise ValueError(f"index must be (B, C) or (C,) with B = {query.shape[0]}, got {tuple(index.shape)}")
    if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:
        raise ValueError(f"index must hold integer ids, got {index.dtype}")
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= table.shape[0]):
        raise IndexError(f"candidate ids must lie in [0, {table.shape[0]})")


@torch.compiler.disable
def rotate_distance(
    query: Tensor,
    table: Tensor,
    index: Tensor | None = None,
    *,
    chunk_size: int | None = None,
    compiled: bool | None = None,
    backend: Backend | None = None,
) -> Tensor:
    """RotatE distances between rotated heads and candidate entities, chunked and fused.

    For query ``b`` and candidate ``c`` with entity ``e``, in the real-pair layout
    ``[re_1 … re_d, im_1 … im_d]``:

        D[b, c] = Σ_i sqrt((q_re[b, i] − t_re[e, i])² + (q_im[b, i] − t_im[e, i])²)

    i.e. ``Σ_i |q_i − t_i|`` of Sun et al. (2019); the RotatE score is ``γ − D``. The result
    equals ``stack([re, im]).norm(dim=0).sum(-1)`` of the gathered difference (the plain
    implementation) but never holds a ``(B, C, d)`` tensor: it saves ``query``, ``table`` and
    ``index`` and recomputes in backward. Gradients flow to ``query`` and to ``table`` (dense,
    zero for unused rows); where ``q_i = t_i`` the subgradient 0 is used, so gradients stay
    finite. Not differentiable twice.

    Half-precision inputs (float16, bfloat16) are computed in float32 and the result is cast
    back to the inputs' promoted dtype; autocast is off inside (the sums over ``d`` need
    float32), so under ``bf16-mixed`` the distances of float32 parameters stay float32.

    Args:
        query: (B, 2d) rotated heads ``h ∘ r``, real parts then imaginary parts.
        table: (E, 2d) entity embeddings, same layout and device as ``query``.
        index: candidate entity ids in ``[0, E)``: (B, C) per query, (C,) shared by all
            queries, or ``None`` for all ``E`` entities.
        chunk_size: (query, candidate) pairs per chunk of the torch backend; by default the
            largest temporary of a chunk is about 4 MiB. It changes speed and memory, not
            results beyond rounding.
        compiled: ``False`` for the torch backend's eager chunks. Otherwise, with ``backend=None``
            on CPU, the native kernels are used where they build; with the torch backend,
            ``True`` means its ``torch.compile`` kernels and ``None`` compiles on CPU when
            ``B · C · d ≥ 2**24``, or when ``B · C · d ≥ 2**16`` and either compiled kernels
            have already run in this process or the table is large (``E · d ≥ 2**23``: ranking
            against it repays compiling). ``LIGHTNING_KGE_NO_COMPILE=1`` in the environment
            keeps ``backend=None`` off the native kernels and makes ``compiled=None`` mean
            ``False``.
        backend: ``"native"`` (CPU), ``"torch"``, ``"triton"`` (needs ``triton``; CUDA tensors,
            or CPU tensors under ``TRITON_INTERPRET=1``), or ``None``: Triton for CUDA tensors
            when it is installed, the native kernels for CPU tensors when they build and
            ``compiled`` is not ``False``, else torch.

    Returns:
        (B, C) distances, ``C = E`` when ``index`` is ``None``.

    Raises:
        ValueError: on inconsistent shapes, dtypes or devices, or a bad option.
        IndexError: on candidate ids outside ``[0, E)``.
        RuntimeError: ``backend="native"`` for tensors not on the CPU, or without the built kernels.

    Example:
        >>> query = torch.tensor([[0.0, 0.0], [3.0, 4.0]])  # d = 1: 0 and 3 + 4i
        >>> table = torch.tensor([[0.0, 0.0], [3.0, 0.0]])  # 0 and 3
        >>> rotate_distance(query, table)
        tensor([[0., 3.],
                [5., 4.]])
        >>> rotate_distance(query, table, torch.tensor([[1], [0]]))
        tensor([[3.],
                [5.]])
    """
    _check(query, table, index)
    dtype = torch.promote_types(query.dtype, table.dtype)
    compute = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    shared = index is None or index.dim() == 1
    if index is None:
        index = torch.arange(table.shape[0], device=query.device)
    index = index.to(device=query.device, dtype=torch.long).contiguous()
    query, table = query.to(compute).contiguous(), table.to(compute).contiguous()
    chosen = _backend(query, table.shape[0], index.shape[-1], backend, compiled, chunk_size)
    return _RotatEDistance.apply(query, table, index, shared, chosen).to(dtype)
