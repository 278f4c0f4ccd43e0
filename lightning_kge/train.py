"""Hydra entry point: ``python -m lightning_kge.train model=rotate sampler=self_adversarial``.

Only this module (and :mod:`lightning_kge.evaluate`) touches Hydra: :func:`train` builds the
plain objects from a composed config and runs Lightning; tests call it directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from omegaconf import DictConfig

from lightning_kge.datamodule import KGEDataModule
from lightning_kge.module import KGEModule


def config_dir() -> Path:
    """The ``conf/`` folder: inside the installed package, or at the top of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"no conf/config.yaml in {here} or {here.parent}")


def build(cfg: DictConfig) -> tuple[KGEModule, KGEDataModule]:
    """Instantiate the datamodule and the module (with its model, sampler and optimizer)."""
    sampler = instantiate(cfg.sampler, _convert_="all")
    datamodule = instantiate(cfg.data, sampler=sampler, _convert_="all")
    datamodule.prepare_data()
    datamodule.setup()
    model = instantiate(
        cfg.model,
        num_entities=datamodule.num_entities,
        num_relations=datamodule.num_relations,
        _convert_="all",
    )
    module = instantiate(
        cfg.module,
        model=model,
        sampler=sampler,
        optimizer=instantiate(cfg.optimizer, _convert_="all"),
        _convert_="all",
    )
    return module, datamodule


def train(cfg: DictConfig) -> dict[str, float]:
    """Train, then test; returns the test metrics.

    The trainer's :class:`~lightning_kge.report.TestReport` callback prints the table and writes
    ``metrics.json`` to ``cfg.output_dir`` on global rank zero.
    """
    L.seed_everything(cfg.seed, workers=True)
    trainer: L.Trainer = instantiate(cfg.trainer, _convert_="all")
    refuse_relaunch_in_multirun(trainer)
    module, datamodule = build(cfg)
    trainer.fit(module, datamodule=datamodule)
    return test(trainer, module, datamodule)


def test(trainer: L.Trainer, module: KGEModule, datamodule: KGEDataModule) -> dict[str, float]:
    """Run the test loop and return its ``test/…`` metrics as floats."""
    results = trainer.test(module, datamodule=datamodule, verbose=False)
    return {k: float(v) for k, v in results[0].items()} if results else {}


def refuse_relaunch_in_multirun(trainer: L.Trainer) -> None:
    """Stop a Hydra multirun whose strategy starts its ranks by re-running the command line.

    ``strategy=ddp`` (and Lightning's automatic choice for several devices) starts the other
    ranks by running the same command again; inside a sweep (``-m``) each rank would start the
    whole sweep again. ``strategy=ddp_spawn`` starts its ranks from the running job instead.
    """
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    if multirun and isinstance(trainer.strategy.launcher, _SubprocessScriptLauncher):
        raise ValueError(
            f"strategy {type(trainer.strategy).__name__} re-runs the command once per rank, which "
            "cannot work inside a Hydra multirun (-m): use strategy=ddp_spawn for a sweep, or "
            "run one job per command without -m"
        )


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def main(cfg: DictConfig) -> Any:
    """Command-line entry point (Hydra)."""
    return train(cfg)


if __name__ == "__main__":
    main()
