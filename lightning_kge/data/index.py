"""A vectorised index of known triples: membership tests and the true answers of queries."""

from __future__ import annotations

import torch
from torch import Tensor


class TripleIndex:
    """Known triples, sorted twice so that batches of queries are answered without Python loops.

    Tail lookups use the key ``h * R + r`` (sorted, tails in a parallel array), head lookups the
    key ``t * R + r``; membership uses ``(h * R + r) * E + t``. Everything is ``searchsorted`` on
    sorted ``int64`` keys, so it runs on any device.

    Args:
        triples: ``LongTensor (n, 3)`` of ``(h, r, t)``; duplicates are allowed.
        num_entities: ``E``.
        num_relations: ``R``.

    Example:
        >>> index = TripleIndex(torch.tensor([[0, 0, 1], [0, 0, 2], [2, 1, 1]]), 3, 2)
        >>> index.contains(torch.tensor([0, 0]), torch.tensor([0, 1]), torch.tensor([2, 2])).tolist()
        [True, False]
        >>> index.true_tails(torch.tensor([0, 2]), torch.tensor([0, 0]))
        (tensor([0, 0]), tensor([1, 2]))
    """

    def __init__(self, triples: Tensor, num_entities: int, num_relations: int) -> None:
        triples = torch.unique(triples.long().reshape(-1, 3), dim=0)
        self.num_entities = num_entities
        self.num_relations = num_relations
        h, r, t = triples.unbind(1)
        self.keys = torch.sort((h * num_relations + r) * num_entities + t).values
        self.tail_keys, self.tails = _sorted_pairs(h * num_relations + r, t)
        self.head_keys, self.heads = _sorted_pairs(t * num_relations + r, h)

    def to(self, device: torch.device | str) -> TripleIndex:
        """Move the index to ``device`` in place and return it."""
        for name in ("keys", "tail_keys", "tails", "head_keys", "heads"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    @property
    def device(self) -> torch.device:
        return self.keys.device

    def contains(self, h: Tensor, r: Tensor, t: Tensor) -> Tensor:
        """Whether each ``(h, r, t)`` (broadcast together) is a known triple."""
        key = (h * self.num_relations + r) * self.num_entities + t
        return _isin_sorted(key, self.keys)

    def true_tails(self, h: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
        """All known tails of each query ``(h_b, r_b, ?)``, as ``(query_row, entity)`` pairs."""
        return _lookup(h * self.num_relations + r, self.tail_keys, self.tails)

    def true_heads(self, r: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """All known heads of each query ``(?, r_b, t_b)``, as ``(query_row, entity)`` pairs."""
        return _lookup(t * self.num_relations + r, self.head_keys, self.heads)


def _sorted_pairs(keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    order = torch.argsort(keys * (int(values.max()) + 1 if values.numel() else 1) + values)
    return keys[order], values[order]


def _isin_sorted(query: Tensor, sorted_keys: Tensor) -> Tensor:
    if sorted_keys.numel() == 0:
        return torch.zeros_like(query, dtype=torch.bool)
    position = torch.searchsorted(sorted_keys, query).clamp_(max=sorted_keys.numel() - 1)
    return sorted_keys[position] == query


def _lookup(query: Tensor, sorted_keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    start = torch.searchsorted(sorted_keys, query)
    counts = torch.searchsorted(sorted_keys, query, right=True) - start
    rows = torch.repeat_interleave(torch.arange(query.numel(), device=query.device), counts)
    first = torch.repeat_interleave(start - (torch.cumsum(counts, 0) - counts), counts)
    return rows, values[first + torch.arange(rows.numel(), device=query.device)]
