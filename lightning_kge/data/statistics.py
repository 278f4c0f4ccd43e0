"""Statistics of a graph's triples: relation categories, Bernoulli side probabilities, subsampling
weights and degrees. :class:`GraphStatistics` computes them all once, vectorised, from the
indexes the datamodule builds anyway (no Python loop over triples, no ``unique(dim=0)``); the
functions below compute one each from an ``(n, 3)`` id tensor, through the same code."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from lightning_kge.data.index import TripleIndex

CATEGORIES = ("1-to-1", "1-to-N", "N-to-1", "N-to-N")
"""Relation categories by average degree (Bordes et al., 2013)."""

THRESHOLD = 1.5
"""The usual average degree from which a side of a relation counts as "N"."""

START = 4
"""Subsampling: a (entity, relation) pair seen once counts this much (the paper code's choice)."""


@dataclasses.dataclass(frozen=True)
class RelationCounts:
    """Per relation: distinct triples, distinct heads and distinct tails; ``(R,)`` float64 each."""

    triples: Tensor
    heads: Tensor
    tails: Tensor

    @classmethod
    def of(cls, index: TripleIndex, extra: TripleIndex | None = None) -> RelationCounts:
        """The counts over the triples of ``index``, and of ``extra`` (disjoint from them) if given.

        A tail query ``(h, r, ?)`` (key ``h·R + r``) exists once per distinct head of ``r``, a
        head query once per distinct tail, and the number of a tail query's answers is its
        number of distinct triples; the relation of a key is ``key mod R``.
        """
        R, boundary = index.num_relations, index.num_entities * index.num_relations
        tail_keys, head_keys = _split(index.query_table, boundary)
        counts = cls(_per_relation(tail_keys % R, R, _answer_counts(index)[: tail_keys.numel()]),
                     _per_relation(tail_keys % R, R), _per_relation(head_keys % R, R))
        return counts if extra is None else counts.including(extra, index)

    def including(self, extra: TripleIndex, index: TripleIndex) -> RelationCounts:
        """These counts (of ``index``'s triples) plus those of ``extra``'s triples, disjoint from them."""
        if not extra.num_queries:
            return self
        R, boundary = index.num_relations, index.num_entities * index.num_relations
        tail_keys, head_keys = _split(index.query_table, boundary)
        extra_tails, extra_heads = _split(extra.query_table, boundary)
        return RelationCounts(
            self.triples + _per_relation(extra_tails % R, R, _answer_counts(extra)[: extra_tails.numel()]),
            self.heads + _per_relation(extra_tails[~_isin(extra_tails, tail_keys)] % R, R),
            self.tails + _per_relation(extra_heads[~_isin(extra_heads, head_keys)] % R, R),
        )

    @property
    def tails_per_head(self) -> Tensor:
        """``tph``: distinct triples over distinct heads; 0 for an unused relation."""
        return self.triples / self.heads.clamp(min=1)

    @property
    def heads_per_tail(self) -> Tensor:
        """``hpt``: distinct triples over distinct tails; 0 for an unused relation."""
        return self.triples / self.tails.clamp(min=1)

    def categories(self, threshold: float = THRESHOLD) -> Tensor:
        """``(R,)`` index into :data:`CATEGORIES`: a side is "N" when its average reaches ``threshold``."""
        return (self.tails_per_head >= threshold).long() + 2 * (self.heads_per_tail >= threshold).long()

    def head_probability(self) -> Tensor:
        """``(R,)`` float32 ``tph / (tph + hpt)``; 0.5 for an unused relation."""
        tph, hpt = self.tails_per_head, self.heads_per_tail
        total = tph + hpt
        return torch.where(total > 0, tph / total.clamp(min=1e-12), 0.5).to(torch.float32)


@dataclasses.dataclass(frozen=True)
class GraphStatistics:
    """Every statistic the datamodule and the module use, computed once.

    Attributes:
        relation_categories: ``(R,)`` int64, over all splits (:func:`relation_categories`).
        head_probability: ``(R,)`` float32 Bernoulli head probability, over train
            (:func:`head_corruption_probability`).
        subsampling_weights: ``(n_train,)`` float32 weight of each training row
            (:func:`subsampling_weights`).
        degrees: ``(E,)`` int64 occurrences of each entity in train, as head or tail
            (:func:`entity_degrees`).
    """

    relation_categories: Tensor
    head_probability: Tensor
    subsampling_weights: Tensor
    degrees: Tensor

    @classmethod
    def compute(cls, train: Tensor, index: TripleIndex, row_queries: Tensor,
                extra: TripleIndex | None = None) -> GraphStatistics:
        """The statistics of a graph from its training index and, for the categories, ``extra``.

        Args:
            train: ``(n, 3)`` training ids, duplicates included.
            index: the :class:`TripleIndex` of ``train``.
            row_queries: ``(2, n)`` dense query ids of each training row, as
                :meth:`TripleIndex.with_row_queries` gives them.
            extra: an index of the valid and test triples that are not in train (categories are
                taken over all splits), or ``None``.
        """
        train_counts = RelationCounts.of(index)
        every_split = train_counts if extra is None else train_counts.including(extra, index)
        return cls(
            relation_categories=every_split.categories(),
            head_probability=train_counts.head_probability(),
            subsampling_weights=_weights(row_queries, index.num_queries),
            degrees=entity_degrees(train, index.num_entities),
        )

    def state(self) -> dict[str, Tensor]:
        """The tensors, by field name (for a cache)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def relation_categories(triples: Tensor, num_relations: int, threshold: float = THRESHOLD) -> Tensor:
    """The category of each relation, as an index into :data:`CATEGORIES`.

    ``tph`` (tails per head) is the mean number of distinct tails over the distinct heads of a
    relation, ``hpt`` likewise; a side is "N" when its average reaches ``threshold``. A relation
    with no triples is 1-to-1.

    Args:
        triples: ``LongTensor (n, 3)``, usually all splits together.
        num_relations: ``R``.
        threshold: the usual 1.5.

    Returns:
        ``LongTensor (R,)``: 0 = 1-to-1, 1 = 1-to-N, 2 = N-to-1, 3 = N-to-N.

    Example:
        >>> t = torch.tensor([[0, 0, 1], [0, 0, 2], [3, 1, 4]])
        >>> [CATEGORIES[c] for c in relation_categories(t, 2)]
        ['1-to-N', '1-to-1']
    """
    return _counts(triples, num_relations).categories(threshold)


def tails_per_head(triples: Tensor, num_relations: int) -> Tensor:
    """``tph``: per relation, distinct triples over distinct heads; ``(R,)`` float64, 0 if unused.

    Example:
        >>> tails_per_head(torch.tensor([[0, 0, 1], [0, 0, 2], [1, 0, 2]]), 1).tolist()
        [1.5]
    """
    return _counts(triples, num_relations).tails_per_head


def heads_per_tail(triples: Tensor, num_relations: int) -> Tensor:
    """``hpt``: per relation, distinct triples over distinct tails; ``(R,)`` float64, 0 if unused."""
    return _counts(triples, num_relations).heads_per_tail


def head_corruption_probability(triples: Tensor, num_relations: int) -> Tensor:
    """Bernoulli corruption (Wang et al., AAAI 2014, TransH): ``p(head) = tph / (tph + hpt)``.

    Corrupting the head of a 1-to-N relation (many tails per head) is less likely to produce a
    false negative than corrupting its tail, and the other way round for N-to-1 relations. A
    relation without triples gets 0.5.

    Returns:
        ``(R,)`` float32 probabilities of replacing the head.

    Example:
        >>> t = torch.tensor([[0, 0, 1], [0, 0, 2], [0, 0, 3], [5, 1, 4]])
        >>> head_corruption_probability(t, 3).tolist()
        [0.75, 0.5, 0.5]
    """
    return _counts(triples, num_relations).head_probability()


def subsampling_weights(triples: Tensor, num_entities: int, num_relations: int, start: int = START) -> Tensor:
    """The paper code's word2vec-style weight ``1 / sqrt(#(h, r) + #(t, r⁻¹))`` per triple.

    Counts are over ``triples``; as in the code, a pair seen once counts ``start`` and each
    further occurrence adds one.

    Example:
        >>> subsampling_weights(torch.tensor([[0, 0, 1], [0, 0, 2]]), 3, 1).tolist()
        [0.3333..., 0.3333...]
    """
    index, row_queries = TripleIndex.with_row_queries(triples, num_entities, num_relations)
    return _weights(row_queries, index.num_queries, start)


def entity_degrees(triples: Tensor, num_entities: int) -> Tensor:
    """How often each entity occurs as head or tail; ``(E,)`` int64 (for degree-based samplers).

    Example:
        >>> entity_degrees(torch.tensor([[0, 0, 1], [1, 0, 2]]), 4).tolist()
        [1, 2, 1, 0]
    """
    triples = torch.as_tensor(triples).reshape(-1, 3)
    return torch.bincount(triples[:, 0].long(), minlength=num_entities) + torch.bincount(
        triples[:, 2].long(), minlength=num_entities)


def _weights(row_queries: Tensor, num_queries: int, start: int = START) -> Tensor:
    """``1 / sqrt(#tail query + #head query + 2·(start − 1))`` of each row, counts with duplicates."""
    counts = torch.bincount(row_queries.reshape(-1), minlength=num_queries)
    total = counts[row_queries[0]] + counts[row_queries[1]] + 2 * (start - 1)
    return torch.rsqrt(total.to(torch.float32))


def _counts(triples: Tensor, num_relations: int) -> RelationCounts:
    triples = torch.as_tensor(triples).reshape(-1, 3).long()
    num_entities = int(triples[:, [0, 2]].max()) + 1 if triples.numel() else 1
    return RelationCounts.of(TripleIndex(triples, num_entities, num_relations))


def _split(query_table: Tensor, boundary: int) -> tuple[Tensor, Tensor]:
    """Tail query keys (below ``E·R``) and head query keys of a sorted query table, each rebased to ``[0, E·R)``."""
    cut = int(torch.searchsorted(query_table, torch.tensor(boundary, device=query_table.device)))
    return query_table[:cut], query_table[cut:] - boundary


def _answer_counts(index: TripleIndex) -> Tensor:
    """Number of known answers of each query, in query-id order."""
    return torch.bincount(index.answers // index.num_entities, minlength=index.num_queries)


def _per_relation(relations: Tensor, num_relations: int, weights: Tensor | None = None) -> Tensor:
    counts = torch.bincount(relations, weights=None if weights is None else weights.to(torch.float64),
                            minlength=num_relations)
    return counts.to(torch.float64)


def _isin(keys: Tensor, sorted_keys: Tensor) -> Tensor:
    if sorted_keys.numel() == 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    position = torch.searchsorted(sorted_keys, keys).clamp_(max=sorted_keys.numel() - 1)
    return sorted_keys[position] == keys
