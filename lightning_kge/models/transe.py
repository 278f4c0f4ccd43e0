"""TransE: relations as translations (Bordes et al., NeurIPS 2013)."""

from __future__ import annotations

from torch import Tensor

from lightning_kge.models.translation import TranslationModel


class TransE(TranslationModel):
    """TransE with the L1 distance of the RotatE paper's code.

    ``f(h, r, t) = γ − ‖h + r − t‖₁``; head prediction scores ``γ − ‖h − (t − r)‖₁``.

    Args:
        num_entities: ``E``.
        num_relations: ``R``.
        dim: real dimension.
        gamma: the margin ``γ``.
    """

    def distance(self, difference: Tensor) -> Tensor:
        """``‖x‖₁`` over the last dimension."""
        return difference.abs().sum(dim=-1)
