"""DDP on CPU processes (gloo) through the real entry points: exact metrics, one report."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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
    # 2 batches per rank and epoch: validation at steps 2, 4, 6; the run ends at step 7, between two
    run([*TRAIN, "trainer=ddp_cpu", "trainer.check_val_every_n_epoch=1", "trainer.max_steps=7",
         "callbacks.checkpoint.every_n_steps=7", f"hydra.run.dir={ddp_dir}"], cwd=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"], "a rank made its own run dir"
    assert len(list(tmp_path.rglob("metrics.json"))) == 1
    [ckpt] = (ddp_dir / "checkpoints").glob("step*.ckpt")  # the named one, passed unquoted
    assert ckpt.name == "step7.ckpt" and ckpt.read_bytes() == (ddp_dir / "checkpoints" / "last.ckpt").read_bytes()
    single_dir = tmp_path / "single"
    run(["-m", "lightning_kge.evaluate", f"ckpt={ckpt}",
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
    assert {"test/1-to-1/mrr", "test/N-to-N/hits@10"} <= set(metrics(ddp_dir))
    per_relation = (train_dir / "per_relation.tsv").read_text()
    assert per_relation == (ddp_dir / "per_relation.tsv").read_text()
    assert len(per_relation.splitlines()) > 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_on_one_machine_train_and_test_to_the_end(tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    args = [sys.executable, *TRAIN, "trainer=multi_node", "trainer.accelerator=cpu",
            "trainer.devices=1",
            f"hydra.run.dir={out}"]
    nodes = [subprocess.Popen(args, cwd=tmp_path, env={**env, "NODE_RANK": str(rank)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in (0, 1)]
    logs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(log[-3000:] for log in logs)
    assert "| both |" in logs[0] and "| both |" not in logs[1]
    assert metrics(out)["test/mrr"] > 0


# --- what each rank trains on ---------------------------------------------------------------------

PROBE = Path(__file__).with_name("ddp_probe.py")


def probe(out: Path, seed: int) -> list[list[tuple]]:
    out.mkdir()
    run([str(PROBE), str(out), str(seed)], cwd=out)
    return [torch.load(out / f"rank{r}.pt") for r in (0, 1)]


@pytest.fixture(scope="module")
def probes(tmp_path_factory) -> dict[str, list[list[tuple]]]:
    root = tmp_path_factory.mktemp("probe")
    return {name: probe(root / name, seed) for name, seed in (("a", 0), ("again", 0), ("other", 1))}


def test_ranks_train_on_disjoint_positives_that_cover_the_training_set_each_epoch(probes, nations) -> None:
    ranks = probes["a"]
    train = sorted(map(tuple, nations.triples["train"].tolist()))
    assert len(set(train)) == len(train)  # nations has no duplicate triples: positions are triples
    for epoch in (0, 1):
        seen = [[tuple(x) for e, pos, _, _ in batches if e == epoch for x in pos.tolist()] for batches in ranks]
        assert not set(seen[0]) & set(seen[1])
        assert sorted(seen[0] + seen[1]) == train


def test_ranks_and_epochs_draw_different_negatives(probes) -> None:
    rank0, rank1 = probes["a"]
    assert len(rank0) == len(rank1) == 8
    for (e0, _, n0, h0), (e1, _, n1, h1) in zip(rank0, rank1):
        assert e0 == e1 and torch.equal(h0, h1)  # same step, same side corrupted
        assert not torch.equal(n0, n1)
    per_epoch = len(rank0) // 2
    for first, second in zip(rank0[:per_epoch], rank0[per_epoch:]):
        assert not torch.equal(first[2], second[2][: len(first[2])])


def test_negatives_and_partitions_are_reproducible_under_the_seed(probes) -> None:
    for same, again in zip(probes["a"], probes["again"]):
        for x, y in zip(same, again):
            assert torch.equal(x[1], y[1]) and torch.equal(x[2], y[2])
    assert not all(torch.equal(x[2], y[2]) for x, y in zip(probes["a"][0], probes["other"][0]))


# --- Hydra multirun --------------------------------------------------------------------------------

MULTIRUN = [*TRAIN[:2], "--multirun", *TRAIN[2:]]


def test_multirun_sweep_with_ddp_spawn_writes_one_report_per_job(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    run([*MULTIRUN, "trainer=ddp_cpu", "strategy=ddp_spawn", "sampler=uniform,self_adversarial",
         f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert sorted(p.relative_to(sweep).as_posix() for p in sweep.rglob("metrics.json")) == [
        "0/metrics.json", "1/metrics.json"]
    assert metrics(sweep / "0") != metrics(sweep / "1")  # the sampler did change


def test_multirun_sweep_with_relaunching_ddp_is_refused_with_advice(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, *MULTIRUN, "trainer=ddp_cpu", "strategy=ddp", "sampler=uniform,self_adversarial",
         f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode != 0
    assert "strategy=ddp_spawn" in result.stderr and "multirun" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: "), result.stderr[-2000:]
    assert not list(tmp_path.rglob("metrics.json"))
