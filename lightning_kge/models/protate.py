"""pRotatE: RotatE with phases only and a shared modulus (Sun et al., ICLR 2019)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lightning_kge.models.base import KGEModel, pair_shape


class pRotatE(KGEModel):  # noqa: N801  (the paper's name)
    """pRotatE, as the RotatE paper's code defines it.

    Entities and relations are phase vectors (stored scaled by ``range / π``) and all
    entities share one learned modulus ``m`` (initially ``range / 2``):
    ``f(h, r, t) = γ − m · Σ_i |sin(θ_h,i + θ_r,i − θ_t,i)|``.

    Args:
        num_entities: ``E``.
        num_relations: ``R``.
        dim: number of phases.
        gamma: the margin ``γ``.
    """

    def __init__(self, num_entities: int, num_relations: int, dim: int = 500, gamma: float = 24.0) -> None:
        super().__init__(num_entities, num_relations, dim, gamma)
        self.entity = self.uniform_embedding(num_entities, dim)
        self.relation = self.uniform_embedding(num_relations, dim)
        self.modulus = nn.Parameter(torch.tensor([[0.5 * self.embedding_range]]))

    def phase(self, x: Tensor) -> Tensor:
        return x / (self.embedding_range / math.pi)

    def tail_query(self, h: Tensor, r: Tensor) -> Tensor:
        return self.entity(h) + self.relation(r)

    def head_query(self, r: Tensor, t: Tensor) -> Tensor:
        return self.entity(t) - self.relation(r)

    def score_candidates(self, query: Tensor, index: Tensor | None) -> Tensor:
        q, c = pair_shape(query, self.entities(index))
        distance = torch.sin(self.phase(q - c)).abs().sum(dim=-1)
        return self.gamma - distance * self.modulus.squeeze()
