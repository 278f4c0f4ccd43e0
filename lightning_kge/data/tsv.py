"""Read labelled triple files (``head<TAB>relation<TAB>tail``) with errors that name file and line.

Labels are taken as written, with three exceptions that change no meaning: a UTF-8 byte order
mark at the start of a file is dropped, a trailing ``\\r`` (Windows line end) is dropped, and
labels are put in Unicode NFC form (:func:`normalize_label`), so that ``café`` spelt with a
combined ``é`` or with ``e`` and a combining accent is one entity; a warning gives the number of
labels that NFC changed. Everything else that could silently change meaning is refused with
``FILE:LINE``: a header line, a label with leading or trailing whitespace, and a label with a
control character.
"""

from __future__ import annotations

import re
import unicodedata
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from lightning_kge.errors import UserError, shorten

Triple = tuple[str, str, str]

BOM = "\ufeff"
"""The UTF-8 byte order mark, as decoded text."""

CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ufeff]")
"""A control character (Unicode category ``Cc``: C0, DEL, C1) or a byte order mark."""

LINE_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\ufeff]")
"""As :data:`CONTROL`, without the tab (the separator): a line holding one has a bad label."""

HEADERS = frozenset(
    {
        ("head", "relation", "tail"),
        ("head", "rel", "tail"),
        ("h", "r", "t"),
        ("subject", "predicate", "object"),
        ("s", "p", "o"),
        ("source", "relation", "target"),
        ("src", "rel", "dst"),
    }
)
"""Well-known header lines (compared case-insensitively): a first line like these is refused."""

TRIPLE_FORMAT = "one head<TAB>relation<TAB>tail triple per line, UTF-8"


class TripleFileError(UserError, ValueError):
    """A triple or label file could not be read: ``<what> (<FILE:LINE>): <fix>``.

    Args:
        path: the file.
        line: the 1-based line number, or ``None`` when the problem is the whole file.
        what: the problem, e.g. ``expected 3 tab-separated columns, found 2``.
        fix: how to fix it.

    Example:
        >>> str(TripleFileError("train.txt", 3, "blank tail label", "give every triple a tail"))
        'blank tail label (train.txt:3): give every triple a tail'
    """

    def __init__(
        self, path: str | Path, line: int | None, what: str, fix: str = "correct the file"
    ) -> None:
        self.path = str(path)
        self.line = line
        self.problem = what
        super().__init__(what, f"{self.path}:{line}" if line is not None else self.path, fix)

    def __reduce__(self) -> tuple:  # picklable (errors cross process boundaries under DDP spawn)
        return type(self), (self.path, self.line, self.what, self.fix)


@dataclass
class TripleLines:
    """The triples of one file with their line numbers, as read by :func:`read_triple_lines`.

    Attributes:
        triples: ``(head, relation, tail)`` labels in file order, duplicates included.
        lines: the 1-based line number of each triple.
        renamed: how many distinct labels NFC normalisation changed.
    """

    triples: list[Triple]
    lines: list[int]
    renamed: int


def normalize_label(text: str) -> str:
    """A label in the form the graph stores it: Unicode NFC.

    Use it on labels a user types (for example in a prediction query), so they match the
    labels read from files.

    Example:
        >>> normalize_label("cafe\\u0301") == "caf\\u00e9"
        True
        >>> normalize_label("netherlands")
        'netherlands'
    """
    return unicodedata.normalize("NFC", text)


def read_triples(path: str | Path) -> list[Triple]:
    """Read one split as a list of ``(head, relation, tail)`` labels, in file order.

    Every non-empty line must hold exactly three tab-separated labels; see the module docstring
    for what is accepted and refused. Duplicates are kept. If NFC normalisation changed any
    label, a ``UserWarning`` gives the count.

    Args:
        path: a UTF-8 text file.

    Returns:
        The triples as label tuples, duplicates included.

    Raises:
        TripleFileError: on a missing, unreadable or empty file, a folder, a line that is not
            valid UTF-8, a header line, a line with another column count, or a blank label, a
            label with surrounding whitespace or one with a control character. ``str(error)`` is
            ``<what> (<FILE:LINE>): <fix>``.
    """
    read = read_triple_lines(path)
    warn_renamed(path, read.renamed)
    return read.triples


def read_triple_lines(path: str | Path) -> TripleLines:
    """Like :func:`read_triples`, with each triple's line number and no warning."""
    path = Path(path)
    triples, lines, renamed = parse_triple_lines(path, decoded_lines(path))
    if not triples:
        raise TripleFileError(path, None, "file holds no triples", f"write {TRIPLE_FORMAT}")
    return TripleLines(triples, lines, len(renamed))


def parse_triple_lines(
    path: Path, numbered: Iterable[tuple[int, str]], header_possible: bool = True
) -> tuple[list[Triple], list[int], set[str]]:
    """Check and split numbered lines of ``path`` into triples, line by line (the exact reader).

    Args:
        path: the file, for messages.
        numbered: ``(line_number, text)`` pairs, as :func:`decoded_lines` gives them.
        header_possible: whether the first non-blank line may be a header (the start of a file).

    Returns:
        ``(triples, line_numbers, renamed)``: NFC-normalised label triples, the line of each,
        and the distinct labels (as written) that NFC changed.

    Raises:
        TripleFileError: naming the first bad line (see :func:`read_triples`).
    """
    triples: list[Triple] = []
    lines: list[int] = []
    renamed: set[str] = set()
    for number, line in numbered:
        line = line.rstrip("\n").removesuffix("\r")
        if not line.strip():
            continue
        columns = line.split("\t")
        if header_possible and not triples and _is_header(columns):
            raise TripleFileError(
                path, number, f"the first line is a header ({', '.join(map(shorten, columns))})",
                "remove the header line: the file holds triples only",
            )
        if len(columns) != 3:
            raise TripleFileError(
                path, number, f"expected 3 tab-separated columns, found {len(columns)}",
                "separate head, relation and tail by one tab each, with no tab inside a label",
            )
        h, r, t = columns
        if (
            LINE_CONTROL.search(line)
            or not (h and r and t)
            or h[0].isspace() or h[-1].isspace()
            or r[0].isspace() or r[-1].isspace()
            or t[0].isspace() or t[-1].isspace()
        ):  # a label is refused (a quick test that most lines pass): say which
            for part, label in zip(("head", "relation", "tail"), columns):
                check_label(label, part, path, number)
        if not line.isascii() and not unicodedata.is_normalized("NFC", line):
            renamed.update(label for label in columns if normalize_label(label) != label)
            h, r, t = map(normalize_label, columns)
        triples.append((h, r, t))
        lines.append(number)
    return triples, lines, renamed


def read_labels(path: str | Path) -> list[str]:
    """Read one label per non-empty line (for example the candidate regions of ``regions.list``).

    Labels are checked and normalised as in :func:`read_triples`.
    """
    return [label for label, _ in read_label_lines(path)]


def read_label_lines(path: str | Path) -> list[tuple[str, int]]:
    """``(label, line_number)`` of each non-empty line, checked and NFC-normalised."""
    path = Path(path)
    labels = []
    renamed: set[str] = set()
    for number, line in decoded_lines(path):
        line = line.rstrip("\n").removesuffix("\r")
        if not line.strip():
            continue
        check_label(line, "label", path, number)
        normal = normalize_label(line)
        if normal != line:
            renamed.add(line)
        labels.append((normal, number))
    if not labels:
        raise TripleFileError(path, None, "file holds no labels", "write one label per line")
    warn_renamed(path, len(renamed))
    return labels


def check_label(label: str, part: str, path: Path, line: int) -> None:
    """Refuse a blank label, surrounding whitespace or a control character, naming ``FILE:LINE``.

    Args:
        label: the label as written.
        part: what it is, for the message: ``head``, ``relation``, ``tail`` or ``label``.
        path: its file.
        line: its line number.

    Raises:
        TripleFileError: the label is blank, has leading or trailing whitespace, or contains a
            control character (Unicode category ``Cc``: NUL, the other C0 and C1 controls, DEL)
            or a byte order mark.
    """
    if not label.strip():
        raise TripleFileError(
            path, line, f"blank {part} label",
            "give every triple a head, a relation and a tail, separated by single tabs",
        )
    found = CONTROL.search(label)
    if found is not None:
        raise TripleFileError(
            path, line,
            f"{part} label {shorten(label)} contains the control character U+{ord(found[0]):04X}",
            "remove the control character from the label",
        )
    if label != label.strip():
        raise TripleFileError(
            path, line, f"{part} label {shorten(label)} has leading or trailing whitespace",
            "remove the whitespace around the label (labels are taken verbatim: with it, "
            "this would be another label than the one without)",
        )


def warn_renamed(path: str | Path, renamed: int) -> None:
    """Warn that ``renamed`` distinct labels of ``path`` were changed to Unicode NFC (if any)."""
    if renamed:
        warnings.warn(
            f"{path}: {renamed} label{'s' if renamed != 1 else ''} changed to Unicode NFC form "
            "(so that the same text spelt with combining characters is one label)",
            UserWarning,
            stacklevel=3,
        )


def decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` of a UTF-8 file, without a leading byte order mark.

    Raises:
        TripleFileError: the path is missing, a folder or unreadable, or a line is not UTF-8.
    """
    with open_triple_file(path) as handle:
        for number, raw in enumerate(handle, start=1):
            yield number, decode_line(path, number, raw)


def open_triple_file(path: Path) -> BinaryIO:
    """``path`` opened for reading bytes.

    Raises:
        TripleFileError: the path is a folder, missing or unreadable.
    """
    if path.is_dir():
        raise TripleFileError(
            path, None, "is a directory, not a file", f"replace it by a file with {TRIPLE_FORMAT}"
        )
    if not path.exists():
        raise TripleFileError(
            path, None, "file not found",
            f"create it ({TRIPLE_FORMAT}) or point the data path at the folder that holds it",
        )
    try:
        return path.open("rb")
    except OSError as error:
        raise TripleFileError(
            path, None, f"file cannot be read ({error.strerror})", "make the file readable"
        ) from None


def decode_line(path: Path, number: int, raw: bytes) -> str:
    """Line ``number`` of ``path`` as text (a leading byte order mark dropped from line 1).

    Raises:
        TripleFileError: the line is not valid UTF-8.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise TripleFileError(
            path, number, f"not valid UTF-8 ({error.reason} at byte {error.start})",
            "save the file as UTF-8",
        ) from None
    return text.removeprefix(BOM) if number == 1 else text


def _is_header(columns: list[str]) -> bool:
    if len(columns) != 3:
        return False
    cells = tuple(cell.strip().lstrip("#").strip().lower() for cell in columns)
    return cells in HEADERS
