"""Prediction by label: the CLI, the module's API, Trainer.predict, and chunked top-k."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from lightning_kge.checkpoints import load_datamodule, load_module
from lightning_kge.data.tsv import read_triples
from lightning_kge.errors import UserError
from lightning_kge.models import RotatE
from lightning_kge.predict import cfg_text, predict
from lightning_kge.prediction import top_k
from lightning_kge.configs import config_dir
from tiny_run import TINY_KG, tiny_run

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated", "ignore:.*does not have many workers")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(tmp_path_factory.getbasetemp())


def predict_config(*overrides: str):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="predict", overrides=list(overrides))


def test_predict_command_ranks_the_memorised_true_tail_first(run: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lightning_kge.predict", f"ckpt={run / 'checkpoints' / 'last.ckpt'}",
         "head=ada", "relation=knows", "k=3", "filter=none"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[:2] == ["# tails of (ada, knows, ?), filter=none", "rank\ttail\tscore"]
    assert lines[2].split("\t")[:2] == ["1", "ben"] and len(lines) == 5
    assert not list(tmp_path.iterdir()), "predict wrote files into the working directory"


def test_the_module_predicts_every_memorised_head_and_tail_first(run: Path) -> None:
    module = load_module(run / "checkpoints" / "last.ckpt")
    for h, r, t in read_triples(TINY_KG / "train.txt"):
        assert module.predict_tails(h, r, k=1)[0].label == t
        assert module.predict_heads(r, t, k=1)[0].label == h


def test_filter_train_leaves_out_the_training_answers_and_marks_the_splits(run: Path, capsys) -> None:
    ckpt = run / "checkpoints" / "last.ckpt"
    rows = predict(predict_config(f"ckpt={ckpt}", "head=ada", "relation=knows", "k=10", "filter=train"))
    assert [row["tail"] for row in rows].count("ben") == 0 and len(rows) == 9  # 10 entities, 1 known tail
    module = load_module(ckpt)
    datamodule = load_datamodule(ckpt, module)
    held_out = {(h, r, t) for split in ("valid", "test") for h, r, t in read_triples(TINY_KG / f"{split}.txt")}
    for row in rows:
        assert (row["known"] != "-") == (("ada", "knows", row["tail"]) in held_out)
    rows = predict(predict_config(f"ckpt={ckpt}", "relation=likes", "tail=dora", "filter=all"))
    ids = module.graph.entity_id
    r, t = torch.tensor(module.graph.relation_id["likes"]), torch.tensor(ids["dora"])
    assert rows and not any(bool(datamodule.filter_index.contains(torch.tensor(ids[row["head"]]), r, t)) for row in rows)


def test_an_unknown_label_names_the_config_key_and_the_closest_labels(run: Path) -> None:
    ckpt = run / "checkpoints" / "last.ckpt"
    with pytest.raises(UserError, match=r"unknown entity 'adda' \(config key head\): did you mean 'ada'\?"):
        predict(predict_config(f"ckpt={ckpt}", "head=adda", "relation=knows", "filter=none"))
    with pytest.raises(UserError, match=r"unknown relation 'Knows' \(config key relation\): did you mean 'knows'"):
        predict(predict_config(f"ckpt={ckpt}", "head=ada", "relation=Knows", "filter=none"))
    with pytest.raises(UserError, match="both head and tail given"):
        predict(predict_config(f"ckpt={ckpt}", "head=ada", "relation=knows", "tail=ben"))


def test_triples_file_prints_the_module_score_of_each_line(run: Path, capsys) -> None:
    ckpt = run / "checkpoints" / "last.ckpt"
    rows = predict(predict_config(f"ckpt={ckpt}", f"triples={TINY_KG / 'test.txt'}"))
    labels = read_triples(TINY_KG / "test.txt")
    expected = load_module(ckpt).score_triples(labels)
    assert [(row["head"], row["relation"], row["tail"]) for row in rows] == labels
    assert [row["score"] for row in rows] == pytest.approx(expected.tolist(), abs=1e-5)
    assert capsys.readouterr().out.splitlines()[0] == "head\trelation\ttail\tscore"


def test_a_label_that_looks_like_a_number_is_taken_as_typed() -> None:
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="predict", overrides=["ckpt=x", "head=1.50", "tail=true"], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    try:  # Hydra reads them as a float and a bool
        assert (cfg.head, cfg.tail) == (1.5, True) and (cfg_text(cfg, "head"), cfg_text(cfg, "tail")) == ("1.50", "true")
    finally:
        HydraConfig.instance().cfg = None


def test_trainer_predict_answers_every_query_of_a_split(run: Path) -> None:
    ckpt = run / "checkpoints" / "last.ckpt"
    module = load_module(ckpt)
    datamodule = load_datamodule(ckpt, module)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    datamodule.predict_on("train", side="head", exclude="none", k=1)
    answers = trainer.predict(module, datamodule=datamodule)
    train = datamodule.triples["train"]
    for batch in answers:
        for t, r, best in zip(batch.entity.tolist(), batch.relation.tolist(), batch.ids[:, 0].tolist()):
            assert [t, r] in train[:, [2, 1]].tolist() and [best, r, t] in train.tolist()
    assert sum(len(batch.entity) for batch in answers) == len(torch.unique(train[:, [2, 1]], dim=0))
    datamodule.predict_on(train[:, :2], side="tail", exclude="train", k=3)  # (h, r) pairs
    for batch in trainer.predict(module, datamodule=datamodule):
        for h, r, ids in zip(batch.entity.tolist(), batch.relation.tolist(), batch.ids.tolist()):
            assert not any([h, r, t] in train.tolist() for t in ids)


def brute_force_top_k(model, query_ids, side: str, k: int, exclude: set) -> list[list[int]]:
    """Score every (query, entity) triple one by one; sort by score, ties by id."""
    result = []
    for b, (e, r) in enumerate(query_ids):
        scored = []
        for c in range(model.num_entities):
            h, t = (e, c) if side == "tail" else (c, e)
            score = float(model.score_hrt(torch.tensor(h), torch.tensor(r), torch.tensor(t)))
            if (b, c) not in exclude:
                scored.append((-score, c))
        result.append([c for _, c in sorted(scored)[:k]])
    return result


@pytest.mark.parametrize("side", ["tail", "head"])
def test_top_k_in_chunks_equals_a_brute_force_sort(side: str) -> None:
    torch.manual_seed(0)
    model = RotatE(23, 4, dim=5, gamma=3.0)
    query_ids = torch.stack([torch.randint(23, (6,)), torch.randint(4, (6,))], 1)
    e, r = query_ids.unbind(1)
    query = model.tail_query(e, r) if side == "tail" else model.head_query(r, e)
    rows, cols = torch.tensor([0, 0, 2, 5, 5]), torch.tensor([3, 17, 0, 22, 9])
    expected = brute_force_top_k(model, query_ids.tolist(), side, 7, set(zip(rows.tolist(), cols.tolist())))
    with torch.no_grad():
        for chunk_size in (4, 23, 100):
            scores, ids = top_k(model, query, 7, chunk_size, (rows, cols))
            assert ids.tolist() == expected
            assert bool((scores[:, :-1] >= scores[:, 1:]).all())
