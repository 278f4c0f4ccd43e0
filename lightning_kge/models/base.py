"""The scoring contract shared by every model: a query is scored against candidate entities."""

from __future__ import annotations

import torch
from torch import Tensor, nn

EPSILON = 2.0
"""The paper code's ε: embeddings start uniform in ``±(γ + ε) / dim``."""


class KGEModel(nn.Module):
    """Base class of knowledge-graph embedding models; scores are higher-is-better.

    A subclass says how a query is formed from ``(h, r, ?)`` and ``(?, r, t)`` and how a query
    is scored against candidate entities; ``score_hrt``, ``score_t`` and ``score_h`` follow.
    Every constructor argument is kept as an attribute of the same name, so a model can be
    rebuilt from its arguments (see :mod:`lightning_kge.spec`).

    Args:
        num_entities: ``E``.
        num_relations: ``R``.
        dim: the embedding dimension (complex dimension for complex models).
        gamma: the margin ``γ``; also sets the initial range ``(γ + ε) / dim`` as in the
            paper's code.
    """

    def __init__(self, num_entities: int, num_relations: int, dim: int, gamma: float) -> None:
        super().__init__()
        self.num_entities = num_entities
        self.num_relations = num_relations
        self.dim = dim
        self.gamma = gamma
        self.embedding_range = (gamma + EPSILON) / dim

    def uniform_embedding(self, num: int, width: int) -> nn.Embedding:
        """An embedding table initialised uniformly in ``±embedding_range`` (paper code)."""
        table = nn.Embedding(num, width)
        nn.init.uniform_(table.weight, -self.embedding_range, self.embedding_range)
        return table

    # --- what a model defines -----------------------------------------------------------------
    def tail_query(self, h: Tensor, r: Tensor) -> Tensor:
        """The query vector of ``(h, r, ?)``; ``h, r`` of shape ``(B,)`` -> ``(B, width)``."""
        raise NotImplementedError

    def head_query(self, r: Tensor, t: Tensor) -> Tensor:
        """The query vector of ``(?, r, t)``; ``(B,)`` -> ``(B, width)``."""
        raise NotImplementedError

    def score_candidates(self, query: Tensor, index: Tensor | None) -> Tensor:
        """Score queries against candidate entities.

        Args:
            query: ``(B, width)`` from :meth:`tail_query` or :meth:`head_query`.
            index: ``(B, C)`` candidate ids per query, ``(C,)`` ids shared by all queries, or
                ``None`` for all entities.

        Returns:
            ``(B, C)`` scores.
        """
        raise NotImplementedError

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


def pair_shape(query: Tensor, candidates: Tensor) -> tuple[Tensor, Tensor]:
    """Align ``query (B, w)`` with ``candidates`` ``(B, C, w)`` or ``(C, w)`` for broadcasting."""
    if candidates.dim() == 2:
        return query[:, None, :], candidates[None, :, :]
    return query[:, None, :], candidates


def complex_halves(x: Tensor) -> tuple[Tensor, Tensor]:
    """Split ``(..., 2d)`` into real and imaginary parts ``(..., d)`` (paper code layout)."""
    return x.chunk(2, dim=-1)
