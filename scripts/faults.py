"""Faults on purpose, for tests and ``scripts/reliability.py``: a callback that signals its own process.

Add it to a run with ``PYTHONPATH=scripts`` and
``+callbacks.fault._target_=faults.SignalAt +callbacks.fault.step=N +callbacks.fault.signal=SIGKILL``:
the process gets the signal at the end of training step ``N``, as if a user or a scheduler sent it
then, so tests of interruption and resume are deterministic.
"""

from __future__ import annotations

import os
import signal as signals
from typing import Any

import lightning as L


class SignalAt(L.Callback):
    """Send ``signal`` to this process at the end of training step ``step`` (global rank zero only).

    Args:
        step: the training step (1 = the first optimizer step).
        signal: a signal name, e.g. ``SIGINT``, ``SIGTERM``, ``SIGKILL``.
    """

    def __init__(self, step: int, signal: str = "SIGTERM") -> None:
        self.step = step
        self.signal = signals.Signals[signal]

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self.step and trainer.is_global_zero:
            os.kill(os.getpid(), self.signal)
