"""A compact index of known triples: membership tests, the true answers of queries, uniform
draws outside them; and :class:`UnionIndex`, several disjoint indexes consulted as one."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_kge.errors import UserError, require

MAX_IDS = 2**31
"""Largest entity or relation count an index takes (ids fit in ``int32``)."""

INT64_MAX = 2**63 - 1

STATE = ("query_table", "answers", "draw_keys", "saturated")
"""The tensors of :meth:`TripleIndex.state` (what a cache stores)."""


class TripleIndex:
    """Known triples as sorted ``int64`` arrays, answering batches of queries with no Python loop.

    Every distinct known triple ``(h, r, t)`` answers two queries: the tail query ``(h, r, ?)``,
    keyed ``h·R + r``, and the head query ``(?, r, t)``, keyed ``E·R + t·R + r``. ``query_table``
    holds the distinct keys, sorted (tail queries first: their keys are below ``E·R``); a query's
    position there is its dense id ``q``. ``answers`` holds ``q·E + a`` for each distinct
    (query, answer) pair, sorted, so the answers of query ``q`` are the run of values in
    ``[q·E, (q+1)·E)``, in increasing order. Everything is ``searchsorted`` on these two arrays: it
    runs on any device, with fixed shapes and no host sync. Memory: 8 bytes per query and 16 per
    (query, answer) pair (``answers`` and ``draw_keys``), i.e. about 40 bytes per triple.

    No key overflows ``int64``: with ``E, R ≤ 2³¹`` a query key is below ``2·E·R ≤ 2⁶³``, and the
    packed answers are below ``(Q + 1)·E``, which the constructor checks (it holds for any graph of
    fewer than ``2³¹`` triples, since ``Q ≤ 2n``).

    :meth:`draw_unknown` draws entities uniformly among those that are *not* known answers of a
    query, exactly and without rejection: for a query whose sorted known answers are
    ``a_0 < a_1 < …`` (``n`` of them), draw ``u`` uniform in ``[0, E − n)``; the ``u``-th unknown
    entity is ``u + #{j : a_j − j ≤ u}``, one ``searchsorted`` on the keys
    ``q·E + (a_j − j)``, which are sorted because ``a_j − j`` never decreases and stays in ``[0, E)``.

    Args:
        triples: ``(n, 3)`` integer ids ``(h, r, t)``; duplicates are allowed.
        num_entities: ``E``, at most ``2³¹``.
        num_relations: ``R``, at most ``2³¹``.

    Raises:
        ArgumentError: ``E`` or ``R`` outside ``[1, 2³¹]``.
        UserError: so many distinct queries that packed answers would overflow ``int64``.

    Example:
        >>> index = TripleIndex(torch.tensor([[0, 0, 1], [0, 0, 2], [2, 1, 1]]), 3, 2)
        >>> index.contains(torch.tensor([0, 0]), torch.tensor([0, 1]), torch.tensor([2, 2])).tolist()
        [True, False]
        >>> index.true_tails(torch.tensor([0, 2]), torch.tensor([0, 0]))
        (tensor([0, 0]), tensor([1, 2]))
    """

    def __init__(self, triples: Tensor, num_entities: int, num_relations: int) -> None:
        self._build(torch.as_tensor(triples), int(num_entities), int(num_relations))

    @classmethod
    def with_row_queries(cls, triples: Tensor, num_entities: int, num_relations: int) -> tuple[TripleIndex, Tensor]:
        """The index of ``triples`` and, for each row, the dense ids of its two queries.

        Returns:
            ``(index, queries)``; ``queries`` is ``(2, n)``: row 0 the id of each triple's tail
            query ``(h, r, ?)``, row 1 of its head query ``(?, r, t)`` (statistics count them).
        """
        index = cls.__new__(cls)
        queries = index._build(torch.as_tensor(triples), int(num_entities), int(num_relations))
        return index, queries

    def _build(self, triples: Tensor, num_entities: int, num_relations: int) -> Tensor:
        check_sizes(num_entities, num_relations)
        self.num_entities, self.num_relations = num_entities, num_relations
        triples = triples.reshape(-1, 3)
        h, r, t = (triples[:, i].long() for i in range(3))
        n = h.numel()
        keys = torch.empty(2 * n, dtype=torch.long, device=triples.device)
        torch.add(h * num_relations, r, out=keys[:n])
        torch.add(t * num_relations, r, out=keys[n:]).add_(num_entities * num_relations)
        self.query_table, queries = torch.unique(keys, sorted=True, return_inverse=True)
        """The sorted keys of every known query, tail queries then head queries (see :meth:`query_ids`)."""
        del keys
        check_packing(self.query_table.numel(), num_entities)
        packed = queries * num_entities
        packed[:n] += t
        packed[n:] += h
        self.answers = torch.unique(packed, sorted=True)
        """``q·E + a`` of each distinct (query, answer) pair, sorted."""
        del packed
        runs = torch.bincount(self.answers // num_entities, minlength=self.num_queries)
        self.saturated = bool(runs.numel() and int(runs.max()) >= num_entities)
        """Whether some query has every entity as a known answer (its draws must be masked)."""
        self._draw_keys: Tensor | None = None
        return queries.reshape(2, -1)

    # --- state ------------------------------------------------------------------------------------
    def state(self) -> dict[str, Tensor]:
        """The arrays that make up the index (for a cache); :meth:`from_state` is the inverse."""
        return {"query_table": self.query_table, "answers": self.answers, "draw_keys": self.draw_keys,
                "saturated": torch.tensor(self.saturated)}

    @classmethod
    def from_state(cls, state: dict[str, Tensor], num_entities: int, num_relations: int) -> TripleIndex:
        """The index whose :meth:`state` is ``state`` (arrays are used as they are, e.g. memory-mapped)."""
        check_sizes(num_entities, num_relations)
        index = cls.__new__(cls)
        index.num_entities, index.num_relations = int(num_entities), int(num_relations)
        index.query_table, index.answers, index._draw_keys = state["query_table"], state["answers"], state["draw_keys"]
        index.saturated = bool(state["saturated"])
        check_packing(index.num_queries, index.num_entities)
        return index

    @property
    def draw_keys(self) -> Tensor:
        """``q·E + a_j − j`` for the ``j``-th answer ``a_j`` of each query ``q`` (made on first use)."""
        if self._draw_keys is None:
            E = self.num_entities
            runs = torch.bincount(self.answers // E, minlength=self.num_queries) if self.answers.numel() else \
                torch.zeros(self.num_queries, dtype=torch.long, device=self.device)
            starts = torch.cumsum(runs, 0) - runs
            position = torch.arange(self.answers.numel(), device=self.device) - torch.repeat_interleave(starts, runs)
            self._draw_keys = self.answers - position
        return self._draw_keys

    @property
    def num_queries(self) -> int:
        """How many distinct queries ``(h, r, ?)`` and ``(?, r, t)`` the known triples answer."""
        return self.query_table.numel()

    @property
    def num_pairs(self) -> int:
        """How many distinct (query, answer) pairs: twice the number of distinct triples."""
        return self.answers.numel()

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
        self.query_table, self.answers = self.query_table.to(device), self.answers.to(device)
        if self._draw_keys is not None:
            self._draw_keys = self._draw_keys.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.answers.device

    # --- queries ----------------------------------------------------------------------------------
    def contains(self, h: Tensor, r: Tensor, t: Tensor) -> Tensor:
        """Whether each ``(h, r, t)`` (broadcast together) is a known triple."""
        q, present = self._find(h * self.num_relations + r)
        return present & _isin_sorted(q * self.num_entities + t, self.answers)

    def true_tails(self, h: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
        """All known tails of each query ``(h_b, r_b, ?)``, as ``(query_row, entity)`` pairs."""
        return self._answers_of(h * self.num_relations + r)

    def true_heads(self, r: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """All known heads of each query ``(?, r_b, t_b)``, as ``(query_row, entity)`` pairs."""
        return self._answers_of(self.num_entities * self.num_relations + t * self.num_relations + r)

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
        E = self.num_entities
        q, present = self._find(query_keys)
        start, end = self._run(q, present)
        free = E - (end - start)
        # u in [0, free): a float64 uniform scaled (its bias is below 2⁻⁵³, and it is twice as fast
        # as an int64 modulo on CPU); the clamp guards the rounding of u·free up to free.
        uniform = torch.rand((query_keys.shape[0], k), generator=generator, device=query_keys.device, dtype=torch.float64)
        top = free.clamp(min=1)[:, None]
        draw = torch.minimum((uniform * top).long(), top - 1)
        below = torch.searchsorted(self.draw_keys, q[:, None] * E + draw, right=True) - start[:, None]
        has_unknown = free > 0
        ids = torch.where(has_unknown[:, None], draw + torch.where(present[:, None], below, 0), 0)
        return ids, has_unknown

    def _find(self, keys: Tensor) -> tuple[Tensor, Tensor]:
        """Dense query id (or insertion point) of each key, and whether the query is known."""
        q = torch.searchsorted(self.query_table, keys)
        if self.num_queries == 0:
            return q, torch.zeros_like(keys, dtype=torch.bool)
        return q, self.query_table[q.clamp(max=self.num_queries - 1)] == keys

    def _run(self, q: Tensor, present: Tensor) -> tuple[Tensor, Tensor]:
        """``[start, end)`` of each query's answers in ``answers`` (empty for unknown queries)."""
        E = self.num_entities
        start = torch.searchsorted(self.answers, q * E)
        end = torch.where(present, torch.searchsorted(self.answers, (q + 1) * E), start)
        return start, end

    def _answers_of(self, keys: Tensor) -> tuple[Tensor, Tensor]:
        q, present = self._find(keys)
        start, end = self._run(q, present)
        counts = end - start
        rows = torch.repeat_interleave(torch.arange(keys.numel(), device=keys.device), counts)
        first = torch.repeat_interleave(start - (torch.cumsum(counts, 0) - counts), counts)
        return rows, self.answers[first + torch.arange(rows.numel(), device=keys.device)] % self.num_entities


class UnionIndex:
    """Several :class:`TripleIndex` of disjoint triples, consulted as one (membership, true answers).

    The datamodule's evaluation filter is the training index (built once, for corruption) and
    a small index of the valid and test triples that are not training triples: no triple is
    indexed twice, so each true answer comes once.

    Example:
        >>> train = TripleIndex(torch.tensor([[0, 0, 1]]), 3, 1)
        >>> union = UnionIndex(train, TripleIndex(torch.tensor([[0, 0, 2]]), 3, 1))
        >>> union.true_tails(torch.tensor([0]), torch.tensor([0]))
        (tensor([0, 0]), tensor([1, 2]))
    """

    def __init__(self, *parts: TripleIndex) -> None:
        require(len(parts) >= 1 and len({(p.num_entities, p.num_relations) for p in parts}) == 1,
                "parts", len(parts), "one or more indexes over the same entities and relations")
        self.parts = parts
        self.num_entities, self.num_relations = parts[0].num_entities, parts[0].num_relations

    def to(self, device: torch.device | str) -> UnionIndex:
        """Move every part to ``device`` in place and return the union."""
        for part in self.parts:
            part.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.parts[0].device

    def contains(self, h: Tensor, r: Tensor, t: Tensor) -> Tensor:
        """Whether each ``(h, r, t)`` (broadcast together) is known to some part."""
        found = self.parts[0].contains(h, r, t)
        for part in self.parts[1:]:
            found = found | part.contains(h, r, t)
        return found

    def true_tails(self, h: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
        """All known tails of each query ``(h_b, r_b, ?)`` over the parts, as ``(query_row, entity)`` pairs."""
        return _concat([part.true_tails(h, r) for part in self.parts])

    def true_heads(self, r: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """All known heads of each query ``(?, r_b, t_b)`` over the parts, as ``(query_row, entity)`` pairs."""
        return _concat([part.true_heads(r, t) for part in self.parts])


def check_sizes(num_entities: int, num_relations: int) -> None:
    """Refuse entity or relation counts outside ``[1, 2³¹]`` (an :class:`ArgumentError`)."""
    require(1 <= num_entities <= MAX_IDS, "num_entities", num_entities, f"an integer in [1, {MAX_IDS:,}]")
    require(1 <= num_relations <= MAX_IDS, "num_relations", num_relations, f"an integer in [1, {MAX_IDS:,}]")


def check_packing(num_queries: int, num_entities: int) -> None:
    """Refuse an index whose packed answers ``q·E + a`` could exceed ``int64`` (``(Q + 1)·E > 2⁶³ − 1``).

    Example:
        >>> check_packing(2**32, 2**31)
        Traceback (most recent call last):
        ...
        lightning_kge.errors.UserError: 4,294,967,296 distinct queries over 2,147,483,648 entities overflow the index's int64 keys (TripleIndex): index fewer triples (under 2³¹ triples always fit)
    """
    if (num_queries + 1) * num_entities > INT64_MAX:
        raise UserError(
            f"{num_queries:,} distinct queries over {num_entities:,} entities overflow the index's int64 keys",
            "TripleIndex", "index fewer triples (under 2³¹ triples always fit)",
        )


def _concat(pairs: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    if len(pairs) == 1:
        return pairs[0]
    return torch.cat([rows for rows, _ in pairs]), torch.cat([entities for _, entities in pairs])


def _isin_sorted(query: Tensor, sorted_keys: Tensor) -> Tensor:
    if sorted_keys.numel() == 0:
        return torch.zeros_like(query, dtype=torch.bool)
    position = torch.searchsorted(sorted_keys, query).clamp_(max=sorted_keys.numel() - 1)
    return sorted_keys[position] == query
