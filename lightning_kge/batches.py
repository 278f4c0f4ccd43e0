"""The batches that flow from the datamodule to the module: typed, with their shapes."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class NegativeBatch:
    """A training batch: positives and, per positive, ``k`` corrupted heads or tails.

    Attributes:
        positives: ``(B, 3)`` ``(h, r, t)`` ids.
        negatives: ``(B, k)`` entity ids replacing the head or the tail of each positive, or
            ``(k,)`` ids shared by all positives (``shared`` sampling).
        corrupt_head: ``(B,)`` bool: whether row ``b``'s negatives replace its head (else its tail).
        mask: ``False`` for a negative that must not count (it forms a known triple, which
            happens with shared negatives or when every entity is a true answer of a query):
            ``(B, k)`` or broadcastable to it; ``None`` when every negative is valid. Masked
            negatives get weight zero.
        weight: ``(B,)`` per-positive weights (the paper code's subsampling weight, or ones).
        step: the training step that drew the batch (seeds any further random choice of it).
        query: ``(B,)`` dense id of the query each row corrupts, ``(h, r, ?)`` or ``(?, r, t)``, in
            ``[0, num_queries)`` (:meth:`TripleIndex.query_ids`); set only for selections that
            keep per-query state (the ``cached`` sampler), else ``None``.
        num_queries: how many distinct training queries there are (with ``query``).
    """

    positives: Tensor
    negatives: Tensor
    corrupt_head: Tensor
    mask: Tensor | None
    weight: Tensor
    step: int = 0
    query: Tensor | None = None
    num_queries: int = 0

    def row_negatives(self) -> Tensor:
        """``(B, k)`` candidates of each row: shared ``(k,)`` negatives repeated for every row (a view)."""
        return self.negatives.expand(self.positives.shape[0], -1) if self.negatives.dim() == 1 else self.negatives

    def row_mask(self) -> Tensor | None:
        """:attr:`mask` broadcast to ``(B, k)`` (a view), or ``None`` when every negative is valid."""
        return None if self.mask is None else self.mask.expand(self.positives.shape[0], self.negatives.shape[-1])


@dataclass
class EvaluationBatch:
    """Queries to rank with the other true answers to filter out.

    Attributes:
        triples: ``(B, 3)`` query triples; each is ranked as head and as tail prediction.
        tail_filter: ``(rows, entities)``, each ``(n,)``: pairs ``(b, e)`` such that
            ``(h_b, r_b, e)`` is a known triple (over all splits); may include the target.
        head_filter: likewise ``(b, e)`` with ``(e, r_b, t_b)`` known.
    """

    triples: Tensor
    tail_filter: tuple[Tensor, Tensor]
    head_filter: tuple[Tensor, Tensor]

    def filter(self, side: str) -> tuple[Tensor, Tensor]:
        """The filter pairs of ``side`` (``"head"`` or ``"tail"``)."""
        return self.head_filter if side == "head" else self.tail_filter


@dataclass
class QueryBatch:
    """Queries to answer with their best ``k`` entities: ``(h, r, ?)`` or ``(?, r, t)``.

    Attributes:
        entity: ``(B,)`` the entity each query gives: its head when ``side`` is ``"tail"``,
            its tail when ``side`` is ``"head"``.
        relation: ``(B,)`` the relation of each query.
        side: the entity asked for, ``"tail"`` or ``"head"``.
        k: how many answers each query gets.
        exclude: ``(rows, entities)``, each ``(n,)``: answers ``(b, e)`` to leave out (known
            triples, e.g. of the training split); empty tensors to keep every entity.
    """

    entity: Tensor
    relation: Tensor
    side: str
    k: int
    exclude: tuple[Tensor, Tensor]
