"""Publishing a checkpoint folder atomically: a folder cannot be renamed over another, a link can.

A sharded checkpoint is a folder, written under a scratch name. :func:`publish` moves it into
``<dirpath>/.shards/`` under a name of its own and points ``<dirpath>/<name>`` (a symbolic link) at it by
renaming a new link over the old one, so ``last.ckpt`` always names a whole checkpoint, the previous one
until the rename; :func:`link` points another name at the same folder (``best.ckpt`` and ``last.ckpt``
holding the same weights); :func:`collect` deletes the folders no name points at any more.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from lightning_kge.atomic import fsync_folder

STORE = ".shards"
"""The folder beside the checkpoints' names that holds the checkpoint folders themselves."""


def fsync_tree(folder: Path) -> None:
    """Flush every file of ``folder`` and the folder itself to disk."""
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    fsync_folder(folder)


def publish(scratch: Path, target: Path) -> None:
    """Make ``target`` name the folder ``scratch`` (flushed first), atomically; the old folder is collected."""
    fsync_tree(scratch)
    store = target.parent / STORE
    store.mkdir(exist_ok=True)
    kept = store / f"{target.stem}-{uuid.uuid4().hex[:12]}"
    os.replace(scratch, kept)
    fsync_folder(store)
    _point(target, kept)
    collect(target.parent)


def link(target: Path, other: Path) -> None:
    """Make ``other`` name the same folder as ``target`` (atomically); the folder it named is collected."""
    _point(other, target.resolve())
    collect(other.parent)


def _point(name: Path, folder: Path) -> None:
    scratch = name.with_name(f".{name.name}.link")
    if scratch.is_symlink() or scratch.exists():
        scratch.unlink()
    os.symlink(os.path.relpath(folder, name.parent), scratch)
    if name.is_dir() and not name.is_symlink():
        shutil.rmtree(name)  # a folder left by an older layout cannot be renamed over
    os.replace(scratch, name)
    fsync_folder(name.parent)


def collect(dirpath: Path) -> None:
    """Delete the folders in ``dirpath/.shards`` that no link in ``dirpath`` points at."""
    store = dirpath / STORE
    if not store.is_dir():
        return
    used = {p.resolve() for p in dirpath.iterdir() if p.is_symlink()}
    for folder in store.iterdir():
        if folder.resolve() not in used:
            shutil.rmtree(folder, ignore_errors=True)


def remove(path: Path) -> None:
    """Delete a checkpoint name: a link (its folder is collected later), a folder or a file."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
