"""The chunked torch backend of :func:`~lightning_kge.kernels.rotate_distance.rotate_distance`.

Forward and backward walk over chunks of (query, candidate) pairs and call the chunk kernels
of :mod:`~lightning_kge.kernels.rotate_chunks`; nothing of size ``(B, C, d)`` is ever held.

With ``G = ∂L/∂D``, ``u = q_re − t_re``, ``v = q_im − t_im`` and ``m = |u + iv|``:

    ∂L/∂q_re[b, i] =  Σ_c G[b, c] · u[b, c, i] / m[b, c, i]     (likewise im with v)
    ∂L/∂t_re[e, i] = −Σ_{(b, c): index[b, c] = e} G[b, c] · u[b, c, i] / m[b, c, i]

Query gradients are a reduction over candidates. Table gradients avoid a scatter of per-pair
terms: shared candidates use the transposed reduction over queries; per-query candidates are
regrouped by entity first (:func:`group_by_entity`), so each entity's gradient is again a dense
reduction over the queries that use it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_kge.kernels.rotate_chunks import GROUP, Kernels


def group_by_entity(index: Tensor, grad: Tensor, slots: int) -> tuple[Tensor, Tensor, Tensor]:
    """Regroups per-query pairs by candidate entity into padded rows.

    Args:
        index: (B, C) candidate entity ids.
        grad: (B, C) upstream gradient of the distances.
        slots: pairs per output row.

    Returns:
        ``entity`` (R,), ``query`` (R, slots) and ``weight`` (R, slots): row ``r`` holds up to
        ``slots`` pairs ``(query[r, s], entity[r])`` with gradient ``weight[r, s]``; unused
        slots have weight 0. An entity with more than ``slots`` pairs spans several rows.

    Example:
        >>> entity, query, weight = group_by_entity(torch.tensor([[2, 0], [2, 2]]), torch.ones(2, 2), 2)
        >>> entity.tolist(), query.tolist(), weight.tolist()
        ([0, 2, 2], [[0, 0], [0, 1], [1, 0]], [[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
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


def _ranges(total: int, step: int) -> list[tuple[int, int]]:
    return [(start, min(start + step, total)) for start in range(0, total, step)]


class TorchBackend:
    """Chunked forward and backward in torch, for the three index modes.

    Args:
        compiled: use the ``torch.compile`` chunk kernels (else eager chunks).
        pairs: (query, candidate) pairs per chunk of the per-pair kernels.
        block_pairs: pairs per call of the shared-candidate forward kernel.
    """

    def __init__(self, compiled: bool, pairs: int, block_pairs: int) -> None:
        self.kernels = Kernels(compiled)
        self.pairs = pairs
        self.block_pairs = block_pairs

    # --- shared candidates: ``ids`` (C,) ------------------------------------------------------
    def shared_forward(self, q: Tensor, table: Tensor, ids: Tensor) -> Tensor:
        rows, cols = q.shape[0], ids.shape[0]
        out = q.new_empty(rows, cols)
        row_step, col_step = _square(self.block_pairs, rows, cols)
        for c0, c1 in _ranges(cols, col_step):
            for b0, b1 in _ranges(rows, row_step):
                out[b0:b1, c0:c1] = self.kernels.block(q[b0:b1], table, ids[c0:c1])
        return out

    def shared_backward(
        self, q: Tensor, table: Tensor, ids: Tensor, grad: Tensor, need_q: bool, need_table: bool
    ) -> tuple[Tensor | None, Tensor | None]:
        rows, cols = q.shape[0], ids.shape[0]
        grad_q = torch.zeros_like(q) if need_q else None
        grad_table = torch.zeros_like(table) if need_table else None
        row_step, col_step = _square(self.pairs, rows, cols)
        for c0, c1 in _ranges(cols, col_step):
            col_ids = ids[c0:c1]
            for b0, b1 in _ranges(rows, row_step):
                g = grad[b0:b1, c0:c1]
                if grad_q is not None:
                    grad_q[b0:b1] += self.kernels.gradient(q[b0:b1], table, col_ids.expand(b1 - b0, -1), g)
                if grad_table is not None:
                    row_ids = torch.arange(b0, b1, device=q.device).expand(c1 - c0, -1)
                    part = self.kernels.gradient(table[col_ids], q, row_ids, g.t())
                    grad_table.index_add_(0, col_ids, part)
        return grad_q, grad_table

    # --- per-query candidates: ``index`` (B, C) -----------------------------------------------
    def per_query_forward(self, q: Tensor, table: Tensor, index: Tensor) -> Tensor:
        rows, cols = index.shape
        out = q.new_empty(rows, cols)
        col_step = min(cols, self.pairs) or 1
        row_step = max(1, min(rows, self.pairs // col_step))
        for b0, b1 in _ranges(rows, row_step):
            for c0, c1 in _ranges(cols, col_step):
                out[b0:b1, c0:c1] = self.kernels.distances(q[b0:b1], table, index[b0:b1, c0:c1])
        return out

    def per_query_backward(
        self, q: Tensor, table: Tensor, index: Tensor, grad: Tensor, need_q: bool, need_table: bool
    ) -> tuple[Tensor | None, Tensor | None]:
        rows, cols = index.shape
        grad_q = grad_table = None
        if need_q:
            grad_q = torch.zeros_like(q)
            col_step = min(cols, self.pairs) or 1
            row_step = max(1, min(rows, self.pairs // col_step))
            for b0, b1 in _ranges(rows, row_step):
                for c0, c1 in _ranges(cols, col_step):
                    grad_q[b0:b1] += self.kernels.gradient(
                        q[b0:b1], table, index[b0:b1, c0:c1], grad[b0:b1, c0:c1]
                    )
        if need_table:
            grad_table = torch.zeros_like(table)
            if index.numel():
                # Expected pairs per distinct entity, rounded up to the kernel's group size.
                mean = math.ceil(index.numel() / min(index.numel(), table.shape[0]))
                slots = min(8 * GROUP, GROUP * math.ceil(mean / GROUP))
                entity, query, weight = group_by_entity(index, grad, slots)
                row_step = max(1, self.pairs // slots)
                for r0, r1 in _ranges(entity.shape[0], row_step):
                    part = self.kernels.gradient(table[entity[r0:r1]], q, query[r0:r1], weight[r0:r1])
                    grad_table.index_add_(0, entity[r0:r1], part)
        return grad_q, grad_table


def _square(pairs: int, rows: int, cols: int) -> tuple[int, int]:
    """Rows and columns of a chunk of about ``pairs`` pairs, square where the shape allows."""
    row_step = max(1, min(rows, math.isqrt(pairs)))
    return row_step, max(1, min(cols, pairs // row_step))
