"""Hyperparameter search: ``-m hparams_search=rotate_optuna`` runs Optuna trials and reports the best."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from hydra_plugins.lightning_kge_optuna.optuna_sweeper import OptunaSweeper
from lightning_kge.errors import UserError
from lightning_kge.train import objective
from tiny_run import TINY_KG


def last_validation(run: Path) -> float:
    with open(run / "csv" / "metrics.csv", newline="") as file:
        return float([row for row in csv.DictReader(file) if row["val/mrr"]][-1]["val/mrr"])


def test_a_three_trial_search_completes_and_reports_its_best_value(tmp_path: Path) -> None:
    pytest.importorskip("optuna", reason="needs the extra 'search'")
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, "-m", "lightning_kge.train", "-m", "hparams_search=rotate_optuna", "hydra.sweeper.n_trials=3",
         "data=tsv", f"data.path={TINY_KG}", "data.batch_size=25", "sampler.num_negatives=8", "model.dim=choice(8, 16)",
         "trainer=cpu", "trainer.max_steps=10", "trainer.enable_progress_bar=false", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert best.trials == 3 and set(best.best_params) == {"optimizer.lr", "model.gamma", "sampler.temperature", "model.dim"}
    values = [last_validation(sweep / str(i)) for i in range(3)]  # each trial validated at its final step
    assert best.best_value == pytest.approx(max(values)) and values[best.best_trial] == pytest.approx(max(values))
    assert "best value" in result.stderr + result.stdout


def test_main_returns_the_metric_named_by_optimized_metric_or_says_it_was_not_logged() -> None:
    assert objective({"val/mrr": 0.25, "test/mrr": 0.2}, "val/mrr") == 0.25
    assert objective({"test/mrr": 0.2}, None) == {"test/mrr": 0.2}
    with pytest.raises(UserError, match=r"logged no val/mrr .*\(config key optimized_metric\)"):
        objective({"test/mrr": 0.2}, "val/mrr")


def test_the_sweeper_without_optuna_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)
    sweeper = OptunaSweeper("maximize", 3, None, None, None, {})
    with pytest.raises(UserError, match=r"pip install 'lightning-kge\[search\]'"):
        sweeper.sweep([])
