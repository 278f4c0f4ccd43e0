"""Prepared graphs are parsed once and cached: the cached load equals the parsed one and is used
on the next run; an edited file, a failed write or an unusable cache folder behave."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_kge.data import prepared as prepared_module
from lightning_kge.data import store
from lightning_kge.data.graph import SPLITS
from lightning_kge.data.prepared import PreparedGraph, prepare_graph
from lightning_kge.datamodule import KGEDataModule

CAFE_NFD = "cafe\u0301"
TRAIN = f"a\tlikes\tb\nb\tlikes\tc\nc\thates\ta\n{CAFE_NFD}\tlikes\ta\na\tlikes\tb\nb\tknows\t{CAFE_NFD}\n"
VALID = "a\tlikes\tc\na\tlikes\tc\nnew\tlikes\ta\n"
TEST = "b\thates\tc\nc\tknows\tb\n"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh cache folder (``LIGHTNING_KGE_CACHE``)."""
    monkeypatch.setenv("LIGHTNING_KGE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "graphs"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "graph"
    root.mkdir()
    for split, text in (("train", TRAIN), ("valid", VALID), ("test", TEST)):
        (root / f"{split}.txt").write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The folders parse_graph was called on (a cached load calls it for none)."""
    calls: list[Path] = []
    original = prepared_module.parse_graph

    def counting(folder, unseen="error"):
        calls.append(Path(folder))
        return original(folder, unseen)

    monkeypatch.setattr(prepared_module, "parse_graph", counting)
    return calls


def entries(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) if cache.exists() else []


def prepare_recording(folder: Path, **options) -> tuple[PreparedGraph, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = prepare_graph(folder, "drop", **options)
    return result, [str(w.message) for w in caught]


def assert_same(one: PreparedGraph, two: PreparedGraph) -> None:
    g1, g2 = one.graph, two.graph
    assert (g1.entities, g1.relations) == (g2.entities, g2.relations)
    assert (g1.dropped, g1.duplicates, g1.renamed) == (g2.dropped, g2.duplicates, g2.renamed)
    for split in SPLITS:
        assert g1.triples[split].dtype == g2.triples[split].dtype == torch.long
        assert torch.equal(g1.triples[split], g2.triples[split])
    assert one.fingerprint == two.fingerprint
    for name, value in one.statistics.state().items():
        assert torch.equal(value, two.statistics.state()[name]), name
    for first, second in ((one.train_index, two.train_index), (one.extra_index, two.extra_index)):
        for name, value in first.state().items():
            assert torch.equal(value, second.state()[name]), name


def test_the_cached_load_equals_the_parsed_load_and_is_used_on_the_second_run(
    cache: Path, folder: Path, parses: list[Path]
) -> None:
    parsed, first_warnings = prepare_recording(folder, cache=True)
    assert parses == [folder] and not parsed.cached and len(entries(cache)) == 1
    cached, again_warnings = prepare_recording(folder, cache=True)
    assert parses == [folder] and cached.cached  # no second parse
    assert_same(parsed, cached)
    assert_same(cached, prepare_graph(folder, "drop", cache=False))
    assert first_warnings == again_warnings and "1 label changed to Unicode NFC" in first_warnings[0]
    assert cached.graph.dropped == {"valid": 1} and cached.graph.duplicates == {"train": 1, "valid": 1}
    h, r, t = torch.cartesian_prod(*(torch.arange(n) for n in (5, 3, 5))).unbind(1)
    assert torch.equal(cached.filter_index.contains(h, r, t), parsed.filter_index.contains(h, r, t))


def test_an_edited_file_is_parsed_again_and_replaces_its_old_entry(cache: Path, folder: Path, parses: list[Path]) -> None:
    first = prepare_graph(folder, "drop", cache=True)
    with open(folder / "test.txt", "a", encoding="utf-8") as handle:
        handle.write("c\tlikes\tb\n")
    edited = prepare_graph(folder, "drop", cache=True)
    assert len(parses) == 2 and not edited.cached
    assert len(edited.graph.triples["test"]) == len(first.graph.triples["test"]) + 1
    assert edited.fingerprint != first.fingerprint
    assert len(entries(cache)) == 1  # the entry of the old bytes is gone
    assert prepare_graph(folder, "keep", cache=True).graph.entities[-1] == "new"  # another policy, another entry
    assert len(entries(cache)) == 2 and len(parses) == 3


def test_a_failed_cache_write_leaves_no_entry_and_the_next_run_writes_it(
    cache: Path, folder: Path, parses: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = []
    original = np.save

    def full_disk(path, array):
        if len(saved) == 3:
            raise OSError(28, "No space left on device")
        saved.append(path)
        original(path, array)

    monkeypatch.setattr(store.np, "save", full_disk)
    result = prepare_graph(folder, "drop", cache=True)
    assert len(result.graph.triples["train"]) == 6
    assert entries(cache) == [] and not [p for p in cache.iterdir() if p.name.endswith(".part")]
    monkeypatch.setattr(store.np, "save", original)
    prepare_graph(folder, "drop", cache=True)
    assert prepare_graph(folder, "drop", cache=True).cached and len(parses) == 2


def test_an_unusable_cache_folder_is_skipped(tmp_path: Path, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("LIGHTNING_KGE_CACHE", str(tmp_path / "a-file"))
    assert not prepare_graph(folder, "drop", cache=True).cached
    assert not prepare_graph(folder, "drop", cache=True).cached


def test_a_damaged_entry_is_parsed_again_and_rewritten(cache: Path, folder: Path, parses: list[Path]) -> None:
    prepare_graph(folder, "drop", cache=True)
    (cache / entries(cache)[0] / "train_index.answers.npy").unlink()
    assert not prepare_graph(folder, "drop", cache=True).cached
    assert prepare_graph(folder, "drop", cache=True).cached and len(parses) == 2


def test_processes_preparing_the_same_files_at_once_parse_them_once(
    cache: Path, folder: Path, parses: list[Path]
) -> None:
    start, results = threading.Barrier(3), []

    def prepare() -> None:
        start.wait()
        results.append(prepare_graph(folder, "drop", cache=True))

    threads = [threading.Thread(target=prepare) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(parses) == 1 and sorted(r.cached for r in results) == [False, True, True]


def test_the_datamodule_loads_a_large_graph_from_the_cache(
    cache: Path, folder: Path, parses: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "MIN_CACHED_BYTES", 0)  # every graph counts as large
    first, second = (KGEDataModule(path=str(folder), unseen="drop") for _ in range(2))
    for datamodule in (first, second):
        with pytest.warns(UserWarning):
            datamodule.setup()
    assert len(parses) == 1
    assert first.info == second.info
    assert torch.equal(first.train_weight, second.train_weight)
    assert torch.equal(first.head_probability, second.head_probability)
    monkeypatch.setattr(store, "MIN_CACHED_BYTES", 1 << 20)
    KGEDataModule(path=str(folder), unseen="drop").setup()  # small: parsed, not cached
    assert len(parses) == 2


def test_the_temporary_folder_of_a_writer_that_died_is_removed_by_the_next_write(cache: Path, folder: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    abandoned = cache / f".{'0' * 32}.{int(dead.stdout)}.deadbeef.part"
    alive = cache / f".{'1' * 32}.{os.getpid()}.deadbeef.part"
    for scratch in (abandoned, alive):
        scratch.mkdir(parents=True)
        (scratch / "train.npy").write_bytes(b"half written")
    prepare_graph(folder, "drop", cache=True)
    assert not abandoned.exists() and alive.exists() and len(entries(cache)) == 1
