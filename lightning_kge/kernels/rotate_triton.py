"""The Triton backend of :func:`~lightning_kge.kernels.rotate_distance.rotate_distance` (GPU).

Two kernels, each one program per tile, with no temporary in global memory:

* ``dist``: ``out[a, j] = Σ_i |x_i[a] − y_i[ids[a, j]]|`` over a ``BLOCK_N × BLOCK_K`` tile of
  pairs, looping over the complex dimension in slices of ``BLOCK_D``;
* ``grad``: ``out[a, :] = Σ_j g[a, j] · (x[a] − y[ids[a, j]]) / m`` (0 where ``m = 0``) over a
  ``BLOCK_N × BLOCK_D`` tile of the result, looping over the candidates.

``ids`` is ``(n, k)`` per row or ``(k,)`` shared by all rows (``SHARED``: one candidate tile is
loaded once and broadcast over the rows). Forward and backward are these two kernels and the
regrouping by entity of :func:`~lightning_kge.kernels.rotate_torch.group_by_entity`, exactly as
the torch backend does it, so both compute the same sums.

Running the kernels needs ``triton`` (the ``gpu`` extra). The kernels are jitted on first use
and cached per ``TRITON_INTERPRET`` setting, so a test can run them on CPU tensors through
Triton's interpreter. The tile sizes are plain defaults, not tuned on a GPU.
"""

from __future__ import annotations  # Triton reads "tl.constexpr" annotations as strings too

import functools
import os

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # importable without triton (docs, doctests); running a kernel raises
    triton = tl = None

from lightning_kge.kernels.rotate_torch import group_by_entity

DIST_TILE = {True: (16, 16, 16), False: (4, 32, 32)}
"""``(BLOCK_N, BLOCK_K, BLOCK_D)`` of ``dist`` for shared (True) and per-row ids."""

GRAD_TILE = {True: (16, 8, 32), False: (4, 16, 32)}
"""``(BLOCK_N, BLOCK_K, BLOCK_D)`` of ``grad`` for shared (True) and per-row ids."""


def _dist_kernel(x_ptr, y_ptr, ids_ptr, out_ptr, n, k, d,
                 SHARED: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    row_ok = rows < n
    col_ok = cols < k
    pair_ok = row_ok[:, None] & col_ok[None, :]
    if SHARED:
        ids = tl.load(ids_ptr + cols, mask=col_ok, other=0)[None, :]
        id_ok = col_ok[None, :]
    else:
        ids = tl.load(ids_ptr + rows[:, None] * k + cols[None, :], mask=pair_ok, other=0)
        id_ok = pair_ok
    width = 2 * d
    acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=out_ptr.dtype.element_ty)
    for d0 in range(0, d, BLOCK_D):
        dims = d0 + tl.arange(0, BLOCK_D)
        dim_ok = dims < d
        x_mask = row_ok[:, None] & dim_ok[None, :]
        x_re = tl.load(x_ptr + rows[:, None] * width + dims[None, :], mask=x_mask, other=0.0)
        x_im = tl.load(x_ptr + rows[:, None] * width + d + dims[None, :], mask=x_mask, other=0.0)
        y_mask = id_ok[:, :, None] & dim_ok[None, None, :]
        y_at = y_ptr + ids[:, :, None] * width + dims[None, None, :]
        u = x_re[:, None, :] - tl.load(y_at, mask=y_mask, other=0.0)
        v = x_im[:, None, :] - tl.load(y_at + d, mask=y_mask, other=0.0)
        acc += tl.sum(tl.sqrt(u * u + v * v), axis=2)
    tl.store(out_ptr + rows[:, None] * k + cols[None, :], acc, mask=pair_ok)


def _grad_kernel(x_ptr, y_ptr, ids_ptr, g_ptr, out_ptr, n, k, d,
                 SHARED: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    dims = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    row_ok = rows < n
    dim_ok = dims < d
    width = 2 * d
    x_mask = row_ok[:, None] & dim_ok[None, :]
    x_re = tl.load(x_ptr + rows[:, None] * width + dims[None, :], mask=x_mask, other=0.0)
    x_im = tl.load(x_ptr + rows[:, None] * width + d + dims[None, :], mask=x_mask, other=0.0)
    acc_re = tl.zeros([BLOCK_N, BLOCK_D], dtype=out_ptr.dtype.element_ty)
    acc_im = tl.zeros([BLOCK_N, BLOCK_D], dtype=out_ptr.dtype.element_ty)
    for k0 in range(0, k, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        col_ok = cols < k
        pair_ok = row_ok[:, None] & col_ok[None, :]
        if SHARED:
            ids = tl.load(ids_ptr + cols, mask=col_ok, other=0)[None, :]
            id_ok = col_ok[None, :]
        else:
            ids = tl.load(ids_ptr + rows[:, None] * k + cols[None, :], mask=pair_ok, other=0)
            id_ok = pair_ok
        g = tl.load(g_ptr + rows[:, None] * k + cols[None, :], mask=pair_ok, other=0.0)
        y_mask = id_ok[:, :, None] & dim_ok[None, None, :]
        y_at = y_ptr + ids[:, :, None] * width + dims[None, None, :]
        u = x_re[:, None, :] - tl.load(y_at, mask=y_mask, other=0.0)
        v = x_im[:, None, :] - tl.load(y_at + d, mask=y_mask, other=0.0)
        m = tl.sqrt(u * u + v * v)
        factor = tl.where(m > 0, g[:, :, None] / tl.where(m > 0, m, 1.0), 0.0)
        acc_re += tl.sum(factor * u, axis=1)
        acc_im += tl.sum(factor * v, axis=1)
    tl.store(out_ptr + rows[:, None] * width + dims[None, :], acc_re, mask=x_mask)
    tl.store(out_ptr + rows[:, None] * width + d + dims[None, :], acc_im, mask=x_mask)


@functools.cache
def _jitted(interpret: bool) -> tuple[triton.JITFunction, triton.JITFunction]:
    # ``triton.jit`` reads TRITON_INTERPRET when it wraps a function: one pair per setting.
    del interpret  # only the cache key
    return triton.jit(_dist_kernel), triton.jit(_grad_kernel)


def _kernels() -> tuple[triton.JITFunction, triton.JITFunction]:
    if triton is None:
        raise ImportError("the Triton backend needs triton: pip install 'lightning-kge[gpu]'")
    return _jitted(os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"))


def dist(x: Tensor, y: Tensor, ids: Tensor) -> Tensor:
    """``(n, k)`` distances of rows ``x`` to rows ``y[ids]``; ids ``(n, k)`` or shared ``(k,)``."""
    shared = ids.dim() == 1
    n, k, d = x.shape[0], ids.shape[-1], x.shape[1] // 2
    out = x.new_empty(n, k)
    if out.numel() == 0:
        return out.zero_()
    block_n, block_k, block_d = DIST_TILE[shared]
    grid = (triton.cdiv(n, block_n), triton.cdiv(k, block_k))
    _kernels()[0][grid](x, y, ids, out, n, k, d, SHARED=shared, BLOCK_N=block_n, BLOCK_K=block_k, BLOCK_D=block_d)
    return out


def grad(x: Tensor, y: Tensor, ids: Tensor, g: Tensor) -> Tensor:
    """``(n, 2d)`` rows ``Σ_j g[a, j] · ∂|x[a] − y[ids[a, j]]| / ∂x[a]``; ``g`` is ``(n, k)``."""
    shared = ids.dim() == 1
    n, k, d = x.shape[0], ids.shape[-1], x.shape[1] // 2
    out = torch.zeros_like(x)
    if n == 0 or k == 0:
        return out
    block_n, block_k, block_d = GRAD_TILE[shared]
    grid = (triton.cdiv(n, block_n), triton.cdiv(d, block_d))
    _kernels()[1][grid](
        x, y, ids, g.contiguous(), out, n, k, d, SHARED=shared, BLOCK_N=block_n, BLOCK_K=block_k, BLOCK_D=block_d
    )
    return out


class TritonBackend:
    """Forward and backward of the three index modes with the two Triton kernels."""

    def __init__(self) -> None:
        _kernels()  # raises ImportError without triton

    def shared_forward(self, q: Tensor, table: Tensor, ids: Tensor) -> Tensor:
        return dist(q, table, ids)

    def shared_backward(
        self, q: Tensor, table: Tensor, ids: Tensor, g: Tensor, need_q: bool, need_table: bool
    ) -> tuple[Tensor | None, Tensor | None]:
        grad_q = grad(q, table, ids, g) if need_q else None
        grad_table = None
        if need_table:
            rows = torch.arange(q.shape[0], device=q.device)
            part = grad(table[ids], q, rows, g.t())
            grad_table = torch.zeros_like(table).index_add_(0, ids, part)
        return grad_q, grad_table

    def per_query_forward(self, q: Tensor, table: Tensor, index: Tensor) -> Tensor:
        return dist(q, table, index)

    def per_query_backward(
        self, q: Tensor, table: Tensor, index: Tensor, g: Tensor, need_q: bool, need_table: bool
    ) -> tuple[Tensor | None, Tensor | None]:
        grad_q = grad(q, table, index, g) if need_q else None
        grad_table = None
        if need_table:
            grad_table = torch.zeros_like(table)
            if index.numel():
                entity, query, weight = group_by_entity(index, g, 32)
                grad_table.index_add_(0, entity, grad(table[entity], q, query, weight))
        return grad_q, grad_table
