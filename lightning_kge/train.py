"""Hydra entry point: ``python -m lightning_kge.train model=rotate sampler=self_adversarial``.

Only the entry points touch Hydra: :func:`train` builds the plain objects from a composed config
(:func:`build`, :func:`build_trainer`) and runs Lightning; tests call it directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from omegaconf import DictConfig

from hydra_plugins.lightning_kge_optuna import optuna_sweeper
from lightning_kge.datamodule import KGEDataModule
from lightning_kge.errors import ArgumentError, UserError, reports_user_errors
from lightning_kge.extras import require_logger_packages
from lightning_kge.module import KGEModule

optuna_sweeper.register()  # hydra/sweeper=lightning_kge_optuna, also after an editable install


def config_dir() -> Path:
    """The ``conf/`` folder: inside the installed package, or at the top of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"no conf/config.yaml in {here} or {here.parent}")


def instantiate_node(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` of the config node at ``key``; errors name the config key.

    An :class:`~lightning_kge.errors.ArgumentError` raised by the class becomes the same error
    naming ``<key>.<argument>``; any other :class:`~lightning_kge.errors.UserError` passes as it is.
    """
    try:
        return instantiate(node, **kwargs, _convert_="all")
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, ArgumentError):
            raise cause.at(key) from None
        if isinstance(cause, UserError):
            raise cause from None
        raise


def build(cfg: DictConfig) -> tuple[KGEModule, KGEDataModule]:
    """Instantiate the datamodule and the module from a composed config.

    The ``sampler`` option gives the datamodule its ``Corruption`` (drawing negatives) and the
    module its ``Selection`` (choosing and weighing them); the datamodule's ``GraphInfo`` goes
    to the module, which keeps it in its checkpoints.
    """
    sampler = instantiate_node(cfg.sampler, "sampler")
    datamodule = instantiate_node(cfg.data, "data", corruption=sampler.corruption())
    datamodule.prepare_data()
    datamodule.setup()
    model = instantiate_node(
        cfg.model, "model", num_entities=datamodule.num_entities, num_relations=datamodule.num_relations
    )
    module = instantiate_node(
        cfg.module,
        "module",
        model=model,
        selection=sampler.selection(),
        graph=datamodule.info,
        optimizer=instantiate_node(cfg.optimizer, "optimizer"),
    )
    return module, datamodule


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """The Trainer of ``cfg.trainer`` with the logger of ``cfg.logger`` and the named ``cfg.callbacks``."""
    require_logger_packages(cfg.get("logger"))  # a missing optional package names its extra
    logger = instantiate_node(cfg.logger, "logger") if cfg.get("logger") else False
    callbacks = [instantiate_node(node, f"callbacks.{name}") for name, node in (cfg.get("callbacks") or {}).items()
                 if node is not None]
    return instantiate_node(cfg.trainer, "trainer", logger=logger, callbacks=callbacks)


def train(cfg: DictConfig) -> dict[str, float]:
    """Train, then test; returns the metrics of the last validation (``val/…``) and the test metrics.

    The trainer's :class:`~lightning_kge.callbacks.report.TestReport` callback prints the table and
    writes ``metrics.json`` to ``cfg.output_dir`` on global rank zero.
    """
    L.seed_everything(cfg.seed, workers=True)
    trainer = build_trainer(cfg)
    refuse_relaunch_in_multirun(trainer)
    module, datamodule = build(cfg)
    trainer.fit(module, datamodule=datamodule)
    validated = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    return {**validated, **test(trainer, module, datamodule)}


def objective(metrics: dict[str, float], name: str | None) -> Any:
    """What :func:`main` returns: the metric ``name`` (a sweeper optimises it), or all metrics.

    Example:
        >>> objective({"val/mrr": 0.5, "test/mrr": 0.4}, "val/mrr")
        0.5
    """
    if name is None:
        return metrics
    if name not in metrics:
        raise UserError(
            f"the run logged no {name} (it logged {', '.join(sorted(metrics)) or 'nothing'})",
            "config key optimized_metric",
            "name a logged metric, e.g. val/mrr, and validate at the end of training (trainer.val_check_interval)",
        )
    return metrics[name]


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
        raise UserError(
            f"strategy {type(trainer.strategy).__name__} re-runs the command once per rank, which "
            "cannot work inside a Hydra multirun (-m)",
            "config key trainer.strategy",
            "use strategy=ddp_spawn for a sweep, or run one job per command without -m",
        )


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
@reports_user_errors
def main(cfg: DictConfig) -> Any:
    """Command-line entry point (Hydra): the metrics, or the one named by ``optimized_metric``."""
    return objective(train(cfg), cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
