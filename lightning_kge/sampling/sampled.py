"""Self-adversarial negatives sampled for real: ``k`` of a pool of ``m`` drawn from ``softmax(α f)``."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from lightning_kge.batches import NegativeBatch
from lightning_kge.errors import require
from lightning_kge.sampling.selection import Scorer, Selection, step_generator, uniform_weights

SALT = 0x5A3D
"""Seeds the Gumbel noise of a step apart from the datamodule's draws of the same step."""


def gumbel_top_k(logits: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """``(…, k)`` indices drawn without replacement with probabilities ``softmax(logits)`` (Gumbel top-k).

    Adding independent Gumbel noise ``−log E`` (``E ~ Exp(1)``) to the logits and keeping the
    ``k`` largest draws ``k`` items without replacement, each next one with probability
    proportional to ``exp(logit)`` among those left (Kool et al., ICML 2019). Entries with
    logit ``−inf`` are drawn only after every finite one.

    Example:
        >>> sorted(gumbel_top_k(torch.tensor([0.0, 0.0, -float("inf")]), 2).tolist())
        [0, 1]
    """
    noise = torch.empty_like(logits).exponential_(generator=generator).log_()
    return torch.topk(logits - noise, k, dim=-1, sorted=False).indices


class SampledSelection(Selection):
    """``k`` negatives per positive drawn from the datamodule's pool of ``m`` uniform candidates with
    probability ``softmax(α f)``, without replacement, then weighed uniformly.

    This samples the self-adversarial distribution ``p(h'_j, r, t'_j) ∝ exp(α f(h'_j, r, t'_j))``
    of the RotatE paper (restricted to the pool) instead of weighing uniform draws by it. The pool
    is scored without gradient by the module's ``score_negatives`` (the fused distance for RotatE):
    one extra forward pass over ``m`` candidates. Masked candidates are drawn last and stay masked.

    Args:
        num_negatives: ``k`` drawn per positive, at most the pool size.
        temperature: ``α > 0`` of the draw.
    """

    def __init__(self, num_negatives: int = 128, temperature: float = 1.0) -> None:
        super().__init__()
        require(isinstance(num_negatives, int) and num_negatives >= 1, "num_negatives", num_negatives, "an integer ≥ 1")
        require(isinstance(temperature, (int, float)) and temperature > 0, "temperature", temperature,
                "a number > 0 (α of the draw; α = 0 draws uniformly: use sampler=uniform)")
        self.num_negatives = num_negatives
        self.temperature = float(temperature)
        self._generator: torch.Generator | None = None

    def select(self, batch: NegativeBatch, score: Scorer) -> NegativeBatch:
        pool = batch.negatives.shape[-1]
        if pool < self.num_negatives:
            raise ValueError(f"a pool of {pool} candidates cannot give {self.num_negatives} negatives without replacement")
        with torch.no_grad():
            logits = self.temperature * score(batch)  # (B, m)
            mask = batch.row_mask()
            if mask is not None:
                logits = logits.masked_fill(~mask, -float("inf"))
            self._generator = step_generator(self._generator, logits.device, batch.step, SALT)
            chosen = gumbel_top_k(logits, self.num_negatives, self._generator)
        return dataclasses.replace(
            batch,
            negatives=batch.row_negatives().gather(1, chosen),
            mask=None if mask is None else mask.gather(1, chosen),
        )

    def weights(self, negative_scores: Tensor, mask: Tensor | None) -> Tensor:
        return uniform_weights(negative_scores, mask)

    def extra_repr(self) -> str:
        return f"num_negatives={self.num_negatives}, temperature={self.temperature}"
