"""AnswerWriter: writes ``Trainer.predict``'s answers by label to a TSV file (KGECLI's ``predict``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter

from lightning_kge.data.info import GraphInfo
from lightning_kge.prediction import Answers

COLUMNS = ("query", "relation", "side", "rank", "answer", "score")


class AnswerWriter(BasePredictionWriter):
    """Write the answers of ``Trainer.predict`` (:class:`~lightning_kge.prediction.Answers` batches) to ``path``.

    One line per answer, best first per query: the query's given entity, its relation, the side
    asked for (``tail``: ``(query, relation, ?)``; ``head``: ``(?, relation, query)``), the rank,
    the answer and its score, by label when the module has its graph (ids otherwise). Written at
    the end of the epoch on each process (under DDP, ``path`` gets a ``.rank<N>`` suffix on ranks
    other than zero).

    Args:
        path: the TSV file to write.
    """

    def __init__(self, path: str) -> None:
        super().__init__(write_interval="epoch")
        self.path = path

    def write_on_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Sequence[Any],
                           batch_indices: Sequence[Any] | None) -> None:
        graph: GraphInfo | None = getattr(pl_module, "graph", None)
        path = Path(self.path)
        if trainer.global_rank:
            path = path.with_name(f"{path.name}.rank{trainer.global_rank}")
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = ["\t".join(COLUMNS)]
        for answers in _flatten(predictions):
            lines += answer_lines(answers, graph)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        if trainer.is_global_zero:
            print(f"answers written to {path}")


def answer_lines(answers: Answers, graph: GraphInfo | None) -> list[str]:
    """The TSV lines of one batch of answers (``-1`` slots, where too few entities were left, are skipped)."""
    entities = graph.entities if graph is not None else None
    relations = graph.relations if graph is not None else None
    lines = []
    for row, (entity, relation) in enumerate(zip(answers.entity.tolist(), answers.relation.tolist())):
        query = entities[entity] if entities else str(entity)
        label = relations[relation] if relations else str(relation)
        for rank, (answer, score) in enumerate(zip(answers.ids[row].tolist(), answers.scores[row].tolist()), start=1):
            if answer >= 0:
                name = entities[answer] if entities else str(answer)
                lines.append("\t".join([query, label, answers.side, str(rank), name, f"{score:.6g}"]))
    return lines


def _flatten(predictions: Sequence[Any]) -> list[Answers]:
    """``Trainer.predict`` results: a list of batches, or one list per dataloader."""
    found: list[Answers] = []
    for item in predictions:
        if isinstance(item, Answers):
            found.append(item)
        elif isinstance(item, (list, tuple)):
            found += _flatten(item)
    return found
