"""HolE (Nickel et al., AAAI 2016): a client model in a module of its own.

A model class must live in an importable module (not in the script that trains it): checkpoints
record its import path, here ``hole.HolE``, and loading one elsewhere imports it — only where the
user trusts the module (``trust=["hole"]``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_kge.models.bilinear import BilinearModel


class HolE(BilinearModel):
    """HolE: ``f(h, r, t) = <r, h ⋆ t>``, with ``(h ⋆ t)_k = Σ_i h_i t_(i+k mod d)``.

    Args:
        num_entities: ``E``.
        num_relations: ``R``.
        dim: real dimension ``d``.
        gamma: sets the initial range ``(γ + 2) / d``.
    """

    def tail_query(self, h: Tensor, r: Tensor) -> Tensor:
        a, b = self.entity(h), self.relation(r)  # (r ∗ h)_j = Σ_k r_k h_(j−k)
        return torch.fft.irfft(torch.fft.rfft(a) * torch.fft.rfft(b), n=self.dim)

    def head_query(self, r: Tensor, t: Tensor) -> Tensor:
        a, b = self.relation(r), self.entity(t)  # (r ⋆ t)_i = Σ_k r_k t_(i+k)
        return torch.fft.irfft(torch.fft.rfft(a).conj() * torch.fft.rfft(b), n=self.dim)
