"""Hard negatives from a per-query cache (NSCaching: Zhang et al., ICDE 2019)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from lightning_kge.batches import NegativeBatch
from lightning_kge.errors import require
from lightning_kge.sampling.selection import Scorer, Weighting, step_generator

SALT = 0xCAC4E
"""Seeds a step's draws from the cache apart from the datamodule's draws of the same step."""
EMPTY = -1
"""An unused cache slot."""


class CacheSelection(Weighting):
    """Negatives drawn from a cache of high-scoring candidates of each query, ``(h, r, ?)`` and ``(?, r, t)``.

    Each training query keeps up to ``cache_size`` entities. On a refresh step (every
    ``refresh_every``-th), each row's cache and the datamodule's fresh uniform candidates of that
    row are scored together without gradient and the ``cache_size`` highest-scoring distinct valid
    ones are kept, best first. The ``k`` negatives of a row are then drawn uniformly, with
    replacement, from its cache; a query not yet cached uses its fresh candidates. The negatives
    are weighed uniformly (``temperature`` 0) or self-adversarially.

    The cache lives on the training device, one ``(num_queries, cache_size)`` table, and travels in
    checkpoints as the module's extra state, so a resumed run continues it. Under DDP each process
    keeps its own cache (it is not a buffer, so DDP does not overwrite it with rank 0's); a
    checkpoint holds rank 0's.

    Args:
        num_negatives: ``k`` negatives per positive drawn from its cache.
        cache_size: ``N``, entities kept per query.
        refresh_every: refresh the caches of a batch's queries every this many steps.
        temperature: ``α`` of self-adversarial weights; 0 gives ``1/k``.
    """

    def __init__(self, num_negatives: int = 128, cache_size: int = 50, refresh_every: int = 1,
                 temperature: float = 0.0) -> None:
        super().__init__(temperature)
        require(isinstance(num_negatives, int) and num_negatives >= 1, "num_negatives", num_negatives, "an integer ≥ 1")
        require(isinstance(cache_size, int) and cache_size >= 1, "cache_size", cache_size, "an integer ≥ 1")
        require(isinstance(refresh_every, int) and refresh_every >= 1, "refresh_every", refresh_every, "an integer ≥ 1")
        self.num_negatives = num_negatives
        self.cache_size = cache_size
        self.refresh_every = refresh_every
        self.entries = torch.full((0, cache_size), EMPTY, dtype=torch.int32)
        """``(num_queries + 1, cache_size)`` cached entity ids per query, best first, ``-1`` where unused
        (the last row takes discarded writes)."""
        self._generator: torch.Generator | None = None

    # --- the cache as checkpoint state (not a buffer: DDP would broadcast rank 0's) ----------------
    def get_extra_state(self) -> dict[str, Any]:
        return {"entries": self.entries}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        entries = state["entries"]
        if entries.shape[1] != self.cache_size:
            raise ValueError(f"the checkpoint's cache keeps {entries.shape[1]} entities per query, this sampler "
                             f"{self.cache_size} (sampler.cache_size)")
        self.entries = entries.to(self.entries.device)

    def _apply(self, fn: Any, recurse: bool = True) -> CacheSelection:  # .to(device) moves the cache too
        super()._apply(fn, recurse)
        self.entries = fn(self.entries)
        return self

    def _table(self, num_queries: int, device: torch.device) -> Tensor:
        """The cache table, allocated at the first batch: one row per query and a last row for discarded writes."""
        if self.entries.shape[0] != num_queries + 1:
            if self.entries.shape[0]:
                raise ValueError(f"the cache holds {self.entries.shape[0] - 1} queries, the training data {num_queries}")
            self.entries = torch.full((num_queries + 1, self.cache_size), EMPTY, dtype=torch.int32, device=device)
        elif self.entries.device != device:
            self.entries = self.entries.to(device)
        return self.entries

    def refresh(self, batch: NegativeBatch, score: Scorer) -> None:
        """Merge the caches of the batch's queries with their fresh candidates; keep each query's best.

        Fixed shapes, no host synchronisation: the ``(query, entity, score)`` entries of every row
        are sorted by query, then score (best first), then entity; repeats of a query-entity pair
        (a query may occur in several rows) are dropped, and the first ``cache_size`` of each query
        are written back in that order.
        """
        assert batch.query is not None
        table = self._table(batch.num_queries, batch.negatives.device)
        cached = table[batch.query].long()  # (B, N)
        fresh, fresh_valid = batch.row_negatives(), batch.row_mask()
        if fresh_valid is None:
            fresh_valid = torch.ones_like(fresh, dtype=torch.bool)
        ids = torch.cat([cached, fresh], dim=1)
        with torch.no_grad():
            scores = score(dataclasses.replace(batch, negatives=ids.clamp(min=0), mask=None))
        valid = torch.cat([cached != EMPTY, fresh_valid], dim=1)
        scores = scores.float().masked_fill(~valid, -float("inf")).flatten()
        query, entity = batch.query[:, None].expand_as(ids).flatten(), ids.flatten()
        order = torch.argsort(entity, stable=True)
        order = order[torch.argsort(scores[order], descending=True, stable=True)]
        order = order[torch.argsort(query[order], stable=True)]
        query, entity, scores = query[order], entity[order], scores[order]
        valid = torch.isfinite(scores)
        valid[1:] &= (query[1:] != query[:-1]) | (entity[1:] != entity[:-1])  # a pair's copies are adjacent
        position = torch.arange(query.numel(), device=query.device)
        first = torch.ones_like(valid)
        first[1:] = query[1:] != query[:-1]
        start = torch.cummax(torch.where(first, position, 0), dim=0).values
        count = torch.cumsum(valid.long(), dim=0)
        slot = count - (count - valid.long())[start] - 1  # valid entries before this one in its query
        keep = valid & (slot < self.cache_size)
        table[batch.query] = EMPTY
        trash = table.shape[0] - 1
        table[torch.where(keep, query, trash), torch.where(keep, slot, 0)] = entity.to(table.dtype)
        table[trash] = EMPTY

    def select(self, batch: NegativeBatch, score: Scorer) -> NegativeBatch:
        if batch.query is None:
            raise ValueError("the cached selection needs each row's query id: use CachedSampler's corruption")
        if batch.step % self.refresh_every == 0:
            self.refresh(batch, score)
        cache = self._table(batch.num_queries, batch.negatives.device)[batch.query].long()
        rows, k = batch.positives.shape[0], self.num_negatives
        filled = (cache != EMPTY).sum(dim=1)  # valid entries come first
        self._generator = step_generator(self._generator, cache.device, batch.step, SALT)
        uniform = torch.rand((rows, k), generator=self._generator, device=cache.device)
        slot = torch.minimum((uniform * filled.clamp(min=1)[:, None]).long(), (filled.clamp(min=1) - 1)[:, None])
        # A query with an empty cache (never refreshed yet) takes the fresh candidates instead.
        fresh, fresh_mask = batch.row_negatives(), batch.row_mask()
        fallback = torch.arange(k, device=cache.device) % fresh.shape[1]
        empty = (filled == 0)[:, None]
        negatives = torch.where(empty, fresh[:, fallback], cache.gather(1, slot))
        mask = None if fresh_mask is None else torch.where(empty, fresh_mask[:, fallback], True)
        return dataclasses.replace(batch, negatives=negatives, mask=mask)

    def extra_repr(self) -> str:
        return (f"num_negatives={self.num_negatives}, cache_size={self.cache_size}, "
                f"refresh_every={self.refresh_every}, temperature={self.temperature}")
