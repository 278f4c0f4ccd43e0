"""The scoring contract shared by every model: a query is scored against candidate entities."""

from __future__ import annotations

import abc
import math
import numbers
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lightning_kge.errors import require

EPSILON = 2.0
"""The paper code's ε: embeddings start uniform in ``±(γ + ε) / dim``."""

DEFAULT_DIM = 200
"""Default embedding dimension of every model (``conf/model/*.yaml`` holds the same value)."""

DEFAULT_GAMMA = 6.0
"""Default margin ``γ`` of every model (``conf/model/*.yaml`` holds the same value)."""


class KGEModel(nn.Module, abc.ABC):
    """Base class of knowledge-graph embedding models; scores are higher-is-better.

    The base class validates the arguments and creates the tables: ``self.entity``
    ``(E, entity_multiple · dim)``, then ``self.relation`` ``(R, relation_multiple · dim)``, both
    ``nn.Embedding`` uniform in ``±(γ + 2) / dim`` (the paper's code), then calls
    :meth:`add_parameters`. A model states its table widths (class attributes) and its maths:
    how a query is formed from ``(h, r, ?)`` and ``(?, r, t)`` and how a query is scored against
    candidate entities; ``score_hrt``, ``score_t`` and ``score_h`` follow. For example::

        class DistMult(KGEModel):
            def tail_query(self, h, r):
                return self.entity(h) * self.relation(r)

            def head_query(self, r, t):
                return self.entity(t) * self.relation(r)

            def score_candidates(self, query, index):
                return inner_scores(query, self.entities(index))

    Every constructor argument is kept as an attribute of the same name, so a model can be
    rebuilt from its arguments (see :mod:`lightning_kge.spec`).

    Args:
        num_entities: ``E ≥ 1``.
        num_relations: ``R ≥ 1``.
        dim: the embedding dimension ``≥ 1`` (complex dimension for complex models).
        gamma: the margin ``γ > 0``; also sets the initial range ``(γ + ε) / dim`` as in the
            paper's code.

    Raises:
        ArgumentError: an argument out of range, naming it.
    """

    entity_multiple: ClassVar[int] = 1
    """Width of an entity row in multiples of ``dim`` (2 for complex vectors as real pairs)."""

    relation_multiple: ClassVar[int] = 1
    """Width of a relation row in multiples of ``dim``."""

    def __init__(
        self, num_entities: int, num_relations: int, dim: int = DEFAULT_DIM, gamma: float = DEFAULT_GAMMA
    ) -> None:
        require(_is_integer(num_entities) and num_entities >= 1, "num_entities", num_entities, "an integer ≥ 1")
        require(_is_integer(num_relations) and num_relations >= 1, "num_relations", num_relations, "an integer ≥ 1")
        require(_is_integer(dim) and dim >= 1, "dim", dim, "an integer ≥ 1")
        require(_is_positive_number(gamma), "gamma", gamma, "a finite number > 0")
        super().__init__()
        self.num_entities = num_entities
        self.num_relations = num_relations
        self.dim = dim
        self.gamma = gamma
        self.embedding_range = (gamma + EPSILON) / dim
        # draw order (entity, relation, then add_parameters) is the paper code's: seeded runs repeat
        self.entity = self.uniform_embedding(num_entities, self.entity_multiple * dim)
        self.relation = self.uniform_embedding(num_relations, self.relation_multiple * dim)
        self.add_parameters()

    def uniform_embedding(self, num: int, width: int) -> nn.Embedding:
        """An embedding table initialised uniformly in ``±embedding_range`` (paper code)."""
        table = nn.Embedding(num, width)
        nn.init.uniform_(table.weight, -self.embedding_range, self.embedding_range)
        return table

    def add_parameters(self) -> None:
        """Create parameters beyond the two tables (none by default); called after the tables."""

    def phase(self, x: Tensor) -> Tensor:
        """Phases stored as ``θ · range / π`` (paper code), back in radians: ``x / (range / π)``."""
        return x / (self.embedding_range / math.pi)

    # --- what a model defines -----------------------------------------------------------------
    @abc.abstractmethod
    def tail_query(self, h: Tensor, r: Tensor) -> Tensor:
        """The query vector of ``(h, r, ?)``; ``h, r`` of shape ``(B,)`` -> ``(B, width)``."""

    @abc.abstractmethod
    def head_query(self, r: Tensor, t: Tensor) -> Tensor:
        """The query vector of ``(?, r, t)``; ``(B,)`` -> ``(B, width)``."""

    @abc.abstractmethod
    def score_candidates(self, query: Tensor, index: Tensor | None) -> Tensor:
        """Score queries against candidate entities.

        Args:
            query: ``(B, width)`` from :meth:`tail_query` or :meth:`head_query`.
            index: ``(B, C)`` candidate ids per query, ``(C,)`` ids shared by all queries, or
                ``None`` for all entities.

        Returns:
            ``(B, C)`` scores.
        """

    def parameter_tables(self) -> list[Tensor]:
        """The tables that the paper code's L3 regulariser penalises."""
        return [self.entity.weight, self.relation.weight]

    # --- derived --------------------------------------------------------------------------------
    def score_t(self, h: Tensor, r: Tensor, t: Tensor | None = None) -> Tensor:
        """Score ``(h_b, r_b, t)`` for candidate tails ``t`` (``(B, C)``, ``(C,)`` or all)."""
        return self.score_candidates(self.tail_query(h, r), t)

    def score_h(self, r: Tensor, t: Tensor, h: Tensor | None = None) -> Tensor:
        """Score ``(h, r_b, t_b)`` for candidate heads ``h`` (``(B, C)``, ``(C,)`` or all)."""
        return self.score_candidates(self.head_query(r, t), h)

    def score_hrt(self, h: Tensor, r: Tensor, t: Tensor) -> Tensor:
        """Score triples given as broadcastable index tensors; returns their broadcast shape."""
        h, r, t = torch.broadcast_tensors(h, r, t)
        shape = h.shape
        scores = self.score_t(h.reshape(-1), r.reshape(-1), t.reshape(-1, 1))
        return scores.reshape(shape)

    def penalty(self) -> Tensor:
        """``Σ ‖θ‖₃³`` over the tables, the L3 regulariser of the paper's code."""
        return sum(p.norm(p=3) ** 3 for p in self.parameter_tables())

    def entities(self, index: Tensor | None) -> Tensor:
        """Rows of the entity table: ``(B, C, w)`` for ``(B, C)``, ``(C, w)`` for ``(C,)`` or all."""
        weight = self.entity.weight
        return weight if index is None else weight[index]


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_positive_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0
