"""pRotatE: RotatE with phases only and a shared modulus (Sun et al., ICLR 2019)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_kge.models.translation import TranslationModel


class pRotatE(TranslationModel):  # noqa: N801  (the paper's name)
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

    def add_parameters(self) -> None:
        self.modulus = nn.Parameter(torch.tensor([[0.5 * self.embedding_range]]))

    def distance(self, difference: Tensor) -> Tensor:
        """``m · Σ_i |sin θ_i|`` of phase differences ``θ``."""
        return torch.sin(self.phase(difference)).abs().sum(dim=-1) * self.modulus.squeeze()
