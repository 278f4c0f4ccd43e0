"""A RotatE run on the tiny graph of ``tests/data/tiny_kg``, trained once per test session.

Its checkpoint, CSV log and metrics are what a user gets from ``python -m lightning_kge.train``
(the same :func:`~lightning_kge.train.train`); the model memorises the 25 training triples,
and its last validation happens at its final step (so ``last.ckpt`` holds the validated weights).
"""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

from lightning_kge.configs import config_dir
from lightning_kge.train import train

TINY_KG = Path(__file__).resolve().parent / "data" / "tiny_kg"

OVERRIDES = [
    "data=tsv", f"data.path={TINY_KG}", "data.batch_size=25", "data.eval_batch_size=4",
    "model.dim=16", "model.gamma=6.0", "sampler.num_negatives=8", "optimizer.lr=0.05",
    "trainer=cpu", "trainer.max_steps=200", "trainer.check_val_every_n_epoch=100",
    "trainer.log_every_n_steps=10", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
]
"""One batch per epoch (25 triples), so validation runs at steps 100 and 200 (the last)."""


def compose_train(*overrides: str):
    """The training config composed with ``overrides`` (after :data:`OVERRIDES`)."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=[*OVERRIDES, *overrides])


def tiny_run(root: Path) -> Path:
    """The run folder (``checkpoints/last.ckpt``, ``csv/metrics.csv``, ``metrics.json``) under ``root``."""
    out = root / "tiny_run"
    if not (out / "checkpoints" / "last.ckpt").is_file():
        train(compose_train(f"output_dir={out}"))
    return out
