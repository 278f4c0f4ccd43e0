"""The entity rows of a training step, read once, so the table's gradient holds each touched row once.

With sparse row gradients every lookup into a table adds its own sparse gradient (one row per
looked-up id), and autograd sums them by concatenating: at a few thousand rows a lookup that is
cheap, at tens of thousands (a batch of 512 with 128 negatives) it copies the batch's rows again
for every lookup. :class:`StepRows` reads the unique ids of a step once (:func:`gather_rows`) and
serves every lookup of the step from those rows; the table's gradient is then one sparse tensor
of the ``U`` touched rows, sorted and distinct (coalesced), never an ``(E, w)`` tensor.
:class:`RowTable`, the models' tables, serves its lookups from them while a step's rows are set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _GatherRows(torch.autograd.Function):
    """``weight[ids]`` for sorted distinct ``ids``; the weight's gradient is sparse: those rows, coalesced."""

    @staticmethod
    def forward(ctx, weight: Tensor, ids: Tensor) -> Tensor:  # noqa: ANN001
        ctx.save_for_backward(ids)
        ctx.shape = weight.shape
        return weight.index_select(0, ids)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: ANN001
        (ids,) = ctx.saved_tensors
        if grad.is_sparse:  # every lookup of the rows was sparse (no dense contribution): rows -> table ids
            grad = grad.coalesce()
            return _sparse(ids[grad.indices()[0]], grad.values(), ctx.shape), None
        return _sparse(ids, grad, ctx.shape), None


def _sparse(ids: Tensor, values: Tensor, shape: torch.Size) -> Tensor:
    """The coalesced sparse tensor of rows ``values`` at sorted distinct ``ids`` (no copy, no check)."""
    return torch.sparse_coo_tensor(ids[None], values, shape, is_coalesced=True, check_invariants=False)


class _LastIdentity(torch.autograd.Function):
    """``x`` itself, as a node created before the step's other uses of ``x`` (see :attr:`StepRows.table`)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: ANN001
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: ANN001
        return grad


def gather_rows(weight: Tensor, ids: Tensor) -> Tensor:
    """Rows ``weight[ids]`` ``(U, w)`` of sorted distinct ``ids`` ``(U,)``; the gradient of ``weight``
    is a coalesced sparse tensor of those rows.

    Example:
        >>> weight = torch.arange(8.0).reshape(4, 2).requires_grad_()
        >>> gather_rows(weight, torch.tensor([1, 3])).sum().backward()
        >>> weight.grad.is_coalesced(), weight.grad.to_dense()
        (True, tensor([[0., 0.],
                [1., 1.],
                [0., 0.],
                [1., 1.]]))
    """
    return _GatherRows.apply(weight, ids)


@dataclass
class StepRows:
    """The rows of a step's entities: ``ids`` ``(U,)`` sorted and distinct, ``rows`` ``(U, w)``.

    Lookups (:meth:`lookup`) read ``rows`` with sparse gradients; a fused kernel reads all of them as
    its table through :attr:`table`. Every id looked up while they are in use must be among ``ids``
    (for CPU tensors this is checked; on CUDA the check would wait for the device, so an id outside
    reads a wrong row).

    ``table`` is ``rows`` through an identity node made with them, before any lookup: autograd runs
    the backward of later nodes first, so the lookups' sparse gradients reach ``rows`` before the
    kernel's dense one, which is then added to in place (a dense gradient that arrives first is
    copied to add a sparse one: a copy of the batch's rows per lookup).
    """

    ids: Tensor
    rows: Tensor
    table: Tensor
    where: Tensor | None = None

    @classmethod
    def read(cls, weight: Tensor, ids: Tensor, where: Tensor | None = None) -> StepRows:
        """Read the rows of every id in ``ids`` (any shape, repeats allowed) from the table ``weight``.

        ``where``: an optional ``(E,)`` integer tensor the rows' positions are written to
        (``where[u] = i`` for the ``i``-th id ``u``), so that :meth:`positions` reads them back in
        one gather instead of a binary search; its other entries may hold anything.
        """
        unique = torch.unique(ids)
        rows = gather_rows(weight, unique)
        if where is not None:
            where[unique] = torch.arange(unique.numel(), device=unique.device, dtype=where.dtype)
        return cls(unique, rows, _LastIdentity.apply(rows), where)

    def positions(self, ids: Tensor) -> Tensor:
        """Where each of ``ids`` lies in :attr:`rows`: ``rows[positions(ids)] = weight[ids]``."""
        if self.where is not None:
            positions = self.where[ids]
        else:
            positions = torch.searchsorted(self.ids, ids.contiguous())
        if ids.device.type == "cpu" and ids.numel():
            found = self.ids[positions.clamp(0, self.ids.numel() - 1)]
            if not torch.equal(found, ids):
                missing = ids[found != ids][0].item()
                raise IndexError(f"entity {missing} was not read for this step (StepRows holds "
                                 f"{self.ids.numel()} ids): pass every entity of the step to reading_rows")
        return positions

    def lookup(self, ids: Tensor) -> Tensor:
        """Rows of ``ids``: ``ids.shape + (w,)``; their gradient reaches :attr:`rows` as a sparse tensor."""
        return F.embedding(self.positions(ids), self.rows, sparse=True)


class RowTable(nn.Embedding):
    """``nn.Embedding`` whose lookups are served from :attr:`step_rows` while those are set.

    Outside a step (``step_rows`` ``None``) it is ``nn.Embedding``: dense gradients, or sparse
    ones with ``sparse=True``. Its weight and state dict are ``nn.Embedding``'s.
    """

    step_rows: StepRows | None = None
    """The rows of the running training step (set by ``KGEModel.reading_rows``), or ``None``."""

    def forward(self, ids: Tensor) -> Tensor:
        if self.step_rows is not None:
            return self.step_rows.lookup(ids)
        return super().forward(ids)
