"""Callbacks by name: ``+callbacks=early_stopping`` adds EarlyStopping on ``val/mrr``."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch.callbacks import EarlyStopping

from lightning_kge.configs import build_trainer
from lightning_kge.train import build
from tiny_run import compose_train

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated", "ignore:.*does not have many workers",
                                        "ignore:.*smaller than the logging interval")


def test_early_stopping_added_by_name_stops_a_run_whose_val_mrr_does_not_improve(tmp_path: Path) -> None:
    cfg = compose_train(
        "+callbacks=early_stopping", "callbacks.early_stopping.patience=2",
        "optimizer.lr=1e-12",  # next to nothing is learnt: val/mrr stays where it starts
        "trainer.max_steps=50", "trainer.check_val_every_n_epoch=1",  # one batch per epoch: a validation per step
        "callbacks.checkpoint=null", f"output_dir={tmp_path}",
    )
    assert set(cfg.callbacks) == {"checkpoint", "divergence", "report", "auc_pr", "early_stopping"}
    trainer = build_trainer(cfg)
    [stopper] = [c for c in trainer.callbacks if isinstance(c, EarlyStopping)]
    assert (stopper.monitor, stopper.mode, stopper.patience) == ("val/mrr", "max", 2)
    module, datamodule = build(cfg)
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 3  # the first validation sets the best, two more without a gain stop it
