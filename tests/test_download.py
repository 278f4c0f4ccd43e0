"""fetch_dataset: download over HTTP (a local server), verify by content, cache, lock.

The datasets downloaded here are the tiny fixtures of ``tests/data`` (``TINY_REMOTE`` in
``conftest.py``, served by the ``serve`` fixture), so every test runs on a fresh clone; only
``test_shared_files_match_the_published_fingerprints_and_counts`` reads ``../shared/data``.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import socket
import tarfile
import threading
from pathlib import Path

import pytest

from conftest import FIXTURES, TINY_REMOTE, UNREACHABLE
from lightning_kge.data.download import (
    DATASETS,
    RECORDED,
    Archive,
    DatasetDownloadError,
    RemoteDataset,
    content_fingerprint,
    fetch_dataset,
)
from lightning_kge.errors import ArgumentError, UserError

COUNTRIES = TINY_REMOTE["countries_tiny"]
COUNTRIES_FILES = ["train.txt", "valid.txt", "test.txt", "regions.list"]


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No user settings leak in, and requests never goes through a proxy for the local server."""
    for name in ("LIGHTNING_KGE_MIRROR", "LIGHTNING_KGE_DATA", "LIGHTNING_KGE_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _leftovers(folder: Path) -> list[str]:
    """Names in a cache folder other than the lock file."""
    return sorted(p.name for p in folder.iterdir() if p.name != ".lock")


def _served_copy(tmp_path: Path) -> Path:
    """A writable copy of the countries fixture to serve (tests change it)."""
    served = tmp_path / "served"
    shutil.copytree(FIXTURES / "countries_tiny", served)
    return served


def _fetch(url: str, cache: Path) -> Path:
    return fetch_dataset(COUNTRIES, url=url, cache_dir=cache, progress=False)


# --- the fingerprints --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(n for n, d in DATASETS.items() if None not in d.fingerprints.values()))
def test_shared_files_match_the_published_fingerprints_and_counts(shared_data: Path, name: str) -> None:
    dataset = DATASETS[name]
    for file, expected in dataset.fingerprints.items():
        path = shared_data / dataset.folder / file
        assert content_fingerprint(path)[:16] == expected, file
        assert len([line for line in path.read_text().splitlines() if line.strip()]) == dataset.counts[file]
    for file, count in dataset.labels.items():
        lines = (shared_data / dataset.folder / file).read_text().splitlines()
        assert len([line for line in lines if line.strip()]) == count


@pytest.mark.parametrize("name", sorted(TINY_REMOTE))
def test_fixture_files_match_their_declared_fingerprints_and_counts(name: str) -> None:
    dataset = TINY_REMOTE[name]
    for file, expected in dataset.fingerprints.items():
        path = FIXTURES / dataset.folder / file
        assert content_fingerprint(path)[:16] == expected, file
        assert len(path.read_text().splitlines()) == dataset.counts[file], file


def test_fingerprint_ignores_order_duplicates_and_line_ends(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"x\tr\ty\nu\tr\tv\n")
    (tmp_path / "b.txt").write_bytes(b"u\tr\tv\r\nx\tr\ty\r\nu\tr\tv\r\n")
    (tmp_path / "c.txt").write_bytes(b"x\tr\ty\nu\tr\tw\n")
    fingerprint = content_fingerprint(tmp_path / "a.txt")
    assert len(fingerprint) == 64
    assert content_fingerprint(tmp_path / "b.txt") == fingerprint
    assert content_fingerprint(tmp_path / "c.txt") != fingerprint


# --- downloading and caching -------------------------------------------------------------------------


def test_fetch_from_url_caches_identical_files(serve, tmp_path: Path) -> None:
    url, requested = serve(FIXTURES / "countries_tiny")
    folder = _fetch(url, tmp_path)
    assert folder == tmp_path / "countries_tiny"
    assert requested == [f"/{file}" for file in COUNTRIES_FILES]
    for file in COUNTRIES_FILES:
        assert (folder / file).read_bytes() == (FIXTURES / "countries_tiny" / file).read_bytes()
    assert not [name for name in _leftovers(folder) if name.endswith(".part")]


def test_mirror_variable_serves_every_dataset_by_folder(
    serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, requested = serve(FIXTURES)
    monkeypatch.setenv("LIGHTNING_KGE_MIRROR", url + "/")
    for name, dataset in TINY_REMOTE.items():
        folder = fetch_dataset(dataset, cache_dir=tmp_path)  # progress bar on
        assert folder == tmp_path / dataset.folder
        for file in dataset.files:
            assert (folder / file).read_bytes() == (FIXTURES / dataset.folder / file).read_bytes()
    assert requested == [f"/{d.folder}/{file}" for d in TINY_REMOTE.values() for file in d.files]


def test_explicit_url_beats_mirror_variable(serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIGHTNING_KGE_MIRROR", _closed_port_url())
    url, requested = serve(FIXTURES / "countries_tiny")
    _fetch(url, tmp_path)
    assert len(requested) == len(COUNTRIES_FILES)


def test_second_fetch_does_not_hit_the_server(serve, tmp_path: Path) -> None:
    url, requested = serve(FIXTURES / "countries_tiny")
    first = _fetch(url, tmp_path)
    assert len(requested) == len(COUNTRIES_FILES)
    assert _fetch(url, tmp_path) == first
    assert len(requested) == len(COUNTRIES_FILES)


def test_files_placed_by_hand_are_used_without_download(serve, tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "countries_tiny", tmp_path / "countries_tiny")
    url, requested = serve(FIXTURES / "countries_tiny")
    assert _fetch(url, tmp_path) == tmp_path / "countries_tiny"
    assert requested == []


def test_a_changed_cached_file_is_downloaded_again(serve, tmp_path: Path) -> None:
    url, requested = serve(FIXTURES / "countries_tiny")
    folder = _fetch(url, tmp_path)
    with open(folder / "test.txt", "a") as handle:
        handle.write("atlantis\tlocatedin\teurope\n")
    _fetch(url, tmp_path)
    assert requested[len(COUNTRIES_FILES):] == ["/test.txt"]
    assert (folder / "test.txt").read_bytes() == (FIXTURES / "countries_tiny" / "test.txt").read_bytes()


def test_a_cached_file_edited_with_its_size_and_mtime_kept_is_downloaded_again(serve, tmp_path: Path) -> None:
    url, requested = serve(FIXTURES / "countries_tiny")
    folder = _fetch(url, tmp_path)
    path = folder / "test.txt"
    before, stat = path.read_bytes(), path.stat()
    edited = before.replace(b"netherlands\tlocatedin\teurope", b"netherlands\tlocatedin\tafrica")
    assert edited != before and len(edited) == len(before)
    path.write_bytes(edited)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    _fetch(url, tmp_path)
    assert requested[len(COUNTRIES_FILES):] == ["/test.txt"]
    assert path.read_bytes() == before


def test_a_cached_file_with_other_bytes_but_the_same_triples_is_kept(serve, tmp_path: Path) -> None:
    url, requested = serve(FIXTURES / "countries_tiny")
    folder = _fetch(url, tmp_path)
    path = folder / "train.txt"
    reordered = b"".join(reversed(path.read_bytes().splitlines(keepends=True)))
    path.write_bytes(reordered)
    _fetch(url, tmp_path)
    assert len(requested) == len(COUNTRIES_FILES)  # checked in full, not downloaded
    assert path.read_bytes() == reordered


@pytest.mark.parametrize("change", ["changed triple", "duplicated line", "missing region"])
def test_corrupted_download_raises_and_leaves_no_file(serve, tmp_path: Path, change: str) -> None:
    served = _served_copy(tmp_path)
    file = "regions.list" if change == "missing region" else "train.txt"
    lines = (served / file).read_text().splitlines()
    if change == "changed triple":  # head and tail swapped
        lines[0] = "\t".join(reversed(lines[0].split("\t")))
    elif change == "duplicated line":  # the same distinct triples, one more line
        lines.append(lines[5])
    else:
        lines = lines[1:]
    (served / file).write_text("\n".join(lines) + "\n")
    url, _ = serve(served)
    cache = tmp_path / "cache"
    with pytest.raises(DatasetDownloadError, match=rf"countries_tiny.*{file}") as error:
        _fetch(url, cache)
    assert error.value.where == f"{url}/{file}"
    if change == "duplicated line":
        assert content_fingerprint(served / file)[:16] == COUNTRIES.fingerprints[file]
        assert "91 triple lines, expected 90" in str(error.value)
    left = _leftovers(cache / "countries_tiny")
    assert file not in left
    assert not [name for name in left if file in name]  # no temporary file, no marker
    if file == "train.txt":  # the first file: nothing at all was kept
        assert left == []


@pytest.mark.parametrize("server", ["404", "closed port"])
def test_unreachable_file_raises_a_user_error_with_retry_mirror_and_cache_advice(
    serve, tmp_path: Path, server: str
) -> None:
    url = serve(FIXTURES)[0] + "/no-such-folder" if server == "404" else _closed_port_url()
    with pytest.raises(DatasetDownloadError) as error:
        _fetch(url, tmp_path)
    assert isinstance(error.value, UserError)
    assert error.value.where == f"{url}/train.txt"
    assert "download failed" in error.value.what and "countries_tiny" in error.value.what
    for part in ("retry", "LIGHTNING_KGE_MIRROR", "countries_tiny/train.txt", str(tmp_path / "countries_tiny")):
        assert part in error.value.fix
    assert str(error.value) == f"{error.value.what} ({error.value.where}): {error.value.fix}"
    assert str(pickle.loads(pickle.dumps(error.value))) == str(error.value)
    if server == "404":
        assert "404" in error.value.what
    assert _leftovers(tmp_path / "countries_tiny") == []


def test_a_bad_cached_file_and_a_failed_download_are_both_reported(serve, tmp_path: Path) -> None:
    url, _ = serve(FIXTURES / "countries_tiny")
    folder = _fetch(url, tmp_path)
    with open(folder / "valid.txt", "a") as handle:
        handle.write("atlantis\tlocatedin\teurope\n")
    down = _closed_port_url()
    with pytest.raises(DatasetDownloadError) as error:
        _fetch(down, tmp_path)
    what = error.value.what
    assert "cached copy" in what and str(folder / "valid.txt") in what
    assert "4 triple lines, expected 3" in what  # why the cached copy failed
    assert "download failed" in what  # and why it was not replaced
    assert error.value.where == f"{down}/valid.txt"
    assert "atlantis" in (folder / "valid.txt").read_text()  # the user's file is left as it was


def test_concurrent_fetches_download_each_file_once(serve, tmp_path: Path) -> None:
    url, requested = serve(FIXTURES / "countries_tiny")
    start, folders, errors = threading.Barrier(4), [], []

    def fetch() -> None:
        start.wait()
        try:
            folders.append(_fetch(url, tmp_path))
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert folders == [tmp_path / "countries_tiny"] * 4
    assert sorted(requested) == sorted(f"/{file}" for file in COUNTRIES_FILES)


# --- where the cache is ------------------------------------------------------------------------------


def test_cache_variable_puts_datasets_under_its_datasets_folder(
    serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIGHTNING_KGE_CACHE", str(tmp_path / "kge-cache"))
    url, _ = serve(FIXTURES / "countries_tiny")
    folder = fetch_dataset(COUNTRIES, url=url, progress=False)
    assert folder == tmp_path / "kge-cache" / "datasets" / "countries_tiny"
    assert (folder / "train.txt").is_file()


def test_former_data_variable_still_works_with_a_future_warning(
    serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIGHTNING_KGE_DATA", str(tmp_path / "old"))
    url, _ = serve(FIXTURES / "countries_tiny")
    with pytest.warns(FutureWarning, match="LIGHTNING_KGE_CACHE"):
        folder = fetch_dataset(COUNTRIES, url=url, progress=False)
    assert folder == tmp_path / "old" / "countries_tiny"
    assert (folder / "train.txt").is_file()


def test_cache_variable_wins_over_the_former_one_with_a_warning(
    serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIGHTNING_KGE_DATA", str(tmp_path / "old"))
    monkeypatch.setenv("LIGHTNING_KGE_CACHE", str(tmp_path / "new"))
    url, _ = serve(FIXTURES / "countries_tiny")
    with pytest.warns(FutureWarning, match="LIGHTNING_KGE_DATA is ignored"):
        folder = fetch_dataset(COUNTRIES, url=url, progress=False)
    assert folder == tmp_path / "new" / "datasets" / "countries_tiny"
    assert not (tmp_path / "old").exists()


def test_unknown_dataset_name_is_an_argument_error_listing_the_names(tmp_path: Path) -> None:
    with pytest.raises(ArgumentError, match="wn18rr") as error:
        fetch_dataset("wn18", cache_dir=tmp_path)
    assert isinstance(error.value, ValueError) and "'wn18'" in str(error.value)


# --- datasets that come as an archive (wikidata5m) -----------------------------------------------------

TINY = TINY_REMOTE["tiny_kg"]
MEMBERS = {f"{split}.txt": f"tiny_transductive_{split}.txt" for split in ("train", "valid", "test")}


def archive_dataset(published: bool = False, name: str = "tiny.tar.gz") -> RemoteDataset:
    """tiny_kg as one archive (members in a folder, as release archives often are)."""
    fingerprints = dict(TINY.fingerprints) if published else {file: None for file in TINY.fingerprints}
    return RemoteDataset("tiny_archive", UNREACHABLE, fingerprints, dict(TINY.counts),
                         archive=Archive(name, f"{UNREACHABLE}/{name}", MEMBERS))


def make_archive(root: Path, name: str = "tiny.tar.gz", change: dict[str, bytes] | None = None,
                 leave_out: str | None = None) -> Path:
    """Write ``root/name``: the tiny_kg files as members ``release/tiny_transductive_<split>.txt``."""
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(root / name, "w:gz") as tar:
        tar.add(FIXTURES / "tiny_kg" / "train.txt", arcname="release/README")  # ignored: not a member we need
        for file, member in MEMBERS.items():
            if file == leave_out:
                continue
            data = (change or {}).get(file, (FIXTURES / "tiny_kg" / file).read_bytes())
            info = tarfile.TarInfo(f"release/{member}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return root / name


def test_an_archive_is_downloaded_once_and_its_files_extracted_verified_and_recorded(serve, tmp_path: Path) -> None:
    make_archive(tmp_path / "served")
    url, requested = serve(tmp_path / "served")
    for published in (False, True):
        cache = tmp_path / f"cache-{published}"
        folder = fetch_dataset(archive_dataset(published), url=url, cache_dir=cache, progress=False)
        for file in MEMBERS:
            assert (folder / file).read_bytes() == (FIXTURES / "tiny_kg" / file).read_bytes()
            marker = (folder / f".{file}.verified").read_text()
            assert (RECORDED in marker) == (not published)
            assert content_fingerprint(folder / file)[:16] in marker
        assert _leftovers(folder) == [f".{f}.verified" for f in sorted(MEMBERS)] + sorted(MEMBERS)
        assert fetch_dataset(archive_dataset(published), url=url, cache_dir=cache, progress=False) == folder
    assert requested == ["/tiny.tar.gz"] * 2  # once per cache, never for a verified copy


def test_the_mirror_serves_an_archive_under_the_dataset_folder(serve, tmp_path: Path, monkeypatch) -> None:
    make_archive(tmp_path / "served" / "tiny_archive")
    url, requested = serve(tmp_path / "served")
    monkeypatch.setenv("LIGHTNING_KGE_MIRROR", url)
    fetch_dataset(archive_dataset(), cache_dir=tmp_path / "cache", progress=False)
    assert requested == ["/tiny_archive/tiny.tar.gz"]


def test_an_edited_copy_is_checked_against_the_fingerprint_recorded_at_the_first_download(
    serve, tmp_path: Path
) -> None:
    served = tmp_path / "served"
    make_archive(served)
    url, requested = serve(served)
    folder = fetch_dataset(archive_dataset(), url=url, cache_dir=tmp_path, progress=False)
    original = (folder / "test.txt").read_bytes()
    first, rest = original.split(b"\n", 1)
    head, relation, tail = first.split(b"\t")
    (folder / "test.txt").write_bytes(b"\t".join((tail, relation, head)) + b"\n" + rest)  # same count, other triple
    fetch_dataset(archive_dataset(), url=url, cache_dir=tmp_path, progress=False)
    assert requested == ["/tiny.tar.gz"] * 2 and (folder / "test.txt").read_bytes() == original
    # The server now holds other content with the same counts: the record catches it.
    (folder / "test.txt").write_bytes(b"\t".join((tail, relation, head)) + b"\n" + rest)
    make_archive(served, change={"test.txt": b"\t".join((tail, relation, head)) + b"\n" + rest})
    with pytest.raises(DatasetDownloadError, match="recorded at its first download") as error:
        fetch_dataset(archive_dataset(), url=url, cache_dir=tmp_path, progress=False)
    assert "test.txt" in error.value.what and error.value.where == f"{url}/tiny.tar.gz"


@pytest.mark.parametrize("problem", ["a line too many", "a member missing", "not an archive"])
def test_a_bad_archive_raises_naming_the_problem_and_leaves_no_file(serve, tmp_path: Path, problem: str) -> None:
    served = tmp_path / "served"
    if problem == "a line too many":
        make_archive(served, change={"valid.txt": (FIXTURES / "tiny_kg" / "valid.txt").read_bytes() + b"x\ty\tz\n"})
        expected = "6 triple lines, expected 5"
    elif problem == "a member missing":
        make_archive(served, leave_out="test.txt")
        expected = "the archive holds no member tiny_transductive_test.txt"
    else:
        served.mkdir()
        (served / "tiny.tar.gz").write_text("<html>a page, not the file</html>")
        expected = "not a readable tar archive"
    url, _ = serve(served)
    with pytest.raises(DatasetDownloadError) as error:
        fetch_dataset(archive_dataset(), url=url, cache_dir=tmp_path / "cache", progress=False)
    assert expected in error.value.what and "tiny_archive/tiny.tar.gz" in error.value.fix
    assert _leftovers(tmp_path / "cache" / "tiny_archive") == []  # no file, no temporary file, no marker


def test_wikidata5m_comes_from_its_authors_archive_with_the_published_counts(serve, tmp_path: Path) -> None:
    wikidata5m = DATASETS["wikidata5m"]
    assert wikidata5m.archive is not None and wikidata5m.archive.name == "wikidata5m_transductive.tar.gz"
    assert set(wikidata5m.archive.members.values()) == {
        "wikidata5m_transductive_train.txt", "wikidata5m_transductive_valid.txt", "wikidata5m_transductive_test.txt"}
    served = tmp_path / "served"
    served.mkdir()
    with tarfile.open(served / wikidata5m.archive.name, "w:gz") as tar:
        for file, member in wikidata5m.archive.members.items():
            tar.add(FIXTURES / "tiny_kg" / file, arcname=member)
    url, requested = serve(served)
    with pytest.raises(DatasetDownloadError, match="25 triple lines, expected 20,614,279"):
        fetch_dataset("wikidata5m", url=url, cache_dir=tmp_path / "cache", progress=False)
    assert requested == ["/wikidata5m_transductive.tar.gz"]
