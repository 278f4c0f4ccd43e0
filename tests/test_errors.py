"""Errors a user can act on, through the real entry points: one line ``error: <what> (<where>): <fix>``,
exit status 2, no traceback, and nothing trained or written before the error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from runs import SMALL, entry, one_line_error


def nothing_trained(out: Path) -> bool:
    return not list(out.rglob("*.ckpt")) and not (out / "csv" / "metrics.csv").exists() and not (out / "metrics.json").exists()


@pytest.mark.parametrize(
    ("override", "expected"),
    [("module.ties=weird", "error: module.ties='weird' is not allowed (config key module.ties): set module.ties to "
                           "realistic or optimistic or pessimistic"),
     ("optimizer.lr=0", "error: optimizer.lr=0 is not allowed (config key optimizer.lr): set optimizer.lr to a number > 0")],
)
def test_a_bad_config_value_stops_the_run_before_training_naming_the_key(tmp_path: Path, override: str, expected: str) -> None:
    out = tmp_path / "run"
    line = one_line_error(entry("train", *SMALL, "trainer.max_steps=5", override, f"hydra.run.dir={out}", cwd=tmp_path))
    assert line.startswith(expected), line
    assert nothing_trained(out)


@pytest.fixture
def truncated(tmp_path: Path) -> Path:
    path = tmp_path / "truncated.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "global_step": 3}, path)
    path.write_bytes(path.read_bytes()[:2000])
    return path


def test_evaluate_refuses_a_truncated_checkpoint_with_one_line(tmp_path: Path, truncated: Path) -> None:
    line = one_line_error(entry("evaluate", f"ckpt={truncated}", "trainer=cpu", f"hydra.run.dir={tmp_path / 'eval'}",
                                cwd=tmp_path))
    assert line == (f"error: cannot read the checkpoint (RuntimeError: PytorchStreamReader failed reading zip archive: "
                    f"failed finding central directory) ({truncated}): the file is truncated or not a checkpoint: "
                    "use another one (checkpoints/last.ckpt or best.ckpt)"), line


def test_resuming_from_a_missing_checkpoint_is_refused_before_training(tmp_path: Path) -> None:
    missing, out = tmp_path / "missing.ckpt", tmp_path / "run"
    line = one_line_error(entry("train", *SMALL, f"ckpt_path={missing}", f"hydra.run.dir={out}", cwd=tmp_path))
    assert line == (f"error: no such checkpoint ({missing}): give ckpt_path=PATH of a .ckpt file, "
                    "e.g. outputs/<date>/<time>/checkpoints/last.ckpt"), line
    assert nothing_trained(out)


def test_a_checkpoint_folder_that_cannot_be_written_is_refused_at_start(tmp_path: Path) -> None:
    # the same check for the output folder (output_dir) is a case of docs/reliability.md
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = tmp_path / "run"
    line = one_line_error(entry("train", *SMALL, "trainer.max_steps=5", f"callbacks.checkpoint.dirpath={blocker / 'sub'}",
                                f"hydra.run.dir={out}", cwd=tmp_path))
    assert line == (f"error: cannot write to {blocker / 'sub'} (Not a directory) (config key callbacks.checkpoint.dirpath): "
                    "choose a folder you can write to, or make this one writable"), line
    assert nothing_trained(out)
