"""A vectorised index of known triples: membership tests and the true answers of queries."""

from __future__ import annotations

import torch
from torch import Tensor


class TripleIndex:
    """Known triples, sorted so that batches of queries are answered without Python loops.

    Tail lookups use the key ``h * R + r`` (sorted, tails in a parallel array), head lookups the
    key ``t * R + r``; membership uses ``(h * R + r) * E + t``. Everything is ``searchsorted`` on
    sorted ``int64`` keys, so it runs on any device, with fixed shapes and no host sync.

    :meth:`draw_unknown` draws entities uniformly among those that are *not* known answers of a
    query, exactly and without rejection: for a query whose sorted known answers are
    ``a_0 < a_1 < …`` (``n`` of them), draw ``u`` uniform in ``[0, E − n)``; the ``u``-th unknown
    entity is ``u + #{j : a_j − j ≤ u}``, one ``searchsorted`` on the keys
    ``query · E + (a_j − j)``, which are sorted because ``a_j − j`` never decreases.

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
        # Tail queries are keyed h·R + r, head queries E·R + t·R + r: one sorted array for both.
        answer_keys = torch.cat([self.tail_keys, num_entities * num_relations + self.head_keys])
        answers = torch.cat([self.tails, self.heads])
        self.answer_keys = answer_keys
        self.draw_keys = answer_keys * num_entities + answers - _position_in_run(answer_keys)
        counts = torch.unique_consecutive(answer_keys, return_counts=True)[1]
        self.saturated = bool(counts.numel() and int(counts.max()) >= num_entities)
        """Whether some query has every entity as a known answer (its draws must be masked)."""
        self.query_table = torch.unique_consecutive(answer_keys)
        """The sorted keys of every known query, tail queries then head queries (see :meth:`query_ids`)."""

    @property
    def num_queries(self) -> int:
        """How many distinct queries ``(h, r, ?)`` and ``(?, r, t)`` the known triples answer."""
        return self.query_table.numel()

    def query_ids(self, query_keys: Tensor) -> Tensor:
        """Dense ids in ``[0, num_queries)`` of known queries given by :meth:`query_keys`.

        A training positive's query is always known; an unknown key gets the id of the next
        known one (or ``num_queries``).

        Example:
            >>> index = TripleIndex(torch.tensor([[0, 0, 1], [0, 0, 2], [2, 0, 1]]), 3, 1)
            >>> index.num_queries, index.query_ids(index.query_keys(torch.tensor([[2, 0, 1], [0, 0, 2]]),
            ...                                                      torch.tensor([False, True]))).tolist()
            (4, [1, 3])
        """
        return torch.searchsorted(self.query_table, query_keys)

    def to(self, device: torch.device | str) -> TripleIndex:
        """Move the index to ``device`` in place and return it."""
        for name in ("keys", "tail_keys", "tails", "head_keys", "heads", "answer_keys", "draw_keys", "query_table"):
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


    def query_keys(self, positives: Tensor, corrupt_head: Tensor) -> Tensor:
        """The key of the query whose answers a corruption replaces: ``(?, r, t)`` or ``(h, r, ?)``.

        Args:
            positives: ``(B, 3)`` triples.
            corrupt_head: ``(B,)`` bool, ``True`` where the head is replaced.
        """
        h, r, t = positives.unbind(1)
        tail_query = h * self.num_relations + r
        head_query = self.num_entities * self.num_relations + t * self.num_relations + r
        return torch.where(corrupt_head, head_query, tail_query)

    def draw_unknown(self, query_keys: Tensor, k: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``k`` entities per query, uniform over the entities that are not known answers of it.

        Args:
            query_keys: ``(B,)`` keys from :meth:`query_keys`.
            k: draws per query (with replacement).
            generator: the random generator (on the keys' device).

        Returns:
            ``(ids (B, k), has_unknown (B,))``; where every entity is a known answer of a query
            (``has_unknown`` false) its ids are 0 and must be masked.

        Example:
            >>> index = TripleIndex(torch.tensor([[0, 0, 1], [0, 0, 3]]), 5, 1)
            >>> keys = index.query_keys(torch.tensor([[0, 0, 1]]), torch.tensor([False]))
            >>> ids, ok = index.draw_unknown(keys, 1000, torch.Generator().manual_seed(0))
            >>> sorted(set(ids.flatten().tolist())), ok.tolist()
            ([0, 2, 4], [True])
        """
        start = torch.searchsorted(self.answer_keys, query_keys)
        known = torch.searchsorted(self.answer_keys, query_keys, right=True) - start
        free = self.num_entities - known
        # u in [0, free): a float64 uniform scaled (its bias is below 2⁻⁵³, and it is twice as fast
        # as an int64 modulo on CPU); the clamp guards the rounding of u·free up to free.
        uniform = torch.rand((query_keys.shape[0], k), generator=generator, device=query_keys.device, dtype=torch.float64)
        top = free.clamp(min=1)[:, None]
        draw = torch.minimum((uniform * top).long(), top - 1)
        target = query_keys[:, None] * self.num_entities + draw
        below = torch.searchsorted(self.draw_keys, target, right=True) - start[:, None]
        has_unknown = free > 0
        ids = torch.where(has_unknown[:, None], draw + below, 0)
        return ids, has_unknown


def _position_in_run(sorted_keys: Tensor) -> Tensor:
    """For each element of a sorted array, its position among the equal keys before it."""
    _, counts = torch.unique_consecutive(sorted_keys, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    return torch.arange(sorted_keys.numel(), device=sorted_keys.device) - torch.repeat_interleave(starts, counts)


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
