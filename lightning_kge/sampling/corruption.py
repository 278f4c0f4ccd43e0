"""Corruption: which side of each positive to replace, and the candidate entities (datamodule side)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from lightning_kge.batches import NegativeBatch
from lightning_kge.data.index import TripleIndex
from lightning_kge.errors import require

Side = Literal["alternate", "bernoulli"]
SIDES: tuple[str, ...] = ("alternate", "bernoulli")


class Corruption:
    """Draws the negatives of a training batch, without the model: the datamodule's part of sampling.

    * **Side.** ``alternate``: whole batches alternate tail-batch (even steps) and head-batch (odd
      steps), as the RotatE paper's code does. ``bernoulli``: each positive's head is replaced with
      probability ``tph / (tph + hpt)`` of its relation, else its tail (Wang et al., AAAI 2014).
    * **Candidates.** ``num_negatives`` entities per positive, uniform over all entities; with
      ``filtered``, uniform over the entities that do not form a known training triple with the
      rest of the positive (exactly, by :meth:`TripleIndex.draw_unknown`: fixed shapes, no redraw
      loop, no host synchronisation). A query whose every entity is a known answer gets masked
      negatives. With ``shared``, one set of ``num_negatives`` entities serves the whole batch
      (DGL-KE, LibKGE): ``k`` table rows instead of ``B·k``, a different, correlated estimator; known
      triples are then masked rather than avoided.

    Args:
        num_negatives: ``k``, candidates per positive.
        side: ``alternate`` or ``bernoulli``.
        filtered: avoid candidates that form known training triples.
        shared: one set of candidates for the whole batch.
        queries: also give each row's query id (``NegativeBatch.query``), for selections that
            keep per-query state.
    """

    def __init__(self, num_negatives: int, side: Side = "alternate", filtered: bool = True, shared: bool = False,
                 queries: bool = False) -> None:
        require(isinstance(num_negatives, int) and num_negatives >= 1, "num_negatives", num_negatives, "an integer ≥ 1")
        require(side in SIDES, "side", side, " or ".join(SIDES))
        self.num_negatives = num_negatives
        self.side = side
        self.filtered = filtered
        self.shared = shared
        self.queries = queries

    def sides(self, positives: Tensor, step: int, head_probability: Tensor | None,
              generator: torch.Generator | None) -> Tensor:
        """``(B,)`` bool: which positives have their head replaced at training step ``step``."""
        if self.side == "alternate":
            return torch.full((positives.shape[0],), step % 2 == 1, dtype=torch.bool, device=positives.device)
        if head_probability is None:
            raise ValueError("side='bernoulli' needs the head-corruption probability of each relation")
        draw = torch.rand(positives.shape[0], generator=generator, device=positives.device)
        return draw < head_probability[positives[:, 1]]

    def corrupt(self, positives: Tensor, weight: Tensor, step: int, index: TripleIndex,
                head_probability: Tensor | None = None, generator: torch.Generator | None = None) -> NegativeBatch:
        """The :class:`NegativeBatch` of ``positives (B, 3)`` at training step ``step``.

        Args:
            positives: ``(B, 3)`` ids, on the device where negatives are drawn.
            weight: ``(B,)`` per-positive weights.
            step: the training step (chooses the side under ``alternate``).
            index: the known training triples (on the same device).
            head_probability: ``(R,)`` per-relation probability of replacing the head
                (:func:`~lightning_kge.data.statistics.head_corruption_probability`), on the
                positives' device; for ``bernoulli``.
            generator: the random generator of this step.
        """
        corrupt_head = self.sides(positives, step, head_probability, generator)
        num_entities, device, k = index.num_entities, positives.device, self.num_negatives
        mask = None
        keys = index.query_keys(positives, corrupt_head) if self.queries or (self.filtered and not self.shared) else None
        if self.shared:
            negatives = torch.randint(num_entities, (k,), device=device, generator=generator)
            if self.filtered:
                h, r, t = (positives[:, i : i + 1] for i in range(3))
                heads = torch.where(corrupt_head[:, None], negatives[None, :], h)
                tails = torch.where(corrupt_head[:, None], t, negatives[None, :])
                mask = ~index.contains(heads, r, tails)
        elif self.filtered:
            negatives, has_unknown = index.draw_unknown(keys, k, generator)
            if index.saturated:
                mask = has_unknown[:, None]
        else:
            negatives = torch.randint(num_entities, (positives.shape[0], k), device=device, generator=generator)
        if not self.queries:
            return NegativeBatch(positives, negatives, corrupt_head, mask, weight, step)
        return NegativeBatch(positives, negatives, corrupt_head, mask, weight, step, index.query_ids(keys), index.num_queries)
