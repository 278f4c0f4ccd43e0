"""Reading triple files, one vocabulary over splits, the triple index."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_kge.data.datasets import resolve_dataset
from lightning_kge.data.graph import load_graph
from lightning_kge.data.index import TripleIndex
from lightning_kge.data.tsv import TripleFileError, read_triples

TRAIN = "a\tlikes\tb\nb\tlikes\tc\nc\thates\ta\n"


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_bytes(text.encode("utf-8"))
    return path


def make_folder(root: Path, train: str = TRAIN, valid: str = "a\tlikes\tc\n", test: str = "b\thates\tc\n") -> Path:
    for split, text in (("train", train), ("valid", valid), ("test", test)):
        write(root / f"{split}.txt", text)
    return root


# --- read_triples: errors name file, line and problem ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("a\tr\tb\na\tr\n", 2, "expected 3 tab-separated columns, found 2"),
        ("a\tr\tb\n\na\tr\tb\tc\n", 3, "found 4"),
        ("a\tr\tb\na r b\n", 2, "found 1"),
        ("a\tr\tb\na\t\tb\n", 2, "blank relation"),
        ("a\tr\tb\nx\tr\tb\n \tr\tb\n", 3, "blank head"),
        ("a\tr\t  \n", 1, "blank tail"),
    ],
)
def test_malformed_line_error_names_file_line_and_problem(tmp_path: Path, text: str, line: int, problem: str) -> None:
    path = write(tmp_path / "train.txt", text)
    with pytest.raises(TripleFileError) as caught:
        read_triples(path)
    message = str(caught.value)
    assert f"{path}:{line}:" in message
    assert problem in message
    assert caught.value.line == line


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_empty_file_error_names_file_and_problem(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "valid.txt", text)
    with pytest.raises(TripleFileError, match="no triples") as caught:
        read_triples(path)
    assert str(path) in str(caught.value)


def test_missing_file_error_names_file(tmp_path: Path) -> None:
    with pytest.raises(TripleFileError, match="not found") as caught:
        read_triples(tmp_path / "absent.txt")
    assert str(tmp_path / "absent.txt") in str(caught.value)


def test_invalid_utf8_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "test.txt", b"a\tr\tb\nc\tr\td\n\xff\xfe\tr\tb\ne\tr\tf\n")
    with pytest.raises(TripleFileError, match="UTF-8") as caught:
        read_triples(path)
    assert f"{path}:3:" in str(caught.value)


def test_crlf_line_ends_are_accepted_and_stripped(tmp_path: Path) -> None:
    lf = read_triples(write(tmp_path / "lf.txt", "a\tr\tb\nc\ts\td\n"))
    crlf = read_triples(write(tmp_path / "crlf.txt", "a\tr\tb\r\nc\ts\td\r\n"))
    assert crlf == lf == [("a", "r", "b"), ("c", "s", "d")]


def test_duplicates_are_kept_in_file_order(tmp_path: Path) -> None:
    text = "a\tr\tb\nc\ts\td\na\tr\tb\n"
    assert read_triples(write(tmp_path / "t.txt", text)) == [("a", "r", "b"), ("c", "s", "d"), ("a", "r", "b")]


def test_utf8_labels_are_read_verbatim(tmp_path: Path) -> None:
    assert read_triples(write(tmp_path / "t.txt", "Zürich\tnear\t東京\n")) == [("Zürich", "near", "東京")]


# --- load_graph ------------------------------------------------------------------------------------


def test_one_vocabulary_across_splits_with_ids_in_sorted_label_order(tmp_path: Path) -> None:
    train = "zeta\tr2\talpha\nmu\tr1\tzeta\nalpha\tr0\tbeta\nbeta\tr2\tmu\n"
    folder = make_folder(tmp_path, train=train, valid="alpha\tr1\tmu\n", test="mu\tr0\talpha\nzeta\tr2\tbeta\n")
    graph = load_graph(folder)
    assert graph.entity_to_id == {"alpha": 0, "beta": 1, "mu": 2, "zeta": 3}
    assert graph.relation_to_id == {"r0": 0, "r1": 1, "r2": 2}
    id_to_entity = {i: e for e, i in graph.entity_to_id.items()}
    id_to_relation = {i: r for r, i in graph.relation_to_id.items()}
    for split in ("train", "valid", "test"):
        expected = read_triples(folder / f"{split}.txt")
        tensor = graph.triples[split]
        assert tensor.dtype == torch.long and tensor.shape == (len(expected), 3)
        back = [(id_to_entity[h], id_to_relation[r], id_to_entity[t]) for h, r, t in tensor.tolist()]
        assert back == expected


def test_load_graph_keeps_duplicate_triples(tmp_path: Path) -> None:
    graph = load_graph(make_folder(tmp_path, train=TRAIN + "a\tlikes\tb\n", test="b\thates\tc\nb\thates\tc\n"))
    e, r = graph.entity_to_id, graph.relation_to_id
    assert len(graph.triples["train"]) == 4
    assert graph.triples["train"][0].tolist() == graph.triples["train"][3].tolist() == [e["a"], r["likes"], e["b"]]
    assert graph.triples["test"].tolist() == [[e["b"], r["hates"], e["c"]]] * 2


def test_ids_do_not_depend_on_line_order(tmp_path: Path) -> None:
    lines = TRAIN.splitlines(keepends=True)
    one = load_graph(make_folder(tmp_path / "one", train="".join(lines)))
    two = load_graph(make_folder(tmp_path / "two", train="".join(reversed(lines))))
    assert one.entity_to_id == two.entity_to_id and one.relation_to_id == two.relation_to_id


def test_load_graph_error_names_the_split_file(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, test="a\tlikes\tb\n\nb\tlikes\n")
    with pytest.raises(TripleFileError) as caught:
        load_graph(folder)
    assert f"{folder / 'test.txt'}:3:" in str(caught.value)


@pytest.mark.parametrize(
    ("split", "text", "line", "part"),
    [
        ("valid", "a\tlikes\tc\n\n\nb\tlikes\tnewcomer\n", 4, "tail entity 'newcomer'"),
        ("test", "stranger\tlikes\tc\n", 1, "head entity 'stranger'"),
        ("test", "a\tlikes\tc\na\tloves\tb\n", 2, "relation 'loves'"),
    ],
)
def test_unseen_label_error_names_file_line_and_label(tmp_path: Path, split: str, text: str, line: int, part: str) -> None:
    folder = make_folder(tmp_path, **{split: text})
    with pytest.raises(TripleFileError) as caught:
        load_graph(folder, unseen="error")
    message = str(caught.value)
    assert f"{folder / f'{split}.txt'}:{line}:" in message
    assert part in message


def test_unseen_drop_removes_and_counts_such_triples(tmp_path: Path) -> None:
    valid = "a\tlikes\tc\nnew\tlikes\ta\nb\thates\tc\n"
    test = "a\tloves\tb\nb\tlikes\tnew2\nc\tlikes\tb\n"
    graph = load_graph(make_folder(tmp_path, valid=valid, test=test), unseen="drop")
    assert graph.dropped == {"valid": 1, "test": 2}
    assert set(graph.entity_to_id) == {"a", "b", "c"}
    assert set(graph.relation_to_id) == {"hates", "likes"}
    e, r = graph.entity_to_id, graph.relation_to_id
    assert graph.triples["valid"].tolist() == [[e["a"], r["likes"], e["c"]], [e["b"], r["hates"], e["c"]]]
    assert graph.triples["test"].tolist() == [[e["c"], r["likes"], e["b"]]]


def test_unseen_keep_keeps_triples_with_a_vocabulary_over_all_splits(tmp_path: Path) -> None:
    valid = "a\tlikes\tc\nnew\tlikes\ta\n"
    test = "a\tloves\tb\nb\tlikes\tnew2\n"
    graph = load_graph(make_folder(tmp_path, valid=valid, test=test), unseen="keep")
    assert graph.entity_to_id == {"a": 0, "b": 1, "c": 2, "new": 3, "new2": 4}
    assert graph.relation_to_id == {"hates": 0, "likes": 1, "loves": 2}
    assert graph.triples["valid"].tolist() == [[0, 1, 2], [3, 1, 0]]
    assert graph.triples["test"].tolist() == [[0, 2, 1], [1, 1, 4]]
    assert not graph.dropped


def test_unknown_unseen_policy_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unseen"):
        load_graph(make_folder(tmp_path), unseen="ignore")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "entities", "relations", "train", "valid", "test"),
    [
        ("nations", 14, 55, 1592, 199, 201),
        ("kinships", 104, 25, 8544, 1068, 1074),
        ("umls", 135, 46, 5216, 652, 661),
    ],
)
def test_bundled_datasets_have_the_published_counts(
    name: str, entities: int, relations: int, train: int, valid: int, test: int
) -> None:
    graph = load_graph(resolve_dataset(name))
    assert (graph.num_entities, graph.num_relations) == (entities, relations)
    sizes = tuple(len(graph.triples[s]) for s in ("train", "valid", "test"))
    assert sizes == (train, valid, test)


# --- TripleIndex -----------------------------------------------------------------------------------


def test_triple_index_agrees_with_python_sets(random_triples) -> None:
    E, R = 9, 4
    triples = random_triples(E, R, 150, seed=1)  # dense, with duplicates
    index = TripleIndex(triples, E, R)
    known = {tuple(x) for x in triples.tolist()}
    tails: dict[tuple[int, int], set[int]] = {}
    heads: dict[tuple[int, int], set[int]] = {}
    for h, r, t in known:
        tails.setdefault((h, r), set()).add(t)
        heads.setdefault((r, t), set()).add(h)

    grid = torch.cartesian_prod(torch.arange(E), torch.arange(R), torch.arange(E))
    h, r, t = grid.unbind(1)
    contains = index.contains(h, r, t).tolist()
    assert contains == [tuple(x) in known for x in grid.tolist()]
    assert any(contains) and not all(contains)

    queries = torch.cartesian_prod(torch.arange(E), torch.arange(R))
    rows, ents = index.true_tails(queries[:, 0], queries[:, 1])
    for b, (qh, qr) in enumerate(queries.tolist()):
        got = ents[rows == b].tolist()
        assert sorted(got) == sorted(tails.get((qh, qr), set()))
    rows, ents = index.true_heads(queries[:, 1], queries[:, 0])
    for b, (qt, qr) in enumerate(queries.tolist()):
        got = ents[rows == b].tolist()
        assert sorted(got) == sorted(heads.get((qr, qt), set()))


def test_triple_index_contains_broadcasts(random_triples) -> None:
    E, R = 7, 3
    triples = random_triples(E, R, 40, seed=2)
    known = {tuple(x) for x in triples.tolist()}
    index = TripleIndex(triples, E, R)
    h, r = triples[:5, 0:1], triples[:5, 1:2]
    out = index.contains(h, r, torch.arange(E)[None, :])
    assert out.shape == (5, E)
    for b in range(5):
        for t in range(E):
            assert bool(out[b, t]) == ((int(h[b]), int(r[b]), t) in known)


# --- UnpaddedDistributedSampler --------------------------------------------------------------------
