"""DDP timeouts: ``trainer.strategy.timeout`` in seconds; a frozen (SIGSTOP) or lost (SIGKILL) rank ends the run
with one line naming it and the last good checkpoint, and leaves no process behind."""

from __future__ import annotations

import importlib
import contextlib
import os
import signal as signals
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lightning_kge.configs import config_dir
from lightning_kge.errors import ArgumentError
from lightning_kge.strategies import DDPStrategy
from runs import SCRIPTS, step_of

CONF = config_dir()
TRAIN = ["data=nations", "model.dim=8", "sampler.num_negatives=8", "trainer=ddp_cpu", "trainer.enable_progress_bar=false",
         "trainer.enable_model_summary=false", "trainer.check_val_every_n_epoch=1", "trainer.max_steps=50"]
"""2 ranks of 2 batches an epoch: validation and last.ckpt after step 2, then step 3 ..."""


def strategy_nodes() -> dict[str, dict]:
    """The DDP strategy node of every yaml that sets one."""
    found = {}
    for path in [*(CONF / "strategy").glob("*.yaml"), *(CONF / "trainer").glob("*.yaml")]:
        node = OmegaConf.to_container(OmegaConf.load(path)).get("strategy")
        if isinstance(node, dict):
            found[f"{path.parent.name}/{path.name}"] = node
    return found


def test_every_ddp_option_sets_the_timeout_to_the_class_default_in_seconds() -> None:
    nodes = strategy_nodes()
    assert {"strategy/ddp.yaml", "strategy/ddp_spawn.yaml", "trainer/ddp_cpu.yaml", "trainer/multi_gpu.yaml",
            "trainer/multi_node.yaml"} <= set(nodes)
    for where, node in nodes.items():
        module, _, name = node["_target_"].rpartition(".")
        cls = getattr(importlib.import_module(module), name)  # DDPStrategy, or a subclass (strategy=torchrec)
        assert issubclass(cls, DDPStrategy), where
        assert node["timeout"] == DDPStrategy().timeout == 600.0 < 30 * 60, where
    assert DDPStrategy(timeout=20)._timeout == timedelta(seconds=20)


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), True, "10"])
def test_a_timeout_that_is_not_a_positive_number_of_seconds_is_refused(timeout) -> None:
    with pytest.raises(ArgumentError, match=r"strategy\.timeout=.* is not allowed"):
        DDPStrategy(timeout=timeout)


def train_with_fault(out: Path, signal: str) -> tuple[int, str, list[int]]:
    """A 2-process run whose rank 1 gets ``signal`` at the end of step 3: exit status, stderr, processes left.

    The run starts a session of its own; whatever is left of it at the end is killed (and listed).
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SCRIPTS), os.environ.get("PYTHONPATH")]))}
    env.pop("HYDRA_FULL_ERROR", None)
    command = [sys.executable, "-m", "lightning_kge.train", *TRAIN, "trainer.strategy.timeout=20",
               "+callbacks.fault._target_=faults.SignalAt", "+callbacks.fault.step=3",
               f"+callbacks.fault.signal={signal}", "+callbacks.fault.rank=1", f"hydra.run.dir={out}"]
    process = subprocess.Popen(command, cwd=out.parent, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:  # well under Lightning's 30 minutes: the strategy's 20 s end it
        _, stderr = process.communicate(timeout=300)
    finally:
        left = session_processes(process.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signals.SIGKILL)
    return process.returncode, stderr, left


def session_processes(session: int) -> list[int]:
    """The processes of a session (a run's ranks), stopped ones included; none where /proc is missing."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] not in "ZX":  # the 6th field of /proc/PID/stat: its session
            found.append(int(stat.parent.name))
    return found


def test_a_frozen_or_lost_rank_ends_the_run_with_one_line_naming_it_and_the_last_checkpoint(tmp_path: Path) -> None:
    for signal, said in [("SIGSTOP", "did not respond within trainer.strategy.timeout=20 s at step 3: its process is "
                                     "stopped"),
                         ("SIGKILL", "was lost at step 3: its process ended: killed by SIGKILL")]:
        out = tmp_path / signal
        out.mkdir()
        status, stderr, left = train_with_fault(out, signal)
        assert status == 2 and "Traceback" not in stderr, stderr[-4000:]
        [line] = [line for line in stderr.splitlines() if line.startswith("error:")]
        last = out / "checkpoints" / "last.ckpt"
        assert line.startswith(f"error: rank 1 of 2 {said} (last good checkpoint: {last}): "), line
        assert line.endswith(f"then continue the run with the same overrides and ckpt_path={last}"), line
        assert step_of(last) == 2
        assert left == [], f"processes left behind: {left}"
