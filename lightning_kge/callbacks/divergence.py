"""DivergenceGuard: stop a run whose loss stops being finite, before it saves or reports anything."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import lightning as L
import torch
from torch import Tensor

from lightning_kge.errors import UserError

NO_STEP = torch.iinfo(torch.int64).max
"""Stands for "no step yet" in the device-side record of the first bad step (reduced with ``min``)."""


class Diverged(UserError):
    """Training stopped because its loss or its weights were not finite (``nan`` or ``inf``)."""


def is_check_step(trainer: L.Trainer) -> bool:
    """Whether this training step is one where per-step flags are read back to the host.

    Every ``trainer.log_every_n_steps`` optimizer steps, the steps where Lightning already reads
    the logged values back, so a check there adds no other wait for the device.
    """
    return trainer.global_step % max(1, int(trainer.log_every_n_steps)) == 0


CHECK_CHUNK = 1 << 22
"""Values tested at once by :func:`all_finite`: its temporaries stay ~50 MB whatever the table's size."""


def all_finite(tensors: Iterable[Tensor]) -> Tensor:
    """Whether every value of ``tensors`` is finite, as a boolean tensor on their device (no host sync).

    Tested ``CHECK_CHUNK`` values at a time: ``torch.isfinite`` of a whole 2.4 GB table would hold
    about 1.5 times its size in temporaries (its absolute values and two masks) at the peak.

    Example:
        >>> bool(all_finite([torch.ones(3), torch.tensor([1.0, float("nan")])]))
        False
    """
    flags = [torch.isfinite(chunk).all() for t in tensors for chunk in t.detach().reshape(-1).split(CHECK_CHUNK)]
    return torch.stack(flags).all() if flags else torch.tensor(True)


class DivergenceGuard(L.Callback):
    """Stop training with a :class:`Diverged` error once a training loss is not finite.

    Each step, the loss returned by ``training_step`` is tested on its device and the first
    step with a non-finite loss is kept there (``torch.where``: no host-device synchronisation).
    The record is read back (one synchronisation, reduced over processes) every
    ``trainer.log_every_n_steps`` steps (:func:`is_check_step`), at the end of training, and by
    :class:`~lightning_kge.callbacks.checkpoint.Checkpoints` before every save, which also checks
    that the weights are finite. So a diverged run stops with a one-line error naming the step
    and the last checkpoint saved before it, and never writes a checkpoint or ``metrics.json``
    from a diverged model.
    """

    def __init__(self) -> None:
        self._first_bad: Tensor | None = None
        self.last_good: str | None = None
        """The newest checkpoint saved by this run (its path and step), set by ``Checkpoints``."""

    @staticmethod
    def find(trainer: L.Trainer) -> DivergenceGuard | None:
        """The guard among the trainer's callbacks, if any."""
        return next((c for c in trainer.callbacks if isinstance(c, DivergenceGuard)), None)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._first_bad = torch.full((), NO_STEP, dtype=torch.long, device=pl_module.device)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, Tensor) and self._first_bad is not None:
            first = self._first_bad.to(loss.device)
            bad = ~torch.isfinite(loss.detach()).all()
            self._first_bad = torch.where(bad & (first == NO_STEP), torch.full_like(first, trainer.global_step), first)
        if is_check_step(trainer):
            self.check(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer, pl_module)

    def check(self, trainer: L.Trainer, pl_module: L.LightningModule | None = None) -> None:
        """Raise :class:`Diverged` if a loss so far (on any process) was not finite.

        With ``pl_module``, also if one of its weights is not finite. One host-device
        synchronisation (and one collective under several processes).
        """
        if self._first_bad is not None:
            first = int(trainer.strategy.reduce(self._first_bad.clone(), reduce_op="min"))
            if first != NO_STEP:
                raise self.error(f"the training loss was not finite (nan or inf) at step {first}")
        if pl_module is not None:
            if not bool(all_finite(pl_module.parameters())):
                raise self.error(f"the weights were not finite (nan or inf) after step {trainer.global_step}")

    def error(self, what: str) -> Diverged:
        where = f"last good checkpoint: {self.last_good}" if self.last_good else "no checkpoint was saved before it"
        return Diverged(
            f"training diverged: {what}",
            where,
            "lower optimizer.lr (or check the data and the model settings) and train again; "
            "no metrics.json was written",
        )
