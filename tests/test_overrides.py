"""Labels on the command line: taken as typed, quoted for Hydra where its grammar reads them specially, and
a label Hydra misreads or cannot read stops with one line that says so and how to quote it."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser

from lightning_kge.configs import config_dir
from lightning_kge.errors import UserError
from lightning_kge.overrides import check_overrides, hydra_quoted
from lightning_kge.predict import LABEL_KEYS, cfg_text, predict
from lightning_kge.escaping import read_tsv
from odd_labels import ENTITIES, RELATIONS, odd_run
from runs import REPO, entry, one_line_error

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated", "ignore:.*does not have many workers")

LABELS = ["#rel", "NULL", "null", "1.50", "true", "a=b", "a,b", "[a,b]", "café", "it's", "a\\b", "ends\\",
          "$\\frac{$", "${oc.env:HOME}", "a${b", '"quoted"', "New York", "x:y", "(x)", "{a}"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return odd_run(tmp_path_factory.getbasetemp())


def predict_config(*overrides: str):
    """The predict config of ``overrides``, with Hydra's record of them (as on a command line)."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="predict", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture(autouse=True)
def no_hydra_config():
    yield
    HydraConfig.instance().cfg = None


@pytest.mark.parametrize("label", LABELS)
def test_the_suggested_quoting_gives_hydra_the_label_as_typed(label: str) -> None:
    [argument] = shlex.split(hydra_quoted("head", label))  # as a POSIX shell passes it
    [override] = OverridesParser.create().parse_overrides([argument])
    assert override.value() == label
    check_overrides([argument], LABEL_KEYS)  # not refused


@pytest.mark.parametrize(("argument", "said"), [
    ("relation=#rel", "Hydra's override grammar cannot read relation=#rel"),
    ("head=café", "Hydra's override grammar cannot read head=café"),
    ("tail=a=b", "Hydra's override grammar cannot read tail=a=b"),
    ("head=a,b", "Hydra reads head=a,b as a sweep over several values, not as one label"),
])
def test_a_label_hydra_cannot_read_is_refused_saying_how_to_quote_it(argument: str, said: str) -> None:
    key, _, text = argument.partition("=")
    with pytest.raises(UserError) as raised:
        check_overrides(["ckpt=x", argument], LABEL_KEYS)
    assert str(raised.value) == f"{said} (command line): quote the label: {hydra_quoted(key, text)}"


def test_head_null_says_that_hydra_read_it_as_null_and_how_to_quote_it() -> None:
    cfg = predict_config("ckpt=x", "head=NULL", "relation=r")
    with pytest.raises(UserError) as raised:
        predict(cfg)
    assert str(raised.value) == ("Hydra read head=NULL as null, not as a label (config key head): "
                                 "to give the label NULL, quote it: head=\"'NULL'\"")
    cfg = predict_config("ckpt=x", "head=[a,b]", "relation=r")
    with pytest.raises(UserError, match=r"Hydra read head=\[a,b\] as a list, not as a label"):
        predict(cfg)


def test_labels_are_taken_as_typed_and_never_interpolated() -> None:
    cfg = predict_config("ckpt=x", "head=1.50", "relation=true", "tail='${oc.env:HOME}'")
    assert [cfg_text(cfg, key) for key in LABEL_KEYS] == ["1.50", "true", "${oc.env:HOME}"]


def test_predict_answers_quoted_labels_and_refuses_an_unreadable_one_in_one_line(run: Path, tmp_path: Path) -> None:
    ckpt = run / "checkpoints" / "last.ckpt"
    head, relation = ENTITIES["ada"], RELATIONS["knows"]  # "#x", "$\frac{$"
    args = [shlex.split(hydra_quoted(key, label))[0] for key, label in (("head", head), ("relation", relation))]
    answered = entry("predict", f"ckpt={ckpt}", *args, "k=3", "filter=none", cwd=tmp_path)
    assert answered.returncode == 0, answered.stderr[-3000:]
    printed = tmp_path / "printed.tsv"
    printed.write_text(answered.stdout.split("\n", 1)[1], encoding="utf-8")
    header, *rows = read_tsv(printed)
    assert header == ["rank", "tail", "score"] and len(rows) == 3
    assert answered.stdout.startswith("# tails of (#x, $\\\\frac{$, ?), filter=none\n")
    refused = entry("predict", f"ckpt={ckpt}", "head=#x", "relation=r", cwd=tmp_path)
    assert one_line_error(refused) == ("error: Hydra's override grammar cannot read head=#x (command line): "
                                       "quote the label: head=\"'#x'\"")


def test_the_readme_shows_the_quoting_that_hydra_reads_back() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for key, label in [("relation", "#rel"), ("head", "NULL"), ("head", "a,b"), ("head", "a=b"), ("head", "New York"),
                       ("head", "café"), ("head", "it's")]:
        assert f"`{hydra_quoted(key, label)}`" in readme, label


def test_plot_refuses_a_relation_label_hydra_cannot_read_in_one_line(tmp_path: Path) -> None:
    refused = entry("plot", "ckpt=x", "out=y", "relation=#r", cwd=tmp_path)
    assert one_line_error(refused) == ("error: Hydra's override grammar cannot read relation=#r (command line): "
                                       "quote the label: relation=\"'#r'\"")
