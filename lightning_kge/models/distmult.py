"""DistMult: a diagonal bilinear score (Yang et al., ICLR 2015)."""

from __future__ import annotations

from torch import Tensor

from lightning_kge.models.bilinear import BilinearModel


class DistMult(BilinearModel):
    """DistMult: ``f(h, r, t) = Σ_i h_i r_i t_i``.

    The score is symmetric in ``h`` and ``t``, so the head query equals ``t ∘ r``. ``γ`` only
    sets the initial range ``(γ + 2) / dim``, as in the RotatE paper's code.

    Args:
        num_entities: ``E``.
        num_relations: ``R``.
        dim: real dimension.
        gamma: sets the initial range.
    """

    def tail_query(self, h: Tensor, r: Tensor) -> Tensor:
        return self.entity_rows(h) * self.relation_rows(r)

    def head_query(self, r: Tensor, t: Tensor) -> Tensor:
        return self.entity_rows(t) * self.relation_rows(r)
