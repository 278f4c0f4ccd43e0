"""ComplEx: a complex diagonal bilinear score (Trouillon et al., ICML 2016)."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_kge.models.base import KGEModel, complex_halves
from lightning_kge.models.bilinear import inner_scores


class ComplEx(KGEModel):
    r"""ComplEx: ``f(h, r, t) = Re(Σ_i h_i r_i \bar t_i)``.

    Entities and relations are complex vectors stored as ``2·dim`` reals (real half, then
    imaginary half). The tail query is ``h ∘ r``, the head query ``t ∘ \bar r`` (conjugated for
    the inner product), so both score by one real inner product. ``γ`` only sets the initial
    range, as in the RotatE paper's code.

    Args:
        num_entities: ``E``.
        num_relations: ``R``.
        dim: complex dimension.
        gamma: sets the initial range.
    """

    def __init__(self, num_entities: int, num_relations: int, dim: int = 500, gamma: float = 24.0) -> None:
        super().__init__(num_entities, num_relations, dim, gamma)
        self.entity = self.uniform_embedding(num_entities, 2 * dim)
        self.relation = self.uniform_embedding(num_relations, 2 * dim)

    def tail_query(self, h: Tensor, r: Tensor) -> Tensor:
        re_h, im_h = complex_halves(self.entity(h))
        re_r, im_r = complex_halves(self.relation(r))
        return torch.cat([re_h * re_r - im_h * im_r, re_h * im_r + im_h * re_r], dim=-1)

    def head_query(self, r: Tensor, t: Tensor) -> Tensor:
        re_t, im_t = complex_halves(self.entity(t))
        re_r, im_r = complex_halves(self.relation(r))
        return torch.cat([re_r * re_t + im_r * im_t, re_r * im_t - im_r * re_t], dim=-1)

    def score_candidates(self, query: Tensor, index: Tensor | None) -> Tensor:
        return inner_scores(query, self.entities(index))
