"""Download the large benchmarks once, verify them by content, and cache them.

wn18rr, fb15k237 and countries_s1..s3 come from the RotatE authors' release on GitHub (or a mirror),
file by file; wikidata5m comes from its authors' archive (``wikidata5m_transductive.tar.gz``), from
which the three split files are extracted. Each file is downloaded (or extracted) under a
temporary name, checked (its number of triple lines and the content fingerprint of its distinct
triples, so neither line order nor line ends matter, but an added, removed, changed or duplicated
line does) and only then moved to its final name in ``<cache>/datasets/<folder>/``. A marker
beside each verified file keeps the SHA-256 of its bytes; each later use hashes the file again,
so a cached file edited in any way is checked in full again. Where no fingerprint is published
(wikidata5m), the first download is verified by its line counts and the fingerprint it has is
recorded in the marker; later checks compare with that record.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tarfile
import uuid
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pooch

from lightning_kge.cache import CACHE_ENV, cache_dir as cache_root
from lightning_kge.data.reader import Vocabulary, read_ids
from lightning_kge.data.tsv import read_labels
from lightning_kge.errors import ArgumentError, UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock between processes
    fcntl = None

MIRROR_ENV = "LIGHTNING_KGE_MIRROR"
"""Environment variable: a mirror serving ``<mirror>/<folder>/train.txt`` for every dataset."""
LEGACY_DATA_ENV = "LIGHTNING_KGE_DATA"
"""The former dataset-cache setting: still honoured (with a ``FutureWarning``) when
``LIGHTNING_KGE_CACHE`` is not set."""
RELEASE_URL = (
    "https://raw.githubusercontent.com/DeepGraphLearning/KnowledgeGraphEmbedding/master/data"
)


class DatasetDownloadError(UserError, RuntimeError):
    """A dataset file could not be downloaded, or its content did not match the expected data.

    ``str(error)`` is ``<what> (<URL>): <fix>``; the fix names the retry, the mirror variable and
    the cache folder where the files may be placed by hand.
    """


@dataclass(frozen=True)
class Archive:
    """A ``.tar.gz`` (or other tar) archive that holds a dataset's files.

    Args:
        name: its file name, fetched as ``<url>/<name>`` from a ``data.url`` or a mirror.
        url: where its authors serve it (the whole URL).
        members: dataset file name -> the name of the archive member it is extracted from
            (matched by base name, wherever in the archive it is).
    """

    name: str
    url: str
    members: Mapping[str, str]


@dataclass(frozen=True)
class RemoteDataset:
    """Where one benchmark lives and what its files must hold.

    Args:
        folder: folder name in the cache (as in ``shared/data``), also the folder under a mirror.
        url: default base URL; file ``f`` is fetched from ``f"{url}/{f}"``.
        fingerprints: triple file name -> first 16 hex digits of its :func:`content_fingerprint`
            (distinct triples), or ``None`` where none is published: the first download is then
            verified by its count, and its fingerprint recorded and checked on later uses.
        counts: triple file name -> number of triple lines it must hold (duplicates included).
        labels: label-list file name -> number of non-empty lines it must hold.
        archive: the archive the files come from, or ``None`` (each file from ``url``).

    Example:
        >>> DATASETS["countries_s1"].files
        ('train.txt', 'valid.txt', 'test.txt', 'regions.list')
        >>> DATASETS["countries_s1"].counts["train.txt"]  # one line is there twice
        1111
        >>> DATASETS["fb15k237"].url.rsplit("/", 1)[-1]
        'FB15k-237'
    """

    folder: str
    url: str
    fingerprints: Mapping[str, str | None]
    counts: Mapping[str, int]
    labels: Mapping[str, int] = field(default_factory=dict)
    archive: Archive | None = None

    def __post_init__(self) -> None:
        if set(self.fingerprints) != set(self.counts):
            raise ValueError("fingerprints and counts must name the same triple files")
        if self.archive is not None and set(self.archive.members) != set(self.files):
            raise ValueError("the archive must name a member for every file")

    @property
    def files(self) -> tuple[str, ...]:
        """All file names, triple files first."""
        return (*self.fingerprints, *self.labels)

    def expected(self, file: str, fingerprint: str | None = None) -> str:
        """What ``file`` must hold, in words: ``1,111 triple lines, fingerprint 2087ee71…``
        (``fingerprint``: the one recorded where none is published)."""
        if file in self.labels:
            return f"{self.labels[file]:,} labels"
        published = self.fingerprints[file]
        if published is None:
            return f"{self.counts[file]:,} triple lines, fingerprint {fingerprint} ({RECORDED})"
        return f"{self.counts[file]:,} triple lines, fingerprint {published}"


def _dataset(
    folder: str, remote: str, splits: dict[str, tuple[str, int]], regions: bool = False
) -> RemoteDataset:
    fingerprints = {f"{split}.txt": fp for split, (fp, _) in splits.items()}
    counts = {f"{split}.txt": n for split, (_, n) in splits.items()}
    labels = {"regions.list": 5} if regions else {}
    return RemoteDataset(folder, f"{RELEASE_URL}/{remote}", fingerprints, counts, labels)


def _countries(level: int, train: tuple[str, int]) -> RemoteDataset:
    folder = f"countries_S{level}"
    splits = {"train": train, "valid": ("7dd49d7db9f65a26", 24), "test": ("f43676cab51c6d6d", 24)}
    return _dataset(folder, folder, splits, regions=True)


RECORDED = "recorded at its first download: none is published"

WIKIDATA5M = RemoteDataset(
    "wikidata5m",
    "https://www.dropbox.com/s/6sbhm0rwo4l73jq",
    fingerprints={"train.txt": None, "valid.txt": None, "test.txt": None},
    counts={"train.txt": 20_614_279, "valid.txt": 5_163, "test.txt": 5_133},
    archive=Archive(
        "wikidata5m_transductive.tar.gz",
        "https://www.dropbox.com/s/6sbhm0rwo4l73jq/wikidata5m_transductive.tar.gz?dl=1",
        {f"{split}.txt": f"wikidata5m_transductive_{split}.txt" for split in ("train", "valid", "test")},
    ),
)
"""Wikidata5M, transductive split (Wang et al., KEPLER, TACL 2021): the archive linked from
https://deepgraphlearning.github.io/project/wikidata5m; the counts are the triples per split
published there. No checksum is published (see :class:`RemoteDataset`)."""

# From shared/data/README.md: fingerprint prefixes ("Content fingerprints") and line counts (the
# counts table; each countries train file holds one line twice: 1,111 lines, 1,110 distinct).
DATASETS: dict[str, RemoteDataset] = {
    "wn18rr": _dataset("wn18rr", "wn18rr", {
        "train": ("70fbc1c7881f33bd", 86835),
        "valid": ("0f42971b8aa35b97", 3034),
        "test": ("92f29d2ed83e8189", 3134),
    }),
    "fb15k237": _dataset("fb15k237", "FB15k-237", {
        "train": ("8d2a771809b0f38f", 272115),
        "valid": ("1c4febacc6daabc6", 17535),
        "test": ("a7156e4560d173ee", 20466),
    }),
    "countries_s1": _countries(1, ("2087ee71ebd91317", 1111)),
    "countries_s2": _countries(2, ("d4f85c19d9c801c4", 1063)),
    "countries_s3": _countries(3, ("7f6230ed084f14df", 985)),
    "wikidata5m": WIKIDATA5M,
}


def content_fingerprint(path: str | Path) -> str:
    """SHA-256 of a triple file's distinct triples, sorted: line order and line ends do not matter.

    The distinct triples, sorted as ``(head, relation, tail)`` tuples, are each joined as
    ``head\\trelation\\ttail\\n``, and the UTF-8 bytes of all of them are hashed. Duplicates do
    not change it: downloads also check the number of lines (:attr:`RemoteDataset.counts`).

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
    return _content(Path(path))[1]


def _content(path: Path) -> tuple[int, str]:
    """The number of triple lines of a file and its :func:`content_fingerprint`, in one fast read.

    Labels are ranked in sorted order, so sorting id rows sorts the label tuples; the distinct
    rows are then written out and hashed in blocks (bounded memory).
    """
    entities, relations = Vocabulary(), Vocabulary()
    ids = read_ids(path, entities, relations).ids
    ranked = []
    for vocabulary, columns in ((entities, (0, 2)), (relations, (1,))):
        labels = vocabulary.labels()
        order = sorted(range(len(labels)), key=labels.__getitem__)
        rank = np.empty(len(labels), dtype=np.int64)
        rank[order] = np.arange(len(labels))
        table = vocabulary.lookup(rank)
        for column in columns:
            ids[:, column] = table[ids[:, column]]
        ranked.append([labels[i] for i in order])
    entity_labels, relation_labels = ranked
    rows = ids[np.lexsort((ids[:, 2], ids[:, 1], ids[:, 0]))]
    distinct = rows[np.concatenate([[True], (rows[1:] != rows[:-1]).any(axis=1)])] if len(rows) else rows
    digest = hashlib.sha256()
    for start in range(0, len(distinct), 1 << 16):
        block = distinct[start : start + (1 << 16)].tolist()
        digest.update("".join(f"{entity_labels[h]}\t{relation_labels[r]}\t{entity_labels[t]}\n"
                              for h, r, t in block).encode("utf-8"))
    return len(ids), digest.hexdigest()


def default_cache_dir() -> Path:
    """The folder under which each dataset gets its own folder: ``cache_dir("datasets")``.

    That is ``$LIGHTNING_KGE_CACHE/datasets`` (see :func:`lightning_kge.cache.cache_dir`). The
    former setting ``$LIGHTNING_KGE_DATA`` is still honoured, with a ``FutureWarning``, when
    ``LIGHTNING_KGE_CACHE`` is not set.
    """
    legacy = os.environ.get(LEGACY_DATA_ENV)
    if legacy and os.environ.get(CACHE_ENV):
        warnings.warn(
            f"{LEGACY_DATA_ENV} is ignored because {CACHE_ENV} is set; unset {LEGACY_DATA_ENV}",
            FutureWarning,
            stacklevel=2,
        )
    elif legacy:
        warnings.warn(
            f"{LEGACY_DATA_ENV} is deprecated: set {CACHE_ENV}=DIR instead (datasets then go to "
            f"DIR/datasets/<name>); using {LEGACY_DATA_ENV}={legacy} for now",
            FutureWarning,
            stacklevel=2,
        )
        return Path(legacy).expanduser()
    return cache_root("datasets")


def fetch_dataset(
    name: str | RemoteDataset,
    *,
    url: str | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Download a benchmark if needed and return the folder holding its verified files.

    Files already in the cache are used when their bytes still hash to the SHA-256 recorded when
    they were verified (or, failing that, when their content passes the full check again);
    otherwise they are downloaded again. Safe to call from several processes at once (DDP ranks
    on one node): one downloads under a file lock, the others wait.

    Args:
        name: ``wn18rr``, ``fb15k237``, ``countries_s1``, ``countries_s2``, ``countries_s3`` or
            ``wikidata5m``, or a :class:`RemoteDataset` describing another dataset.
        url: base URL serving ``<url>/train.txt`` etc. (or ``<url>/<archive name>`` for a dataset
            that comes as an archive); beats ``$LIGHTNING_KGE_MIRROR`` (which serves
            ``<mirror>/<folder>/train.txt``), which beats the dataset's own URL.
        cache_dir: files go to ``cache_dir/<folder>/``; default :func:`default_cache_dir`.
        progress: show a progress bar (needs ``tqdm``) and log each download.

    Returns:
        ``cache_dir/<folder>``, e.g. ``.../countries_S1`` with ``train.txt``, ``valid.txt``, ...

    Raises:
        ArgumentError: unknown dataset name.
        DatasetDownloadError: a download failed or a file did not match what it must hold.
    """
    if isinstance(name, RemoteDataset):
        dataset, key = name, name.folder
    else:
        key = name.lower()
        if key not in DATASETS:
            raise ArgumentError("name", name, f"one of {', '.join(DATASETS)}")
        dataset = DATASETS[key]
    mirror = os.environ.get(MIRROR_ENV)
    override = url or (f"{mirror.rstrip('/')}/{dataset.folder}" if mirror else None)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder = root / dataset.folder
    if all(_cached_problem(dataset, folder / file) is None for file in dataset.files):
        return folder  # no lock needed: works in a read-only folder of hand-placed files
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder / ".lock"):
        bad = {}
        for file in dataset.files:
            problem = _cached_problem(dataset, folder / file)  # another process may have fetched it
            if problem is not None:
                bad[file] = problem if (folder / file).exists() else None
        if dataset.archive is not None and bad:
            source = f"{override.rstrip('/')}/{dataset.archive.name}" if override else dataset.archive.url
            _extract(key, dataset, source, folder, bad, progress)
        for file, cached in bad.items() if dataset.archive is None else ():
            source = f"{(override or dataset.url).rstrip('/')}/{file}"
            _download(key, dataset, source, folder / file, progress, cached)
    return folder


def _check(dataset: RemoteDataset, file: str, path: Path, recorded: str | None = None) -> tuple[str | None, str | None]:
    """``(problem, fingerprint)``: why ``path`` does not hold the expected content of ``file``
    (``None`` when it does), and the first 16 hex digits of its content fingerprint (``None``
    for a label list or an unreadable file). ``recorded``: the fingerprint recorded at the first
    download, compared with where none is published."""
    try:
        if file in dataset.labels:
            found, expected = len(read_labels(path)), dataset.labels[file]
            return (None if found == expected else f"{found:,} labels, expected {expected:,}"), None
        count, fingerprint = _content(path)
    except UserError as error:  # unreadable, not UTF-8, not three columns, ...
        return str(error), None
    fingerprint = fingerprint[:16]
    problems = []
    if count != dataset.counts[file]:
        problems.append(f"{count:,} triple lines, expected {dataset.counts[file]:,}")
    expected = dataset.fingerprints[file] or recorded
    if expected is not None and fingerprint != expected:
        source = "" if dataset.fingerprints[file] else " (recorded at its first download)"
        problems.append(f"content fingerprint {fingerprint}, expected {expected}{source}")
    return "; ".join(problems) or None, fingerprint


def _cached_problem(dataset: RemoteDataset, target: Path) -> str | None:
    """Why the cached ``target`` cannot be used, or None when it holds verified content.

    A marker beside the file keeps the SHA-256 of its bytes when they were last verified; if the
    bytes still hash to it the file is used, otherwise its content is checked in full again.
    """
    if not target.is_file():
        return "not in the cache"
    recorded = _recorded(dataset, target)
    digest = _file_digest(target)
    marker = _marker(target)
    if marker.is_file() and marker.read_text() == _stamp(dataset, target.name, digest, recorded):
        return None
    problem, fingerprint = _check(dataset, target.name, target, recorded)
    if problem is None:
        _remember(dataset, target, digest, fingerprint)
    return problem


def _marker(target: Path) -> Path:
    return target.with_name(f".{target.name}.verified")


def _recorded(dataset: RemoteDataset, target: Path) -> str | None:
    """The fingerprint the marker of ``target`` recorded, where none is published (else ``None``)."""
    if target.name in dataset.labels or dataset.fingerprints[target.name] is not None:
        return None
    try:
        found = re.search(r"fingerprint ([0-9a-f]{16}) \(", _marker(target).read_text())
    except OSError:
        return None
    return found[1] if found else None


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stamp(dataset: RemoteDataset, file: str, digest: str, fingerprint: str | None = None) -> str:
    return f"sha256 {digest} verified as {dataset.expected(file, fingerprint)}\n"


def _remember(dataset: RemoteDataset, target: Path, digest: str, fingerprint: str | None = None) -> None:
    """Write the marker saying ``target`` (bytes hashing to ``digest``) was verified."""
    marker = _marker(target)
    scratch = marker.with_name(f"{marker.name}.{uuid.uuid4().hex}")
    try:
        scratch.write_text(_stamp(dataset, target.name, digest, fingerprint))
        os.replace(scratch, marker)
    except OSError:  # read-only cache: verify again next time
        scratch.unlink(missing_ok=True)


def _fetch_url(name: str, dataset: RemoteDataset, url: str, scratch: Path, target: Path, progress: bool,
               cached: str | None) -> None:
    """Download ``url`` to ``scratch`` (for ``target``), or raise the error saying why not."""
    try:
        downloader = pooch.HTTPDownloader(progressbar=progress, chunk_size=1 << 16)
    except ValueError:  # tqdm not installed
        downloader = pooch.HTTPDownloader(chunk_size=1 << 16)
    if progress:
        pooch.get_logger().info("Downloading %s to %s", url, target)
    try:
        downloader(url, str(scratch), None)
    except OSError as error:  # requests' exceptions subclass OSError
        raise _error(name, dataset, url, target, f"download failed ({error})", cached) from error


def _download(
    name: str, dataset: RemoteDataset, url: str, target: Path, progress: bool, cached: str | None
) -> None:
    """Download ``url`` to a temporary file beside ``target``, verify it, move it into place.

    ``cached`` is why the file already in the cache failed its check (None if there was none):
    an error then says both that and why the download did not replace it.
    """
    recorded = _recorded(dataset, target)
    scratch = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")
    try:
        _fetch_url(name, dataset, url, scratch, target, progress, cached)
        problem, fingerprint = _check(dataset, target.name, scratch, recorded)
        if problem is not None:
            raise _error(name, dataset, url, target, f"the downloaded copy has wrong content ({problem})", cached)
        os.replace(scratch, target)
    finally:
        scratch.unlink(missing_ok=True)
    _remember(dataset, target, _file_digest(target), fingerprint)


def _extract(name: str, dataset: RemoteDataset, url: str, folder: Path, bad: dict[str, str | None],
             progress: bool) -> None:
    """Download the dataset's archive once, extract the files of ``bad`` from it (in one pass over
    the archive, never outside ``folder``), verify each and move it into place.

    ``bad`` maps each file to why its cached copy failed its check (None if there was none).
    """
    archive = dataset.archive
    assert archive is not None
    tag = f"{os.getpid()}.{uuid.uuid4().hex[:8]}"
    scratch = folder / f".{archive.name}.{tag}.part"
    parts = {file: folder / f".{file}.{tag}.part" for file in bad}
    first = next(iter(bad))
    recorded = {file: _recorded(dataset, folder / file) for file in bad}
    try:
        _fetch_url(name, dataset, url, scratch, folder / first, progress, bad[first])
        wanted = {archive.members[file]: file for file in bad}
        found: set[str] = set()
        try:
            with tarfile.open(scratch, "r|*") as tar:  # a stream: one pass, members extracted by name only
                for member in tar:
                    file = wanted.get(member.name.rsplit("/", 1)[-1])
                    if file is None or file in found or not member.isfile():
                        continue
                    with tar.extractfile(member) as source, open(parts[file], "wb") as out:
                        shutil.copyfileobj(source, out, 1 << 20)
                    found.add(file)
        except (tarfile.TarError, OSError, EOFError) as error:
            raise _error(name, dataset, url, folder / first,
                         f"the download is not a readable tar archive ({error})", bad[first]) from error
        fingerprints = {}
        for file, cached in bad.items():
            if file not in found:
                raise _error(name, dataset, url, folder / file,
                             f"the archive holds no member {archive.members[file]}", cached)
            problem, fingerprints[file] = _check(dataset, file, parts[file], recorded[file])
            if problem is not None:
                raise _error(name, dataset, url, folder / file,
                             f"the copy extracted from the archive has wrong content ({problem})", cached)
        for file in bad:
            os.replace(parts[file], folder / file)
            _remember(dataset, folder / file, _file_digest(folder / file), fingerprints[file])
    finally:
        scratch.unlink(missing_ok=True)
        for part in parts.values():
            part.unlink(missing_ok=True)


def _error(
    name: str, dataset: RemoteDataset, url: str, target: Path, problem: str, cached: str | None
) -> DatasetDownloadError:
    if cached is not None:
        problem = f"the cached copy {target} fails its check ({cached}), and {problem}"
    served = (f"{dataset.folder}/{dataset.archive.name}" if dataset.archive is not None
              else f"{dataset.folder}/train.txt, {dataset.folder}/valid.txt, ...")
    return DatasetDownloadError(
        f"dataset {name!r}, file {target.name}: {problem}",
        url,
        f"retry (the server may be briefly unreachable); or set {MIRROR_ENV}=URL to a mirror "
        f"that serves {served}; or place the files ({', '.join(dataset.files)}) by hand in {target.parent}",
    )


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the ``with`` body."""
    with open(path, "a") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock
