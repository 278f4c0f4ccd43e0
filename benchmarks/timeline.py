"""A callback for the benchmarks: each validation's metric against training steps and training seconds.

Added to a run as ``+callbacks.timeline._target_=timeline.Timeline +callbacks.timeline.path=FILE``
(with ``benchmarks/`` on ``PYTHONPATH``). Training seconds leave out the time spent validating, so
strategies are compared on the time they train; the peak memory is the process's peak RSS on CPU,
the allocator's peak on CUDA.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch


class Timeline(L.Callback):
    """Write ``{"points": [{"step", "seconds", "value"}], "steps", "train_seconds", "peak_gib", "metric"}`` to ``path``.

    Args:
        path: the JSON file to write at the end of training.
        metric: the validation metric to record; ``val/auc_pr`` where it is logged, else ``val/mrr``.
    """

    def __init__(self, path: str, metric: str | None = None) -> None:
        self.path = Path(path)
        self.metric = metric
        self.points: list[dict[str, Any]] = []
        self.start = self.evaluating = self.validation_start = 0.0

    def _now(self, pl_module: L.LightningModule) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start, self.evaluating = self._now(pl_module), 0.0

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.validation_start = self._now(pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        trained = self.validation_start - self.start - self.evaluating  # training seconds before this validation
        self.evaluating += self._now(pl_module) - self.validation_start
        metrics = trainer.callback_metrics
        name = self.metric or ("val/auc_pr" if "val/auc_pr" in metrics else "val/mrr")
        self.points.append({"step": trainer.global_step, "seconds": trained, "value": float(metrics[name]), "metric": name})

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seconds = self._now(pl_module) - self.start - self.evaluating
        if pl_module.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(pl_module.device) / 2**30
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
        record = {"points": self.points, "steps": trainer.global_step, "train_seconds": seconds, "peak_gib": peak,
                  "device": str(pl_module.device)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(record, indent=1) + "\n")
