"""Faults on purpose, for tests and ``scripts/reliability.py``: a callback that signals its own process.

Add it to a run with ``PYTHONPATH=scripts`` and
``+callbacks.fault._target_=faults.SignalAt +callbacks.fault.step=N +callbacks.fault.signal=SIGKILL``:
the process gets the signal at the end of training step ``N``, as if a user or a scheduler sent it
then, so tests of interruption and resume are deterministic. ``+callbacks.fault.rank=1`` signals
rank 1 instead (``SIGSTOP``: a frozen rank); ``+callbacks.fault.stage=test`` signals at the end of
the final test instead, after the loggers wrote the test row (as the CSV logger's periodic flush
does when the step count is a multiple of 100).
"""

from __future__ import annotations

import os
import signal as signals
from typing import Any

import lightning as L


class SignalAt(L.Callback):
    """Send ``signal`` to the process of global rank ``rank`` at the end of training step ``step``.

    Args:
        step: the training step (1 = the first optimizer step); ignored with ``stage="test"``.
        signal: a signal name, e.g. ``SIGINT``, ``SIGTERM``, ``SIGKILL``, ``SIGSTOP``.
        rank: the global rank whose process gets it.
        stage: ``train`` (at the end of step ``step``) or ``test`` (at the end of testing, after
            the loggers saved their files).
    """

    def __init__(self, step: int = 1, signal: str = "SIGTERM", rank: int = 0, stage: str = "train") -> None:
        if stage not in ("train", "test"):
            raise ValueError(f"stage must be train or test, not {stage!r}")
        self.step = step
        self.signal = signals.Signals[signal]
        self.rank = rank
        self.stage = stage

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.stage == "train" and trainer.global_step == self.step and trainer.global_rank == self.rank:
            os.kill(os.getpid(), self.signal)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.stage == "test" and trainer.global_rank == self.rank:
            for logger in trainer.loggers:
                logger.save()
            os.kill(os.getpid(), self.signal)
