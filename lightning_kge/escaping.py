r"""Labels in the TSV files and tables the project writes: escaped, so that every line is one row.

A label may hold characters that break a tab-separated line: a tab, a line break, a Unicode line
or paragraph separator (U+2028, U+2029, which ``str.splitlines`` splits at), other control
characters. Every TSV the project writes (export's ``entities.tsv``, ``relations.tsv`` and
``projector/metadata.tsv``, ``per_relation.tsv``, ``predict``'s printed tables) writes each cell
through :func:`escape`, the Linear TSV convention extended to those characters:

=====================  ==========================================================================
``\\``                 a backslash
``\t`` ``\n`` ``\r``   a tab, a line feed, a carriage return
``\uXXXX``             any other control character (Unicode category ``Cc``), U+2028, U+2029 and
                       U+FEFF, as four hex digits
=====================  ==========================================================================

Everything else is written as it is, so a label without a backslash or those characters (``#x``,
``NULL``, ``"quoted"``, ``New York``) reads back unchanged with any TSV reader that takes fields
verbatim; :func:`unescape` undoes the escapes. Readers that take fields verbatim (tested):

- ``csv.reader(file, TSV)`` (this module's :class:`TSV` dialect: tab, no quoting), the file opened
  with ``newline=""``;
- ``numpy.loadtxt(path, dtype=str, delimiter="\t", comments=None, quotechar=None, encoding="utf-8")``
  (``comments=None``: otherwise a label starting with ``#`` is dropped);
- ``pandas.read_csv(path, sep="\t", header=None, quoting=csv.QUOTE_NONE, dtype=str,
  keep_default_na=False, na_filter=False, encoding="utf-8")`` (otherwise ``NULL`` becomes NaN and
  quotes are stripped).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable

SHORT = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
"""The characters with a short escape."""

NEEDS_ESCAPE = re.compile("[\\\\\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff]")
"""A backslash, a control character (``Cc``), a line or paragraph separator, or a byte order mark."""

ESCAPE = re.compile(r"\\(u[0-9A-Fa-f]{4}|[\\tnr])")
"""An escape :func:`unescape` undoes."""


class TSV(csv.Dialect):
    """The ``csv`` dialect of the project's TSV files: tab-separated, no quoting, ``\\n`` line ends.

    Example:
        >>> import io
        >>> list(csv.reader(io.StringIO('0\\t"quoted"\\n1\\t#x\\n'), TSV))
        [['0', '"quoted"'], ['1', '#x']]
    """

    delimiter = "\t"
    quoting = csv.QUOTE_NONE
    quotechar = None
    escapechar = None
    doublequote = False
    skipinitialspace = False
    lineterminator = "\n"
    strict = True


def escape(text: str) -> str:
    r"""``text`` with backslashes, tabs, line breaks and other control characters escaped.

    Example:
        >>> print(escape("a\tb\\c\u2028d"))
        a\tb\\c\u2028d
        >>> escape("#x"), escape("NULL"), escape('"quoted"')
        ('#x', 'NULL', '"quoted"')
    """
    if NEEDS_ESCAPE.search(text) is None:
        return text
    return NEEDS_ESCAPE.sub(lambda m: SHORT.get(m[0]) or f"\\u{ord(m[0]):04x}", text)


def unescape(text: str) -> str:
    r"""The label that :func:`escape` wrote as ``text``.

    Example:
        >>> unescape(r"a\tb\\c\u2028d") == "a\tb\\c\u2028d"
        True
        >>> all(unescape(escape(s)) == s for s in ["\\t", "\\\\t", "x\\", "\x00\x85\ufeff"])
        True
    """
    if "\\" not in text:
        return text
    return ESCAPE.sub(lambda m: {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}.get(m[1]) or chr(int(m[1][1:], 16)),
                      text)


def tsv_line(cells: Iterable[object]) -> str:
    """One TSV row: each cell's text escaped, tab-separated, with a ``\\n`` line end.

    Example:
        >>> tsv_line([3, "a\\tb", "NULL"])
        '3\\ta\\\\tb\\tNULL\\n'
    """
    return "\t".join(escape(str(cell)) for cell in cells) + "\n"


def read_tsv(path: str | os.PathLike) -> list[list[str]]:
    r"""The rows of a TSV file the project wrote, each cell unescaped (a header line, if any, included).

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "entities.tsv"
        >>> _ = path.write_text(tsv_line([0, "a\u2028b"]) + tsv_line([1, "#x"]), encoding="utf-8")
        >>> read_tsv(path) == [["0", "a\u2028b"], ["1", "#x"]]
        True
    """
    with open(path, encoding="utf-8", newline="") as handle:
        return [[unescape(cell) for cell in row] for row in csv.reader(handle, TSV)]

