"""Translation-style models: ``f(h, r, t) = γ − D(h + r − t)`` for a distance ``D``."""

from __future__ import annotations

import abc

from torch import Tensor

from lightning_kge.models.base import KGEModel
from lightning_kge.models.functional import differences


class TranslationModel(KGEModel):
    """A relation translates the head: ``f(h, r, t) = γ − D(h + r − t)``.

    The tail query is ``h + r`` and the head query ``t − r``, since
    ``D(h + r − t) = D(h − (t − r))``; candidates ``c`` score ``γ − D(q − c)``. A subclass
    gives the distance ``D`` (:meth:`distance`).
    """

    def tail_query(self, h: Tensor, r: Tensor) -> Tensor:
        return self.entity_rows(h) + self.relation_rows(r)

    def head_query(self, r: Tensor, t: Tensor) -> Tensor:
        return self.entity_rows(t) - self.relation_rows(r)

    def score_candidates(self, query: Tensor, index: Tensor | None) -> Tensor:
        return self.gamma - self.distance(differences(query, self.entities(index)))

    @abc.abstractmethod
    def distance(self, difference: Tensor) -> Tensor:
        """``D`` of differences ``(..., width)``, reducing the last dimension: ``(...)``."""
