"""KGEModule: the LightningModule that trains and evaluates any knowledge-graph embedding model."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.warnings import PossibleUserWarning
from torch import Tensor
from torchmetrics.classification import BinaryAveragePrecision

from lightning_kge.losses import negative_sampling_loss
from lightning_kge.metrics.categories import CATEGORIES
from lightning_kge.metrics.ranking import SIDES, RankingMetrics, Ties, filtered_ranks
from lightning_kge.models.base import KGEModel
from lightning_kge.sampling import NegativeBatch, UniformSampler
from lightning_kge.spec import from_spec, to_spec

OptimizerFactory = Callable[..., torch.optim.Optimizer]

# Ranking values are logged as totals over all processes (see ``log_ranking``), so Lightning's
# advice to average them with ``sync_dist=True`` does not apply to them.
warnings.filterwarnings(
    "ignore", message=r"It is recommended to use `self\.log\('(val|test)/", category=PossibleUserWarning
)


class KGEModule(L.LightningModule):
    """Negative-sampling training and filtered ranking evaluation around a :class:`KGEModel`.

    Training step: score the positives and the negatives of a :class:`NegativeBatch`, weigh the
    negatives with the sampler (uniform or self-adversarial), and apply
    :func:`~lightning_kge.losses.negative_sampling_loss`. Validation and test rank every
    entity as head and as tail of each query, filtered, and log ``{stage}/mrr``, ``/mr``,
    ``/hits@k`` (both sides), ``{stage}/head/…``, ``{stage}/tail/…`` and, when the datamodule
    has ``relation_categories``, ``{stage}/1-to-N/mrr`` etc. When evaluation batches carry
    ``regions`` (the countries datasets), ``{stage}/auc_pr`` is logged too: the paper code's
    AUC-PR of every (query, region) pair, tail prediction only.

    Subclass and override a hook rather than a step: :meth:`score_negatives`,
    :meth:`compute_loss`, :meth:`score_all_candidates`.

    Args:
        model: the model, or its spec (``{"_target_": ..., **args}``, as stored in checkpoints).
        sampler: the negative sampler (it also weighs the negatives), or its spec.
        optimizer: a factory ``params -> Optimizer`` (``functools.partial``; Hydra
            ``_partial_: true``); ``None`` means ``torch.optim.Adam`` with its defaults.
        lr_scheduler: optional factory ``optimizer -> LRScheduler``, stepped every step.
        regularization: weight of the L3 penalty ``Σ ‖θ‖₃³`` (paper code; for the bilinear models).
        ties: rank ties as ``realistic`` (mean of optimistic and pessimistic), ``optimistic``
            or ``pessimistic``.
        eval_chunk_size: candidate entities scored at once during evaluation (bounds memory).
        hits_at: the ``k`` of Hits@k.
    """

    def __init__(
        self,
        model: KGEModel | Mapping[str, Any],
        sampler: UniformSampler | Mapping[str, Any],
        optimizer: OptimizerFactory | Mapping[str, Any] | None = None,
        lr_scheduler: Callable[..., Any] | Mapping[str, Any] | None = None,
        regularization: float = 0.0,
        ties: Ties = "realistic",
        eval_chunk_size: int = 4096,
        hits_at: tuple[int, ...] = (1, 3, 10),
    ) -> None:
        super().__init__()
        self.model: KGEModel = from_spec(model)
        self.sampler: UniformSampler = from_spec(sampler)
        self.optimizer_factory = from_spec(optimizer)
        self.lr_scheduler_factory = from_spec(lr_scheduler)
        self.regularization = regularization
        self.ties = ties
        self.eval_chunk_size = eval_chunk_size
        self.save_hyperparameters(ignore=["model", "sampler", "optimizer", "lr_scheduler"])
        self.hparams.update(
            model=to_spec(self.model),
            sampler=to_spec(self.sampler),
            optimizer=None if optimizer is None else to_spec(self.optimizer_factory),
            lr_scheduler=None if lr_scheduler is None else to_spec(self.lr_scheduler_factory),
        )
        num_relations = self.model.num_relations
        self.val_metrics = RankingMetrics(num_relations, tuple(hits_at))
        self.test_metrics = RankingMetrics(num_relations, tuple(hits_at))
        self.val_auc_pr = BinaryAveragePrecision()
        self.test_auc_pr = BinaryAveragePrecision()
        self.relation_categories: Tensor | None = None
        self.per_relation: dict[str, dict[str, Tensor]] = {}

    # --- scoring ----------------------------------------------------------------------------------
    def forward(self, h: Tensor, r: Tensor, t: Tensor) -> Tensor:
        return self.model.score_hrt(h, r, t)

    def score_hrt(self, h: Tensor, r: Tensor, t: Tensor) -> Tensor:
        """Scores of triples given as broadcastable index tensors (higher is better)."""
        return self.model.score_hrt(h, r, t)

    def score_negatives(self, batch: NegativeBatch) -> Tensor:
        """``(B, k)`` scores of the corrupted triples of ``batch``."""
        h, r, t = batch.positives.unbind(1)
        if batch.corrupt_head:
            return self.model.score_h(r, t, batch.negatives)
        return self.model.score_t(h, r, batch.negatives)

    def score_all_candidates(self, triples: Tensor, side: str) -> Tensor:
        """``(B, E)`` scores of every entity as the ``side`` (``head``/``tail``) of each query."""
        h, r, t = triples.unbind(1)
        query = self.model.tail_query(h, r) if side == "tail" else self.model.head_query(r, t)
        ids = torch.arange(self.model.num_entities, device=triples.device)
        chunks = [self.model.score_candidates(query, c) for c in ids.split(self.eval_chunk_size)]
        return torch.cat(chunks, dim=1)

    # --- training -----------------------------------------------------------------------------------
    def compute_loss(self, positive: Tensor, negative: Tensor, batch: NegativeBatch) -> Tensor:
        """The loss of one batch from positive ``(B,)`` and negative ``(B, k)`` scores."""
        weights = self.sampler.weights(negative, batch.mask)
        loss = negative_sampling_loss(positive, negative, weights, batch.weight)
        if self.regularization:
            loss = loss + self.regularization * self.model.penalty()
        return loss

    def training_step(self, batch: NegativeBatch, batch_idx: int) -> Tensor:
        h, r, t = batch.positives.unbind(1)
        loss = self.compute_loss(self.model.score_hrt(h, r, t), self.score_negatives(batch), batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(h))
        return loss

    def configure_optimizers(self) -> Any:
        factory = self.optimizer_factory or torch.optim.Adam
        optimizer = factory(self.parameters())
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # --- evaluation ---------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        self.relation_categories = getattr(datamodule, "relation_categories", None)

    def rank_batch(self, batch: Mapping[str, Tensor], stage: str) -> None:
        """Rank each query of ``batch`` as head and as tail prediction; update ``stage``'s metrics."""
        triples = batch["triples"]
        metric = getattr(self, f"{stage}_metrics")
        for side in SIDES:
            rows, cols = batch[f"{side}_filter"]
            target = triples[:, 0 if side == "head" else 2]
            scores = self.score_all_candidates(triples, side)
            ranks = filtered_ranks(scores, target, rows, cols, self.ties)
            metric.update(ranks, triples[:, 1], side)
        if "regions" in batch:
            regions = batch["regions"]
            h, r, t = triples.unbind(1)
            scores = self.model.score_t(h, r, regions)
            getattr(self, f"{stage}_auc_pr").update(scores.flatten(), (regions == t[:, None]).flatten().long())

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self.rank_batch(batch, "val")

    def test_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self.rank_batch(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self.log_ranking("val")

    def on_test_epoch_end(self) -> None:
        self.log_ranking("test")

    def log_ranking(self, stage: str) -> None:
        """Log ``{stage}/mrr`` etc. from the metric states summed over processes, then reset.

        Every breakdown (sides, relation categories, per relation) is read inside one
        ``sync_context``, so under DDP each process sees the same totals and logs the same keys.
        The per-relation results stay in ``self.per_relation[stage]`` for reports.
        """
        metric: RankingMetrics = getattr(self, f"{stage}_metrics")
        with metric.sync_context():
            values = metric.summary(self.relation_categories, CATEGORIES)
            self.per_relation[stage] = metric.per_relation()
        auc_pr: BinaryAveragePrecision = getattr(self, f"{stage}_auc_pr")
        if auc_pr.update_called:
            values["auc_pr"] = auc_pr.compute()
        # Values are already totals over all processes: no sync_dist (it would only average
        # equal copies, one collective call per key).
        self.log_dict({f"{stage}/{k}": v.float() for k, v in values.items()})
        metric.reset()
        auc_pr.reset()
