"""Outputs written whole or not at all: a temporary name beside the target, flushed, then renamed.

Every file the project writes for a user (checkpoints, ``metrics.json``, ``per_relation.tsv``,
``test_weights.json``, the continued CSV log, plots, the export folder) goes through here, so a
process killed while writing, or a write that fails (a full disk), leaves the previous file
whole and no empty or partial one. A failed write raises a
:class:`~lightning_kge.errors.UserError` naming the target, e.g.
``no space left on device (out/metrics.json): free space or choose another folder``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from lightning_kge.errors import UserError, write_failed


def scratch_name(target: Path, kind: str = "tmp") -> Path:
    """A hidden name beside ``target`` that no other process picks: ``.<name>.<kind>-<pid>-<random>``."""
    return target.with_name(f".{target.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


def fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename in it) to disk, where the system allows it."""
    if hasattr(os, "O_DIRECTORY"):
        handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def open_scratch(path: Path) -> BinaryIO:
    """A new file at ``path`` to write, with the permissions a new file gets (umask applies)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb")


def replace_durably(source: Path, target: Path) -> None:
    """Flush ``source`` to disk, then rename it to ``target`` (atomic on one file system)."""
    with open(source, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(source, target)
    fsync_folder(Path(target).parent)


def link_or_copy(source: Path, target: Path) -> None:
    """Make ``target`` hold ``source``'s bytes, atomically: a hard link, or a copy where links fail."""
    scratch = scratch_name(Path(target))
    try:
        try:
            os.link(source, scratch)
        except OSError:
            shutil.copyfile(source, scratch)
        os.replace(scratch, target)
    finally:
        scratch.unlink(missing_ok=True)


@contextlib.contextmanager
def replacing(target: str | os.PathLike) -> Iterator[BinaryIO]:
    """Write ``target`` through a binary file object; it replaces ``target`` only once complete.

    The bytes go to a hidden file beside ``target`` (created with the usual permissions), which
    is flushed to disk and renamed to ``target`` when the ``with`` body ends. If the body or the
    write fails, the hidden file is removed and ``target`` is left as it was; an ``OSError``
    becomes a :class:`~lightning_kge.errors.UserError` naming ``target``.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> with replacing(folder / "a.bin") as handle:
        ...     _ = handle.write(b"whole")
        >>> (folder / "a.bin").read_bytes(), sorted(p.name for p in folder.iterdir())
        (b'whole', ['a.bin'])
    """
    target = Path(target)
    scratch = scratch_name(target)
    try:
        try:
            with open_scratch(scratch) as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(scratch, target)
            fsync_folder(target.parent)
        except OSError as error:
            raise write_failed(error, target) from None
    finally:
        scratch.unlink(missing_ok=True)


def write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``target`` whole or not at all (:func:`replacing`); returns the path."""
    with replacing(target) as handle:
        handle.write(data)
    return Path(target)


def write_text(target: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``target`` whole or not at all (:func:`replacing`); returns the path.

    Example:
        >>> import tempfile
        >>> path = write_text(Path(tempfile.mkdtemp()) / "metrics.json", "{}\\n")
        >>> path.read_text()
        '{}\\n'
    """
    return write_bytes(target, text.encode("utf-8"))


@contextlib.contextmanager
def replacing_folder(target: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """Build a folder that appears at ``target`` only once complete.

    The ``with`` body writes into a hidden folder beside ``target`` (yielded); when it ends, the
    files are flushed to disk and the folder is renamed to ``target``. An existing ``target`` is
    refused unless it is empty or ``replace``; then it is moved aside, the new folder renamed into
    place and the old one deleted (if the rename fails, the old folder is put back). If the body
    or a write fails, the hidden folder is deleted and ``target`` is left as it was; an
    ``OSError`` becomes a :class:`~lightning_kge.errors.UserError` naming the file (or ``target``).
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise UserError("is a file, not a folder", str(target), "give a folder path")
    if target.is_dir() and any(target.iterdir()) and not replace:
        raise UserError("the folder exists and is not empty", str(target), "give a new folder")
    scratch = scratch_name(target)
    try:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            scratch.mkdir()
            yield scratch
            for file in sorted(p for p in scratch.rglob("*") if p.is_file()):
                with open(file, "rb") as handle:
                    os.fsync(handle.fileno())
            for folder in sorted((p for p in scratch.rglob("*") if p.is_dir()), reverse=True):
                fsync_folder(folder)
            fsync_folder(scratch)
            swap_into_place(scratch, target)
        except OSError as error:
            raise write_failed(error, error.filename or target) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def swap_into_place(folder: Path, target: Path) -> None:
    """Rename ``folder`` to ``target``; an existing ``target`` is deleted once ``folder`` took its place."""
    if not target.exists():
        os.rename(folder, target)
        fsync_folder(target.parent)
        return
    old = scratch_name(target, "old")
    os.rename(target, old)
    try:
        os.rename(folder, target)
    except OSError:
        os.rename(old, target)
        raise
    fsync_folder(target.parent)
    shutil.rmtree(old, ignore_errors=True)
