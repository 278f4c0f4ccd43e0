"""Evaluate a checkpoint: ``python -m lightning_kge.evaluate ckpt=PATH [data=NAME] [split=valid]``.

Prints the same table and writes the same ``metrics.json`` as training does. ``split=valid``
ranks the validation split (``val/…`` metrics, equal to those the run logged for the same
weights), ``ties=`` sets the tie policy, ``raw=true`` adds raw (unfiltered) metrics.
"""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig

from lightning_kge.checkpoints import load_datamodule, load_module
from lightning_kge.errors import UserError, reports_user_errors
from lightning_kge.metrics.ranking import TIES
from lightning_kge.module import KGEModule
from lightning_kge.configs import build_trainer, config_dir, test


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Rank ``cfg.split`` with the checkpoint ``cfg.ckpt``; the report callback writes ``metrics.json``."""
    module = load_module(cfg.ckpt, cfg.get("trust"))
    apply_options(cfg, module)
    datamodule = load_datamodule(cfg.ckpt, module, cfg.get("data"), cfg.get("trust"))
    trainer = build_trainer(cfg)
    if cfg.split == "test":
        return test(trainer, module, datamodule)
    results = trainer.validate(module, datamodule=datamodule, verbose=False)
    return {k: float(v) for k, v in results[0].items()} if results else {}


def apply_options(cfg: DictConfig, module: KGEModule) -> None:
    """Check ``split``, ``ties`` and ``raw`` and set them on ``module``; refuse ``module.*`` keys."""
    if "module" in cfg:
        raise UserError("module settings come from the checkpoint", "config key module",
                        "set the tie policy with ties=..., raw metrics with raw=true")
    if cfg.split not in ("test", "valid"):
        raise UserError(f"split={cfg.split!r} is not allowed", "config key split", "set split to test or valid")
    if cfg.ties is not None:
        if cfg.ties not in TIES:
            raise UserError(f"ties={cfg.ties!r} is not allowed", "config key ties", f"set ties to {' or '.join(TIES)}")
        module.ties = cfg.ties
    if not isinstance(cfg.raw, bool):
        raise UserError(f"raw={cfg.raw!r} is not allowed", "config key raw", "set raw to true or false")
    module.raw = cfg.raw


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="evaluate")
@reports_user_errors
def main(cfg: DictConfig) -> Any:
    """Command-line entry point (Hydra)."""
    return evaluate(cfg)


if __name__ == "__main__":
    main()
