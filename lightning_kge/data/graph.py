"""A knowledge graph's splits as id tensors over one entity and relation vocabulary."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from lightning_kge.data.tsv import Triple, TripleFileError, decoded_lines, read_triples

SPLITS = ("train", "valid", "test")
UnseenPolicy = Literal["error", "drop", "keep"]


@dataclass
class KnowledgeGraph:
    """Splits of a knowledge graph as ``LongTensor (n, 3)`` of ``(h, r, t)`` ids.

    Attributes:
        entity_to_id: label -> id, ids ``0..num_entities-1`` in sorted label order.
        relation_to_id: label -> id, likewise.
        triples: ``{"train"|"valid"|"test": LongTensor (n, 3)}``.
        dropped: per split, how many triples were dropped for an unseen label (policy ``drop``).
        duplicates: per split, how many lines repeat an earlier triple of the split.
    """

    entity_to_id: dict[str, int]
    relation_to_id: dict[str, int]
    triples: dict[str, torch.Tensor]
    dropped: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)

    @property
    def num_entities(self) -> int:
        return len(self.entity_to_id)

    @property
    def num_relations(self) -> int:
        return len(self.relation_to_id)


def load_graph(folder: str | Path, unseen: UnseenPolicy = "error") -> KnowledgeGraph:
    """Read ``train.txt``, ``valid.txt`` and ``test.txt`` of a folder into a :class:`KnowledgeGraph`.

    Args:
        folder: a folder with the three label TSV files.
        unseen: what to do with a valid/test triple whose entity or relation never occurs in
            train: ``"error"`` stops naming its file and line; ``"drop"`` removes it and the counts
            are reported in ``dropped``; ``"keep"`` keeps it with a vocabulary taken over all
            splits (the published protocol for wn18rr and fb15k237: such entities keep their
            random initial embedding).

    Returns:
        The graph; ids are assigned in sorted label order, so they do not depend on line order.
    """
    if unseen not in ("error", "drop", "keep"):
        raise ValueError(f"unseen must be 'error', 'drop' or 'keep', got {unseen!r}")
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: dataset folder not found")
    labelled = {split: read_triples(folder / f"{split}.txt") for split in SPLITS}
    vocabulary_splits = SPLITS if unseen == "keep" else ("train",)
    entities = sorted({e for s in vocabulary_splits for h, _, t in labelled[s] for e in (h, t)})
    relations = sorted({r for s in vocabulary_splits for _, r, _ in labelled[s]})
    entity_to_id = {label: i for i, label in enumerate(entities)}
    relation_to_id = {label: i for i, label in enumerate(relations)}

    triples, dropped = {}, {}
    for split in SPLITS:
        known = [_is_known(x, entity_to_id, relation_to_id) for x in labelled[split]]
        if not all(known):
            first = known.index(False)
            if unseen == "error":
                path = folder / f"{split}.txt"
                raise TripleFileError(
                    path,
                    _line_of_triple(path, first),
                    f"{_unseen_part(labelled[split][first], entity_to_id, relation_to_id)} "
                    "never occurs in train.txt (set data.unseen=drop to drop such triples, or "
                    "data.unseen=keep to keep them with a vocabulary over all splits)",
                )
            dropped[split] = known.count(False)
            labelled[split] = [x for x, ok in zip(labelled[split], known) if ok]
        triples[split] = _to_ids(labelled[split], entity_to_id, relation_to_id)
    return KnowledgeGraph(entity_to_id, relation_to_id, triples, dropped)


def _is_known(triple: Triple, entities: dict[str, int], relations: dict[str, int]) -> bool:
    h, r, t = triple
    return h in entities and t in entities and r in relations


def _unseen_part(triple: Triple, entities: dict[str, int], relations: dict[str, int]) -> str:
    h, r, t = triple
    if h not in entities:
        return f"head entity {h!r}"
    if r not in relations:
        return f"relation {r!r}"
    return f"tail entity {t!r}"


def _line_of_triple(path: Path, index: int) -> int:
    """The 1-based line number of the ``index``-th triple (blank lines are not triples)."""
    count = -1
    for number, line in decoded_lines(path):
        if line.strip():
            count += 1
            if count == index:
                return number
    raise IndexError(index)


def _to_ids(
    triples: list[Triple], entities: dict[str, int], relations: dict[str, int]
) -> torch.Tensor:
    ids = [(entities[h], relations[r], entities[t]) for h, r, t in triples]
    return torch.tensor(ids, dtype=torch.long).reshape(-1, 3)
