"""DistMult: a diagonal bilinear score (Yang et al., ICLR 2015)."""

from __future__ import annotations

from torch import Tensor

from lightning_kge.models.base import KGEModel
from lightning_kge.models.bilinear import inner_scores


class DistMult(KGEModel):
    """DistMult: ``f(h, r, t) = Σ_i h_i r_i t_i``.

    The score is symmetric in ``h`` and ``t``, so the head query equals ``t ∘ r``. ``γ`` only
    sets the initial range ``(γ + 2) / dim``, as in the RotatE paper's code.

    Args:
        num_entities: ``E``.
        num_relations: ``R``.
        dim: real dimension.
        gamma: sets the initial range.
    """

    def __init__(self, num_entities: int, num_relations: int, dim: int = 1000, gamma: float = 24.0) -> None:
        super().__init__(num_entities, num_relations, dim, gamma)
        self.entity = self.uniform_embedding(num_entities, dim)
        self.relation = self.uniform_embedding(num_relations, dim)

    def tail_query(self, h: Tensor, r: Tensor) -> Tensor:
        return self.entity(h) * self.relation(r)

    def head_query(self, r: Tensor, t: Tensor) -> Tensor:
        return self.entity(t) * self.relation(r)

    def score_candidates(self, query: Tensor, index: Tensor | None) -> Tensor:
        return inner_scores(query, self.entities(index))
