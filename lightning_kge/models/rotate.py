"""RotatE: relations as rotations in complex space (Sun et al., ICLR 2019)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_kge.models.base import KGEModel, complex_halves, pair_shape


class RotatE(KGEModel):
    r"""RotatE, as the paper's public code defines it.

    ``f(h, r, t) = γ − Σ_i |h_i r_i − t_i|`` with ``|r_i| = 1``: entities are complex vectors
    stored as ``2·dim`` reals (real half, then imaginary half); a relation is a phase vector
    ``θ_r`` stored as ``θ_r · range / π``, so ``r_i = cos θ_i + i sin θ_i`` has unit modulus by
    construction. Both tables start uniform in ``±(γ + 2) / dim``. Head prediction uses
    ``|h_i r_i − t_i| = |h_i − t_i \bar r_i|``.

    Args:
        num_entities: ``E``.
        num_relations: ``R``.
        dim: complex dimension ``d`` (the paper's ``hidden_dim``).
        gamma: the margin ``γ``.
    """

    def __init__(self, num_entities: int, num_relations: int, dim: int = 500, gamma: float = 6.0) -> None:
        super().__init__(num_entities, num_relations, dim, gamma)
        self.entity = self.uniform_embedding(num_entities, 2 * dim)
        self.relation = self.uniform_embedding(num_relations, dim)

    def relation_rotation(self, r: Tensor) -> tuple[Tensor, Tensor]:
        """``(cos θ_r, sin θ_r)``, each ``(B, dim)``."""
        phase = self.relation(r) / (self.embedding_range / math.pi)
        return torch.cos(phase), torch.sin(phase)

    def tail_query(self, h: Tensor, r: Tensor) -> Tensor:
        re_h, im_h = complex_halves(self.entity(h))
        re_r, im_r = self.relation_rotation(r)
        return torch.cat([re_h * re_r - im_h * im_r, re_h * im_r + im_h * re_r], dim=-1)

    def head_query(self, r: Tensor, t: Tensor) -> Tensor:
        re_t, im_t = complex_halves(self.entity(t))
        re_r, im_r = self.relation_rotation(r)
        return torch.cat([re_r * re_t + im_r * im_t, re_r * im_t - im_r * re_t], dim=-1)

    def score_candidates(self, query: Tensor, index: Tensor | None) -> Tensor:
        return self.gamma - complex_l1_distance(query, self.entities(index))


def complex_l1_distance(query: Tensor, candidates: Tensor) -> Tensor:
    """``Σ_i |q_i − c_i|`` over complex moduli; ``query (B, 2d)``, candidates ``(B, C, 2d)`` or ``(C, 2d)``."""
    q, c = pair_shape(query, candidates)
    re_q, im_q = complex_halves(q)
    re_c, im_c = complex_halves(c)
    return torch.stack([re_q - re_c, im_q - im_c], dim=0).norm(dim=0).sum(dim=-1)
