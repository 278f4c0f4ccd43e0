"""fetch_dataset: download over HTTP (a local server), verify by fingerprint, cache, lock.

The ``serve`` and ``shared_data`` fixtures live in ``conftest.py``.
"""

from __future__ import annotations

import shutil
import socket
import threading
from pathlib import Path

import pooch
import pytest

from lightning_kge.data.download import (
    DATASETS,
    DatasetDownloadError,
    content_fingerprint,
    default_cache_dir,
    fetch_dataset,
)

COUNTRIES_FILES = ["train.txt", "valid.txt", "test.txt", "regions.list"]


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No user settings leak in, and requests never goes through a proxy for the local server."""
    monkeypatch.delenv("LIGHTNING_KGE_MIRROR", raising=False)
    monkeypatch.delenv("LIGHTNING_KGE_DATA", raising=False)
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


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_shared_files_match_the_fingerprint_table(shared_data: Path, name: str) -> None:
    dataset = DATASETS[name]
    for file, expected in dataset.fingerprints.items():
        assert content_fingerprint(shared_data / dataset.folder / file)[:16] == expected, file
    for file, count in dataset.labels.items():
        lines = (shared_data / dataset.folder / file).read_text().splitlines()
        assert len([line for line in lines if line.strip()]) == count


def test_fingerprint_ignores_order_duplicates_and_line_ends(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"x\tr\ty\nu\tr\tv\n")
    (tmp_path / "b.txt").write_bytes(b"u\tr\tv\r\nx\tr\ty\r\nu\tr\tv\r\n")
    (tmp_path / "c.txt").write_bytes(b"x\tr\ty\nu\tr\tw\n")
    fingerprint = content_fingerprint(tmp_path / "a.txt")
    assert len(fingerprint) == 64
    assert content_fingerprint(tmp_path / "b.txt") == fingerprint
    assert content_fingerprint(tmp_path / "c.txt") != fingerprint


def test_fetch_from_url_caches_identical_files(serve, shared_data: Path, tmp_path: Path) -> None:
    url, requested = serve(shared_data / "wn18rr")
    folder = fetch_dataset("wn18rr", url=url, cache_dir=tmp_path, progress=False)
    assert folder == tmp_path / "wn18rr"
    assert requested == ["/train.txt", "/valid.txt", "/test.txt"]
    for file in ("train.txt", "valid.txt", "test.txt"):
        assert (folder / file).read_bytes() == (shared_data / "wn18rr" / file).read_bytes()
    assert not [name for name in _leftovers(folder) if name.endswith(".part")]


def test_mirror_variable_serves_every_dataset_by_folder(
    serve, shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, requested = serve(shared_data)
    monkeypatch.setenv("LIGHTNING_KGE_MIRROR", url + "/")
    folder = fetch_dataset("countries_s2", cache_dir=tmp_path)  # progress bar on
    assert folder == tmp_path / "countries_S2"
    assert requested == [f"/countries_S2/{file}" for file in COUNTRIES_FILES]
    regions = (shared_data / "countries_S2" / "regions.list").read_bytes()
    assert (folder / "regions.list").read_bytes() == regions


def test_explicit_url_beats_mirror_variable(
    serve, shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIGHTNING_KGE_MIRROR", _closed_port_url())
    url, requested = serve(shared_data / "countries_S3")
    fetch_dataset("countries_s3", url=url, cache_dir=tmp_path, progress=False)
    assert len(requested) == len(COUNTRIES_FILES)


def test_second_fetch_does_not_hit_the_server(serve, shared_data: Path, tmp_path: Path) -> None:
    url, requested = serve(shared_data / "countries_S1")
    first = fetch_dataset("countries_s1", url=url, cache_dir=tmp_path, progress=False)
    assert len(requested) == len(COUNTRIES_FILES)
    second = fetch_dataset("countries_s1", url=url, cache_dir=tmp_path, progress=False)
    assert second == first
    assert len(requested) == len(COUNTRIES_FILES)


def test_files_placed_by_hand_are_used_without_download(
    serve, shared_data: Path, tmp_path: Path
) -> None:
    shutil.copytree(shared_data / "countries_S1", tmp_path / "countries_S1")
    url, requested = serve(shared_data / "countries_S1")
    assert fetch_dataset("countries_s1", url=url, cache_dir=tmp_path, progress=False) == (
        tmp_path / "countries_S1"
    )
    assert requested == []


def test_a_changed_cached_file_is_downloaded_again(
    serve, shared_data: Path, tmp_path: Path
) -> None:
    url, requested = serve(shared_data / "countries_S1")
    folder = fetch_dataset("countries_s1", url=url, cache_dir=tmp_path, progress=False)
    with open(folder / "test.txt", "a") as handle:
        handle.write("atlantis\tlocatedin\teurope\n")
    fetch_dataset("countries_s1", url=url, cache_dir=tmp_path, progress=False)
    assert requested[len(COUNTRIES_FILES):] == ["/test.txt"]
    original = (shared_data / "countries_S1" / "test.txt").read_bytes()
    assert (folder / "test.txt").read_bytes() == original


@pytest.mark.parametrize("file", ["train.txt", "regions.list"])
def test_corrupted_download_raises_and_leaves_no_file(
    serve, shared_data: Path, tmp_path: Path, file: str
) -> None:
    served = tmp_path / "served"
    shutil.copytree(shared_data / "countries_S1", served)
    lines = (served / file).read_text().splitlines()
    if file == "train.txt":  # one triple changed: head and tail swapped
        lines[0] = "\t".join(reversed(lines[0].split("\t")))
    else:  # one region missing
        lines = lines[1:]
    (served / file).write_text("\n".join(lines) + "\n")
    url, _ = serve(served)
    cache = tmp_path / "cache"
    with pytest.raises(DatasetDownloadError, match=rf"countries_s1.*{file}") as error:
        fetch_dataset("countries_s1", url=url, cache_dir=cache, progress=False)
    assert f"{url}/{file}" in str(error.value)
    left = _leftovers(cache / "countries_S1")
    assert file not in left
    assert not [name for name in left if file in name]  # no temporary file, no marker
    if file == "train.txt":  # the first file: nothing at all was kept
        assert left == []


@pytest.mark.parametrize("server", ["404", "closed port"])
def test_unreachable_file_raises_with_retry_and_mirror_advice(
    serve, shared_data: Path, tmp_path: Path, server: str
) -> None:
    url = serve(shared_data)[0] + "/no-such-folder" if server == "404" else _closed_port_url()
    with pytest.raises(DatasetDownloadError) as error:
        fetch_dataset("countries_s1", url=url, cache_dir=tmp_path, progress=False)
    message = str(error.value)
    for part in ("countries_s1", f"{url}/train.txt", "retry", "LIGHTNING_KGE_MIRROR",
                 "countries_S1/train.txt", str(tmp_path / "countries_S1")):
        assert part in message
    if server == "404":
        assert "404" in message
    assert _leftovers(tmp_path / "countries_S1") == []


def test_data_variable_sets_the_cache_dir(
    serve, shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIGHTNING_KGE_DATA", str(tmp_path / "kge-cache"))
    assert default_cache_dir() == tmp_path / "kge-cache"
    url, _ = serve(shared_data / "countries_S3")
    folder = fetch_dataset("countries_s3", url=url, progress=False)
    assert folder == tmp_path / "kge-cache" / "countries_S3"
    assert (folder / "train.txt").is_file()


def test_default_cache_dir_without_variable_is_the_user_cache() -> None:
    assert default_cache_dir() == Path(pooch.os_cache("lightning_kge"))


def test_concurrent_fetches_download_each_file_once(
    serve, shared_data: Path, tmp_path: Path
) -> None:
    url, requested = serve(shared_data / "countries_S2")
    start, folders, errors = threading.Barrier(4), [], []

    def fetch() -> None:
        start.wait()
        try:
            folders.append(
                fetch_dataset("countries_s2", url=url, cache_dir=tmp_path, progress=False)
            )
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert folders == [tmp_path / "countries_S2"] * 4
    assert sorted(requested) == sorted(f"/{file}" for file in COUNTRIES_FILES)


def test_unknown_dataset_name_raises_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="wn18rr"):
        fetch_dataset("wn18", cache_dir=tmp_path)
