"""Resume: a run killed with SIGKILL and resumed from its checkpoint ends as an uninterrupted run does,
in the same folder and CSV log; a resumed run keeps the best score; what may not be resumed is refused."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from lightning_kge.errors import UserError
from lightning_kge.train import train
from runs import SMALL, config, entry, one_line_error, step_of, weights_of

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*LeafSpec.*is deprecated", "ignore:.*does not have many workers", "ignore:.*smaller than the logging interval",
)

# Batches of 256: 7 per epoch, validation after steps 7 and 14; the run ends mid-epoch at step 17.
RUN = [*SMALL, "data.batch_size=256", "trainer.max_steps=17"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    train(config(out, *RUN[len(SMALL):]))
    return out


@pytest.mark.parametrize(
    ("kill_at", "every", "resumed_from", "entry_point"),
    [(10, 4, 8, True),      # from step8.ckpt: mid-epoch, saved at the end of a training step
     (9, None, 7, False)],  # from the save after the validation of step 7 (end of an epoch)
)
def test_a_run_killed_and_resumed_from_its_checkpoint_ends_as_an_uninterrupted_run(
    uninterrupted: Path, tmp_path: Path, kill_at: int, every: int | None, resumed_from: int, entry_point: bool
) -> None:
    out = tmp_path / "run"
    interval = [] if every is None else [f"callbacks.checkpoint.every_n_steps={every}"]
    killed = entry("train", *RUN, *interval, "+callbacks.fault._target_=faults.SignalAt", f"+callbacks.fault.step={kill_at}",
                   "+callbacks.fault.signal=SIGKILL", f"hydra.run.dir={out}", cwd=tmp_path, faults=True)
    assert killed.returncode == -9, killed.stderr[-3000:]
    last = out / "checkpoints" / "last.ckpt"
    assert step_of(last) == resumed_from and not (out / "metrics.json").exists()

    if entry_point:  # the same overrides and ckpt_path, from a fresh Hydra folder: the run continues in its own
        resumed = entry("train", *RUN, *interval, f"ckpt_path={last}", cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "not resumable" not in resumed.stderr  # Lightning's warning: the datamodule resumes its stream
    else:
        train(config(out, *RUN[len(SMALL):], *interval, f"ckpt_path={last}"))
    reference, again = (json.loads((d / "metrics.json").read_text()) for d in (uninterrupted, out))
    assert reference.keys() == again.keys()
    for key in reference:
        assert again[key] == pytest.approx(reference[key], abs=1e-6), key
    for name in ("last.ckpt", "best.ckpt"):
        assert step_of(out / "checkpoints" / name) == step_of(uninterrupted / "checkpoints" / name)
        a, b = weights_of(uninterrupted / "checkpoints" / name), weights_of(out / "checkpoints" / name)
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # the CSV log was continued, not replaced: every row of the uninterrupted run, once
    assert (out / "csv" / "metrics.csv").read_text() == (uninterrupted / "csv" / "metrics.csv").read_text()


def test_a_finished_run_continued_with_more_steps_equals_a_longer_run(tmp_path: Path) -> None:
    # 4 batches per epoch, validation every second epoch (step 8): the first run stops at step 6, mid-epoch
    every_other = ["trainer.check_val_every_n_epoch=2"]
    longer = train(config(tmp_path / "longer", *every_other, "trainer.max_steps=10"))
    out = tmp_path / "run"
    train(config(out, *every_other, "trainer.max_steps=6"))
    continued = train(config(out, *every_other, "trainer.max_steps=10", f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}"))
    assert continued == pytest.approx(longer, abs=1e-6)
    assert (out / "csv" / "metrics.csv").read_text() == (tmp_path / "longer" / "csv" / "metrics.csv").read_text()


def test_resuming_with_no_step_left_tests_the_checkpoints_weights_and_last_ckpt_holds_them(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(config(out, "trainer.max_steps=6", "callbacks.checkpoint.every_n_steps=3"))
    folder = out / "checkpoints"
    again = train(config(out, "trainer.max_steps=3", f"ckpt_path={folder / 'step3.ckpt'}"))
    assert (folder / "last.ckpt").read_bytes() == (folder / "step3.ckpt").read_bytes()
    assert train(config(out, "trainer.max_steps=3", f"ckpt_path={folder / 'last.ckpt'}")) == again


def test_a_resumed_run_compares_validations_with_the_best_score_saved_before(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(config(out, "trainer.max_steps=4"))  # validation at step 4: best.ckpt
    last = out / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["callbacks"]["Checkpoints"]["best_score"] = 2.0  # an MRR no validation can beat
    torch.save(checkpoint, last)
    train(config(out, "trainer.max_steps=8", f"ckpt_path={last}"))  # validation at step 8
    assert step_of(last) == 8
    assert step_of(out / "checkpoints" / "best.ckpt") == 4


@pytest.mark.parametrize(
    ("override", "message"),
    [("model.dim=16", "model.dim was 8 when the checkpoint was saved, now 16"),
     ("optimizer.lr=0.5", "optimizer.lr was 0.001 when the checkpoint was saved, now 0.5"),
     ("data.batch_size=64", "data.batch_size was 512 when the checkpoint was saved, now 64"),
     ("seed=1", "seed was 0 when the checkpoint was saved, now 1")],
)
def test_resuming_with_other_settings_is_refused_naming_the_key(tmp_path: Path, override: str, message: str,
                                                                 resumable: Path) -> None:
    with pytest.raises(UserError, match=message):
        train(config(tmp_path / "other", "trainer.max_steps=2", f"ckpt_path={resumable}", override))


@pytest.fixture(scope="module")
def resumable(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("resumable") / "run"
    train(config(out, "trainer.max_steps=1"))
    return out / "checkpoints" / "last.ckpt"


def test_a_new_run_into_a_folder_that_holds_a_run_is_refused_with_one_line(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    result = entry("train", *SMALL, "trainer.max_steps=1", f"hydra.run.dir={out}", cwd=tmp_path)
    line = one_line_error(result)
    assert line.startswith(f"error: the output directory already holds a run (metrics.json) ({out}):"), line
    assert f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}" in line
    assert not (out / "csv").exists()


def test_a_run_started_into_a_folder_where_another_run_is_writing_is_refused(tmp_path: Path) -> None:
    fcntl = pytest.importorskip("fcntl")
    out = tmp_path / "run"
    out.mkdir()
    with open(out / ".lock", "a") as handle:  # as the running process holds it
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = entry("train", *SMALL, "trainer.max_steps=1", f"hydra.run.dir={out}", cwd=tmp_path)
    line = one_line_error(result)
    assert line == f"error: another run is writing to this folder now ({out}): wait until it ends, or choose another hydra.run.dir"
    assert not (out / "csv").exists()


def test_a_resumed_run_killed_during_its_final_test_then_resumed_logs_one_test_row(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(config(out, "trainer.max_steps=8"))
    last = out / "checkpoints" / "last.ckpt"
    killed = entry("train", *SMALL, "trainer.max_steps=8", f"ckpt_path={last}", "+callbacks.fault._target_=faults.SignalAt",
                   "+callbacks.fault.stage=test", "+callbacks.fault.signal=SIGKILL", f"hydra.run.dir={out}",
                   cwd=tmp_path, faults=True)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert count_test_rows(out) == 1  # the killed test's row was written (as a periodic flush of the CSV logger does)
    train(config(out, "trainer.max_steps=8", f"ckpt_path={last}"))
    assert count_test_rows(out) == 1


def count_test_rows(run: Path) -> int:
    """The rows of a run's CSV log that hold test metrics."""
    with (run / "csv" / "metrics.csv").open(newline="") as handle:
        return sum(1 for row in csv.DictReader(handle) if row.get("test/mrr"))
