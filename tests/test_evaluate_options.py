"""Evaluate options: the validation split, the tie policy and raw metrics of a saved checkpoint."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from lightning_kge.checkpoints import load_datamodule, load_module, read_checkpoint
from lightning_kge.errors import UserError
from lightning_kge.evaluate import evaluate
from lightning_kge.configs import config_dir
from tiny_run import tiny_run

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated", "ignore:.*does not have many workers")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(tmp_path_factory.getbasetemp())


def evaluate_with(ckpt: Path, out: Path, *overrides: str) -> dict[str, float]:
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=[f"ckpt={ckpt}", f"output_dir={out}", "trainer=cpu",
                                                          "trainer.enable_progress_bar=false", *overrides])
    return evaluate(cfg)


def test_evaluate_split_valid_equals_the_validation_metrics_the_run_logged(run: Path, tmp_path: Path) -> None:
    with open(run / "csv" / "metrics.csv", newline="") as file:
        validations = [row for row in csv.DictReader(file) if row["val/mrr"]]
    last = validations[-1]
    assert int(last["step"]) == 199  # the final step: last.ckpt holds the weights it validated
    got = evaluate_with(run / "checkpoints" / "last.ckpt", tmp_path, "split=valid")
    logged = {k: float(v) for k, v in last.items() if k.startswith("val/") and v}
    assert set(got) == set(logged) and len(got) > 10
    for key, value in logged.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key
    assert json.loads((tmp_path / "metrics.json").read_text())["val/mrr"] == pytest.approx(logged["val/mrr"])


def brute_force_raw_mrr(module, triples: torch.Tensor) -> float:
    """Mean reciprocal rank over both sides, every entity a rival, ties counted half (realistic)."""
    reciprocal = []
    with torch.no_grad():
        for h, r, t in triples.tolist():
            for side in ("head", "tail"):
                target = float(module.score_hrt(torch.tensor(h), torch.tensor(r), torch.tensor(t)))
                rivals = []
                for e in range(module.model.num_entities):
                    hh, tt = (e, t) if side == "head" else (h, e)
                    rivals.append(float(module.score_hrt(torch.tensor(hh), torch.tensor(r), torch.tensor(tt))))
                higher = sum(s > target for s in rivals)
                at_least = sum(s >= target for s in rivals)
                reciprocal.append(1.0 / ((higher + 1 + at_least) / 2))
    return sum(reciprocal) / len(reciprocal)


def test_raw_metrics_beside_the_filtered_ones_equal_a_brute_force_ranking(run: Path, tmp_path: Path) -> None:
    ckpt = run / "checkpoints" / "last.ckpt"
    got = evaluate_with(ckpt, tmp_path, "raw=true")
    module = load_module(ckpt)
    expected = brute_force_raw_mrr(module, load_datamodule(ckpt, module).triples["test"])
    assert got["test/raw/mrr"] == pytest.approx(expected, abs=1e-6)
    assert got["test/raw/mrr"] <= got["test/mrr"] and "test/raw/tail/hits@10" in got
    assert "test/raw/mrr" not in evaluate_with(ckpt, tmp_path)


def test_evaluate_ties_sets_the_tie_policy(run: Path, tmp_path: Path) -> None:
    checkpoint = read_checkpoint(run / "checkpoints" / "last.ckpt")
    weight = checkpoint["state_dict"]["model.entity.weight"]
    weight[:] = weight[0]  # every entity the same: every candidate ties with the target
    torch.save(checkpoint, tmp_path / "ties.ckpt")
    optimistic = evaluate_with(tmp_path / "ties.ckpt", tmp_path, "ties=optimistic")
    pessimistic = evaluate_with(tmp_path / "ties.ckpt", tmp_path, "ties=pessimistic")
    assert optimistic["test/mrr"] == 1.0 and pessimistic["test/mrr"] < 0.5
    with pytest.raises(UserError, match=r"config key ties"):
        evaluate_with(tmp_path / "ties.ckpt", tmp_path, "ties=mean")
    with pytest.raises(UserError, match=r"module settings come from the checkpoint \(config key module\)"):
        evaluate_with(tmp_path / "ties.ckpt", tmp_path, "+module.ties=optimistic")
