"""The negative-sampling loss of the RotatE paper's code."""

from __future__ import annotations

import torch  # noqa: F401  (the doctest uses it)
import torch.nn.functional as F
from torch import Tensor


def negative_sampling_loss(
    positive_scores: Tensor,
    negative_scores: Tensor,
    negative_weights: Tensor,
    sample_weight: Tensor | None = None,
) -> Tensor:
    """``L = ½ (−log σ(f(h, r, t)) − Σ_i w_i log σ(−f(h'_i, r, t'_i)))``, averaged over the batch.

    With distance scores ``f = γ − d`` this is the paper's
    ``−log σ(γ − d(h, t)) − Σ_i w_i log σ(d(h'_i, t'_i) − γ)``; the factor ½ is the paper
    code's ``(positive_loss + negative_loss) / 2``. The batch average is weighted by
    ``sample_weight`` (the code's subsampling weight) when given.

    Args:
        positive_scores: ``(B,)``.
        negative_scores: ``(B, k)``.
        negative_weights: ``(B, k)``, each row summing to 1 (or 0 if no valid negative).
        sample_weight: ``(B,)`` or ``None`` for a plain mean.

    Returns:
        The scalar loss.

    Example:
        >>> pos, neg = torch.tensor([0.0]), torch.tensor([[0.0, 0.0]])
        >>> round(float(negative_sampling_loss(pos, neg, torch.tensor([[0.5, 0.5]]))), 6)
        0.693147
    """
    positive = -F.logsigmoid(positive_scores)
    negative = -(negative_weights * F.logsigmoid(-negative_scores)).sum(dim=-1)
    if sample_weight is None:
        return (positive.mean() + negative.mean()) / 2
    total = sample_weight.sum()
    return ((sample_weight * positive).sum() / total + (sample_weight * negative).sum() / total) / 2

