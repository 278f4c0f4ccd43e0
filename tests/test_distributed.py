"""DDP on CPU processes (gloo) through the real entry points: exact metrics, one report."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

TRAIN = ["-m", "lightning_kge.train", "data=nations", "model.dim=16", "trainer.max_steps=8",
         "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def run(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def metrics(folder: Path) -> dict[str, float]:
    return json.loads((folder / "metrics.json").read_text())


def assert_same_metrics(a: dict[str, float], b: dict[str, float]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=1e-6), key


def test_ddp_run_reports_once_and_its_checkpoint_evaluates_identically_in_one_process(
    tmp_path: Path,
) -> None:
    """nations has 201 test triples: odd, so a padding sampler would count one query twice."""
    ddp_dir = tmp_path / "ddp"
    run([*TRAIN, "trainer=ddp_cpu", f"hydra.run.dir={ddp_dir}"], cwd=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"], "a rank made its own run dir"
    assert len(list(tmp_path.rglob("metrics.json"))) == 1
    single_dir = tmp_path / "single"
    run(["-m", "lightning_kge.evaluate", f"ckpt={ddp_dir / 'checkpoints' / 'last.ckpt'}",
         "trainer=cpu", "trainer.enable_progress_bar=false", f"hydra.run.dir={single_dir}"],
        cwd=tmp_path)
    assert_same_metrics(metrics(ddp_dir), metrics(single_dir))


def test_two_process_evaluation_equals_one_process(tmp_path: Path) -> None:
    train_dir = tmp_path / "train"
    run([*TRAIN, "trainer=cpu", f"hydra.run.dir={train_dir}"], cwd=tmp_path)
    ddp_dir = tmp_path / "eval_ddp"
    run(["-m", "lightning_kge.evaluate", f"ckpt={train_dir / 'checkpoints' / 'last.ckpt'}",
         "trainer=ddp_cpu", "trainer.enable_progress_bar=false", f"hydra.run.dir={ddp_dir}"],
        cwd=tmp_path)
    assert_same_metrics(metrics(train_dir), metrics(ddp_dir))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_on_one_machine_train_and_test_to_the_end(tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    args = [sys.executable, *TRAIN, "trainer=multi_node", "trainer.accelerator=cpu",
            "trainer.devices=1", "trainer.strategy.process_group_backend=gloo",
            f"hydra.run.dir={out}"]
    nodes = [subprocess.Popen(args, cwd=tmp_path, env={**env, "NODE_RANK": str(rank)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in (0, 1)]
    logs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(log[-3000:] for log in logs)
    assert "| both |" in logs[0] and "| both |" not in logs[1]
    assert metrics(out)["test/mrr"] > 0
