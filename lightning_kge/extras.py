"""Optional packages: each belongs to an extra of ``pyproject.toml``; a missing one is a one-line error.

``pip install 'lightning-kge[tensorboard]'`` (or ``wandb``, ``mlflow``, ``search``, ``plot``)
installs what a feature needs; the core package never imports them at start-up.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from lightning_kge.errors import UserError

LOGGER_EXTRAS: dict[str, tuple[tuple[str, ...], str]] = {
    "lightning.pytorch.loggers.TensorBoardLogger": (("tensorboard", "tensorboardX"), "tensorboard"),
    "lightning.pytorch.loggers.tensorboard.TensorBoardLogger": (("tensorboard", "tensorboardX"), "tensorboard"),
    "lightning.pytorch.loggers.WandbLogger": (("wandb",), "wandb"),
    "lightning.pytorch.loggers.wandb.WandbLogger": (("wandb",), "wandb"),
    "lightning.pytorch.loggers.MLFlowLogger": (("mlflow",), "mlflow"),
    "lightning.pytorch.loggers.mlflow.MLFlowLogger": (("mlflow",), "mlflow"),
}
"""Logger class -> (packages, any one of which it needs; the extra that installs it)."""


def require_package(names: tuple[str, ...], extra: str, user: str, where: str) -> ModuleType:
    """Import the first of ``names`` that is installed, or raise a :class:`UserError` naming ``extra``.

    Args:
        names: importable module names, any one of which will do.
        extra: the ``pyproject.toml`` extra that installs it.
        user: what needs it, for the message (e.g. ``logger=tensorboard``).
        where: the config key or command, for the message.

    Example:
        >>> require_package(("json",), "none", "a test", "here").__name__
        'json'
        >>> require_package(("no_such_module_xyz",), "plot", "plot", "command lightning_kge.plot")
        Traceback (most recent call last):
        ...
        lightning_kge.errors.UserError: plot needs the package no_such_module_xyz, which is not installed (command lightning_kge.plot): pip install 'lightning-kge[plot]'
    """
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise UserError(f"{user} needs the package {' or '.join(names)}, which is not installed", where,
                    f"pip install 'lightning-kge[{extra}]'")


def require_logger_packages(node: Mapping[str, Any] | None) -> None:
    """Check that the package of the logger configured by ``node`` (``cfg.logger``) is installed."""
    if not node or "_target_" not in node:
        return
    target = node["_target_"]
    if target in LOGGER_EXTRAS:
        names, extra = LOGGER_EXTRAS[target]
        require_package(names, extra, f"logger {target.rpartition('.')[2]}", "config key logger")
