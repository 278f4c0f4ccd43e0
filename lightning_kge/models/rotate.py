"""RotatE: relations as rotations in complex space (Sun et al., ICLR 2019)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_kge.kernels.rotate_distance import rotate_distance
from lightning_kge.models.base import KGEModel, complex_halves


class RotatE(KGEModel):
    r"""RotatE, as the paper's public code defines it.

    ``f(h, r, t) = γ − Σ_i |h_i r_i − t_i|`` with ``|r_i| = 1``: entities are complex vectors
    stored as ``2·dim`` reals (real half, then imaginary half); a relation is a phase vector
    ``θ_r`` stored as ``θ_r · range / π``, so ``r_i = cos θ_i + i sin θ_i`` has unit modulus by
    construction. Both tables start uniform in ``±(γ + 2) / dim``. Head prediction uses
    ``|h_i r_i − t_i| = |h_i − t_i \bar r_i|``.

    Candidates are scored by :func:`~lightning_kge.kernels.rotate_distance.rotate_distance`,
    which never holds a ``(batch, candidates, dim)`` tensor; training and evaluation share it.

    Args:
        num_entities: ``E``.
        num_relations: ``R``.
        dim: complex dimension ``d`` (the paper's ``hidden_dim``).
        gamma: the margin ``γ``.
        compile: let the distance use compiled CPU kernels: the native C kernels (built once
            with the system C compiler), else ``torch.compile`` kernels where a call is large
            enough to repay compiling (``False``: eager torch chunks only).
            Kept as ``self._compile``, since ``nn.Module.compile`` owns the public name.
    """

    def __init__(
        self,
        num_entities: int,
        num_relations: int,
        dim: int = 500,
        gamma: float = 6.0,
        compile: bool = True,  # noqa: A002 - the config key users set (model.compile)
    ) -> None:
        super().__init__(num_entities, num_relations, dim, gamma)
        self._compile = compile
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
        compiled = None if self._compile else False
        return self.gamma - rotate_distance(query, self.entity.weight, index, compiled=compiled)
