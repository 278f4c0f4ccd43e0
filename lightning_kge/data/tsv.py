"""Read labelled triple files (``head<TAB>relation<TAB>tail``) with errors that name file and line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

Triple = tuple[str, str, str]


class TripleFileError(ValueError):
    """A triple file could not be read; the message names the file, the line and the problem."""

    def __init__(self, path: str | Path, line: int | None, problem: str) -> None:
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


def read_triples(path: str | Path) -> list[Triple]:
    """Read one split as a list of ``(head, relation, tail)`` labels, in file order.

    Every non-empty line must hold exactly three tab-separated, non-blank labels. A trailing
    ``\\r`` (Windows line end) is accepted; nothing else is changed or dropped.

    Args:
        path: a UTF-8 text file.

    Returns:
        The triples as label tuples, duplicates included.

    Raises:
        TripleFileError: on a missing or empty file, a line that is not valid UTF-8, a line with
            another column count, or a blank label. The message is ``FILE:LINE: problem``.
    """
    path = Path(path)
    triples: list[Triple] = []
    for number, line in decoded_lines(path):
        line = line.rstrip("\n").rstrip("\r")
        if not line.strip():
            continue
        columns = line.split("\t")
        if len(columns) != 3:
            raise TripleFileError(
                path, number, f"expected 3 tab-separated columns, found {len(columns)}"
            )
        for name, label in zip(("head", "relation", "tail"), columns):
            if not label.strip():
                raise TripleFileError(path, number, f"blank {name} label")
        triples.append((columns[0], columns[1], columns[2]))
    if not triples:
        raise TripleFileError(path, None, "file holds no triples")
    return triples


def read_labels(path: str | Path) -> list[str]:
    """Read one label per non-empty line (for example the candidate regions of ``regions.list``)."""
    path = Path(path)
    labels = [line.strip() for _, line in decoded_lines(path) if line.strip()]
    if not labels:
        raise TripleFileError(path, None, "file holds no labels")
    return labels


def decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` of a UTF-8 file, naming the line of an undecodable byte."""
    if not path.is_file():
        raise TripleFileError(path, None, "file not found")
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise TripleFileError(
                    path, number, f"not valid UTF-8 ({error.reason} at byte {error.start})"
                ) from None
