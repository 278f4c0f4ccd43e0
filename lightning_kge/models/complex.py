"""ComplEx: a complex diagonal bilinear score (Trouillon et al., ICML 2016)."""

from __future__ import annotations

from torch import Tensor

from lightning_kge.models.bilinear import BilinearModel
from lightning_kge.models.functional import complex_halves, complex_product


class ComplEx(BilinearModel):
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

    entity_multiple = 2
    relation_multiple = 2

    def tail_query(self, h: Tensor, r: Tensor) -> Tensor:
        return complex_product(complex_halves(self.entity_rows(h)), complex_halves(self.relation_rows(r)))

    def head_query(self, r: Tensor, t: Tensor) -> Tensor:
        return complex_product(complex_halves(self.entity_rows(t)), complex_halves(self.relation_rows(r)),
                               conjugate=True)
