"""The cache of prepared graphs: ``cache_dir("graphs", <key>)``, one folder of ``.npy`` arrays,
label lists and a ``meta.json`` per source, written atomically and read memory-mapped.

The key is a SHA-256 over a format version, the options that change the result (the ``unseen``
policy) and the bytes of every source file, so an edited file is a new key; the folder of an
older key for the same source folder is removed when a new one is written. A folder is written
under a temporary name and renamed into place, so a crash leaves no half-written entry; a cache
that cannot be written (read-only, full disk) is skipped with a log message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from lightning_kge.cache import cache_dir

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock between processes
    fcntl = None

FORMAT = 1
"""Version of the cache layout; a change makes every older entry a miss."""

MIN_CACHED_BYTES = 1 << 20
"""By default, graphs whose files hold fewer bytes are parsed every time (it takes milliseconds)."""

MAPPED_BYTES = 1 << 20
"""Arrays from this size on are memory-mapped (copy-on-write) instead of read."""

log = logging.getLogger(__name__)


def root() -> Path:
    """``cache_dir("graphs")``: where the entries live."""
    return cache_dir("graphs")


def source_key(files: Sequence[Path], *options: str) -> str:
    """SHA-256 over :data:`FORMAT`, ``options`` and each file's name, size and bytes.

    Raises:
        OSError: a file cannot be read (the caller parses instead, which says why).
    """
    digest = hashlib.sha256(f"lightning_kge graphs v{FORMAT}\0{chr(0).join(options)}\0".encode())
    for path in files:
        digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()


def total_bytes(files: Sequence[Path]) -> int:
    """The files' total size (0 for those that cannot be read)."""
    return sum(path.stat().st_size if path.is_file() else 0 for path in files)


@contextmanager
def locked(key: str) -> Iterator[bool]:
    """Hold an exclusive lock on ``key`` (so that DDP ranks on one node parse once); yields whether
    the cache is usable (``False`` when its folder cannot be created)."""
    try:
        root().mkdir(parents=True, exist_ok=True)
        handle = open(root() / f".{key[:32]}.lock", "a")
    except OSError as error:
        log.warning("graph cache %s not usable (%s): parsing without it", root(), error)
        yield False
        return
    with handle:
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX)
            except OSError:  # a file system without locks (some network mounts): each process parses
                pass
        yield True  # closing the file releases the lock


def read(key: str) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, list[str]]] | None:
    """``(meta, arrays, labels)`` of entry ``key``, or ``None`` if absent or unreadable.

    Arrays of at least :data:`MAPPED_BYTES` are memory-mapped copy-on-write: pages are read
    from disk when used and shared with other processes reading the same entry.
    """
    folder = root() / key[:32]
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT or meta.get("key") != key:
            return None
        arrays = {}
        for name in meta["arrays"]:
            path = folder / f"{name}.npy"
            arrays[name] = np.load(path, mmap_mode="c" if path.stat().st_size >= MAPPED_BYTES else None)
        labels = {name: (folder / f"{name}.txt").read_text(encoding="utf-8").split("\n") for name in meta["labels"]}
    except (OSError, ValueError, KeyError) as error:
        if folder.exists():
            log.warning("graph cache entry %s unreadable (%s): parsing again", folder, error)
        return None
    return meta, arrays, labels


def write(key: str, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray],
          labels: Mapping[str, Sequence[str]]) -> bool:
    """Write entry ``key`` atomically (temporary folder, then rename); ``False`` if it could not be.

    Other entries made from the same source folder with the same options (``meta["source"]``)
    are removed afterwards.
    """
    folder = root() / key[:32]
    scratch = root() / f".{key[:32]}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part"
    _remove_abandoned()
    try:
        if folder.exists():  # unreadable (else it had been read): replace it
            shutil.rmtree(folder)
        scratch.mkdir(parents=True)
        for name, array in arrays.items():
            np.save(scratch / f"{name}.npy", np.ascontiguousarray(array))
        for name, values in labels.items():
            (scratch / f"{name}.txt").write_text("\n".join(values), encoding="utf-8")
        content = {**meta, "format": FORMAT, "key": key, "arrays": list(arrays), "labels": list(labels)}
        (scratch / "meta.json").write_text(json.dumps(content, indent=1), encoding="utf-8")
        os.rename(scratch, folder)
    except OSError as error:
        log.warning("graph cache %s not written (%s): the next run parses again", folder, error)
        shutil.rmtree(scratch, ignore_errors=True)
        return False
    _prune(folder, meta.get("source"))
    return True


def _remove_abandoned() -> None:
    """Remove the temporary folders of writers that died before renaming them (named by their pid)."""
    for scratch in root().glob(".*.part"):
        try:
            pid = int(scratch.name.split(".")[2])
            os.kill(pid, 0)
        except ProcessLookupError:  # no such process: nobody will finish or remove it
            shutil.rmtree(scratch, ignore_errors=True)
        except (ValueError, IndexError, OSError):  # another name, or a process of someone else
            continue


def _prune(keep: Path, source: Any) -> None:
    """Remove the other entries of ``source`` (older contents of the same files)."""
    if source is None:
        return
    for other in root().iterdir():
        if other == keep or not other.is_dir() or other.name.startswith("."):
            continue
        try:
            if json.loads((other / "meta.json").read_text(encoding="utf-8")).get("source") == source:
                shutil.rmtree(other)
                (root() / f".{other.name}.lock").unlink(missing_ok=True)
        except (OSError, ValueError):
            continue
