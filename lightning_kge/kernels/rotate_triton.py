"""The Triton backend of the RotatE distance (CUDA tensors), autotuned.

Three kernels, none of which writes a temporary of size ``(B, C, d)`` to global memory:

* ``distance``: ``D[b, c] = Σ_i |q_i[b] − t_i[ids[b, c]]|`` over a ``BLOCK_B × BLOCK_C`` tile of
  pairs, looping over the complex dimension in slices of ``BLOCK_D``;
* ``query_gradient``: ``∂L/∂q[b] = Σ_c G[b, c] · (q[b] − t[ids[b, c]]) / m`` (0 where ``m = 0``)
  over a ``BLOCK_B × BLOCK_D`` tile of the result, looping over the candidates;
* ``table_gradient``: ``∂L/∂t[e] = −Σ`` of the same terms over the pairs whose candidate is ``e``:
  one program per entity and slice of dimensions, looping over that entity's pairs, which a
  sort of the ids (``order``) and ``starts = searchsorted(sorted ids, 0 … E)`` group. Every row
  is written (0 for unused entities), with no atomics: the sums are deterministic.

``ids`` is ``(B, C)`` per query or ``(C,)`` shared by all queries (``SHARED``). All shapes are
fixed by the inputs: no host-device synchronisation. Ids outside ``[0, E)`` read nothing: their
distances are NaN and they add no gradient (ids are range-checked only for CPU tensors).

Tiles are chosen by ``triton.autotune`` among a few configurations, keyed on the sizes. Under
Triton's interpreter (``TRITON_INTERPRET=1``, which runs the kernels on CPU tensors for the
tests) one configuration is used: the autotuner times configurations on a GPU. Running a kernel
needs ``triton`` (the ``gpu`` extra).
"""

from __future__ import annotations  # Triton reads "tl.constexpr" annotations as strings too

import functools
import os
from typing import Any

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError as error:  # importable without triton (docs, doctests); running raises
    triton = tl = None
    _IMPORT_ERROR: str | None = f"{type(error).__name__}: {error}"
else:
    _IMPORT_ERROR = None

DISTANCE_CONFIGS = [  # (BLOCK_B, BLOCK_C, BLOCK_D, num_warps)
    (1, 64, 64, 4), (2, 64, 32, 4), (4, 32, 32, 4), (8, 32, 32, 8), (16, 16, 32, 4), (32, 32, 16, 8),
]
QUERY_GRADIENT_CONFIGS = [  # (BLOCK_B, BLOCK_C, BLOCK_D, num_warps)
    (1, 64, 64, 4), (2, 32, 64, 4), (4, 16, 64, 4), (8, 16, 32, 4), (16, 8, 32, 4), (16, 16, 64, 8),
]
TABLE_GRADIENT_CONFIGS = [  # (BLOCK_P, BLOCK_D, num_warps)
    (16, 64, 4), (32, 64, 4), (32, 128, 4), (64, 32, 4), (64, 64, 8), (16, 128, 4),
]
INTERPRETER_CONFIGS = {"distance": (4, 8, 16, 1), "query_gradient": (4, 8, 16, 1), "table_gradient": (8, 16, 1)}
"""The one configuration per kernel under the interpreter (small tiles: tests use small shapes)."""

KEY = ["B", "C", "d", "SHARED"]
"""Autotuning key: a configuration is chosen once per distinct sizes and index mode."""


def unavailable() -> str | None:
    """``None`` when ``triton`` imports, else the import error."""
    return _IMPORT_ERROR


def interpreting() -> bool:
    """Whether Triton runs kernels in its interpreter (``TRITON_INTERPRET=1``, CPU tensors)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _distance(q_ptr, t_ptr, ids_ptr, out_ptr, B, C, E, d,
              SHARED: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = (tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    row_ok = rows < B
    col_ok = cols < C
    pair_ok = row_ok[:, None] & col_ok[None, :]
    if SHARED:
        ids = tl.load(ids_ptr + cols, mask=col_ok, other=0)[None, :]
        id_ok = col_ok[None, :] & (ids >= 0) & (ids < E)
    else:
        ids = tl.load(ids_ptr + rows[:, None] * C + cols[None, :], mask=pair_ok, other=0)
        id_ok = pair_ok & (ids >= 0) & (ids < E)
    width = 2 * d
    acc = tl.zeros([BLOCK_B, BLOCK_C], dtype=out_ptr.dtype.element_ty)
    for d0 in range(0, d, BLOCK_D):
        dims = d0 + tl.arange(0, BLOCK_D)
        dim_ok = dims < d
        q_mask = row_ok[:, None] & dim_ok[None, :]
        q_re = tl.load(q_ptr + rows[:, None] * width + dims[None, :], mask=q_mask, other=0.0)
        q_im = tl.load(q_ptr + rows[:, None] * width + d + dims[None, :], mask=q_mask, other=0.0)
        t_mask = id_ok[:, :, None] & dim_ok[None, None, :]
        t_at = t_ptr + ids[:, :, None] * width + dims[None, None, :]
        u = q_re[:, None, :] - tl.load(t_at, mask=t_mask, other=0.0)
        v = q_im[:, None, :] - tl.load(t_at + d, mask=t_mask, other=0.0)
        acc += tl.sum(tl.sqrt(u * u + v * v), axis=2)  # masked slots: 0 − 0
    acc = tl.where(id_ok, acc, float("nan"))
    tl.store(out_ptr + rows[:, None] * C + cols[None, :], acc, mask=pair_ok)


def _query_gradient(q_ptr, t_ptr, ids_ptr, g_ptr, out_ptr, B, C, E, d,
                    SHARED: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = (tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    dims = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    row_ok = rows < B
    dim_ok = dims < d
    width = 2 * d
    q_mask = row_ok[:, None] & dim_ok[None, :]
    q_re = tl.load(q_ptr + rows[:, None] * width + dims[None, :], mask=q_mask, other=0.0)
    q_im = tl.load(q_ptr + rows[:, None] * width + d + dims[None, :], mask=q_mask, other=0.0)
    acc_re = tl.zeros([BLOCK_B, BLOCK_D], dtype=out_ptr.dtype.element_ty)
    acc_im = tl.zeros([BLOCK_B, BLOCK_D], dtype=out_ptr.dtype.element_ty)
    for c0 in range(0, C, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        col_ok = cols < C
        pair_ok = row_ok[:, None] & col_ok[None, :]
        if SHARED:
            ids = tl.load(ids_ptr + cols, mask=col_ok, other=0)[None, :]
            id_ok = col_ok[None, :] & (ids >= 0) & (ids < E)
        else:
            ids = tl.load(ids_ptr + rows[:, None] * C + cols[None, :], mask=pair_ok, other=0)
            id_ok = pair_ok & (ids >= 0) & (ids < E)
        g = tl.load(g_ptr + rows[:, None] * C + cols[None, :], mask=pair_ok, other=0.0)
        t_mask = id_ok[:, :, None] & dim_ok[None, None, :]
        t_at = t_ptr + ids[:, :, None] * width + dims[None, None, :]
        u = q_re[:, None, :] - tl.load(t_at, mask=t_mask, other=0.0)
        v = q_im[:, None, :] - tl.load(t_at + d, mask=t_mask, other=0.0)
        m = tl.sqrt(u * u + v * v)
        factor = tl.where(t_mask & (m > 0), g[:, :, None] / tl.where(m > 0, m, 1.0), 0.0)
        acc_re += tl.sum(factor * u, axis=1)
        acc_im += tl.sum(factor * v, axis=1)
    tl.store(out_ptr + rows[:, None] * width + dims[None, :], acc_re, mask=q_mask)
    tl.store(out_ptr + rows[:, None] * width + d + dims[None, :], acc_im, mask=q_mask)


def _table_gradient(q_ptr, t_ptr, order_ptr, starts_ptr, g_ptr, out_ptr, B, C, E, d,
                    SHARED: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr):
    # Program (e, slice): the pairs of entity e are entries starts[e] … starts[e + 1] − 1 of
    # ``order``: flat positions b·C + c (per query), or columns c each paired with all B queries
    # (shared; walked as virtual pairs j = entry·B + b).
    e = tl.program_id(0).to(tl.int64)
    dims = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    dim_ok = dims < d
    width = 2 * d
    t_re = tl.load(t_ptr + e * width + dims, mask=dim_ok, other=0.0)
    t_im = tl.load(t_ptr + e * width + d + dims, mask=dim_ok, other=0.0)
    start = tl.load(starts_ptr + e)
    end = tl.load(starts_ptr + e + 1)
    if SHARED:
        start = start * B
        end = end * B
    acc_re = tl.zeros([BLOCK_D], dtype=out_ptr.dtype.element_ty)
    acc_im = tl.zeros([BLOCK_D], dtype=out_ptr.dtype.element_ty)
    for p0 in range(start, end, BLOCK_P):
        j = p0 + tl.arange(0, BLOCK_P)
        ok = j < end
        if SHARED:
            col = tl.load(order_ptr + j // B, mask=ok, other=0)
            row = j % B
            flat = row * C + col
        else:
            flat = tl.load(order_ptr + j, mask=ok, other=0)
            row = flat // C
        g = tl.load(g_ptr + flat, mask=ok, other=0.0)
        mask = ok[:, None] & dim_ok[None, :]
        q_at = q_ptr + row[:, None] * width + dims[None, :]
        u = tl.load(q_at, mask=mask, other=0.0) - t_re[None, :]
        v = tl.load(q_at + d, mask=mask, other=0.0) - t_im[None, :]
        m = tl.sqrt(u * u + v * v)
        factor = tl.where(mask & (m > 0), g[:, None] / tl.where(m > 0, m, 1.0), 0.0)
        acc_re += tl.sum(factor * u, axis=0)
        acc_im += tl.sum(factor * v, axis=0)
    tl.store(out_ptr + e * width + dims, 0.0 - acc_re, mask=dim_ok)
    tl.store(out_ptr + e * width + d + dims, 0.0 - acc_im, mask=dim_ok)


def _configs(kernel: str, interpret: bool) -> list[Any]:
    if interpret:
        rows = [INTERPRETER_CONFIGS[kernel]]
    else:
        rows = {"distance": DISTANCE_CONFIGS, "query_gradient": QUERY_GRADIENT_CONFIGS,
                "table_gradient": TABLE_GRADIENT_CONFIGS}[kernel]
    names = ("BLOCK_P", "BLOCK_D") if kernel == "table_gradient" else ("BLOCK_B", "BLOCK_C", "BLOCK_D")
    return [triton.Config(dict(zip(names, row[:-1])), num_warps=row[-1]) for row in rows]


@functools.cache
def kernels(interpret: bool) -> dict[str, Any]:
    """The three autotuned kernels, jitted for one ``TRITON_INTERPRET`` setting (read by ``triton.jit``)."""
    return {
        name: triton.autotune(configs=_configs(name, interpret), key=KEY)(triton.jit(fn))
        for name, fn in (("distance", _distance), ("query_gradient", _query_gradient),
                         ("table_gradient", _table_gradient))
    }


def _kernels() -> dict[str, Any]:
    if triton is None:
        raise ImportError(f"the triton backend needs triton ({_IMPORT_ERROR}): pip install 'lightning-kge[gpu]'")
    return kernels(interpreting())


def forward(query: Tensor, table: Tensor, ids: Tensor) -> Tensor:
    """``(B, C)`` distances of ``query`` rows to ``table[ids]``; ``ids`` is ``(B, C)`` or shared ``(C,)``."""
    shared = ids.dim() == 1
    B, C, E, d = query.shape[0], ids.shape[-1], table.shape[0], query.shape[1] // 2
    out = query.new_empty(B, C)
    if out.numel() == 0:
        return out
    grid = lambda meta: (triton.cdiv(B, meta["BLOCK_B"]), triton.cdiv(C, meta["BLOCK_C"]))  # noqa: E731
    _kernels()["distance"][grid](query, table, ids, out, B, C, E, d, SHARED=shared)
    return out


def backward(
    grad: Tensor, query: Tensor, table: Tensor, ids: Tensor, need_query: bool, need_table: bool
) -> tuple[Tensor, Tensor]:
    """``(∂L/∂query, ∂L/∂table)`` given ``grad = ∂L/∂D`` (contiguous); an unneeded one is empty."""
    shared = ids.dim() == 1
    B, C, E, d = query.shape[0], ids.shape[-1], table.shape[0], query.shape[1] // 2
    grad_query, grad_table = query.new_empty(0), table.new_empty(0)
    if need_query:
        grad_query = torch.empty_like(query)
        if B * C == 0:
            grad_query.zero_()
        else:
            grid = lambda meta: (triton.cdiv(B, meta["BLOCK_B"]), triton.cdiv(d, meta["BLOCK_D"]))  # noqa: E731
            _kernels()["query_gradient"][grid](query, table, ids, grad, grad_query, B, C, E, d, SHARED=shared)
    if need_table:
        grad_table = torch.empty_like(table)
        sorted_ids, order = torch.sort(ids.reshape(-1), stable=True)
        starts = torch.searchsorted(sorted_ids, torch.arange(E + 1, device=ids.device, dtype=ids.dtype))
        if E:
            grid = lambda meta: (E, triton.cdiv(d, meta["BLOCK_D"]))  # noqa: E731
            _kernels()["table_gradient"][grid](query, table, order, starts, grad, grad_table, B, C, E, d,
                                               SHARED=shared)
    return grad_query, grad_table
