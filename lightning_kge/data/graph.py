"""A knowledge graph's splits as id tensors over one entity and relation vocabulary."""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from lightning_kge.data.reader import Vocabulary, read_ids
from lightning_kge.data.tsv import TripleFileError, read_label_lines, read_triple_lines, warn_renamed
from lightning_kge.errors import ArgumentError, shorten

SPLITS = ("train", "valid", "test")
UnseenPolicy = Literal["error", "drop", "keep"]
DEDUPLICATED = ("valid", "test")
"""Splits whose duplicate triples are removed: each distinct triple is ranked once."""

_DECIMALS = re.compile(r"(?:0|[1-9][0-9]*)(?:\n(?:0|[1-9][0-9]*))*")


@dataclass
class KnowledgeGraph:
    """Splits of a knowledge graph as ``LongTensor (n, 3)`` of ``(h, r, t)`` ids.

    Ids are assigned in sorted label order, so they do not depend on line order; labels that are
    exactly the decimal integers ``0..N-1`` (integer-id inputs) keep their value as id.

    Attributes:
        entities: entity labels in id order.
        relations: relation labels in id order.
        triples: ``{"train"|"valid"|"test": LongTensor (n, 3)}``. ``train`` holds every line
            of its file, duplicates included (each copy is a training example); ``valid`` and
            ``test`` hold each distinct triple once, in the order of first occurrence.
        dropped: per split, how many distinct triples were dropped for an unseen label (policy
            ``drop``); splits with none are absent.
        duplicates: per split, how many lines repeat a triple found earlier in the same file
            (extra copies); splits with none are absent. See :func:`describe_duplicates`.
        renamed: per split, how many distinct labels Unicode NFC changed; splits with none are absent.

    Example:
        >>> graph = KnowledgeGraph(["a", "b"], ["r"], {s: torch.tensor([[0, 0, 1]]) for s in SPLITS})
        >>> graph.num_entities, graph.entity_to_id
        (2, {'a': 0, 'b': 1})
    """

    entities: list[str]
    relations: list[str]
    triples: dict[str, torch.Tensor]
    dropped: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    renamed: dict[str, int] = field(default_factory=dict)

    @property
    def num_entities(self) -> int:
        return len(self.entities)

    @property
    def num_relations(self) -> int:
        return len(self.relations)

    @functools.cached_property
    def entity_to_id(self) -> dict[str, int]:
        """Entity label -> id (made on first use)."""
        return {label: i for i, label in enumerate(self.entities)}

    @functools.cached_property
    def relation_to_id(self) -> dict[str, int]:
        """Relation label -> id (made on first use)."""
        return {label: i for i, label in enumerate(self.relations)}


def load_graph(folder: str | Path, unseen: UnseenPolicy = "error", cache: bool | None = None) -> KnowledgeGraph:
    """Read ``train.txt``, ``valid.txt`` and ``test.txt`` of a folder into a :class:`KnowledgeGraph`.

    Files are read as by :func:`lightning_kge.data.tsv.read_triples` (labels NFC-normalised, a
    warning per file giving how many labels that changed), but fast (:mod:`lightning_kge.data.reader`).
    Duplicate triples are counted per split in ``duplicates``; ``valid`` and ``test`` keep each
    distinct triple once. A large graph is cached after its first read
    (:func:`lightning_kge.data.prepared.prepare_graph`, which also builds its indexes).

    Args:
        folder: a folder with the three label TSV files.
        unseen: what to do with a valid/test triple whose entity or relation never occurs in
            train: ``"error"`` stops naming its file and line; ``"drop"`` removes it and the counts
            are reported in ``dropped``; ``"keep"`` keeps it with a vocabulary taken over all
            splits (the published protocol for wn18rr and fb15k237: such entities keep their
            random initial embedding).
        cache: use and fill the cache (``None``: only for files of at least
            :data:`~lightning_kge.data.store.MIN_CACHED_BYTES` in all).

    Returns:
        The graph; ids are assigned in sorted label order, so they do not depend on line order
        (integer-id inputs keep their ids).

    Raises:
        TripleFileError: a missing folder or any problem in a file, naming ``FILE:LINE``.
        ArgumentError: an unknown ``unseen`` policy.
    """
    from lightning_kge.data.prepared import prepare_graph

    return prepare_graph(folder, unseen, cache=cache).graph


def check_source(folder: str | Path, unseen: str) -> Path:
    """The folder, after refusing an unknown ``unseen`` policy or a folder that is not one."""
    if unseen not in ("error", "drop", "keep"):
        raise ArgumentError("unseen", unseen, "'error', 'drop' or 'keep'")
    folder = Path(folder)
    if not folder.is_dir():
        what = "is a file, not a dataset folder" if folder.exists() else "dataset folder not found"
        raise TripleFileError(
            folder, None, what, "give a folder that holds train.txt, valid.txt and test.txt"
        )
    return folder


def parse_graph(folder: str | Path, unseen: UnseenPolicy = "error") -> KnowledgeGraph:
    """:func:`load_graph` without the cache; ``duplicates`` holds valid and test only (the train
    count comes from the index, see :func:`lightning_kge.data.prepared.build`)."""
    folder = check_source(folder, unseen)
    entities, relations = Vocabulary(), Vocabulary()
    read, train_end = {}, (0, 0)
    for split in SPLITS:
        read[split] = read_ids(folder / f"{split}.txt", entities, relations)
        if split == "train":
            train_end = (entities.occurrences, relations.occurrences)
    renamed = {split: read[split].renamed for split in SPLITS if read[split].renamed}
    for split, count in renamed.items():
        warn_renamed(folder / f"{split}.txt", count)
    ids = {split: read[split].ids for split in SPLITS}
    del read
    duplicates = {}
    for split in DEDUPLICATED:
        first = _first_occurrences(ids[split])
        if len(first) < len(ids[split]):
            duplicates[split] = len(ids[split]) - len(first)
            ids[split] = ids[split][first]
    dropped = {}
    if unseen != "keep":
        for split in DEDUPLICATED:
            bad = (ids[split][:, 0] >= train_end[0]) | (ids[split][:, 2] >= train_end[0]) | (ids[split][:, 1] >= train_end[1])
            if not bad.any():
                continue
            if unseen == "error":
                _refuse_unseen(folder / f"{split}.txt", ids[split][int(np.argmax(bad))], train_end, entities, relations)
            dropped[split] = int(bad.sum())
            ids[split] = ids[split][~bad]
    entity_labels, entity_table = _vocabulary(entities, train_end[0] if unseen != "keep" else None)
    relation_labels, relation_table = _vocabulary(relations, train_end[1] if unseen != "keep" else None)
    del entities, relations
    triples = {}
    for split in SPLITS:
        array = ids.pop(split)
        array[:, 0] = entity_table[array[:, 0]]
        array[:, 1] = relation_table[array[:, 1]]
        array[:, 2] = entity_table[array[:, 2]]
        triples[split] = torch.from_numpy(array)
    return KnowledgeGraph(entity_labels, relation_labels, triples, dropped, duplicates, renamed)


def graph_fingerprint(graph: KnowledgeGraph) -> str:
    """SHA-256 over the labels in id order and each split's id triples (as int64, in order).

    Two graphs have the same fingerprint exactly when they hold the same labels with the same ids
    and the same triples per split.
    """
    digest = hashlib.sha256()
    for labels in (graph.entities, graph.relations):
        digest.update("\n".join(labels).encode("utf-8") + b"\0")
    for split in SPLITS:
        digest.update(split.encode() + b"\0")
        triples = graph.triples[split].reshape(-1, 3)
        for start in range(0, len(triples), 1 << 20):  # bounded memory
            digest.update(triples[start : start + (1 << 20)].to(torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()


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


def final_ids(labels: list[str]) -> tuple[list[str], np.ndarray]:
    """The id of each label: its value if the labels are exactly ``"0"..str(N-1)``, else its
    rank in sorted order.

    Returns:
        ``(labels in id order, id of each given label)``.

    Example:
        >>> final_ids(["b", "c", "a"])
        (['a', 'b', 'c'], array([1, 2, 0]))
        >>> final_ids(["2", "10", "0", "1", "3", "4", "5", "6", "7", "8", "9"])[1][:3]
        array([ 2, 10,  0])
        >>> final_ids(["1", "2"])[1]  # not 0..N-1: sorted order
        array([0, 1])
    """
    n = len(labels)
    if n and max(map(len, labels)) <= len(str(n - 1)) and _DECIMALS.fullmatch("\n".join(labels)):
        values = np.fromiter(map(int, labels), dtype=np.int64, count=n)
        if int(values.max()) == n - 1:  # distinct canonical decimals, none above N - 1: exactly 0..N-1
            return [labels[i] for i in np.argsort(values).tolist()], values
    order = sorted(range(n), key=labels.__getitem__)
    ids = np.empty(n, dtype=np.int64)
    ids[order] = np.arange(n)
    return [labels[i] for i in order], ids


def _vocabulary(vocabulary: Vocabulary, end: int | None) -> tuple[list[str], np.ndarray]:
    """Labels in id order and the table from provisional to final ids, over the labels whose
    first occurrence is before ``end`` (``None``: all)."""
    labels = vocabulary.labels()
    if end is not None:
        labels = labels[: int(np.searchsorted(vocabulary.positions(), end))]
    ordered, ids = final_ids(labels)
    values = np.zeros(len(vocabulary), dtype=np.int64)
    values[: len(labels)] = ids
    return ordered, vocabulary.lookup(values)


def _first_occurrences(ids: np.ndarray) -> np.ndarray:
    """Row numbers of the first occurrence of each distinct row, in file order."""
    if len(ids) < 2:
        return np.arange(len(ids))
    order = np.lexsort((ids[:, 2], ids[:, 1], ids[:, 0]))  # stable: equal rows keep file order
    rows = ids[order]
    first = np.ones(len(ids), dtype=bool)
    first[1:] = (rows[1:] != rows[:-1]).any(axis=1)
    return np.sort(order[first])


def _refuse_unseen(path: Path, row: np.ndarray, train_end: tuple[int, int], entities: Vocabulary,
                   relations: Vocabulary) -> None:
    """Raise the error of the first triple of ``path`` with a label train never saw (``row``)."""
    entity_labels, relation_labels = entities.labels(), relations.labels()
    entity_at = dict(zip(entities.positions().tolist(), entity_labels))
    relation_at = dict(zip(relations.positions().tolist(), relation_labels))
    h, r, t = (int(x) for x in row)
    if h >= train_end[0]:
        part = f"head entity {shorten(entity_at[h])}"
    elif r >= train_end[1]:
        part = f"relation {shorten(relation_at[r])}"
    else:
        part = f"tail entity {shorten(entity_at[t])}"
    triple = (entity_at[h], relation_at[r], entity_at[t])
    read = read_triple_lines(path)  # the error path: find the line the slow, exact way
    line = read.lines[read.triples.index(triple)]
    raise TripleFileError(
        path, line, f"{part} never occurs in train.txt",
        "set data.unseen=drop to drop such triples, or data.unseen=keep to keep them "
        "with a vocabulary over all splits",
    )
