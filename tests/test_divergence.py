"""A run whose loss or weights stop being finite stops with the step and the last good checkpoint,
exit status 2, and writes no metrics.json and no checkpoint of the diverged model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from lightning_kge.callbacks.divergence import Diverged
from lightning_kge.train import train
from runs import config, entry, one_line_error, step_of

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*LeafSpec.*is deprecated", "ignore:.*does not have many workers", "ignore:.*smaller than the logging interval",
)


def test_a_huge_learning_rate_stops_the_run_with_the_first_bad_step_and_no_metrics(tmp_path: Path) -> None:
    out = tmp_path / "run"
    # log_every_n_steps=10: the loss turns nan at step 2 and is read back at step 10
    result = entry("train", "data=nations", "trainer.max_steps=20", "optimizer.lr=1e38", "trainer=cpu", "model.dim=8",
                   "sampler.num_negatives=8", "trainer.enable_progress_bar=false", f"hydra.run.dir={out}", cwd=tmp_path)
    line = one_line_error(result)
    assert line.startswith("error: training diverged: the training loss was not finite (nan or inf) at step 2 "
                           "(no checkpoint was saved before it): lower optimizer.lr"), line
    assert not (out / "metrics.json").exists() and not list(out.rglob("*.ckpt"))


class PoisonAt(L.Callback):
    """Make one entity embedding nan at the end of step ``step`` (a divergence at a known step)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.parameters())[0] = float("nan")


def test_no_checkpoint_of_diverged_weights_is_saved_and_the_error_names_the_last_good_one(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = config(out, "trainer.max_steps=20", "trainer.log_every_n_steps=50", "callbacks.checkpoint.every_n_steps=2",
                 "+callbacks.poison._target_=test_divergence.PoisonAt", "+callbacks.poison.step=4")
    with pytest.raises(Diverged) as error:
        train(cfg)
    last_good = out / "checkpoints" / "step2.ckpt"
    assert str(error.value).startswith(
        f"training diverged: the weights were not finite (nan or inf) after step 4 (last good checkpoint: {last_good} "
        "(step 2)): lower optimizer.lr")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.ckpt", "step2.ckpt"]
    assert step_of(out / "checkpoints" / "last.ckpt") == 2
    assert not (out / "metrics.json").exists()
