"""Checkpoints: last.ckpt is what the final test used, best.ckpt, step checkpoints and their retention,
atomic writes, saving on SIGINT/SIGTERM, and a checkpoint's own description of its graph."""

from __future__ import annotations

import csv
import json
import shutil
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from lightning_kge.checkpoints import load_datamodule, load_module, saved_graph
from lightning_kge.data.datasets import resolve_dataset
from lightning_kge.errors import UserError
from lightning_kge.train import train
from runs import SMALL, config, entry, one_line_error, step_of, weights_of

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*LeafSpec.*is deprecated", "ignore:.*does not have many workers", "ignore:.*smaller than the logging interval",
)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A run through the entry point that ends at step 6, between its validations (steps 4 and 8)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    result = entry("train", *SMALL, "trainer.max_steps=6", f"hydra.run.dir={out}", cwd=out.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_last_ckpt_holds_the_weights_the_final_test_used_when_training_ends_between_validations(
    finished: Path, tmp_path: Path
) -> None:
    folder = finished / "checkpoints"
    assert step_of(folder / "last.ckpt") == 6 and step_of(folder / "best.ckpt") == 4
    assert json.loads((finished / "test_weights.json").read_text()) == {
        "test_weights": "last", "checkpoint": str(folder / "last.ckpt")}
    result = entry("evaluate", f"ckpt={folder / 'last.ckpt'}", "trainer=cpu", "trainer.enable_progress_bar=false",
                   f"hydra.run.dir={tmp_path / 'eval'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    reported = json.loads((finished / "metrics.json").read_text())
    again = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert reported.keys() == again.keys() and "test/mrr" in reported
    for key in reported:
        assert again[key] == pytest.approx(reported[key], abs=1e-6), key


def test_a_checkpoint_alone_maps_ids_to_the_labels_of_its_data(finished: Path) -> None:
    folder = resolve_dataset("nations")
    lines = [line.split("\t") for split in ("train", "valid", "test")
             for line in (folder / f"{split}.txt").read_text(encoding="utf-8").splitlines() if line]
    checkpoint = torch.load(finished / "checkpoints" / "last.ckpt", weights_only=True)
    graph = saved_graph(checkpoint)
    assert list(graph.entities) == sorted({h for h, _, _ in lines} | {t for _, _, t in lines})
    assert list(graph.relations) == sorted({r for _, r, _ in lines})
    assert "graph" not in checkpoint["hyper_parameters"]  # labels live once, in the blob, not in the hparams


def test_evaluate_refuses_data_with_one_label_renamed_naming_it(finished: Path, tmp_path: Path) -> None:
    renamed = tmp_path / "renamed"
    shutil.copytree(resolve_dataset("nations"), renamed)
    for split in ("train", "valid", "test"):
        path = renamed / f"{split}.txt"
        path.write_text(path.read_text(encoding="utf-8").replace("brazil\t", "brasil\t").replace("\tbrazil\n", "\tbrasil\n"),
                        encoding="utf-8")
    result = entry("evaluate", f"ckpt={finished / 'checkpoints' / 'last.ckpt'}", "data=tsv", f"data.path={renamed}",
                   "trainer=cpu", f"hydra.run.dir={tmp_path / 'eval'}", cwd=tmp_path)
    line = one_line_error(result)
    assert "'brazil' in the checkpoint but 'brasil' in the data" in line, line
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_best_ckpt_holds_the_best_validation_mrr_and_test_weights_best_tests_it(tmp_path: Path) -> None:
    out = tmp_path / "run"
    reported = {k: v for k, v in train(config(out, "trainer.max_steps=9", "test_weights=best")).items()
                if k.startswith("test/")}
    with (out / "csv" / "metrics.csv").open() as handle:
        validations = [(float(row["val/mrr"]), int(row["step"]) + 1) for row in csv.DictReader(handle) if row["val/mrr"]]
    assert len(validations) == 2  # after steps 4 and 8
    best_step = max(validations)[1]
    assert step_of(out / "checkpoints" / "best.ckpt") == best_step
    assert json.loads((out / "test_weights.json").read_text())["test_weights"] == "best"
    module = load_module(out / "checkpoints" / "best.ckpt")
    datamodule = load_datamodule(out / "checkpoints" / "best.ckpt", module)
    tester = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    [again] = tester.test(module, datamodule=datamodule, verbose=False)
    assert reported.keys() == again.keys()
    for key in reported:
        assert again[key] == pytest.approx(reported[key], abs=1e-6), key


def test_retention_keeps_last_best_and_the_newest_step_checkpoints(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(config(out, "trainer.max_steps=9", "callbacks.checkpoint.every_n_steps=2", "callbacks.checkpoint.keep=2"))
    folder = out / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", "last.ckpt", "step6.ckpt", "step8.ckpt"]
    assert [step_of(folder / n) for n in ("step6.ckpt", "step8.ckpt", "last.ckpt")] == [6, 8, 9]
    assert step_of(folder / "best.ckpt") in (4, 8)


def test_a_save_that_fails_midway_leaves_the_previous_checkpoint_whole(tmp_path: Path, monkeypatch) -> None:
    original = TorchCheckpointIO.save_checkpoint

    def killed_at_step_5(self, checkpoint, path, storage_options=None):
        original(self, checkpoint, path, storage_options)
        if checkpoint["global_step"] == 5:  # as if the process died with part of the file written
            Path(path).write_bytes(Path(path).read_bytes()[:1000])
            raise OSError("killed while writing")

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", killed_at_step_5)
    out = tmp_path / "run"
    with pytest.raises(UserError, match="killed while writing") as error:  # last.ckpt of step 4, then 5 (the end)
        train(config(out, "trainer.max_steps=5"))
    assert "last.ckpt" in str(error.value) and "\n" not in str(error.value)
    folder = out / "checkpoints"
    assert step_of(folder / "last.ckpt") == 4
    saved = weights_of(folder / "last.ckpt")
    assert all(torch.equal(saved[k], v) for k, v in weights_of(folder / "best.ckpt").items())
    assert not list(folder.glob(".*")), "a temporary file was left behind"


@pytest.mark.parametrize(("name", "status"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_sigterm_and_sigint_save_last_ckpt_at_the_step_and_stop_with_one_line(name: str, status: int, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = entry("train", *SMALL, "trainer.max_steps=50", "+callbacks.fault._target_=faults.SignalAt",
                   "+callbacks.fault.step=3", f"+callbacks.fault.signal={name}", f"hydra.run.dir={out}",
                   cwd=tmp_path, faults=True)
    line = one_line_error(result, status=status)
    assert line.startswith(f"error: interrupted by {name} at step 3"), line
    assert f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}" in line
    assert step_of(out / "checkpoints" / "last.ckpt") == 3
    assert not (out / "metrics.json").exists()
    assert status == 128 + signal.Signals[name]
