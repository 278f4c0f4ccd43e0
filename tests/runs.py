"""Small training runs for the checkpoint, resume and error tests: in-process and through the entry points."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from lightning_kge.configs import config_dir

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"

SMALL = ["data=nations", "trainer=cpu", "model.dim=8", "sampler.num_negatives=8", "trainer.enable_progress_bar=false",
         "trainer.enable_model_summary=false", "trainer.check_val_every_n_epoch=1", "trainer.log_every_n_steps=1"]
"""A fast run on nations (1,592 training triples: 4 batches of 512 per epoch, validation after each)."""


def config(output_dir: Path, *overrides: str) -> DictConfig:
    """The composed training config of :data:`SMALL` with ``overrides``, writing to ``output_dir``."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=[*SMALL, *overrides, f"output_dir={output_dir}"])


def entry(command: str, *args: str, cwd: Path, faults: bool = False, path: tuple[Path, ...] = ()) -> subprocess.CompletedProcess:
    """Run ``python -m lightning_kge.<command> args`` as a user does (``faults``: ``scripts/`` importable;
    ``path``: more folders on ``PYTHONPATH``, e.g. a client project's)."""
    env = dict(os.environ)
    env.pop("HYDRA_FULL_ERROR", None)
    folders = [*map(str, path), *([str(SCRIPTS)] if faults else [])]
    if folders:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [*folders, env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", f"lightning_kge.{command}", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """The lines of stderr that start with ``error:``."""
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def one_line_error(result: subprocess.CompletedProcess, status: int = 2) -> str:
    """The single ``error: …`` line of a command that failed with ``status`` and no traceback."""
    assert result.returncode == status, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    [line] = error_lines(result)
    return line


def step_of(path: Path) -> int:
    """The global step a checkpoint file was saved at."""
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


def weights_of(path: Path) -> dict[str, torch.Tensor]:
    """The module weights of a checkpoint file."""
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
