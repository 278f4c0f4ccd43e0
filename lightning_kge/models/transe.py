"""TransE: relations as translations (Bordes et al., NeurIPS 2013)."""

from __future__ import annotations

from torch import Tensor

from lightning_kge.models.base import KGEModel, pair_shape


class TransE(KGEModel):
    """TransE with the L1 distance of the RotatE paper's code.

    ``f(h, r, t) = γ − ‖h + r − t‖₁``; head prediction scores ``γ − ‖h − (t − r)‖₁``.

    Args:
        num_entities: ``E``.
        num_relations: ``R``.
        dim: real dimension.
        gamma: the margin ``γ``.
    """

    def __init__(self, num_entities: int, num_relations: int, dim: int = 1000, gamma: float = 24.0) -> None:
        super().__init__(num_entities, num_relations, dim, gamma)
        self.entity = self.uniform_embedding(num_entities, dim)
        self.relation = self.uniform_embedding(num_relations, dim)

    def tail_query(self, h: Tensor, r: Tensor) -> Tensor:
        return self.entity(h) + self.relation(r)

    def head_query(self, r: Tensor, t: Tensor) -> Tensor:
        return self.entity(t) - self.relation(r)

    def score_candidates(self, query: Tensor, index: Tensor | None) -> Tensor:
        q, c = pair_shape(query, self.entities(index))
        return self.gamma - (q - c).abs().sum(dim=-1)
