"""The logger group: each option replaces the CSV logger and records the run; a missing package names its extra."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lightning_kge.errors import UserError
from lightning_kge.configs import build_trainer
from lightning_kge.train import train
from tiny_run import compose_train

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated", "ignore:.*does not have many workers",
                                        "ignore:.*smaller than the logging interval")

SHORT = ["trainer.max_steps=4", "trainer.check_val_every_n_epoch=2", "trainer.log_every_n_steps=1",
         "callbacks.checkpoint=null", "callbacks.report=null"]


def test_logger_tensorboard_replaces_the_csv_logger_and_writes_event_files(tmp_path: Path) -> None:
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                            reason="needs the extra 'tensorboard'")
    cfg = compose_train("logger=tensorboard", f"output_dir={tmp_path}", *SHORT)
    assert "version" in cfg.logger and cfg.logger.version == "tensorboard"  # not merged into csv's keys
    train(cfg)
    assert not (tmp_path / "csv").exists()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    accumulator = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))  # every event file
    accumulator.Reload()
    scalars = set(accumulator.Tags()["scalars"])
    assert {"train/loss", "val/mrr", "test/mrr"} <= scalars, scalars
    assert [e.step for e in accumulator.Scalars("train/loss")] == [0, 1, 2, 3]


@pytest.mark.parametrize(("option", "package"), [("tensorboard", "tensorboard"), ("wandb", "wandb"), ("mlflow", "mlflow")])
def test_a_logger_without_its_package_names_the_extra_to_install(
    option: str, package: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (package, "tensorboardX"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if it were not installed
    cfg = compose_train(f"logger={option}", f"output_dir={tmp_path}")
    with pytest.raises(UserError, match=rf"needs the package {package}.*\(config key logger\): "
                                        rf"pip install 'lightning-kge\[{option}\]'"):
        build_trainer(cfg)


def test_logger_mlflow_records_the_metrics_of_a_run(tmp_path: Path) -> None:
    mlflow = pytest.importorskip("mlflow", reason="needs the extra 'mlflow' (not in dev: a large install)")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    train(compose_train("logger=mlflow", f"logger.tracking_uri={uri}", f"output_dir={tmp_path}", *SHORT))
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    [experiment] = [e for e in client.search_experiments() if e.name == "lightning_kge"]
    [found] = client.search_runs([experiment.experiment_id])
    assert {"train/loss", "val/mrr", "test/mrr"} <= set(found.data.metrics)


def test_logger_wandb_offline_records_a_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb", reason="needs the extra 'wandb' (not in dev: a large install)")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    train(compose_train("logger=wandb", "logger.offline=true", f"output_dir={tmp_path}", *SHORT))
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb")), list((tmp_path / "wandb").iterdir())
