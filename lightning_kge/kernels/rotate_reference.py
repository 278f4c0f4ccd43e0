"""The reference backend of the RotatE distance: the plain maths in eager torch, chunked.

This is the oracle the other backends are tested against, and the fallback where they are
unavailable. It runs on any device. With ``u = q_re − t_re``, ``v = q_im − t_im``,
``m = |u + iv|`` and ``G = ∂L/∂D``:

    D[b, c]          = Σ_i m[b, c, i]
    ∂L/∂q_re[b, i]   =  Σ_c G[b, c] · u[b, c, i] / m[b, c, i]          (likewise im with v)
    ∂L/∂t_re[e, i]   = −Σ_{(b, c) with candidate e} G[b, c] · u[b, c, i] / m[b, c, i]

with the subgradient 0 where ``m = 0``. Ids outside ``[0, E)`` give NaN distances and no
gradient (on CUDA; CPU ids are range-checked before any backend runs). The pairs are walked in chunks of about
:data:`CHUNK_BYTES` of temporaries, so no ``(B, C, 2d)`` tensor is ever held; each chunk is the
broadcast formula (:func:`chunk_distance`, :func:`chunk_gradients`).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

CHUNK_BYTES = 32 * 2**20
"""Budget for the largest temporary of one chunk, ``(rows, cols, 2d)`` values."""


def chunk_distance(query: Tensor, candidates: Tensor) -> Tensor:
    """``(n, k)`` distances of ``query`` ``(n, 2d)`` to ``candidates`` ``(n, k, 2d)`` or ``(k, 2d)``.

    Example:
        >>> chunk_distance(torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 0.0], [3.0, 0.0]]))
        tensor([[5., 4.]])
    """
    if candidates.dim() == 2:
        candidates = candidates[None]
    h = query.shape[1] // 2
    diff = query[:, None, :] - candidates
    return torch.sqrt(diff[..., :h].square() + diff[..., h:].square()).sum(-1)


def chunk_gradients(query: Tensor, candidates: Tensor, grad: Tensor) -> Tensor:
    """``(n, k, 2d)`` terms ``G[a, j] · ∂|q_a − t_j| / ∂q_a`` of the pairs (0 where a difference is 0).

    ``candidates`` is ``(n, k, 2d)`` or ``(k, 2d)``, ``grad`` ``(n, k)``. The query gradient is the
    sum over ``k``; the candidate's gradient is minus the term.
    """
    if candidates.dim() == 2:
        candidates = candidates[None]
    h = query.shape[1] // 2
    diff = query[:, None, :] - candidates
    modulus = torch.sqrt(diff[..., :h].square() + diff[..., h:].square())
    factor = torch.where(modulus > 0, grad[..., None] / torch.where(modulus > 0, modulus, 1.0), 0.0)
    return diff * torch.cat([factor, factor], dim=-1)


def _chunks(rows: int, cols: int, width: int, itemsize: int) -> Iterator[tuple[slice, slice]]:
    """Row and column slices covering ``rows × cols`` pairs, each chunk within the byte budget."""
    pairs = max(1, CHUNK_BYTES // max(1, width * itemsize))
    col_step = max(1, min(cols, pairs))
    row_step = max(1, min(rows, pairs // col_step))
    for r in range(0, rows, row_step):
        for c in range(0, cols, col_step):
            yield slice(r, min(r + row_step, rows)), slice(c, min(c + col_step, cols))


def _candidates(table: Tensor, index: Tensor | None, rows: slice, cols: slice) -> tuple[Tensor, Tensor, Tensor | None]:
    """Candidate rows of a chunk, their ids and which ids are valid (``None``: all).

    Rows are ``(n, k, 2d)`` per query or ``(k, 2d)`` shared. Ids outside ``[0, E)`` (only
    possible on CUDA: CPU ids are checked before any backend runs, and a check here would make
    the host wait for the device) read row 0 and are marked invalid.
    """
    if index is None:
        ids = torch.arange(cols.start, cols.stop, device=table.device)
        return table[cols], ids, None
    ids = index[rows, cols] if index.dim() == 2 else index[cols]
    if ids.device.type == "cpu":
        return table[ids], ids, None
    valid = (ids >= 0) & (ids < table.shape[0])
    ids = ids.where(valid, 0)
    return table[ids], ids, valid


def forward(query: Tensor, table: Tensor, index: Tensor | None) -> Tensor:
    """``(B, C)`` distances; ``index`` is ``(B, C)``, ``(C,)`` or ``None`` (all ``E`` entities)."""
    cols = table.shape[0] if index is None else index.shape[-1]
    out = query.new_empty(query.shape[0], cols)
    for rows, cs in _chunks(query.shape[0], cols, query.shape[1], query.element_size()):
        candidates, _, valid = _candidates(table, index, rows, cs)
        distance = chunk_distance(query[rows], candidates)
        out[rows, cs] = distance if valid is None else distance.masked_fill(~valid, float("nan"))
    return out


def backward(
    grad: Tensor, query: Tensor, table: Tensor, index: Tensor | None, need_query: bool, need_table: bool
) -> tuple[Tensor, Tensor]:
    """Gradients ``(∂L/∂query, ∂L/∂table)`` given ``grad = ∂L/∂D``; an unneeded one is empty."""
    cols = grad.shape[1]
    grad_query = torch.zeros_like(query) if need_query else query.new_empty(0)
    grad_table = torch.zeros_like(table) if need_table else table.new_empty(0)
    if not (need_query or need_table):
        return grad_query, grad_table
    width = query.shape[1]
    for rows, cs in _chunks(query.shape[0], cols, width, query.element_size()):
        candidates, ids, valid = _candidates(table, index, rows, cs)
        chunk_grad = grad[rows, cs] if valid is None else grad[rows, cs].masked_fill(~valid, 0.0)
        terms = chunk_gradients(query[rows], candidates, chunk_grad)
        if need_query:
            grad_query[rows] += terms.sum(1)
        if need_table:
            if ids.dim() == 1:  # shared: one candidate per column, summed over the queries
                grad_table.index_add_(0, ids, terms.sum(0), alpha=-1)
            else:
                grad_table.index_add_(0, ids.reshape(-1), terms.reshape(-1, width), alpha=-1)
    return grad_query, grad_table

