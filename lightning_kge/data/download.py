"""Download the large benchmarks once, verify them by content, and cache them.

wn18rr, fb15k237 and countries_s1..s3 come from the RotatE authors' release on GitHub (or a mirror).
Each file is downloaded under a temporary name, checked against a content fingerprint (independent
of line order and line ends) and only then moved to its final name in ``<cache>/<folder>/``.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pooch

from lightning_kge.data.tsv import read_labels, read_triples

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock between processes
    fcntl = None

MIRROR_ENV = "LIGHTNING_KGE_MIRROR"
CACHE_ENV = "LIGHTNING_KGE_DATA"
RELEASE_URL = (
    "https://raw.githubusercontent.com/DeepGraphLearning/KnowledgeGraphEmbedding/master/data"
)


class DatasetDownloadError(RuntimeError):
    """A dataset file could not be downloaded, or its content did not match the expected data."""


@dataclass(frozen=True)
class RemoteDataset:
    """Where one benchmark lives and what its files must hold.

    Args:
        folder: folder name in the cache (as in ``shared/data``), also the folder under a mirror.
        url: default base URL; file ``f`` is fetched from ``f"{url}/{f}"``.
        fingerprints: triple file name -> first 16 hex digits of its :func:`content_fingerprint`.
        labels: label-list file name -> number of non-empty lines it must hold.

    Example:
        >>> DATASETS["countries_s1"].files
        ('train.txt', 'valid.txt', 'test.txt', 'regions.list')
        >>> DATASETS["fb15k237"].url.rsplit("/", 1)[-1]
        'FB15k-237'
    """

    folder: str
    url: str
    fingerprints: Mapping[str, str]
    labels: Mapping[str, int] = field(default_factory=dict)

    @property
    def files(self) -> tuple[str, ...]:
        """All file names, triple files first."""
        return (*self.fingerprints, *self.labels)


def _dataset(
    folder: str, remote: str, train: str, valid: str, test: str, regions: bool = False
) -> RemoteDataset:
    splits = {"train.txt": train, "valid.txt": valid, "test.txt": test}
    labels = {"regions.list": 5} if regions else {}
    return RemoteDataset(folder, f"{RELEASE_URL}/{remote}", splits, labels)


def _countries(level: int, train: str) -> RemoteDataset:
    folder = f"countries_S{level}"
    return _dataset(folder, folder, train, "7dd49d7db9f65a26", "f43676cab51c6d6d", regions=True)


# Fingerprint prefixes (train, valid, test) from shared/data/README.md, "Content fingerprints".
DATASETS: dict[str, RemoteDataset] = {
    "wn18rr": _dataset(
        "wn18rr", "wn18rr", "70fbc1c7881f33bd", "0f42971b8aa35b97", "92f29d2ed83e8189"
    ),
    "fb15k237": _dataset(
        "fb15k237", "FB15k-237", "8d2a771809b0f38f", "1c4febacc6daabc6", "a7156e4560d173ee"
    ),
    "countries_s1": _countries(1, "2087ee71ebd91317"),
    "countries_s2": _countries(2, "d4f85c19d9c801c4"),
    "countries_s3": _countries(3, "7f6230ed084f14df"),
}


def content_fingerprint(path: str | Path) -> str:
    """SHA-256 of a triple file's distinct triples, sorted: line order and line ends do not matter.

    The distinct triples, sorted as ``(head, relation, tail)`` tuples, are each joined as
    ``head\\trelation\\ttail\\n``, and the UTF-8 bytes of all of them are hashed.

    Args:
        path: a triple file (see :func:`lightning_kge.data.tsv.read_triples`).

    Returns:
        The full 64-hex-digit digest.

    Example:
        >>> import tempfile
        >>> tmp = tempfile.TemporaryDirectory()
        >>> folder = Path(tmp.name)
        >>> _ = (folder / "a.txt").write_text("b\\tr\\tc\\na\\tr\\tb\\n")
        >>> _ = (folder / "b.txt").write_bytes(b"a\\tr\\tb\\r\\nb\\tr\\tc\\r\\na\\tr\\tb\\r\\n")
        >>> content_fingerprint(folder / "a.txt") == content_fingerprint(folder / "b.txt")
        True
        >>> content_fingerprint(folder / "a.txt")[:16]
        'bbe582a36ecefbf1'
        >>> tmp.cleanup()
    """
    digest = hashlib.sha256()
    for triple in sorted(set(read_triples(path))):
        digest.update(("\t".join(triple) + "\n").encode("utf-8"))
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """The cache root: ``$LIGHTNING_KGE_DATA`` if set, else the user cache dir for lightning_kge."""
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path(pooch.os_cache("lightning_kge"))


def fetch_dataset(
    name: str, *, url: str | None = None, cache_dir: str | Path | None = None, progress: bool = True
) -> Path:
    """Download a benchmark if needed and return the folder holding its verified files.

    Files already in the cache and verified are not downloaded again. Safe to call from several
    processes at once (DDP ranks on one node): one downloads under a file lock, the others wait.

    Args:
        name: ``wn18rr``, ``fb15k237``, ``countries_s1``, ``countries_s2`` or ``countries_s3``.
        url: base URL serving ``<url>/train.txt`` etc.; beats ``$LIGHTNING_KGE_MIRROR`` (which
            serves ``<mirror>/<folder>/train.txt``), which beats the RotatE release on GitHub.
        cache_dir: cache root; files go to ``cache_dir/<folder>/``; default
            :func:`default_cache_dir`.
        progress: show a progress bar (needs ``tqdm``) and log each download.

    Returns:
        ``cache_dir/<folder>``, e.g. ``.../countries_S1`` with ``train.txt``, ``valid.txt``, ...

    Raises:
        ValueError: unknown dataset name.
        DatasetDownloadError: a download failed or a file did not match its fingerprint.
    """
    key = name.lower()
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    dataset = DATASETS[key]
    mirror = os.environ.get(MIRROR_ENV)
    base = url or (f"{mirror.rstrip('/')}/{dataset.folder}" if mirror else dataset.url)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder = root / dataset.folder
    if all(_is_cached(dataset, folder / file) for file in dataset.files):
        return folder  # no lock needed: works in a read-only folder of hand-placed files
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder / ".lock"):
        for file in dataset.files:
            if not _is_cached(dataset, folder / file):
                _download(key, dataset, f"{base.rstrip('/')}/{file}", folder / file, progress)
    return folder


def _problem(dataset: RemoteDataset, file: str, path: Path) -> str | None:
    """Why ``path`` does not hold the expected content of ``file``, or None when it does."""
    try:
        if file in dataset.labels:
            found, expected = len(read_labels(path)), dataset.labels[file]
            return None if found == expected else f"{found} non-empty lines, expected {expected}"
        found, expected = content_fingerprint(path)[:16], dataset.fingerprints[file]
    except ValueError as error:  # unreadable, not UTF-8, not three columns
        return str(error)
    return None if found == expected else f"content fingerprint {found}, expected {expected}"


def _is_cached(dataset: RemoteDataset, target: Path) -> bool:
    """Whether ``target`` holds verified content; remembered in a marker keyed by size and mtime."""
    if not target.is_file():
        return False
    marker = target.with_name(f".{target.name}.verified")
    if marker.is_file() and marker.read_text() == _stamp(dataset, target):
        return True
    if _problem(dataset, target.name, target) is not None:
        return False
    _remember(dataset, target)
    return True


def _stamp(dataset: RemoteDataset, target: Path) -> str:
    stat = target.stat()
    expected = dataset.fingerprints.get(target.name, dataset.labels.get(target.name))
    return f"{stat.st_size} {stat.st_mtime_ns} {expected}\n"


def _remember(dataset: RemoteDataset, target: Path) -> None:
    """Write the marker saying ``target`` (as it is now) was verified; write-then-rename."""
    marker = target.with_name(f".{target.name}.verified")
    scratch = marker.with_name(f"{marker.name}.{uuid.uuid4().hex}")
    try:
        scratch.write_text(_stamp(dataset, target))
        os.replace(scratch, marker)
    except OSError:  # read-only cache: verify again next time
        scratch.unlink(missing_ok=True)


def _download(name: str, dataset: RemoteDataset, url: str, target: Path, progress: bool) -> None:
    """Download ``url`` to a temporary file beside ``target``, verify it, move it into place."""
    scratch = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")
    try:
        try:
            downloader = pooch.HTTPDownloader(progressbar=progress, chunk_size=1 << 16)
        except ValueError:  # tqdm not installed
            downloader = pooch.HTTPDownloader(chunk_size=1 << 16)
        if progress:
            pooch.get_logger().info("Downloading %s to %s", url, target)
        try:
            downloader(url, str(scratch), None)
        except OSError as error:  # requests' exceptions subclass OSError
            raise _error(name, dataset, url, target, f"download failed ({error})") from error
        problem = _problem(dataset, target.name, scratch)
        if problem is not None:
            raise _error(name, dataset, url, target, f"wrong content ({problem})")
        os.replace(scratch, target)
    finally:
        scratch.unlink(missing_ok=True)
    _remember(dataset, target)


def _error(
    name: str, dataset: RemoteDataset, url: str, target: Path, problem: str
) -> DatasetDownloadError:
    return DatasetDownloadError(
        f"dataset {name!r}, file {target.name}: {problem}; URL {url}.\n"
        f"To fix: retry (the server may be briefly unreachable); or set {MIRROR_ENV}=URL to a "
        f"mirror that serves {dataset.folder}/train.txt, {dataset.folder}/valid.txt, ...; or place "
        f"the files ({', '.join(dataset.files)}) by hand in {target.parent}"
    )


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the ``with`` body."""
    with open(path, "a") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock
