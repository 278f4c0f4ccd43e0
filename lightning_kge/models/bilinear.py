"""Bilinear models: a query scores a candidate by their inner product."""

from __future__ import annotations

from torch import Tensor

from lightning_kge.models.base import KGEModel
from lightning_kge.models.functional import inner_scores


class BilinearModel(KGEModel):
    """``f(h, r, t) = <q(h, r), t> = <q'(r, t), h>``: a subclass gives the two queries.

    ``γ`` only sets the initial range ``(γ + 2) / dim``, as in the RotatE paper's code.
    """

    def score_candidates(self, query: Tensor, index: Tensor | None) -> Tensor:
        return inner_scores(query, self.entities(index))
