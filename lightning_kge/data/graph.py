"""A knowledge graph's splits as id tensors over one entity and relation vocabulary."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from lightning_kge.data.tsv import (
    Triple,
    TripleFileError,
    TripleLines,
    read_label_lines,
    read_triple_lines,
    warn_renamed,
)
from lightning_kge.errors import ArgumentError, shorten

SPLITS = ("train", "valid", "test")
UnseenPolicy = Literal["error", "drop", "keep"]
DEDUPLICATED = ("valid", "test")
"""Splits whose duplicate triples are removed: each distinct triple is ranked once."""


@dataclass
class KnowledgeGraph:
    """Splits of a knowledge graph as ``LongTensor (n, 3)`` of ``(h, r, t)`` ids.

    Attributes:
        entity_to_id: label -> id, ids ``0..num_entities-1`` in sorted label order.
        relation_to_id: label -> id, likewise.
        triples: ``{"train"|"valid"|"test": LongTensor (n, 3)}``. ``train`` holds every line
            of its file, duplicates included (each copy is a training example); ``valid`` and
            ``test`` hold each distinct triple once, in the order of first occurrence.
        dropped: per split, how many distinct triples were dropped for an unseen label (policy
            ``drop``); splits with none are absent.
        duplicates: per split, how many lines repeat a triple found earlier in the same file
            (extra copies); splits with none are absent. See :func:`describe_duplicates`.
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

    Files are read by :func:`lightning_kge.data.tsv.read_triples` (labels NFC-normalised, a
    warning per file giving how many labels that changed). Duplicate triples are counted per
    split in ``duplicates``; ``valid`` and ``test`` keep each distinct triple once.

    Args:
        folder: a folder with the three label TSV files.
        unseen: what to do with a valid/test triple whose entity or relation never occurs in
            train: ``"error"`` stops naming its file and line; ``"drop"`` removes it and the counts
            are reported in ``dropped``; ``"keep"`` keeps it with a vocabulary taken over all
            splits (the published protocol for wn18rr and fb15k237: such entities keep their
            random initial embedding).

    Returns:
        The graph; ids are assigned in sorted label order, so they do not depend on line order.

    Raises:
        TripleFileError: a missing folder or any problem in a file, naming ``FILE:LINE``.
        ArgumentError: an unknown ``unseen`` policy.
    """
    if unseen not in ("error", "drop", "keep"):
        raise ArgumentError("unseen", unseen, "'error', 'drop' or 'keep'")
    folder = Path(folder)
    if not folder.is_dir():
        what = "is a file, not a dataset folder" if folder.exists() else "dataset folder not found"
        raise TripleFileError(
            folder, None, what, "give a folder that holds train.txt, valid.txt and test.txt"
        )
    read = {split: read_triple_lines(folder / f"{split}.txt") for split in SPLITS}
    for split in SPLITS:
        warn_renamed(folder / f"{split}.txt", read[split].renamed)
    duplicates = {}
    for split in SPLITS:
        distinct = _first_occurrences(read[split])
        extra = len(read[split].triples) - len(distinct.triples)
        if extra:
            duplicates[split] = extra
            if split in DEDUPLICATED:
                read[split] = distinct

    vocabulary_splits = SPLITS if unseen == "keep" else ("train",)
    labelled = {split: read[split].triples for split in SPLITS}
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
                raise TripleFileError(
                    folder / f"{split}.txt",
                    read[split].lines[first],
                    f"{_unseen_part(labelled[split][first], entity_to_id, relation_to_id)} "
                    "never occurs in train.txt",
                    "set data.unseen=drop to drop such triples, or data.unseen=keep to keep them "
                    "with a vocabulary over all splits",
                )
            dropped[split] = known.count(False)
            labelled[split] = [x for x, ok in zip(labelled[split], known) if ok]
        triples[split] = _to_ids(labelled[split], entity_to_id, relation_to_id)
    return KnowledgeGraph(entity_to_id, relation_to_id, triples, dropped, duplicates)


def describe_duplicates(duplicates: Mapping[str, int]) -> list[str]:
    """One sentence per split with duplicate triples, saying what was done with them.

    Example:
        >>> describe_duplicates({"train": 1, "test": 2})
        ['train.txt repeats 1 triple line (kept: each copy is a training example)', \
'test.txt repeats 2 triple lines (each distinct triple is ranked once)']
    """
    sentences = []
    for split, count in duplicates.items():
        lines = f"{count} triple line{'s' if count != 1 else ''}"
        done = (
            "each distinct triple is ranked once"
            if split in DEDUPLICATED
            else "kept: each copy is a training example"
        )
        sentences.append(f"{split}.txt repeats {lines} ({done})")
    return sentences


def read_entity_ids(path: str | Path, entity_to_id: Mapping[str, int]) -> torch.Tensor:
    """Ids of the entity labels listed one per line in ``path`` (e.g. ``regions.list``).

    Raises:
        TripleFileError: the file cannot be read, or a label is not an entity of the graph
            (naming ``FILE:LINE`` and the label).
    """
    ids = []
    for label, line in read_label_lines(path):
        if label not in entity_to_id:
            raise TripleFileError(
                path, line, f"{shorten(label)} is not an entity of the graph",
                "list only entities that occur in the graph's triples",
            )
        ids.append(entity_to_id[label])
    return torch.tensor(ids, dtype=torch.long)


def _first_occurrences(read: TripleLines) -> TripleLines:
    """Each distinct triple once, at its first line."""
    if len(set(read.triples)) == len(read.triples):
        return read
    seen: set[Triple] = set()
    triples, lines = [], []
    for triple, line in zip(read.triples, read.lines):
        if triple not in seen:
            seen.add(triple)
            triples.append(triple)
            lines.append(line)
    return TripleLines(triples, lines, read.renamed)


def _is_known(triple: Triple, entities: dict[str, int], relations: dict[str, int]) -> bool:
    h, r, t = triple
    return h in entities and t in entities and r in relations


def _unseen_part(triple: Triple, entities: dict[str, int], relations: dict[str, int]) -> str:
    h, r, t = triple
    if h not in entities:
        return f"head entity {shorten(h)}"
    if r not in relations:
        return f"relation {shorten(r)}"
    return f"tail entity {shorten(t)}"


def _to_ids(
    triples: list[Triple], entities: dict[str, int], relations: dict[str, int]
) -> torch.Tensor:
    ids = [(entities[h], relations[r], entities[t]) for h, r, t in triples]
    return torch.tensor(ids, dtype=torch.long).reshape(-1, 3)
