"""Every TSV the project writes reads back to the same labels with csv, numpy and pandas (escaped labels)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from lightning_kge.checkpoints import load_module
from lightning_kge.data.info import GraphInfo
from lightning_kge.escaping import TSV, escape, read_tsv, tsv_line, unescape
from lightning_kge.export import export_embeddings
from lightning_kge.models import RotatE
from lightning_kge.module import KGEModule
from lightning_kge.predict import print_rows
from odd_labels import ENTITIES, RELATIONS, odd_run
from runs import REPO

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated", "ignore:.*does not have many workers")

HARD = ["#x", "NULL", "nan", '"quoted"', "'single'", "a\tb", "line\nbreak", "cr\rhere", "a\u2028b", "a\u2029b",
        "nel\u0085x", "back\\slash", "\\t literally", "ends with \\", "New York", "café", "1.50", "true", "$\\frac{$",
        "${oc.env:HOME}", "\ufeffbom", "x\x00nul"]
"""Labels that some reader would misread if written raw (``"`` quoting, ``#`` comments, NA words, line breaks)."""

NUMPY = dict(dtype=str, delimiter="\t", comments=None, quotechar=None, encoding="utf-8", ndmin=2)
"""``numpy.loadtxt`` arguments of the README, so that fields are read verbatim."""

PANDAS = dict(sep="\t", header=None, quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False, na_filter=False,
              encoding="utf-8")
"""``pandas.read_csv`` arguments of the README, so that fields are read verbatim."""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return odd_run(tmp_path_factory.getbasetemp())


def label_file(tmp_path: Path, labels: list[str]) -> Path:
    path = tmp_path / "labels.tsv"
    path.write_text("".join(tsv_line([i, label]) for i, label in enumerate(labels)), encoding="utf-8")
    return path


def test_every_written_line_is_one_row_for_every_line_splitter(tmp_path: Path) -> None:
    text = label_file(tmp_path, HARD).read_text(encoding="utf-8")
    assert len(text.splitlines()) == len(HARD) == text.count("\n")  # str.splitlines also splits at U+2028, U+0085
    assert all(line.count("\t") == 1 for line in text.splitlines())


def test_escaped_labels_round_trip_through_csv_numpy_and_pandas(tmp_path: Path) -> None:
    path = label_file(tmp_path, HARD)
    with open(path, encoding="utf-8", newline="") as handle:
        assert [unescape(label) for _, label in csv.reader(handle, TSV)] == HARD
    assert [unescape(label) for label in np.loadtxt(path, **NUMPY)[:, 1]] == HARD
    assert [label for _, label in read_tsv(path)] == HARD
    pandas = pytest.importorskip("pandas", reason="pandas reads the files in the README's recipe; not a dependency")
    frame = pandas.read_csv(path, **PANDAS)
    assert [unescape(label) for label in frame[1]] == HARD
    assert list(frame[0]) == [str(i) for i in range(len(HARD))]


def test_labels_without_special_characters_are_written_as_they_are() -> None:
    for label in ["#x", "NULL", "nan", '"quoted"', "'single'", "New York", "café", "1.50", "true", "${oc.env:HOME}"]:
        assert escape(label) == label
    assert [escape(label) for label in ["a\tb", "line\nbreak", "a\u2028b", "back\\slash", "x\x00y"]] == \
        ["a\\tb", "line\\nbreak", "a\\u2028b", "back\\\\slash", "x\\u0000y"]


def test_export_writes_every_label_of_a_graph_as_one_row_that_reads_back(tmp_path: Path) -> None:
    graph = GraphInfo(tuple(HARD), ("r\tone", "r\u2028two"), (0, 0))
    module = KGEModule(RotatE(num_entities=len(HARD), num_relations=2, dim=4), graph=graph)
    export_embeddings(module, tmp_path / "out", projector=True)
    assert read_tsv(tmp_path / "out" / "entities.tsv") == [[str(i), label] for i, label in enumerate(HARD)]
    assert [label for _, label in read_tsv(tmp_path / "out" / "relations.tsv")] == list(graph.relations)
    metadata = tmp_path / "out" / "projector" / "metadata.tsv"
    assert [row for [row] in read_tsv(metadata)] == HARD
    assert len(metadata.read_text(encoding="utf-8").splitlines()) == len(HARD)


def test_a_trained_runs_export_report_and_predict_tables_read_back_to_its_labels(run: Path, tmp_path: Path,
                                                                                   capsys) -> None:
    ckpt = run / "checkpoints" / "last.ckpt"
    module = load_module(ckpt)
    graph = module.graph
    assert set(ENTITIES.values()) <= set(graph.entities) and set(RELATIONS.values()) <= set(graph.relations)
    export_embeddings(module, tmp_path / "out")
    assert [label for _, label in read_tsv(tmp_path / "out" / "entities.tsv")] == list(graph.entities)
    assert [label for _, label in read_tsv(tmp_path / "out" / "relations.tsv")] == list(graph.relations)
    header, *rows = read_tsv(run / "per_relation.tsv")
    assert header[0] == "relation" and rows and {row[0] for row in rows} <= set(graph.relations)
    capsys.readouterr()
    answers = [{"rank": i + 1, "tail": label, "score": -float(i)} for i, label in enumerate(graph.entities)]
    print_rows(answers, ["rank", "tail", "score"])
    printed = capsys.readouterr().out
    table = tmp_path / "printed.tsv"
    table.write_text(printed, encoding="utf-8")
    assert [row[1] for row in read_tsv(table)[1:]] == list(graph.entities)
    assert [unescape(label) for label in np.loadtxt(table, **NUMPY, skiprows=1)[:, 1]] == list(graph.entities)


def test_the_readme_gives_the_reader_arguments_that_the_tests_use() -> None:
    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    assert 'np.loadtxt(path, dtype=str, delimiter="\\t", comments=None, quotechar=None, encoding="utf-8", ndmin=2)' \
        in readme
    assert ('pd.read_csv(path, sep="\\t", header=None, quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False, '
            'na_filter=False, encoding="utf-8")') in readme
    assert "csv.reader(handle, TSV)" in readme and "unescape" in readme
