"""RegionAUCPR: the countries datasets' metric, AUC-PR of test queries against candidate regions."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torchmetrics.classification import BinaryAveragePrecision

from lightning_kge.batches import EvaluationBatch
from lightning_kge.module import STAGES, KGEModule


class RegionAUCPR(L.Callback):
    """Logs ``{stage}/auc_pr`` when the module's graph has candidate regions (countries S1–S3).

    As in the RotatE paper's code (``codes/model.py``, its countries branch), each query
    ``(h, r, ?)`` is scored against every candidate region ``c`` and the pairs are labelled
    ``c == t``; the metric is the average precision (area under the precision-recall curve) of
    all these pairs together. Tail prediction only. The scores come from the module's model; the
    region ids from its :class:`~lightning_kge.data.info.GraphInfo`, so a checkpoint evaluates the
    same way. Does nothing for graphs without regions.

    The metric states are TorchMetrics states, so under DDP ``compute`` gathers every process's
    pairs: the value equals one process's over the whole split.
    """

    def __init__(self) -> None:
        self.metrics = {stage: BinaryAveragePrecision() for stage in STAGES}
        self.regions: torch.Tensor | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not isinstance(pl_module, KGEModule):
            raise TypeError(f"RegionAUCPR needs a KGEModule, got {type(pl_module).__name__}")
        graph = pl_module.graph
        self.regions = None if graph is None or graph.regions is None else torch.tensor(graph.regions)

    def _update(self, pl_module: L.LightningModule, batch: EvaluationBatch, stage: str) -> None:
        if self.regions is None:
            return
        assert isinstance(pl_module, KGEModule)
        regions = self.regions.to(batch.triples.device)
        metric = self.metrics[stage].to(batch.triples.device)
        h, r, t = batch.triples.unbind(1)
        scores = pl_module.model.score_t(h, r, regions)
        metric.update(scores.flatten(), (regions[None, :] == t[:, None]).flatten().long())

    def _log(self, pl_module: L.LightningModule, stage: str) -> None:
        if self.regions is None:
            return
        metric = self.metrics[stage]  # computed on every rank: under DDP compute() is collective
        pl_module.log(f"{stage}/auc_pr", metric.compute().float(), sync_dist=True)
        metric.reset()

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                                batch: EvaluationBatch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._update(pl_module, batch, "val")

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                          batch: EvaluationBatch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._update(pl_module, batch, "test")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(pl_module, "test")
