"""Read a labelled triple file fast: whole chunks checked at once, labels mapped to ids by dict.

A file is read in chunks of about :data:`CHUNK_BYTES` that end at a line end. Each chunk is
decoded and checked as one text (control characters, whitespace around labels, blank labels,
three columns per line, Unicode NFC, a header on the first line) with a few C-speed scans,
then split into labels and mapped to ids. A chunk in which any scan finds something unusual
is read again by the exact line-by-line reader of :mod:`lightning_kge.data.tsv`, which either
accepts it (a whitespace-only line, a label NFC changes) or raises its ``FILE:LINE`` error:
the result and the errors are those of :func:`~lightning_kge.data.tsv.read_triples`, and memory
stays bounded by a chunk.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lightning_kge.data.index import MAX_IDS
from lightning_kge.data.tsv import (
    TRIPLE_FORMAT,
    TripleFileError,
    _is_header,
    decode_line,
    open_triple_file,
    parse_triple_lines,
)

CHUNK_BYTES = 1 << 23
"""Bytes per chunk (a chunk is extended to the end of its last line)."""

UTF8_BOM = b"\xef\xbb\xbf"

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufeff]")
"""A control character other than tab and line feed, or a byte order mark (any such chunk is
read line by line: a trailing carriage return is then dropped, anything else refused)."""

_SPACE_AT_EDGE = re.compile(r"(?:^|[\t\n])[^\S\t\n]|[^\S\t\n](?:[\t\n]|$)")
"""Whitespace at the start or end of a label (Unicode whitespace; tab and line feed separate)."""

_EMPTY_LINES = re.compile("\n{2,}")


class Vocabulary:
    """Labels in order of first occurrence, each with a provisional id: the position of its first
    occurrence among all label occurrences mapped so far (ids are increasing but not dense).

    One ``dict.setdefault`` per occurrence, in C (``map``), is the cheapest exact mapping of
    labels to ids in Python; :meth:`ids` and :meth:`lookup` then make them dense in one gather.

    Example:
        >>> vocabulary = Vocabulary()
        >>> vocabulary.map(["b", "a", "b"]).tolist(), vocabulary.map(["c", "a"]).tolist()
        ([0, 1, 0], [3, 1])
        >>> vocabulary.labels(), vocabulary.lookup([5, 7, 9]).tolist()
        (['b', 'a', 'c'], [5, 7, 0, 9, 0])
    """

    def __init__(self) -> None:
        self.first: dict[str, int] = {}
        self.occurrences = 0

    def __len__(self) -> int:
        return len(self.first)

    def map(self, labels: list[str]) -> np.ndarray:
        """``(len(labels),)`` int64 provisional ids, adding new labels."""
        ids = np.fromiter(map(self.first.setdefault, labels, itertools.count(self.occurrences)),
                          dtype=np.int64, count=len(labels))
        self.occurrences += len(labels)
        return ids

    def labels(self) -> list[str]:
        """Every label, in order of first occurrence (provisional ids increase along it)."""
        return list(self.first)

    def positions(self) -> np.ndarray:
        """The provisional id of each label of :meth:`labels` (increasing)."""
        return np.fromiter(self.first.values(), dtype=np.int64, count=len(self.first))

    def lookup(self, values: np.ndarray | list[int]) -> np.ndarray:
        """A table ``(occurrences,)`` int32 that maps each label's provisional id to ``values[i]``
        for the ``i``-th label of :meth:`labels` (other slots hold 0)."""
        table = np.zeros(self.occurrences, dtype=np.int32)
        table[self.positions()] = values
        return table


@dataclass
class SplitIds:
    """One file's triples as provisional ids of the vocabularies given to :func:`read_ids`.

    Attributes:
        ids: ``(n, 3)`` int64 ``(head, relation, tail)`` provisional ids, in file order,
            duplicates included.
        renamed: how many distinct labels NFC normalisation changed.
    """

    ids: np.ndarray
    renamed: int


def read_ids(path: str | Path, entities: Vocabulary, relations: Vocabulary) -> SplitIds:
    """Read a triple file into provisional ids, adding its labels to ``entities`` and ``relations``.

    Labels first seen in an earlier file keep the lower ids. Labels are checked and
    NFC-normalised exactly as by :func:`lightning_kge.data.tsv.read_triples`.

    Args:
        path: a UTF-8 triple file.
        entities: the entity labels seen so far, extended in place.
        relations: the relation labels seen so far, extended in place.

    Returns:
        The provisional ids and the count of labels NFC changed.

    Raises:
        TripleFileError: as :func:`~lightning_kge.data.tsv.read_triples`, naming ``FILE:LINE``.

    Example:
        >>> import tempfile
        >>> tmp = tempfile.TemporaryDirectory()
        >>> path = Path(tmp.name) / "train.txt"
        >>> _ = path.write_text("a\\tr\\tb\\nb\\tr\\tc\\n")
        >>> entities, relations = Vocabulary(), Vocabulary()
        >>> read_ids(path, entities, relations).ids.tolist(), entities.labels()
        ([[0, 0, 1], [1, 0, 3]], ['a', 'b', 'c'])
        >>> tmp.cleanup()
    """
    path = Path(path)
    parts: list[np.ndarray] = []
    renamed: set[str] = set()
    line = 1
    with open_triple_file(path) as handle:
        while True:
            data = handle.read(CHUNK_BYTES)
            if not data:
                break
            if not data.endswith(b"\n"):
                data += handle.readline()
            header_possible = not parts
            columns = _split_fast(data, line == 1, header_possible)
            if columns is None:  # something unusual: the exact reader accepts it or says what and where
                triples, _, changed = parse_triple_lines(path, _numbered(path, data, line), header_possible)
                renamed |= changed
                columns = tuple(list(c) for c in zip(*triples)) if triples else ([], [], [])
            if columns[0]:
                parts.append(_to_ids(columns, entities, relations, path))
            line += data.count(b"\n")
    if not parts:
        raise TripleFileError(path, None, "file holds no triples", f"write {TRIPLE_FORMAT}")
    return SplitIds(np.concatenate(parts), len(renamed))


def _split_fast(data: bytes, first: bool, header_possible: bool) -> tuple[list[str], list[str], list[str]] | None:
    """Heads, relations and tails of a chunk that passes every check as a whole; ``None`` otherwise."""
    if first and data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM):]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "\r" in text:  # Windows line ends; any other carriage return is found below
        text = text.replace("\r\n", "\n")
    if text.startswith("\n") or "\n\n" in text:
        text = _EMPTY_LINES.sub("\n", text).lstrip("\n")
    if not text:
        return [], [], []
    if not text.endswith("\n"):
        text += "\n"
    raw = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    if text.isascii():  # controls are the bytes below 32 (but tab, line feed) and 127; spaces are ' '
        if bool(((raw < 32) & (raw != 9) & (raw != 10) | (raw == 127)).any()):
            return None
        if " " in text and (" \t" in text or "\t " in text or " \n" in text or "\n " in text or text[0] == " "):
            return None
    elif (_CONTROL.search(text) or _SPACE_AT_EDGE.search(text)
          or not unicodedata.is_normalized("NFC", text)):
        return None
    if text[0] == "\t" or "\t\t" in text or "\t\n" in text or "\n\t" in text:  # a blank label
        return None
    separators = raw[(raw == 9) | (raw == 10)]  # must be tab, tab, line feed on every line
    if separators.size % 3 or not bool((separators.reshape(-1, 3) == np.array([9, 9, 10], np.uint8)).all()):
        return None
    if header_possible and _is_header(text[: text.index("\n")].split("\t")):
        return None
    labels = text.replace("\n", "\t").split("\t")
    labels.pop()  # after the final line end
    return labels[0::3], labels[1::3], labels[2::3]


def _numbered(path: Path, data: bytes, first_line: int) -> Iterator[tuple[int, str]]:
    """``(line_number, text)`` of the lines of a chunk that starts at line ``first_line``."""
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    for offset, raw in enumerate(lines):
        yield first_line + offset, decode_line(path, first_line + offset, raw)


def _to_ids(columns: tuple[list[str], list[str], list[str]], entities: Vocabulary,
            relations: Vocabulary, path: Path) -> np.ndarray:
    heads, rels, tails = columns
    ids = np.empty((len(heads), 3), dtype=np.int64)
    ids[:, 0] = entities.map(heads)
    ids[:, 1] = relations.map(rels)
    ids[:, 2] = entities.map(tails)
    for vocabulary, kind in ((entities, "entity"), (relations, "relation")):
        if len(vocabulary) > MAX_IDS:
            raise TripleFileError(path, None, f"more than {MAX_IDS:,} distinct {kind} labels",
                                  "split the graph: ids must fit in 32 bits")
    return ids
