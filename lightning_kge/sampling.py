"""Negative samplers: draw corrupted triples on the fly; self-adversarial also reweights them."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_kge.data.index import TripleIndex


@dataclass
class NegativeBatch:
    """A training batch: positives and, per positive, ``k`` corrupted heads or tails.

    Attributes:
        positives: ``(B, 3)`` ``(h, r, t)`` ids.
        negatives: ``(B, k)`` entity ids replacing the head or the tail of each positive, or
            ``(k,)`` ids shared by all positives (``shared`` sampling).
        corrupt_head: whether ``negatives`` replace heads (head-batch) or tails (tail-batch).
        mask: ``(B, k)``, ``False`` for a negative that still forms a known triple (it happens
            only where a query has (almost) every entity as a true answer, or with shared
            negatives); such a negative gets weight zero. ``None`` when all are valid.
        weight: ``(B,)`` per-positive weights (the paper code's subsampling weight, or ones).
    """

    positives: Tensor
    negatives: Tensor
    corrupt_head: bool
    mask: Tensor | None
    weight: Tensor


class UniformSampler:
    """Uniform negatives with uniform weights ``w_i = 1 / k``.

    Negatives are drawn uniformly from all entities, vectorised in torch. With ``filtered``,
    a negative that forms a known training triple (the positive included) is redrawn, as in the
    paper's code, for up to ``max_redraws`` rounds; one still invalid after that is masked.

    Args:
        num_negatives: ``k``, negatives per positive.
        filtered: redraw negatives that form known training triples.
        shared: draw one set of ``k`` negatives for the whole batch (DGL-KE/LibKGE style):
            ``k`` rows gathered instead of ``B·k``; a different estimator, since the
            negatives of a batch are correlated. Known triples are masked, not redrawn.
        max_redraws: rounds of redrawing before the remaining invalid negatives are masked.
    """

    def __init__(
        self, num_negatives: int = 256, filtered: bool = True, shared: bool = False, max_redraws: int = 100
    ) -> None:
        if num_negatives < 1:
            raise ValueError(f"num_negatives must be positive, got {num_negatives}")
        self.num_negatives = num_negatives
        self.filtered = filtered
        self.shared = shared
        self.max_redraws = max_redraws

    def corrupt(
        self,
        positives: Tensor,
        corrupt_head: bool,
        num_entities: int,
        known: TripleIndex | None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Draw negatives for ``positives (B, 3)``.

        Returns:
            ``(negatives, mask)`` as described in :class:`NegativeBatch`.
        """
        batch, device = positives.shape[0], positives.device
        shape = (self.num_negatives,) if self.shared else (batch, self.num_negatives)
        negatives = torch.randint(num_entities, shape, device=device, generator=generator)
        if not self.filtered or known is None:
            return negatives, None
        if self.shared:
            return negatives, ~self._forms_known(positives, negatives[None, :], corrupt_head, known)
        invalid = self._forms_known(positives, negatives, corrupt_head, known)
        for _ in range(self.max_redraws):
            rows, cols = invalid.nonzero(as_tuple=True)
            if rows.numel() == 0:
                return negatives, None
            redrawn = torch.randint(num_entities, rows.shape, device=device, generator=generator)
            negatives[rows, cols] = redrawn
            still = self._forms_known(positives[rows], redrawn[:, None], corrupt_head, known)[:, 0]
            invalid[rows, cols] = still
        return negatives, ~invalid if invalid.any() else None

    @staticmethod
    def _forms_known(positives: Tensor, negatives: Tensor, corrupt_head: bool, known: TripleIndex) -> Tensor:
        h, r, t = (positives[:, i : i + 1] for i in range(3))
        if corrupt_head:
            return known.contains(negatives, r, t)
        return known.contains(h, r, negatives)

    def weights(self, negative_scores: Tensor, mask: Tensor | None) -> Tensor:
        """Uniform weights ``1/k`` over the valid negatives; ``(B, k)``."""
        if mask is None:
            return torch.full_like(negative_scores, 1.0 / negative_scores.shape[-1])
        mask = mask.to(negative_scores.dtype).expand_as(negative_scores)
        return mask / mask.sum(dim=-1, keepdim=True).clamp(min=1.0)


class SelfAdversarialSampler(UniformSampler):
    """Self-adversarial negative sampling (Sun et al., ICLR 2019).

    Draws negatives as :class:`UniformSampler` and weighs them by
    ``w_i = softmax_i(α · f(h'_i, r, t'_i))``, computed without gradient: the weights are
    constants for backpropagation. ``α = 0`` gives uniform weights.

    Args:
        num_negatives: ``k``.
        temperature: ``α``.
        filtered: redraw negatives that form known training triples.
        shared: one set of negatives for the whole batch.
        max_redraws: rounds of redrawing before masking.
    """

    def __init__(
        self,
        num_negatives: int = 256,
        temperature: float = 1.0,
        filtered: bool = True,
        shared: bool = False,
        max_redraws: int = 100,
    ) -> None:
        super().__init__(num_negatives, filtered, shared, max_redraws)
        self.temperature = temperature

    def weights(self, negative_scores: Tensor, mask: Tensor | None) -> Tensor:
        """``softmax(α · scores)`` over the valid negatives, detached; ``(B, k)``."""
        with torch.no_grad():
            logits = self.temperature * negative_scores.detach()
            if mask is None:
                return torch.softmax(logits, dim=-1)
            mask = mask.expand_as(logits)
            logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
            return torch.softmax(logits, dim=-1) * mask
