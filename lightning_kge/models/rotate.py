"""RotatE: relations as rotations in complex space (Sun et al., ICLR 2019)."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_kge.errors import require
from lightning_kge.kernels.rotate_distance import BACKENDS, rotate_distance
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
    With sparse row gradients (:meth:`~KGEModel.use_sparse_gradients`) the kernel scores against
    the unique candidate rows (:meth:`~KGEModel.candidate_table`), so its table gradient is those
    rows, not an ``(E, 2·dim)`` tensor.

    Args:
        num_entities: ``E``.
        num_relations: ``R``.
        dim: complex dimension ``d`` (the paper's ``hidden_dim``).
        gamma: the margin ``γ``.
        distance_backend: what computes the distance: ``native`` (C++ kernels, CPU),
            ``triton`` (CUDA), ``reference`` (plain eager torch, the oracle) or ``auto`` (triton
            on CUDA, native on CPU, else the reference with a warning saying why).
    """

    entity_multiple = 2

    def __init__(
        self,
        num_entities: int,
        num_relations: int,
        dim: int = DEFAULT_DIM,
        gamma: float = DEFAULT_GAMMA,
        distance_backend: str = "auto",
    ) -> None:
        require(distance_backend in BACKENDS, "distance_backend", distance_backend,
                "one of " + ", ".join(repr(b) for b in BACKENDS))
        super().__init__(num_entities, num_relations, dim, gamma)
        self.distance_backend = distance_backend

    def relation_rotation(self, r: Tensor) -> tuple[Tensor, Tensor]:
        """``(cos θ_r, sin θ_r)``, each ``(B, dim)``."""
        phase = self.phase(self.relation_rows(r))
        return torch.cos(phase), torch.sin(phase)

    def tail_query(self, h: Tensor, r: Tensor) -> Tensor:
        return complex_product(complex_halves(self.entity_rows(h)), self.relation_rotation(r))

    def head_query(self, r: Tensor, t: Tensor) -> Tensor:
        return complex_product(complex_halves(self.entity_rows(t)), self.relation_rotation(r), conjugate=True)

    def score_candidates(self, query: Tensor, index: Tensor | None) -> Tensor:
        table, ids = self.candidate_table(index)  # the whole table, or the unique candidate rows (sparse)
        return self.gamma - rotate_distance(query, table, ids, backend=self.distance_backend)
