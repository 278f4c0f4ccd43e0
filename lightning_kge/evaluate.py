"""Evaluate a checkpoint: ``python -m lightning_kge.evaluate ckpt=PATH [data=NAME]``.

Prints the same table and writes the same ``metrics.json`` as training does.
"""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig

from lightning_kge.checkpoints import load_datamodule, load_module
from lightning_kge.errors import reports_user_errors
from lightning_kge.train import build_trainer, config_dir, test


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test the checkpoint ``cfg.ckpt``; the trainer's report callback writes ``metrics.json``."""
    module = load_module(cfg.ckpt)
    datamodule = load_datamodule(cfg.ckpt, module, cfg.get("data"))
    return test(build_trainer(cfg), module, datamodule)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="evaluate")
@reports_user_errors
def main(cfg: DictConfig) -> Any:
    """Command-line entry point (Hydra)."""
    return evaluate(cfg)


if __name__ == "__main__":
    main()
