"""Reading triple files, one vocabulary over splits, the triple index."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
import unicodedata
import warnings
from pathlib import Path

import pytest
import torch

from lightning_kge.data.datasets import resolve_dataset
from lightning_kge.data.graph import describe_duplicates, load_graph, read_entity_ids
from lightning_kge.data.index import TripleIndex
from lightning_kge.data.tsv import TripleFileError, normalize_label, read_labels, read_triples
from lightning_kge.errors import MAX_LABEL, ArgumentError, UserError

TRAIN = "a\tlikes\tb\nb\tlikes\tc\nc\thates\ta\n"
CAFE_NFC = "caf\u00e9"
CAFE_NFD = "cafe\u0301"


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


def refusal(path: Path) -> TripleFileError:
    """The error ``read_triples(path)`` raises."""
    with pytest.raises(TripleFileError) as caught:
        read_triples(path)
    return caught.value


def assert_one_line_message(error: TripleFileError, where: str) -> None:
    """``<what> (<where>): <fix>``, with a non-empty fix, on one line."""
    assert error.where == where
    assert str(error) == f"{error.what} ({where}): {error.fix}"
    assert error.what and error.fix and "\n" not in str(error)


# --- read_triples: errors name file, line and problem ---------------------------------------------


def test_triple_file_error_is_a_user_error_and_a_value_error(tmp_path: Path) -> None:
    error = refusal(write(tmp_path / "train.txt", "a\tr\n"))
    assert isinstance(error, UserError) and isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))  # crosses process boundaries under DDP spawn
    assert type(copy) is TripleFileError and str(copy) == str(error) and copy.line == error.line


@pytest.mark.parametrize(
    ("text", "line", "problem", "fix"),
    [
        ("a\tr\tb\na\tr\n", 2, "expected 3 tab-separated columns, found 2", "one tab each"),
        ("a\tr\tb\n\na\tr\tb\tc\n", 3, "found 4", "one tab each"),
        ("a\tr\tb\na r b\n", 2, "found 1", "one tab each"),
        ("a\tr\tb\na\t\tb\n", 2, "blank relation label", "a head, a relation and a tail"),
        ("a\tr\tb\nx\tr\tb\n \tr\tb\n", 3, "blank head label", "a head, a relation and a tail"),
        ("a\tr\t  \n", 1, "blank tail label", "a head, a relation and a tail"),
    ],
)
def test_malformed_line_error_names_file_line_problem_and_fix(
    tmp_path: Path, text: str, line: int, problem: str, fix: str
) -> None:
    error = refusal(write(tmp_path / "train.txt", text))
    assert_one_line_message(error, f"{tmp_path / 'train.txt'}:{line}")
    assert problem in error.what and fix in error.fix
    assert error.line == line


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_empty_file_error_names_file_and_problem(tmp_path: Path, text: str) -> None:
    error = refusal(write(tmp_path / "valid.txt", text))
    assert_one_line_message(error, str(tmp_path / "valid.txt"))
    assert error.what == "file holds no triples"


def test_missing_file_error_names_file(tmp_path: Path) -> None:
    error = refusal(tmp_path / "absent.txt")
    assert_one_line_message(error, str(tmp_path / "absent.txt"))
    assert error.what == "file not found"


def test_a_folder_in_place_of_a_file_is_reported_as_a_directory(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "graph")
    (folder / "test.txt").unlink()
    (folder / "test.txt").mkdir()
    with pytest.raises(TripleFileError) as caught:
        load_graph(folder)
    assert_one_line_message(caught.value, str(folder / "test.txt"))
    assert "is a directory" in caught.value.what and "not found" not in str(caught.value)


def test_invalid_utf8_error_names_file_and_line(tmp_path: Path) -> None:
    error = refusal(write(tmp_path / "test.txt", b"a\tr\tb\nc\tr\td\n\xff\xfe\tr\tb\ne\tr\tf\n"))
    assert_one_line_message(error, f"{tmp_path / 'test.txt'}:3")
    assert "UTF-8" in error.what and "UTF-8" in error.fix


def test_crlf_line_ends_are_accepted_and_stripped(tmp_path: Path) -> None:
    lf = read_triples(write(tmp_path / "lf.txt", "a\tr\tb\nc\ts\td\n"))
    crlf = read_triples(write(tmp_path / "crlf.txt", "a\tr\tb\r\nc\ts\td\r\n"))
    assert crlf == lf == [("a", "r", "b"), ("c", "s", "d")]


def test_duplicates_are_kept_in_file_order(tmp_path: Path) -> None:
    text = "a\tr\tb\nc\ts\td\na\tr\tb\n"
    assert read_triples(write(tmp_path / "t.txt", text)) == [("a", "r", "b"), ("c", "s", "d"), ("a", "r", "b")]


def test_utf8_labels_are_read_verbatim(tmp_path: Path) -> None:
    assert read_triples(write(tmp_path / "t.txt", "Zürich\tnear\t東京\n")) == [("Zürich", "near", "東京")]


# --- read_triples: input that would silently change meaning ---------------------------------------


def test_a_byte_order_mark_at_the_start_is_stripped(tmp_path: Path) -> None:
    plain = read_triples(write(tmp_path / "plain.txt", TRAIN))
    marked = read_triples(write(tmp_path / "bom.txt", b"\xef\xbb\xbf" + TRAIN.encode()))
    assert marked == plain
    assert load_graph(make_folder(tmp_path / "g", train="\ufeff" + TRAIN)).entity_to_id == {"a": 0, "b": 1, "c": 2}


def test_a_byte_order_mark_inside_a_file_is_refused(tmp_path: Path) -> None:
    error = refusal(write(tmp_path / "t.txt", "a\tr\tb\n\ufeffc\tr\ta\n"))
    assert_one_line_message(error, f"{tmp_path / 't.txt'}:2")
    assert "U+FEFF" in error.what


def test_nfc_and_nfd_spellings_are_one_entity_with_a_warning_giving_the_count(tmp_path: Path) -> None:
    assert unicodedata.normalize("NFC", CAFE_NFD) == CAFE_NFC != CAFE_NFD
    train = f"{CAFE_NFC}\tnear\tbar\nbar\tnear\t{CAFE_NFD}\n{CAFE_NFD}\tnear\tbar\nbar\tserves\tr\u0069\u0301z\n"
    folder = make_folder(tmp_path, train=train, valid=f"bar\tnear\t{CAFE_NFC}\n", test=f"{CAFE_NFD}\tnear\tbar\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graph = load_graph(folder)
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2
    assert messages[0].startswith(f"{folder / 'test.txt'}: 1 label changed to Unicode NFC")
    assert messages[1].startswith(f"{folder / 'train.txt'}: 2 labels changed to Unicode NFC")
    assert set(graph.entity_to_id) == {"bar", CAFE_NFC, "r\u00edz"}
    assert graph.duplicates == {"train": 1}  # café near bar, spelt twice


def test_normalize_label_matches_labels_read_from_files(tmp_path: Path) -> None:
    with pytest.warns(UserWarning):
        graph = load_graph(make_folder(tmp_path, train=f"{CAFE_NFD}\tnear\tbar\n", valid="bar\tnear\tbar\n",
                                       test="bar\tnear\tbar\n"))
    assert normalize_label(CAFE_NFD) in graph.entity_to_id
    assert normalize_label(CAFE_NFC) in graph.entity_to_id
    assert CAFE_NFD not in graph.entity_to_id


def test_labels_already_in_nfc_give_no_warning(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_graph(make_folder(tmp_path, train=f"{CAFE_NFC}\tnear\tbar\n", valid="bar\tnear\tbar\n",
                               test="bar\tnear\tbar\n"))


@pytest.mark.parametrize(
    ("line", "part", "label"),
    [
        ("netherlands \tlocatedin\teurope", "head", "netherlands "),
        ("netherlands\t locatedin\teurope", "relation", " locatedin"),
        ("netherlands\tlocatedin\teurope\u00a0", "tail", "europe\u00a0"),
        ("netherlands\tlocatedin\t\u3000europe", "tail", "\u3000europe"),
    ],
)
def test_a_label_with_surrounding_whitespace_is_refused_naming_file_line_and_label(
    tmp_path: Path, line: str, part: str, label: str
) -> None:
    error = refusal(write(tmp_path / "train.txt", f"a\tr\tb\n{line}\n"))
    assert_one_line_message(error, f"{tmp_path / 'train.txt'}:2")
    assert f"{part} label {label!r}" in error.what and "whitespace" in error.what


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x1b", "\r", "\x7f", "\x85", "\x9f"])
def test_a_label_with_a_control_character_is_refused_naming_file_line_and_label(tmp_path: Path, char: str) -> None:
    label = f"ne{char}therlands"
    error = refusal(write(tmp_path / "train.txt", f"a\tr\tb\nc\tr\tb\n{label}\tr\tb\n"))
    assert_one_line_message(error, f"{tmp_path / 'train.txt'}:3")
    assert f"head label {label!r}" in error.what
    assert f"U+{ord(char):04X}" in error.what


def test_every_control_character_but_the_tab_is_refused(tmp_path: Path) -> None:
    controls = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Cc" and chr(c) not in "\t\n"]
    for char in controls:
        path = write(tmp_path / "t.txt", f"a\tr{char}\tb\n".encode("utf-8"))
        with pytest.raises(TripleFileError, match="control character"):
            read_triples(path)


@pytest.mark.parametrize(
    "header",
    ["head\trelation\ttail", "Head\tRelation\tTail", "subject\tpredicate\tobject", "h\tr\tt",
     "SOURCE\trelation\ttarget", "# head\trelation\ttail"],
)
def test_a_header_line_is_refused_with_the_fix_to_remove_it(tmp_path: Path, header: str) -> None:
    error = refusal(write(tmp_path / "train.txt", f"\ufeff{header}\r\na\tr\tb\n"))
    assert_one_line_message(error, f"{tmp_path / 'train.txt'}:1")
    assert "header" in error.what and error.fix.startswith("remove the header line")


def test_header_words_after_the_first_line_are_ordinary_labels(tmp_path: Path) -> None:
    triples = read_triples(write(tmp_path / "t.txt", "a\tr\tb\nhead\trelation\ttail\n"))
    assert triples[1] == ("head", "relation", "tail")


def test_long_labels_are_shortened_in_messages(tmp_path: Path) -> None:
    long = "x" * 5000
    error = refusal(write(tmp_path / "t.txt", f"a\tr\tb\n{long} \tr\tb\n"))
    assert len(str(error)) < 2 * MAX_LABEL + 400
    assert "5001 characters" in error.what
    folder = make_folder(tmp_path / "g", test=f"a\tlikes\t{long}\n")
    with pytest.raises(TripleFileError) as caught:
        load_graph(folder)
    assert len(str(caught.value)) < 2 * MAX_LABEL + 400 and "5000 characters" in caught.value.what


def test_read_labels_applies_the_same_checks(tmp_path: Path) -> None:
    assert read_labels(write(tmp_path / "r.list", b"\xef\xbb\xbfeurope\r\nasia\n\n")) == ["europe", "asia"]
    with pytest.raises(TripleFileError) as caught:
        read_labels(write(tmp_path / "bad.list", "europe\nasia \n"))
    assert_one_line_message(caught.value, f"{tmp_path / 'bad.list'}:2")


def test_entity_ids_of_a_label_list_follow_the_graph_and_name_an_unknown_label(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    graph = load_graph(folder)
    listed = write(folder / "regions.list", "c\na\n")
    assert read_entity_ids(listed, graph.entity_to_id).tolist() == [graph.entity_to_id["c"], graph.entity_to_id["a"]]
    write(listed, "c\n\nzeta\n")
    with pytest.raises(TripleFileError) as caught:
        read_entity_ids(listed, graph.entity_to_id)
    assert_one_line_message(caught.value, f"{listed}:3")
    assert "'zeta'" in caught.value.what


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


def test_duplicates_are_counted_per_split_and_ranked_once_in_valid_and_test(tmp_path: Path) -> None:
    train = TRAIN + "a\tlikes\tb\na\tlikes\tb\n"
    valid = "a\tlikes\tc\nb\thates\tc\na\tlikes\tc\n"
    test = "b\thates\tc\nc\tlikes\tb\nb\thates\tc\nc\tlikes\tb\nb\thates\tc\n"
    graph = load_graph(make_folder(tmp_path, train=train, valid=valid, test=test))
    assert graph.duplicates == {"train": 2, "valid": 1, "test": 3}
    id_to_entity = {i: e for e, i in graph.entity_to_id.items()}
    id_to_relation = {i: r for r, i in graph.relation_to_id.items()}

    def labels(split: str) -> list[tuple[str, str, str]]:
        return [(id_to_entity[h], id_to_relation[r], id_to_entity[t]) for h, r, t in graph.triples[split].tolist()]

    def first_occurrences(text: str) -> list[tuple[str, ...]]:  # brute force
        out: list[tuple[str, ...]] = []
        for line in text.splitlines():
            if tuple(line.split("\t")) not in out:
                out.append(tuple(line.split("\t")))
        return out

    assert labels("train") == [tuple(line.split("\t")) for line in train.splitlines()]  # every line kept
    assert labels("valid") == first_occurrences(valid)
    assert labels("test") == first_occurrences(test)


def test_a_graph_without_duplicates_reports_none(tmp_path: Path) -> None:
    assert load_graph(make_folder(tmp_path)).duplicates == {}


def test_describe_duplicates_says_what_was_done_per_split() -> None:
    train, test = describe_duplicates({"train": 1, "test": 3})
    assert "train.txt" in train and "1 triple line " in train and "kept" in train
    assert "test.txt" in test and "3 triple lines" in test and "ranked once" in test
    assert describe_duplicates({}) == []


def test_ids_do_not_depend_on_line_order(tmp_path: Path) -> None:
    lines = TRAIN.splitlines(keepends=True)
    one = load_graph(make_folder(tmp_path / "one", train="".join(lines)))
    two = load_graph(make_folder(tmp_path / "two", train="".join(reversed(lines))))
    assert one.entity_to_id == two.entity_to_id and one.relation_to_id == two.relation_to_id


def test_load_graph_error_names_the_split_file(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, test="a\tlikes\tb\n\nb\tlikes\n")
    with pytest.raises(TripleFileError) as caught:
        load_graph(folder)
    assert_one_line_message(caught.value, f"{folder / 'test.txt'}:3")


@pytest.mark.parametrize("make", ["missing", "file"])
def test_a_missing_dataset_folder_is_a_user_error(tmp_path: Path, make: str) -> None:
    folder = tmp_path / "graph"
    if make == "file":
        write(folder, TRAIN)
    with pytest.raises(TripleFileError) as caught:
        load_graph(folder)
    assert_one_line_message(caught.value, str(folder))
    assert "train.txt, valid.txt and test.txt" in caught.value.fix


@pytest.mark.parametrize(
    ("split", "text", "line", "part"),
    [
        ("valid", "a\tlikes\tc\n\n\nb\tlikes\tnewcomer\n", 4, "tail entity 'newcomer'"),
        ("test", "stranger\tlikes\tc\n", 1, "head entity 'stranger'"),
        ("test", "a\tlikes\tc\na\tloves\tb\n", 2, "relation 'loves'"),
        ("test", "a\tlikes\tc\na\tlikes\tc\nb\thates\ta\na\tloves\tb\n", 4, "relation 'loves'"),  # after a duplicate
    ],
)
def test_unseen_label_error_names_file_line_and_label(tmp_path: Path, split: str, text: str, line: int, part: str) -> None:
    folder = make_folder(tmp_path, **{split: text})
    with pytest.raises(TripleFileError) as caught:
        load_graph(folder, unseen="error")
    assert_one_line_message(caught.value, f"{folder / f'{split}.txt'}:{line}")
    assert part in caught.value.what
    assert "data.unseen=drop" in caught.value.fix and "data.unseen=keep" in caught.value.fix


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


def test_unknown_unseen_policy_is_an_argument_error(tmp_path: Path) -> None:
    with pytest.raises(ArgumentError, match="unseen='ignore'"):
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
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no label changed, no duplicate
        graph = load_graph(resolve_dataset(name))
    assert (graph.num_entities, graph.num_relations) == (entities, relations)
    sizes = tuple(len(graph.triples[s]) for s in ("train", "valid", "test"))
    assert sizes == (train, valid, test)
    assert graph.duplicates == {}


def test_the_tiny_countries_fixture_keeps_its_duplicate_train_line(countries_tiny: Path) -> None:
    graph = load_graph(countries_tiny)
    assert graph.duplicates == {"train": 1}
    assert len(graph.triples["train"]) == 90
    regions = read_entity_ids(countries_tiny / "regions.list", graph.entity_to_id)
    assert len(regions) == 5


@pytest.mark.parametrize(("name", "key"), [("wn18", "data.name"), ("nations", "data.url")])
def test_dataset_names_and_urls_are_checked_naming_the_config_key(name: str, key: str) -> None:
    url = "http://127.0.0.1:9" if key == "data.url" else None
    with pytest.raises(ArgumentError) as caught:
        resolve_dataset(name, url)
    assert caught.value.where == f"config key {key}"


# --- through the real entry point ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "text", "line"),
    [("train.txt", "head\trelation\ttail\n", 1), ("test.txt", "ada\tknows\tcai\nada\tknows\x00\tben\n", 2)],
)
def test_bad_input_stops_the_entry_point_naming_file_and_line(
    tmp_path: Path, tiny_kg: Path, file: str, text: str, line: int
) -> None:
    folder = tmp_path / "graph"
    shutil.copytree(tiny_kg, folder)
    path = folder / file
    write(path, text + path.read_text(encoding="utf-8"))
    result = subprocess.run(
        [sys.executable, "-m", "lightning_kge.train", "data=tsv", f"data.path={folder}", "trainer=cpu",
         "trainer.max_steps=1", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0
    assert f"({path}:{line}):" in result.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()



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
