"""The scoring contract shared by every model: a query is scored against candidate entities."""

from __future__ import annotations

import abc
import math
import numbers
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lightning_kge.errors import require
from lightning_kge.models.rows import RowTable, StepRows

EPSILON = 2.0
"""The paper code's ε: embeddings start uniform in ``±(γ + ε) / dim``."""

DEFAULT_DIM = 200
"""Default embedding dimension of every model (``conf/model/*.yaml`` holds the same value)."""

DEFAULT_GAMMA = 6.0
"""Default margin ``γ`` of every model (``conf/model/*.yaml`` holds the same value)."""

TABLES, DENSE = "tables", "dense"
"""The names of :meth:`KGEModel.parameter_groups`: embedding tables (row lookups) and the rest."""


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
                return self.entity_rows(h) * self.relation_rows(r)

            def head_query(self, r, t):
                return self.entity_rows(t) * self.relation_rows(r)

            def score_candidates(self, query, index):
                return inner_scores(query, self.entities(index))

    **Reading rows.** Training reads table rows only through :meth:`entity_rows` and
    :meth:`relation_rows` (:meth:`entities` for candidates, :meth:`candidate_table` for a fused
    kernel that gathers rows itself). :meth:`use_sparse_gradients` switches these lookups to
    sparse row gradients (``torch.sparse_coo`` tensors holding the touched rows only, for the
    optimizers of :mod:`lightning_kge.optim`), so a model written this way gets them without a
    change; the module switches them before training when its optimizer takes them, and reads
    each step's entity rows once (:meth:`reading_rows`). :meth:`parameter_groups` names the
    tables apart from the dense parameters. A strategy that keeps the tables elsewhere (sharded
    across processes, say) replaces these methods.

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
        self.sparse_gradients = False
        """Whether lookups give sparse row gradients (set by :meth:`use_sparse_gradients`)."""
        self._row_positions: Tensor | None = None  # (E,) int32, written by each step's StepRows
        self.add_parameters()

    def uniform_embedding(self, num: int, width: int) -> nn.Embedding:
        """An embedding table (:class:`~lightning_kge.models.rows.RowTable`) initialised uniformly in
        ``±embedding_range`` (paper code)."""
        table = RowTable(num, width)
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

    # --- reading rows ---------------------------------------------------------------------------
    def entity_rows(self, ids: Tensor) -> Tensor:
        """Rows of the entity table: ``ids.shape + (width,)``; the one lookup every model uses.

        Its gradient is a dense ``(E, width)`` table, or, after :meth:`use_sparse_gradients`, a
        sparse tensor holding one row per looked-up id (uncoalesced; optimizers coalesce it).
        Inside :meth:`reading_rows` the rows come from the step's rows, read once (so do those of
        ``self.entity(ids)``, the same lookup).
        """
        return self.entity(ids)

    def relation_rows(self, ids: Tensor) -> Tensor:
        """Rows of the relation table: ``ids.shape + (width,)``; as :meth:`entity_rows`."""
        return self.relation(ids)

    def entities(self, index: Tensor | None) -> Tensor:
        """Candidate rows: ``(B, C, w)`` for ``(B, C)``, ``(C, w)`` for ``(C,)``, the whole table for ``None``.

        The whole table (evaluation, all entities) is read directly: its gradient is dense.
        """
        return self.entity.weight if index is None else self.entity_rows(index)

    def candidate_table(self, index: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The table a fused kernel reads candidates from, and the candidate ids into it.

        With dense gradients, or without any gradient (evaluation, scoring under ``no_grad``), or
        for all entities (``index`` ``None``): ``(entity.weight, index)``, unchanged and free of
        host-device synchronisation. With sparse row gradients: the unique candidate ids
        ``u = unique(index)`` are read through :meth:`entity_rows` and the kernel gets
        ``(rows (U, w), inverse)`` with ``rows[inverse] = table[index]``, so the table's gradient
        holds the ``U`` touched rows, never an ``(E, w)`` tensor; inside :meth:`reading_rows`,
        the step's rows and the candidates' positions among them. (``torch.unique`` waits for
        the device on CUDA; the sparse optimizers' coalescing does too.)

        Example:
            >>> from lightning_kge.models import RotatE
            >>> model = RotatE(num_entities=50, num_relations=2, dim=4, distance_backend="reference")
            >>> model.use_sparse_gradients()
            >>> table, ids = model.candidate_table(torch.tensor([[7, 3, 7], [3, 9, 9]]))
            >>> table.shape, ids
            (torch.Size([3, 8]), tensor([[1, 0, 1],
                    [0, 2, 2]]))
        """
        if index is None:
            return self.entity.weight, index
        step_rows = getattr(self.entity, "step_rows", None)  # a step's rows, read once (also by a sharded table)
        if step_rows is not None:
            return step_rows.table, step_rows.positions(index)
        if not self._sparse_rows():
            return self.entity.weight, index
        unique, inverse = torch.unique(index, return_inverse=True)
        return self.entity_rows(unique), inverse

    @contextmanager
    def reading_rows(self, ids: Tensor) -> Iterator[None]:
        """Read the entity rows of ``ids`` (every entity of a training step) once, for what runs inside.

        With sparse row gradients, under gradient, inside the block every entity lookup
        (:meth:`entity_rows`, :meth:`candidate_table`) is served from the rows of
        ``unique(ids)``, read once (:class:`~lightning_kge.models.rows.StepRows`): the entity
        table's gradient is one coalesced sparse tensor of those rows, instead of one per lookup
        summed by concatenation. Otherwise it changes nothing. Every id looked up inside must be
        among ``ids`` (checked for CPU tensors).
        """
        table = self.entity
        if not (self._sparse_rows() and isinstance(table, RowTable)) or table.step_rows is not None:
            yield
            return
        weight = table.weight
        if self._row_positions is None or self._row_positions.device != weight.device:
            self._row_positions = torch.zeros(weight.shape[0], dtype=torch.int32, device=weight.device)
        table.step_rows = StepRows.read(weight, ids, self._row_positions)
        try:
            yield
        finally:
            table.step_rows = None

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_row_positions"] = None  # a scratch buffer (4 bytes per entity), made again where it is used
        return state

    def _sparse_rows(self) -> bool:
        return self.sparse_gradients and torch.is_grad_enabled() and self.entity.weight.requires_grad

    def use_sparse_gradients(self, enabled: bool = True) -> None:
        """Make every table lookup give sparse row gradients (``enabled``) or dense ones.

        It sets ``sparse`` on every ``nn.Embedding`` of the model (the flag
        ``DistributedDataParallel`` reads when it wraps a model, to all-reduce those gradients
        as sparse tensors) and :attr:`sparse_gradients`. Reading a whole table under gradient
        (:meth:`penalty`, ``entities(None)``) still gives a dense gradient.
        """
        self.sparse_gradients = enabled
        self._row_positions = None
        for module in self.modules():
            if isinstance(module, nn.Embedding):
                module.sparse = enabled

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The parameters in named groups: ``tables`` (the weight of every ``nn.Embedding``:
        entity and relation tables, read by row lookups) and ``dense`` (every other parameter,
        e.g. pRotatE's modulus); an empty group is left out.

        Optimizers take them as parameter groups (``group["name"]``); sparse optimizers give the
        tables row updates and the dense parameters full ones.

        Example:
            >>> from lightning_kge.models import pRotatE
            >>> [(g["name"], len(g["params"])) for g in pRotatE(num_entities=3, num_relations=2).parameter_groups()]
            [('tables', 2), ('dense', 1)]
        """
        tables = [m.weight for m in self.modules() if isinstance(m, nn.Embedding)]
        ids = {id(p) for p in tables}
        dense = [p for p in self.parameters() if id(p) not in ids]
        groups = [{"name": TABLES, "params": tables}, {"name": DENSE, "params": dense}]
        return [g for g in groups if g["params"]]

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



def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_positive_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0
