"""Selections: choose and weigh a batch's negatives with the model's scores (module side).

The datamodule draws candidates (:class:`~lightning_kge.sampling.corruption.Corruption`); the
module's :class:`Selection` may choose among them with the model's scores and gives the weights
``w_i`` of the negative-sampling loss. Selections are ``nn.Module``s, so any state they keep (a
cache of hard negatives, say) is saved in checkpoints with the model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from lightning_kge.batches import NegativeBatch
from lightning_kge.data.batches import mix_seed
from lightning_kge.errors import require

Scorer = Callable[[NegativeBatch], Tensor]
"""Scores ``(B, k)`` of a batch's negatives (higher is better): the module's ``score_negatives``."""


def uniform_weights(scores: Tensor, mask: Tensor | None) -> Tensor:
    """Weights ``1/n`` over the ``n`` valid entries of each row of ``scores`` (0 where none is valid).

    Example:
        >>> uniform_weights(torch.zeros(2, 2), torch.tensor([[True, False], [True, True]])).tolist()
        [[1.0, 0.0], [0.5, 0.5]]
    """
    if mask is None:
        return torch.full_like(scores, 1.0 / scores.shape[-1])
    valid = mask.to(scores.dtype).expand_as(scores)
    return valid / valid.sum(dim=-1, keepdim=True).clamp(min=1.0)


def step_generator(generator: torch.Generator | None, device: torch.device, step: int, salt: int) -> torch.Generator:
    """A generator on ``device`` seeded for training step ``step`` of this process (reusing ``generator``).

    The seed mixes the run's seed (``torch.initial_seed()``), the process rank, the step and
    ``salt``, so a resumed run draws what the uninterrupted one drew.
    """
    if generator is None or generator.device != device:
        generator = torch.Generator(device=device)
    rank = torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() else 0
    return generator.manual_seed(mix_seed(torch.initial_seed(), rank, step, salt))


def masked_softmax(logits: Tensor, mask: Tensor | None) -> Tensor:
    """``softmax`` over the last axis restricted to ``mask``; rows without a valid entry give 0.

    Example:
        >>> masked_softmax(torch.zeros(2, 2), torch.tensor([[True, False], [False, False]])).tolist()
        [[1.0, 0.0], [0.0, 0.0]]
    """
    if mask is None:
        return torch.softmax(logits, dim=-1)
    mask = mask.expand_as(logits)
    logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
    return torch.softmax(logits, dim=-1) * mask


class Selection(nn.Module):
    """Base class: keep every drawn negative; subclasses say how negatives are weighed.

    Override :meth:`select` to choose negatives with the model's scores (with no gradient), and
    :meth:`weights` to weigh them.
    """

    def select(self, batch: NegativeBatch, score: Scorer) -> NegativeBatch:
        """The negatives to train on; by default every drawn one."""
        return batch

    def weights(self, negative_scores: Tensor, mask: Tensor | None) -> Tensor:
        """``(B, k)`` weights of the negatives in the loss, rows summing to 1 (0 if none valid)."""
        raise NotImplementedError


class Weighting(Selection):
    """Every drawn negative, weighed ``w_i = softmax_i(α · f(h'_i, r, t'_i))`` without gradient.

    This is self-adversarial negative sampling (Sun et al., ICLR 2019) as the paper's code runs
    it: uniform draws reweighted by the softmax of their scores, the weights being constants
    for backpropagation. ``α = 0`` gives uniform weights ``1/k`` over the valid negatives.

    Args:
        temperature: ``α ≥ 0``.
    """

    def __init__(self, temperature: float = 0.0) -> None:
        super().__init__()
        require(isinstance(temperature, (int, float)) and temperature >= 0, "temperature", temperature, "a number ≥ 0 (α; 0 means uniform weights)")
        self.temperature = float(temperature)

    def weights(self, negative_scores: Tensor, mask: Tensor | None) -> Tensor:
        with torch.no_grad():
            if self.temperature == 0:
                return uniform_weights(negative_scores, mask)
            return masked_softmax(self.temperature * negative_scores.detach(), mask)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
