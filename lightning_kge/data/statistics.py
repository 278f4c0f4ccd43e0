"""Statistics of a graph's triples: relation categories, subsampling weights, Bernoulli side
probabilities and degrees. All are computed once, vectorised, from ``(n, 3)`` id tensors."""

from __future__ import annotations

import torch
from torch import Tensor

CATEGORIES = ("1-to-1", "1-to-N", "N-to-1", "N-to-N")
"""Relation categories by average degree (Bordes et al., 2013)."""


def relation_categories(triples: Tensor, num_relations: int, threshold: float = 1.5) -> Tensor:
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
    tph, hpt = tails_per_head(triples, num_relations), heads_per_tail(triples, num_relations)
    return (tph >= threshold).long() + 2 * (hpt >= threshold).long()


def tails_per_head(triples: Tensor, num_relations: int) -> Tensor:
    """``tph``: per relation, distinct triples over distinct heads; ``(R,)`` float64, 0 if unused.

    Example:
        >>> tails_per_head(torch.tensor([[0, 0, 1], [0, 0, 2], [1, 0, 2]]), 1).tolist()
        [1.5]
    """
    triples = torch.unique(triples.reshape(-1, 3), dim=0)
    pairs = _count(triples[:, 1], num_relations)
    return pairs / _distinct(triples[:, [1, 0]], num_relations).clamp(min=1)


def heads_per_tail(triples: Tensor, num_relations: int) -> Tensor:
    """``hpt``: per relation, distinct triples over distinct tails; ``(R,)`` float64, 0 if unused."""
    return tails_per_head(triples[:, [2, 1, 0]], num_relations)


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
    tph, hpt = tails_per_head(triples, num_relations), heads_per_tail(triples, num_relations)
    total = tph + hpt
    return torch.where(total > 0, tph / total.clamp(min=1e-12), 0.5).to(torch.float32)


def subsampling_weights(triples: Tensor, num_entities: int, num_relations: int, start: int = 4) -> Tensor:
    """The paper code's word2vec-style weight ``1 / sqrt(#(h, r) + #(t, r⁻¹))`` per triple.

    Counts are over ``triples``; as in the code, a pair seen once counts ``start`` and each
    further occurrence adds one.

    Example:
        >>> subsampling_weights(torch.tensor([[0, 0, 1], [0, 0, 2]]), 3, 1).tolist()
        [0.3333..., 0.3333...]
    """
    h, r, t = triples.unbind(1)
    count = _pair_counts(h * num_relations + r) + _pair_counts(t * num_relations + r) + 2 * (start - 1)
    return torch.rsqrt(count.to(torch.float32))


def entity_degrees(triples: Tensor, num_entities: int) -> Tensor:
    """How often each entity occurs as head or tail; ``(E,)`` int64 (for degree-based samplers).

    Example:
        >>> entity_degrees(torch.tensor([[0, 0, 1], [1, 0, 2]]), 4).tolist()
        [1, 2, 1, 0]
    """
    return torch.bincount(triples[:, [0, 2]].reshape(-1), minlength=num_entities)


def _pair_counts(keys: Tensor) -> Tensor:
    _, inverse, counts = torch.unique(keys, return_inverse=True, return_counts=True)
    return counts[inverse]


def _distinct(relation_entity: Tensor, num_relations: int) -> Tensor:
    """Number of distinct entities per relation for ``(relation, entity)`` rows."""
    return _count(torch.unique(relation_entity, dim=0)[:, 0], num_relations)


def _count(relations: Tensor, num_relations: int) -> Tensor:
    return torch.bincount(relations, minlength=num_relations).to(torch.float64)
