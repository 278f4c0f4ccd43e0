"""Hydra helpers that every entry point shares: the ``conf/`` folder, instantiating a config node with
errors that name its key, the Trainer of a config and the test loop.

Importing this module runs no entry point's set-up (``train.py``'s sweeper registration, say), so
``evaluate``, ``predict``, ``export``, ``plot`` and :mod:`lightning_kge.checkpoints` import it, not
``train.py``.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from lightning_kge.errors import ArgumentError, UserError
from lightning_kge.extras import require_logger_packages


def config_dir() -> Path:
    """The ``conf/`` folder: inside the installed package, or at the top of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"no conf/config.yaml in {here} or {here.parent}")


def instantiate_node(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` of the config node at ``key``; errors name the config key.

    Python objects given in ``kwargs`` (the model, the graph with its labels, …) never pass
    through OmegaConf: the node is instantiated as a partial and called with them, so a label
    such as ``${oc.env:HOME}`` stays text. An :class:`~lightning_kge.errors.ArgumentError` raised by
    the class becomes the same error naming ``<key>.<argument>``; any other
    :class:`~lightning_kge.errors.UserError` passes as it is.
    """
    try:
        if not kwargs:
            return instantiate(node, _convert_="all")
        factory = instantiate(node, _partial_=True, _convert_="all")
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, ArgumentError):
            raise cause.at(key) from None
        if isinstance(cause, UserError):
            raise cause from None
        raise
    try:
        return factory(**kwargs)
    except ArgumentError as error:
        raise error.at(key) from None


def checked_optimizer(factory: Any, key: str) -> Any:
    """``factory`` (``params -> Optimizer``) once it has built an optimizer; errors name ``key``.

    Its learning rate must be a finite number > 0 (torch accepts 0, which trains nothing), and
    torch's own checks (negative betas, ...) run now, before any data is loaded or trained on.
    """
    lr = factory.keywords.get("lr") if isinstance(factory, functools.partial) else None
    number = isinstance(lr, (int, float)) and not isinstance(lr, bool)
    if lr is not None and not (number and math.isfinite(lr) and lr > 0):
        raise ArgumentError("lr", lr, "a number > 0, e.g. 0.001").at(key)
    try:
        factory([torch.nn.Parameter(torch.zeros(1))])
    except (ValueError, TypeError) as error:
        raise UserError(f"the optimizer refuses its settings: {error}", f"config key {key}",
                        f"correct the {key}.* values") from None
    return factory


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """The Trainer of ``cfg.trainer`` with the logger of ``cfg.logger`` and the named ``cfg.callbacks``."""
    require_logger_packages(cfg.get("logger"))  # a missing optional package names its extra
    logger = instantiate_node(cfg.logger, "logger") if cfg.get("logger") else False
    callbacks = [instantiate_node(node, f"callbacks.{name}") for name, node in (cfg.get("callbacks") or {}).items()
                 if node is not None]
    return instantiate_node(cfg.trainer, "trainer", logger=logger, callbacks=callbacks)


def test(
    trainer: L.Trainer, module: L.LightningModule, datamodule: L.LightningDataModule, ckpt_path: str | None = None
) -> dict[str, float]:
    """Run the test loop (on the weights of ``ckpt_path`` if given) and return its ``test/…`` metrics as floats."""
    results = trainer.test(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False, weights_only=True)
    return {k: float(v) for k, v in results[0].items()} if results else {}
