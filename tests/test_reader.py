"""The fast chunked reader gives exactly what the line-by-line reader gives: triples, warnings and
``FILE:LINE`` errors, whatever the chunk boundaries; load_graph equals a brute-force reference."""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import pytest
import torch

from lightning_kge.data import reader
from lightning_kge.data.graph import SPLITS, load_graph
from lightning_kge.data.reader import Vocabulary, read_ids
from lightning_kge.data.tsv import TripleFileError, read_triple_lines, read_triples

CHUNKS = [1, 7, 64, reader.CHUNK_BYTES]
"""Chunk sizes (bytes) to read with: each line its own chunk, lines split across chunks, whole file."""

ACCEPTED = {
    "plain": "a\tr\tb\nb\tr\tc\n",
    "crlf and no final line end": "a\tr\tb\r\nb\ts\tc\r\nc\ts\ta",
    "bom": "\ufeffa\tr\tb\nb\tr\tc\n",
    "blank lines": "\n\na\tr\tb\n\n\nb\tr\tc\n\n",
    "whitespace-only lines": "a\tr\tb\n   \n\t\t\n\u3000\nb\tr\tc\n",
    "inner spaces and unicode": "New York\tlies in\tUnited States\nZürich\tnear\t東京\n",
    "nfd labels": "cafe\u0301\tnear\tbar\nbar\tnear\tcaf\u00e9\nr\u0069\u0301z\tnear\tbar\n",
    "header words later": "a\tr\tb\nhead\trelation\ttail\n",
    "duplicates": "a\tr\tb\na\tr\tb\nb\tr\ta\na\tr\tb\n",
    "trailing carriage return at the end": "a\tr\tb\nb\tr\tc\r",
    "separators inside labels": "a\u2028b\tr\u2029s\tc d\n",
}

REFUSED = {
    "two columns": "a\tr\tb\na\tr\n",
    "four columns": "a\tr\tb\n\na\tr\tb\tc\n",
    "blank relation": "a\tr\tb\na\t\tb\n",
    "blank head after blank-ish lines": "a\tr\tb\nx\tr\tb\n \tr\tb\n",
    "blank tail": "a\tr\t  \n",
    "leading space": "a\tr\tb\nnetherlands \tlocatedin\teurope\n",
    "no-break space": "a\tr\tb\nnetherlands\tlocatedin\teurope\u00a0\n",
    "ideographic space": "a\tr\tb\nnetherlands\tlocatedin\t\u3000europe\n",
    "control": "a\tr\tb\nc\tr\tb\nne\x1btherlands\tr\tb\n",
    "inner carriage return": "a\tr\tb\nc\tr\rx\tb\n",
    "C1 control": "a\tr\tb\nc\tr\u0085\tb\n",
    "bom inside": "a\tr\tb\n\ufeffc\tr\ta\n",
    "header": "\ufeffhead\trelation\ttail\r\na\tr\tb\n",
    "commented header after blank lines": "\n\n# head\trelation\ttail\na\tr\tb\n",
    "bad utf-8": b"a\tr\tb\nc\tr\td\n\xff\xfe\tr\tb\ne\tr\tf\n",
    "empty": "\n\n  \n",
}


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def fast_triples(path: Path) -> list[tuple[str, str, str]]:
    entities, relations = Vocabulary(), Vocabulary()
    ids = read_ids(path, entities, relations).ids.tolist()
    entity = dict(zip(entities.positions().tolist(), entities.labels()))
    relation = dict(zip(relations.positions().tolist(), relations.labels()))
    return [(entity[h], relation[r], entity[t]) for h, r, t in ids]


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_fast_reading_equals_line_by_line_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str,
                                                  chunk: int) -> None:
    monkeypatch.setattr(reader, "CHUNK_BYTES", chunk)
    path = write(tmp_path / "train.txt", ACCEPTED[case])
    expected = read_triple_lines(path)
    entities, relations = Vocabulary(), Vocabulary()
    assert read_ids(path, entities, relations).renamed == expected.renamed
    assert fast_triples(path) == expected.triples


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("case", sorted(REFUSED))
def test_fast_reading_refuses_with_the_line_by_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str,
                                                          chunk: int) -> None:
    monkeypatch.setattr(reader, "CHUNK_BYTES", chunk)
    path = write(tmp_path / "train.txt", REFUSED[case])
    with pytest.raises(TripleFileError) as expected:
        read_triple_lines(path)
    with pytest.raises(TripleFileError) as found:
        read_ids(path, Vocabulary(), Vocabulary())
    assert str(found.value) == str(expected.value) and found.value.line == expected.value.line


def test_a_long_random_file_reads_the_same_fast_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(0)
    words = ["a", "bb", "Zürich", "東京", "New York", "x" * 40, "cafe\u0301", "0", "17"]
    lines = []
    for _ in range(3000):
        lines.append("\t".join(rng.choice(words) + str(rng.randrange(50)) for _ in range(3)))
        if rng.random() < 0.02:
            lines.append(rng.choice(["", "  ", "\t"]))
    path = write(tmp_path / "train.txt", "\r\n".join(lines))
    monkeypatch.setattr(reader, "CHUNK_BYTES", 997)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert fast_triples(path) == read_triples(path)


def reference_graph(folder: Path, unseen: str) -> tuple[list[str], list[str], dict[str, list[tuple[str, str, str]]], dict]:
    """The former load_graph, by hand: vocabulary sorted over train (or all splits), valid/test
    deduplicated in order of first occurrence, unseen triples dropped."""
    labelled = {split: read_triples(folder / f"{split}.txt") for split in SPLITS}
    for split in ("valid", "test"):
        labelled[split] = list(dict.fromkeys(labelled[split]))
    vocabulary = SPLITS if unseen == "keep" else ("train",)
    entities = sorted({e for s in vocabulary for h, _, t in labelled[s] for e in (h, t)})
    relations = sorted({r for s in vocabulary for _, r, _ in labelled[s]})
    dropped = {}
    for split in ("valid", "test"):
        kept = [x for x in labelled[split] if x[0] in entities and x[2] in entities and x[1] in relations]
        if len(kept) < len(labelled[split]):
            dropped[split] = len(labelled[split]) - len(kept)
        labelled[split] = kept
    return entities, relations, labelled, dropped


@pytest.mark.parametrize("unseen", ["drop", "keep"])
@pytest.mark.parametrize("seed", [0, 1])
def test_load_graph_equals_the_brute_force_reference(tmp_path: Path, unseen: str, seed: int) -> None:
    rng = random.Random(seed)
    names = [f"e{i}" for i in range(30)] + ["Ä", "b c", "z"]
    for split, n in (("train", 300), ("valid", 40), ("test", 40)):
        pool = names if split == "train" else names + ["new1", "new2"]
        rows = ["\t".join((rng.choice(pool), f"r{rng.randrange(6 if split == 'train' else 7)}", rng.choice(pool)))
                for _ in range(n)]
        write(tmp_path / f"{split}.txt", "\n".join(rows) + "\n")
    graph = load_graph(tmp_path, unseen=unseen)
    entities, relations, labelled, dropped = reference_graph(tmp_path, unseen)
    assert graph.entities == entities and graph.relations == relations and graph.dropped == dropped
    for split in SPLITS:
        back = [(graph.entities[h], graph.relations[r], graph.entities[t]) for h, r, t in graph.triples[split].tolist()]
        assert back == labelled[split]
        assert graph.triples[split].dtype == torch.long


def test_integer_id_inputs_keep_their_ids(tmp_path: Path) -> None:
    train = "".join(f"{h}\t{r}\t{t}\n" for h, r, t in [(0, 1, 10), (2, 0, 3), (4, 1, 5), (6, 0, 7), (8, 1, 9), (10, 0, 1)])
    write(tmp_path / "train.txt", train)
    write(tmp_path / "valid.txt", "3\t1\t2\n")
    write(tmp_path / "test.txt", "9\t0\t10\n")
    graph = load_graph(tmp_path)
    assert graph.entities == [str(i) for i in range(11)] and graph.relations == ["0", "1"]
    assert graph.triples["train"].tolist()[0] == [0, 1, 10] and graph.triples["test"].tolist() == [[9, 0, 10]]
    # Not exactly 0..N-1 (a gap, a leading zero): ids follow sorted label order as for any labels.
    write(tmp_path / "train.txt", train.replace("\t5\n", "\t11\n"))
    assert load_graph(tmp_path).entities[:3] == ["0", "1", "10"]
    write(tmp_path / "train.txt", train.replace("\t5\n", "\t05\n"))
    assert load_graph(tmp_path).entities[:3] == ["0", "05", "1"]
