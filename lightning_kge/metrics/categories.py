"""Relation categories 1-to-1, 1-to-N, N-to-1, N-to-N by average degree (Bordes et al., 2013)."""

from __future__ import annotations

import torch
from torch import Tensor

CATEGORIES = ("1-to-1", "1-to-N", "N-to-1", "N-to-N")


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
    triples = torch.unique(triples, dim=0)
    pairs = _count(triples[:, 1], num_relations)
    tph = pairs / _distinct(triples[:, [1, 0]], num_relations).clamp(min=1)
    hpt = pairs / _distinct(triples[:, [1, 2]], num_relations).clamp(min=1)
    return (tph >= threshold).long() + 2 * (hpt >= threshold).long()


def _distinct(relation_entity: Tensor, num_relations: int) -> Tensor:
    """Number of distinct entities per relation for ``(relation, entity)`` rows."""
    return _count(torch.unique(relation_entity, dim=0)[:, 0], num_relations)


def _count(relations: Tensor, num_relations: int) -> Tensor:
    return torch.bincount(relations, minlength=num_relations).to(torch.float64)
