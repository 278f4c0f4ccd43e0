"""The real Hydra entry point, run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
KEYS = {"test/mrr", "test/mr", "test/hits@1", "test/hits@3", "test/hits@10"}


def run_module(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_fast_dev_run_of_the_entry_point_writes_metrics_json(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_module(
        ["-m", "lightning_kge.train", "model=rotate", "sampler=self_adversarial",
         "trainer.fast_dev_run=true", f"hydra.run.dir={out}"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert KEYS <= set(metrics)
    assert "| both |" in result.stdout
    assert not (tmp_path / "outputs").exists()


def test_short_run_writes_a_checkpoint_and_trains(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_module(
        ["-m", "lightning_kge.train", "data=nations", "model.dim=32", "trainer.max_steps=60",
         "trainer.check_val_every_n_epoch=100", "trainer.enable_progress_bar=false",
         f"hydra.run.dir={out}"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert json.loads((out / "metrics.json").read_text())["test/mrr"] > 0.4


def test_entry_point_works_after_a_non_editable_install(tmp_path: Path) -> None:
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(REPO)],
        capture_output=True, text=True, timeout=600,
    )
    if install.returncode != 0 and "setuptools" in install.stderr:
        pytest.skip(f"no setuptools to build the wheel offline: {install.stderr[-300:]}")
    assert install.returncode == 0, install.stderr[-3000:]
    assert (target / "lightning_kge" / "conf" / "config.yaml").is_file()
    assert (target / "lightning_kge" / "data" / "bundled" / "umls" / "train.txt").is_file()
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = run_module(["-c", "import lightning_kge; print(lightning_kge.__file__)"], tmp_path, env)
    assert where.stdout.strip().startswith(str(target)), where.stdout + where.stderr
    out = tmp_path / "run"
    result = run_module(
        ["-m", "lightning_kge.train", "trainer.fast_dev_run=true", f"hydra.run.dir={out}"],
        cwd=tmp_path, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "metrics.json").is_file()
