"""RotatE: relations as rotations in complex space (Sun et al., ICLR 2019)."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_kge.kernels.rotate_distance import rotate_distance
from lightning_kge.models.base import DEFAULT_DIM, DEFAULT_GAMMA, KGEModel
from lightning_kge.models.functional import complex_halves, complex_product


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

    entity_multiple = 2

    def __init__(
        self,
        num_entities: int,
        num_relations: int,
        dim: int = DEFAULT_DIM,
        gamma: float = DEFAULT_GAMMA,
        compile: bool = True,  # noqa: A002 - the config key users set (model.compile)
    ) -> None:
        super().__init__(num_entities, num_relations, dim, gamma)
        self._compile = compile

    def relation_rotation(self, r: Tensor) -> tuple[Tensor, Tensor]:
        """``(cos θ_r, sin θ_r)``, each ``(B, dim)``."""
        phase = self.phase(self.relation(r))
        return torch.cos(phase), torch.sin(phase)

    def tail_query(self, h: Tensor, r: Tensor) -> Tensor:
        return complex_product(complex_halves(self.entity(h)), self.relation_rotation(r))

    def head_query(self, r: Tensor, t: Tensor) -> Tensor:
        return complex_product(complex_halves(self.entity(t)), self.relation_rotation(r), conjugate=True)

    def score_candidates(self, query: Tensor, index: Tensor | None) -> Tensor:
        compiled = None if self._compile else False
        return self.gamma - rotate_distance(query, self.entity.weight, index, compiled=compiled)
