"""A client project's own classes, in an importable module (as users must put them): subclasses of
``KGEModule`` and ``KGEModel`` whose checkpoints load only where this module is trusted."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_kge.models.transe import TransE
from lightning_kge.module import KGEModule


class Margin(KGEModule):
    """A subclass with an argument of its own (saved in the hyperparameters as Lightning does)."""

    def __init__(self, margin: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.margin = margin


class WorstFirst(KGEModule):
    """A subclass overriding a scoring hook: ranks every entity by its negated score (so the model's
    best answers rank last), which makes its evaluation visibly differ from a plain KGEModule's."""

    def score_all_candidates(self, triples: Tensor, side: str) -> Tensor:
        return -super().score_all_candidates(triples, side)


class ScaledTransE(TransE):
    """A client model: TransE with its score scaled by a constant."""

    def __init__(self, num_entities: int, num_relations: int, dim: int = 200, gamma: float = 6.0,
                 scale: float = 2.0) -> None:
        super().__init__(num_entities, num_relations, dim, gamma)
        self.scale = scale

    def score_candidates(self, query: Tensor, index: Tensor | None) -> Tensor:
        return self.scale * super().score_candidates(query, index)


def halve(params, lr: float = 0.1) -> torch.optim.Optimizer:
    """A client optimizer factory (a function, allowed only where this module is trusted)."""
    return torch.optim.SGD(params, lr=lr / 2)
