"""Fused, memory-light RotatE distance with a hand-written backward.

RotatE (Sun et al., 2019, "RotatE: Knowledge Graph Embedding by Relational Rotation in Complex
Space") scores a triple by the distance between the rotated head ``q = h ∘ r`` and the tail ``t``:

    D(q, t) = Σ_i |q_i − t_i| = Σ_i sqrt((q_re,i − t_re,i)² + (q_im,i − t_im,i)²)

Complex vectors of dimension ``d`` are stored as real rows of width ``2d``: the first ``d``
columns hold the real parts, the last ``d`` the imaginary parts (the layout of the paper's code).

Scoring a batch of ``B`` queries against ``C`` candidates the plain way gathers a
``(B, C, 2d)`` block and keeps several tensors of that size for autograd (several GB for the
paper's wn18rr setting). :func:`rotate_distance` instead works on chunks of a few MB, saves only
its inputs and recomputes the chunks in backward. On CPU the chunk maths runs through
``torch.compile`` (inductor emits vectorised C++ that reads the table rows in place); when
compilation is unavailable or fails it falls back to chunked eager PyTorch, which is also the
path used for small problems, where compiling would cost more than it saves.

Backward, with ``G = ∂L/∂D``, ``u = q_re − t_re``, ``v = q_im − t_im`` and ``m = |u + iv|``:

    ∂L/∂q_re[b, i] =  Σ_c G[b, c] · u[b, c, i] / m[b, c, i]     (likewise im with v)
    ∂L/∂t_re[e, i] = −Σ_{(b, c): index[b, c] = e} G[b, c] · u[b, c, i] / m[b, c, i]

The term is taken as 0 where ``m = 0`` (a subgradient of |z| at 0, as ``torch.norm`` does).
Query gradients are a reduction over candidates. Table gradients are computed without a scatter
of per-pair terms: shared candidates use the transposed reduction over queries; per-query
candidates are first regrouped by entity (a sort of the index), so that each entity's gradient
is again a dense reduction.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

__all__ = ["rotate_distance"]

_GROUP = 4
"""Candidates handled together by the compiled kernels (fewer than inductor's unroll threshold
of 8, so the group sum is unrolled into the vector loop and four table rows stream at once)."""

_CHUNK_BYTES = 4 * 2**20
"""Budget for the largest temporary of one chunk."""

_COMPILE_MIN_WORK = 2**24
"""Fewest ``queries × candidates × d`` for which ``compiled=None`` uses ``torch.compile``."""

_NO_COMPILE_ENV = "LIGHTNING_KGE_NO_COMPILE"
"""Set this environment variable to 1 to never compile (always use the eager chunked path)."""


# ---------------------------------------------------------------------------------------------
# Chunk kernels. Each takes rows ``x`` (n, 2d), a row table ``y`` (M, 2d) and ids (n, k) into
# ``y``; ``dist`` returns (n, k) distances |x[a] − y[ids[a, j]]|, ``grad`` returns (n, 2d) with
# Σ_j g[a, j] · ∂|x[a] − y[ids[a, j]]| / ∂x[a].
# ---------------------------------------------------------------------------------------------


def _eager_dist(x: Tensor, y: Tensor, ids: Tensor) -> Tensor:
    h = x.shape[1] // 2
    diff = x[:, None, :] - y[ids]
    diff.mul_(diff)
    modulus = diff[..., :h].add_(diff[..., h:]).sqrt_()
    return modulus.sum(-1)


def _eager_grad(x: Tensor, y: Tensor, ids: Tensor, g: Tensor) -> Tensor:
    n, k = ids.shape
    h = x.shape[1] // 2
    diff = (x[:, None, :] - y[ids]).view(n, k, 2, h)
    modulus = diff.square().sum(2).sqrt_()
    factor = g[..., None] / modulus
    factor.masked_fill_(modulus == 0, 0.0)
    return diff.mul_(factor[:, :, None, :]).sum(1).view(n, 2 * h)


def _grouped_dist(x: Tensor, y: Tensor, ids: Tensor) -> Tensor:
    # Written for inductor: one reduction per member of a group of _GROUP candidates, so the
    # fused loop streams _GROUP table rows at a time. ``k`` must be a multiple of _GROUP.
    n, k = ids.shape
    h = x.shape[1] // 2
    groups = ids.reshape(n, k // _GROUP, _GROUP)
    columns = []
    for j in range(_GROUP):
        diff = x[:, None, :] - y[groups[:, :, j]]
        re, im = diff[..., :h], diff[..., h:]
        columns.append(torch.sqrt(re * re + im * im).sum(-1))
    return torch.stack(columns, -1).reshape(n, k)


def _grouped_grad(x: Tensor, y: Tensor, ids: Tensor, g: Tensor) -> Tensor:
    # The group axis (size _GROUP) is summed inside the fused loop; only (n, k / _GROUP, 2d)
    # partial sums are written. ``k`` must be a multiple of _GROUP.
    n, k = ids.shape
    h = x.shape[1] // 2
    diff = x[:, None, None, :] - y[ids].reshape(n, k // _GROUP, _GROUP, 2 * h)
    re, im = diff[..., :h], diff[..., h:]
    modulus = torch.sqrt(re * re + im * im)
    factor = torch.where(modulus > 0, g.reshape(n, k // _GROUP, _GROUP, 1) / modulus, 0.0)
    return torch.cat([(factor * re).sum(2), (factor * im).sum(2)], -1).sum(1)


class _CompiledKernel:
    """``torch.compile`` of a grouped kernel, compiled lazily, with a permanent eager fallback."""

    def __init__(self, grouped: Callable[..., Tensor], eager: Callable[..., Tensor]) -> None:
        self.grouped, self.eager = grouped, eager
        self.compiled: Callable[..., Tensor] | None = None
        self.failed = False

    def __call__(self, *args: Tensor) -> Tensor:
        if not self.failed:
            try:
                if self.compiled is None:
                    # Inductor would store the moduli of a chunk before the candidate sum
                    # because they are read several times; recomputing them is cheaper.
                    self.compiled = torch.compile(
                        self.grouped,
                        dynamic=True,
                        fullgraph=True,
                        options={"realize_reads_threshold": 64},
                    )
                return self.compiled(*args)
            except Exception as error:  # noqa: BLE001 - any compiler failure means: go eager
                self.failed = True
                warnings.warn(
                    f"rotate_distance: torch.compile failed ({type(error).__name__}: "
                    f"{str(error)[:200]}); using the eager chunked path from now on.",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return self.eager(*args)


_COMPILED_DIST = _CompiledKernel(_grouped_dist, _eager_dist)
_COMPILED_GRAD = _CompiledKernel(_grouped_grad, _eager_grad)


class _Kernels:
    """The pair of chunk kernels one call uses, with the column multiple they need."""

    def __init__(self, compiled: bool) -> None:
        self.compiled = compiled
        self.dist = _COMPILED_DIST if compiled else _eager_dist
        self.grad = _COMPILED_GRAD if compiled else _eager_grad
        self.multiple = _GROUP if compiled else 1

    def pad(
        self, x: Tensor, ids: Tensor, g: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Pads a chunk to the kernels' shapes; padded pairs have id 0 and weight 0.

        Compiled kernels need a column count that is a multiple of the group size and at least
        two rows (size-1 dimensions would make ``torch.compile`` specialise and recompile).
        """
        ids = ids.contiguous()
        if not self.compiled:
            return x, ids, g
        extra_rows = max(0, 2 - x.shape[0])
        extra_cols = -ids.shape[1] % self.multiple
        if extra_rows or extra_cols:
            x = torch.nn.functional.pad(x, (0, 0, 0, extra_rows))
            ids = torch.nn.functional.pad(ids, (0, extra_cols, 0, extra_rows))
            if g is not None:
                g = torch.nn.functional.pad(g, (0, extra_cols, 0, extra_rows))
        return x, ids, g

    def distances(self, x: Tensor, y: Tensor, ids: Tensor) -> Tensor:
        """(n, k) distances ``|x[a] − y[ids[a, j]]|``."""
        n, k = ids.shape
        x, ids, _ = self.pad(x, ids)
        return self.dist(x, y, ids)[:n, :k]

    def gradient(self, x: Tensor, y: Tensor, ids: Tensor, g: Tensor) -> Tensor:
        """(n, 2d) rows ``Σ_j g[a, j] · ∂|x[a] − y[ids[a, j]]| / ∂x[a]``."""
        n = x.shape[0]
        x, ids, g = self.pad(x, ids, g.contiguous())
        return self.grad(x, y, ids, g)[:n]


# ---------------------------------------------------------------------------------------------
# Chunking and the three index modes.
# ---------------------------------------------------------------------------------------------


def _chunk_pairs(chunk_size: int | None, width: int, itemsize: int, compiled: bool) -> int:
    """Pairs per chunk: ``chunk_size`` or the count whose largest temporary fits the budget."""
    if chunk_size is not None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        return chunk_size
    per_pair = width * itemsize // (_GROUP if compiled else 1)
    return max(_GROUP, _CHUNK_BYTES // max(per_pair, 1))


def _ranges(total: int, step: int) -> list[tuple[int, int]]:
    return [(start, min(start + step, total)) for start in range(0, total, step)]


def _tile(pairs: int, rows: int, cols: int, square: bool) -> tuple[int, int]:
    """Rows and columns of a chunk of about ``pairs`` pairs (square when rows are reused)."""
    col_step = max(1, math.isqrt(pairs)) if square else pairs
    col_step = min(cols, col_step) or 1
    return max(1, min(rows, pairs // col_step)), col_step


def _dense_forward(q: Tensor, y: Tensor, kernels: _Kernels, pairs: int) -> Tensor:
    """(B, C) distances of every query to every row of ``y``."""
    rows, cols = q.shape[0], y.shape[0]
    out = q.new_empty(rows, cols)
    row_step, col_step = _tile(pairs, rows, cols, square=True)
    for c0, c1 in _ranges(cols, col_step):
        ids = torch.arange(c0, c1, device=q.device)
        for b0, b1 in _ranges(rows, row_step):
            out[b0:b1, c0:c1] = kernels.distances(q[b0:b1], y, ids.expand(b1 - b0, -1))
    return out


def _dense_backward(
    q: Tensor, y: Tensor, grad: Tensor, kernels: _Kernels, pairs: int, need_q: bool, need_y: bool
) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of ``Σ grad · D`` for ``D = dist(q, y)`` as two dense reductions."""
    rows, cols = q.shape[0], y.shape[0]
    grad_q = torch.zeros_like(q) if need_q else None
    grad_y = torch.zeros_like(y) if need_y else None
    row_step, col_step = _tile(pairs, rows, cols, square=True)
    for c0, c1 in _ranges(cols, col_step):
        col_ids = torch.arange(c0, c1, device=q.device)
        for b0, b1 in _ranges(rows, row_step):
            g = grad[b0:b1, c0:c1]
            if grad_q is not None:
                grad_q[b0:b1] += kernels.gradient(q[b0:b1], y, col_ids.expand(b1 - b0, -1), g)
            if grad_y is not None:
                row_ids = torch.arange(b0, b1, device=q.device).expand(c1 - c0, -1)
                grad_y[c0:c1] += kernels.gradient(y[c0:c1], q, row_ids, g.t())
    return grad_q, grad_y


def _per_query_forward(q: Tensor, table: Tensor, index: Tensor, kernels: _Kernels, pairs: int) -> Tensor:
    rows, cols = index.shape
    out = q.new_empty(rows, cols)
    row_step, col_step = _tile(pairs, rows, cols, square=False)
    for b0, b1 in _ranges(rows, row_step):
        for c0, c1 in _ranges(cols, col_step):
            out[b0:b1, c0:c1] = kernels.distances(q[b0:b1], table, index[b0:b1, c0:c1])
    return out


def _group_by_entity(index: Tensor, grad: Tensor, slots: int) -> tuple[Tensor, Tensor, Tensor]:
    """Regroups per-query pairs by candidate entity into padded rows.

    Args:
        index: (B, C) candidate entity ids.
        grad: (B, C) upstream gradient of the distances.
        slots: pairs per output row.

    Returns:
        ``entity`` (R,), ``query`` (R, slots) and ``weight`` (R, slots): row ``r`` holds up to
        ``slots`` pairs ``(query[r, s], entity[r])`` with gradient ``weight[r, s]``; unused
        slots have weight 0. An entity with more than ``slots`` pairs spans several rows.
    """
    cols = index.shape[1]
    flat = index.reshape(-1)
    sorted_ids, order = torch.sort(flat, stable=True)
    entities, counts = torch.unique_consecutive(sorted_ids, return_counts=True)
    rows_per_entity = (counts + slots - 1) // slots
    first_row = torch.cumsum(rows_per_entity, 0) - rows_per_entity
    first_pair = torch.cumsum(counts, 0) - counts
    segment = torch.repeat_interleave(torch.arange(entities.numel(), device=index.device), counts)
    rank = torch.arange(flat.numel(), device=index.device) - first_pair[segment]
    dest = first_row[segment] * slots + rank
    num_rows = int(rows_per_entity.sum())
    query = index.new_zeros(num_rows * slots)
    weight = grad.new_zeros(num_rows * slots)
    query[dest] = torch.div(order, cols, rounding_mode="floor")
    weight[dest] = grad.reshape(-1)[order]
    entity = torch.repeat_interleave(entities, rows_per_entity)
    return entity, query.view(num_rows, slots), weight.view(num_rows, slots)


def _per_query_backward(
    q: Tensor,
    table: Tensor,
    index: Tensor,
    grad: Tensor,
    kernels: _Kernels,
    pairs: int,
    need_q: bool,
    need_table: bool,
) -> tuple[Tensor | None, Tensor | None]:
    rows, cols = index.shape
    grad_q = grad_table = None
    if need_q:
        grad_q = torch.zeros_like(q)
        row_step, col_step = _tile(pairs, rows, cols, square=False)
        for b0, b1 in _ranges(rows, row_step):
            for c0, c1 in _ranges(cols, col_step):
                grad_q[b0:b1] += kernels.gradient(
                    q[b0:b1], table, index[b0:b1, c0:c1], grad[b0:b1, c0:c1]
                )
    if need_table:
        grad_table = torch.zeros_like(table)
        if index.numel():
            # Expected pairs per distinct entity, rounded up to the kernel's group size.
            mean = math.ceil(index.numel() / min(index.numel(), table.shape[0]))
            slots = min(8 * _GROUP, _GROUP * math.ceil(mean / _GROUP))
            entity, query, weight = _group_by_entity(index, grad, slots)
            row_step = max(1, pairs // slots)
            for r0, r1 in _ranges(entity.shape[0], row_step):
                part = kernels.gradient(table[entity[r0:r1]], q, query[r0:r1], weight[r0:r1])
                grad_table.index_add_(0, entity[r0:r1], part)
    return grad_q, grad_table


class _RotatEDistance(torch.autograd.Function):
    """Autograd function behind :func:`rotate_distance`; saves only its three inputs."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        query: Tensor,
        table: Tensor,
        index: Tensor | None,
        pairs: int,
        compiled: bool,
    ) -> Tensor:
        kernels = _Kernels(compiled)
        ctx.save_for_backward(query, table, index)
        query, table = query.detach(), table.detach()
        ctx.pairs, ctx.compiled = pairs, compiled  # type: ignore[attr-defined]
        if index is None:
            return _dense_forward(query, table, kernels, pairs)
        if index.dim() == 1:
            return _dense_forward(query, table[index], kernels, pairs)
        return _per_query_forward(query, table, index, kernels, pairs)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        query, table, index = ctx.saved_tensors  # type: ignore[attr-defined]
        query, table = query.detach(), table.detach()
        need_q, need_table = ctx.needs_input_grad[:2]  # type: ignore[attr-defined]
        kernels = _Kernels(ctx.compiled)  # type: ignore[attr-defined]
        pairs = ctx.pairs  # type: ignore[attr-defined]
        grad = grad.contiguous()
        if index is None:
            grad_q, grad_table = _dense_backward(query, table, grad, kernels, pairs, need_q, need_table)
        elif index.dim() == 1:
            grad_q, grad_rows = _dense_backward(
                query, table[index], grad, kernels, pairs, need_q, need_table
            )
            grad_table = None
            if grad_rows is not None:
                grad_table = torch.zeros_like(table).index_add_(0, index, grad_rows)
        else:
            grad_q, grad_table = _per_query_backward(
                query, table, index, grad, kernels, pairs, need_q, need_table
            )
        return grad_q, grad_table, None, None, None


def _use_compile(query: Tensor, num_candidates: int, compiled: bool | None) -> bool:
    if compiled is not None:
        return compiled
    if os.environ.get(_NO_COMPILE_ENV, "0") not in ("", "0") or not hasattr(torch, "compile"):
        return False
    if query.device.type != "cpu" or _COMPILED_DIST.failed or _COMPILED_GRAD.failed:
        return False
    work = query.shape[0] * num_candidates * (query.shape[1] // 2)
    return work >= _COMPILE_MIN_WORK


@torch.compiler.disable
def rotate_distance(
    query: Tensor,
    table: Tensor,
    index: Tensor | None = None,
    *,
    chunk_size: int | None = None,
    compiled: bool | None = None,
) -> Tensor:
    """RotatE distances between rotated heads and candidate entities, chunked and fused.

    For query ``b`` and candidate ``c`` with entity ``e``, in the real-pair layout
    ``[re_1 … re_d, im_1 … im_d]``:

        D[b, c] = Σ_i sqrt((q_re[b, i] − t_re[e, i])² + (q_im[b, i] − t_im[e, i])²)

    i.e. ``Σ_i |q_i − t_i|`` of Sun et al. (2019); the RotatE score is ``γ − D``. The result
    equals ``stack([re, im]).norm(dim=0).sum(-1)`` of the gathered difference (the plain
    implementation) but never holds a ``(B, C, d)`` tensor: it works in chunks of a few MB and
    recomputes them in backward, saving only ``query``, ``table`` and ``index``. Gradients flow
    to ``query`` and to ``table`` (dense, zero for unused rows); where ``q_i = t_i`` the
    subgradient 0 is used, so gradients stay finite.

    The code is device-agnostic torch: CUDA tensors take the eager chunked path (a Triton
    kernel is future work). On CPU, large problems run through ``torch.compile``; if
    compilation fails the eager chunked path is used with a warning. Setting the environment
    variable ``LIGHTNING_KGE_NO_COMPILE=1`` disables compilation. Not differentiable twice.

    Args:
        query: (B, 2d) rotated heads ``h ∘ r``, real parts then imaginary parts.
        table: (E, 2d) entity embeddings, same layout, dtype and device as ``query``.
        index: candidate entity ids in ``[0, E)``: (B, C) per query, (C,) shared by all
            queries (the gathered (C, 2d) block is reused across queries), or ``None`` for all
            ``E`` entities.
        chunk_size: pairs (query, candidate) per chunk; by default the largest temporary of a
            chunk is about 4 MiB. It changes speed and memory, not results beyond rounding.
        compiled: ``True`` to use the ``torch.compile`` kernels, ``False`` for eager chunks,
            ``None`` to compile on CPU when ``B · C · d ≥ 2**24``.

    Returns:
        (B, C) distances, ``C = E`` when ``index`` is ``None``.

    Raises:
        ValueError: on inconsistent shapes or dtypes.
        IndexError: on candidate ids outside ``[0, E)``.

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
    if query.dim() != 2 or table.dim() != 2 or query.shape[1] != table.shape[1]:
        raise ValueError(
            f"query (B, 2d) and table (E, 2d) must share 2d, got {tuple(query.shape)} and "
            f"{tuple(table.shape)}"
        )
    if query.shape[1] % 2:
        raise ValueError(f"the embedding width 2d must be even, got {query.shape[1]}")
    if query.dtype != table.dtype or query.device != table.device:
        raise ValueError("query and table must share dtype and device")
    if index is not None:
        if index.dim() not in (1, 2) or (index.dim() == 2 and index.shape[0] != query.shape[0]):
            raise ValueError(
                f"index must be (B, C) or (C,) with B = {query.shape[0]}, got {tuple(index.shape)}"
            )
        if index.dtype.is_floating_point or index.dtype == torch.bool:
            raise ValueError(f"index must hold integer ids, got {index.dtype}")
        index = index.to(device=query.device, dtype=torch.long).contiguous()
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= table.shape[0]):
            raise IndexError(f"candidate ids must lie in [0, {table.shape[0]})")
    num_candidates = table.shape[0] if index is None else index.shape[-1]
    use_compile = _use_compile(query, num_candidates, compiled)
    pairs = _chunk_pairs(chunk_size, query.shape[1], query.element_size(), use_compile)
    return _RotatEDistance.apply(query.contiguous(), table.contiguous(), index, pairs, use_compile)
