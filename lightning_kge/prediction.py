"""Prediction: the best heads or tails of queries, by id or by label, scored in chunks.

:func:`top_k` scores ``chunk_size`` candidate entities at a time through the model's
``score_candidates`` (RotatE's goes through the fused distance kernel, which never holds a
``(queries, entities, dim)`` tensor), keeps the best ``k`` of each chunk and merges them with
the best so far, so memory stays ``O(queries · (chunk_size + k))`` however many entities the
graph has. :class:`~lightning_kge.module.KGEModule` delegates its prediction API
(``predict_tails``, ``predict_heads``, ``score_triples``, ``predict_step``) here.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from lightning_kge.batches import QueryBatch
from lightning_kge.data.index import TripleIndex
from lightning_kge.data.info import GraphInfo
from lightning_kge.data.tsv import normalize_label, read_triple_lines
from lightning_kge.errors import UserError, shorten
from lightning_kge.models.base import KGEModel

SIDES = ("head", "tail")
FILTERS = ("train", "all", "none")
"""Known triples a prediction leaves out: of the training split, of every split, or none."""


@dataclass(frozen=True)
class Candidate:
    """One predicted entity: its label, id and score (higher is better)."""

    label: str
    id: int
    score: float


@dataclass
class Answers:
    """The best ``k`` answers of a batch of queries, best first (what ``predict_step`` returns).

    Attributes:
        entity: ``(B,)`` the entity each query gives (head of a tail query, tail of a head query).
        relation: ``(B,)``.
        side: ``"tail"`` or ``"head"``: the entity asked for.
        ids: ``(B, k)`` answer ids; ``-1`` where fewer than ``k`` entities were left after
            leaving out the known answers.
        scores: ``(B, k)`` their scores (``-inf`` beside an id of ``-1``).
    """

    entity: Tensor
    relation: Tensor
    side: str
    ids: Tensor
    scores: Tensor


def top_k(
    model: KGEModel, query: Tensor, k: int, chunk_size: int, exclude: tuple[Tensor, Tensor] | None = None
) -> tuple[Tensor, Tensor]:
    """The ``k`` best entities of each query vector, scoring ``chunk_size`` candidates at a time.

    Ties keep the lower id first; a NaN score counts as ``-inf``. Excluded pairs get id ``-1``
    and score ``-inf``, so they come last and are never returned while enough entities remain.

    Args:
        model: scores queries against candidates (``score_candidates``).
        query: ``(B, width)`` from ``model.tail_query`` or ``model.head_query``.
        k: answers per query (at most the number of entities).
        chunk_size: candidate entities scored at once.
        exclude: ``(rows, entities)`` pairs to leave out, or ``None``.

    Returns:
        ``(scores, ids)``, each ``(B, min(k, E))``, best first.
    """
    rows_total, device = query.shape[0], query.device
    k = min(k, model.num_entities)
    best_scores = torch.empty(rows_total, 0, device=device)
    best_ids = torch.empty(rows_total, 0, dtype=torch.long, device=device)
    for chunk in torch.arange(model.num_entities, device=device).split(chunk_size):
        scores = model.score_candidates(query, chunk).float()
        scores = scores.nan_to_num(nan=float("-inf"))
        ids = chunk.expand(rows_total, -1)
        if exclude is not None and exclude[0].numel():
            rows, entities = exclude
            inside = (entities >= chunk[0]) & (entities <= chunk[-1])
            left_out = torch.zeros_like(scores, dtype=torch.bool)
            left_out[rows[inside], entities[inside] - chunk[0]] = True
            scores = scores.masked_fill(left_out, float("-inf"))
            ids = ids.masked_fill(left_out, -1)
        merged_scores, merged_ids = torch.cat([best_scores, scores], 1), torch.cat([best_ids, ids], 1)
        order = torch.sort(merged_scores, dim=1, descending=True, stable=True).indices[:, :k]
        best_scores, best_ids = merged_scores.gather(1, order), merged_ids.gather(1, order)
    return best_scores, best_ids


def answer(model: KGEModel, batch: QueryBatch, chunk_size: int) -> Answers:
    """The best ``batch.k`` answers of each query of ``batch`` (see :func:`top_k`)."""
    if batch.side == "tail":
        query = model.tail_query(batch.entity, batch.relation)
    else:
        query = model.head_query(batch.relation, batch.entity)
    scores, ids = top_k(model, query, batch.k, chunk_size, batch.exclude)
    return Answers(batch.entity, batch.relation, batch.side, ids, scores)


def known_answers(index: TripleIndex | None, entity: Tensor, relation: Tensor, side: str) -> tuple[Tensor, Tensor]:
    """``(rows, entities)`` answers of each query that ``index`` knows (empty without an index)."""
    if index is None:
        empty = torch.empty(0, dtype=torch.long, device=entity.device)
        return empty, empty
    index.to(entity.device)
    return index.true_tails(entity, relation) if side == "tail" else index.true_heads(relation, entity)


def candidates(answers: Answers, graph: GraphInfo | None, row: int = 0) -> list[Candidate]:
    """The answers of query ``row`` as labelled :class:`Candidate`s, leaving out ``-1`` slots."""
    found = []
    for i, score in zip(answers.ids[row].tolist(), answers.scores[row].tolist()):
        if i >= 0:
            found.append(Candidate(str(i) if graph is None else graph.entities[i], i, score))
    return found


def resolve(label: str | int, ids: Mapping[str, int] | None, count: int, kind: str, where: str) -> int:
    """The id of an entity or relation given by label (NFC-normalised) or by id.

    An unknown label is a :class:`~lightning_kge.errors.UserError` naming ``where`` with the
    closest known labels.

    Example:
        >>> resolve("bob", {"alice": 0, "bob": 1}, 2, "entity", "config key head")
        1
        >>> resolve("bobb", {"alice": 0, "bob": 1}, 2, "entity", "config key head")
        Traceback (most recent call last):
        ...
        lightning_kge.errors.UserError: unknown entity 'bobb' (config key head): did you mean 'bob'? ...
    """
    if isinstance(label, int) and not isinstance(label, bool):
        if 0 <= label < count:
            return label
        raise UserError(f"{kind} id {label} is out of range", where, f"give an id in [0, {count}) or a label")
    if ids is None:
        raise UserError(f"the model has no labels to look up {kind} {shorten(str(label))}", where,
                        "give ids, or use a checkpoint written by lightning_kge.train (it keeps the labels)")
    text = normalize_label(str(label))
    if text in ids:
        return ids[text]
    close = difflib.get_close_matches(text, list(ids), n=5, cutoff=0.6)
    if not close:  # a case slip or a partial name: look for labels that contain it
        close = [known for known in ids if text.lower() in known.lower()][:5]
    hint = f"did you mean {', '.join(map(shorten, close))}?" if close else f"none of the {len(ids)} {kind} labels is close"
    raise UserError(f"unknown {kind} {shorten(text)}", where,
                    f"{hint} Labels are case-sensitive and must match the training data")


def entity_id(graph: GraphInfo | None, label: str | int, count: int, where: str) -> int:
    """:func:`resolve` for an entity of ``graph``."""
    return resolve(label, None if graph is None else graph.entity_id, count, "entity", where)


def relation_id(graph: GraphInfo | None, label: str | int, count: int, where: str) -> int:
    """:func:`resolve` for a relation of ``graph``."""
    return resolve(label, None if graph is None else graph.relation_id, count, "relation", where)


def triple_ids(
    graph: GraphInfo | None, triples: Sequence[Sequence[str | int]], counts: tuple[int, int], wheres: Sequence[str]
) -> Tensor:
    """``(n, 3)`` ids of labelled triples; ``wheres[i]`` names triple ``i`` in errors."""
    entities, relations = counts
    rows = [
        (entity_id(graph, h, entities, where), relation_id(graph, r, relations, where), entity_id(graph, t, entities, where))
        for (h, r, t), where in zip(triples, wheres)
    ]
    return torch.tensor(rows, dtype=torch.long).reshape(-1, 3)


def read_labelled_triples(path: str | Path, graph: GraphInfo | None, counts: tuple[int, int]) -> tuple[list, Tensor]:
    """The labelled triples of a TSV file and their ``(n, 3)`` ids; errors name ``FILE:LINE``."""
    read = read_triple_lines(path)
    return read.triples, triple_ids(graph, read.triples, counts, [f"{path}:{line}" for line in read.lines])
