"""KGEModule: the LightningModule that trains and evaluates any knowledge-graph embedding model."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import lightning as L
import torch
from torch import Tensor, nn

from lightning_kge import prediction
from lightning_kge.batches import EvaluationBatch, NegativeBatch, QueryBatch
from lightning_kge.data.index import TripleIndex
from lightning_kge.data.info import GraphInfo
from lightning_kge.data.statistics import CATEGORIES
from lightning_kge.errors import UserError, require
from lightning_kge.losses import negative_sampling_loss
from lightning_kge.metrics.ranking import SIDES, TIES, Ranks, RankingMetrics, RankingSummary, Ties, filtered_ranks
from lightning_kge.models.base import DENSE, KGEModel
from lightning_kge.optim import clip_gradients, takes_sparse_gradients
from lightning_kge.sampling.selection import Selection, Weighting
from lightning_kge.serialization import check_importable, class_path, from_spec, to_spec, trusting

OptimizerFactory = Callable[[Iterable[Any]], torch.optim.Optimizer]
"""``params -> Optimizer``: a ``functools.partial`` (Hydra ``_partial_: true``), or what LightningCLI gives
for ``class_path``/``init_args`` (as Lightning's ``OptimizerCallable``)."""
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]
"""``optimizer -> LRScheduler`` (as Lightning's ``LRSchedulerCallable``)."""
CHECKPOINT_KEY = "lightning_kge"
"""The checkpoint entry this module writes: its own class, the graph's labels (a compact blob), a format."""
OBJECT_ARGUMENTS = ("model", "selection", "optimizer", "lr_scheduler")
"""Constructor arguments that are objects: kept in the hyperparameters as plain specs."""
STAGES = ("val", "test")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
"""The ``torch.compile`` modes ``compile_step`` takes; ``reduce-overhead`` and ``max-autotune`` replay
CUDA graphs on CUDA."""
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


class KGEModule(L.LightningModule):
    """Negative-sampling training and filtered ranking evaluation around a :class:`KGEModel`.

    Training step: the :class:`~lightning_kge.sampling.selection.Selection` may choose among the
    drawn negatives of a :class:`~lightning_kge.batches.NegativeBatch`; the positives and the
    negatives are scored, the selection weighs the negatives (uniform or self-adversarial), and
    :func:`~lightning_kge.losses.negative_sampling_loss` is applied. Validation and test rank
    every entity as head and as tail of each query of an
    :class:`~lightning_kge.batches.EvaluationBatch`, filtered, and log ``{stage}/mrr``, ``/mr``,
    ``/hits@k`` (both sides), ``{stage}/head/…``, ``{stage}/tail/…`` and, with a ``graph``,
    ``{stage}/1-to-N/mrr`` etc.; the whole summary of each stage, per relation included, stays in
    :attr:`rankings`.

    Subclass and override a hook rather than a step: :meth:`score_negatives`,
    :meth:`compute_loss`, :meth:`score_all_candidates`.

    Args:
        model: the model, or its spec (``{"_target_": ..., **args}``, as stored in checkpoints).
        selection: chooses and weighs negatives (a ``sampler=`` option's ``selection()``), or its
            spec; ``None`` means uniform weights.
        graph: the :class:`~lightning_kge.data.info.GraphInfo` of the training data (labels,
            relation categories, regions, fingerprint), kept in checkpoints; optional.
        optimizer: a factory ``params -> Optimizer`` (``functools.partial``; Hydra
            ``_partial_: true``); ``None`` means ``torch.optim.Adam`` with its defaults.
        lr_scheduler: optional factory ``optimizer -> LRScheduler``, stepped every step.
        regularization: weight ``≥ 0`` of the L3 penalty ``Σ ‖θ‖₃³`` (paper code; bilinear models).
        ties: rank ties as ``realistic`` (mean of optimistic and pessimistic), ``optimistic``
            or ``pessimistic``.
        eval_chunk_size: candidate entities scored at once during evaluation (bounds memory).
        hits_at: the ``k`` of Hits@k.
        raw: also log raw (unfiltered) metrics, ``{stage}/raw/mrr``, ``{stage}/raw/head/mrr``, …,
            where the other true answers count as rivals (the protocol before Bordes et al. 2013's
            filtered setting); the filtered metrics are logged as always.
        compile_step: ``None`` (eager), or a ``torch.compile`` mode (``default``,
            ``reduce-overhead``, ``max-autotune``, ``max-autotune-no-cudagraphs``) in which the
            step's tensor part, :meth:`batch_loss`, is compiled whole (``fullgraph``) at the first
            step. ``reduce-overhead`` replays it as CUDA graphs on CUDA, which need the same shapes
            every step: use ``data.last_batch=drop`` or ``fill`` (each new shape compiles again).
            The loss and gradients are those of the eager step, up to rounding.
    """

    def __init__(
        self,
        model: KGEModel | Mapping[str, Any],
        selection: Selection | Mapping[str, Any] | None = None,
        graph: GraphInfo | Mapping[str, Any] | None = None,
        optimizer: OptimizerFactory | Mapping[str, Any] | None = None,
        lr_scheduler: SchedulerFactory | Mapping[str, Any] | None = None,
        regularization: float = 0.0,
        ties: Ties = "realistic",
        eval_chunk_size: int = 4096,
        hits_at: tuple[int, ...] = (1, 3, 10),
        raw: bool = False,
        compile_step: str | None = None,
    ) -> None:
        super().__init__()
        require(isinstance(regularization, (int, float)) and regularization >= 0, "regularization", regularization,
                "a number ≥ 0")
        require(ties in TIES, "ties", ties, " or ".join(TIES))
        require(isinstance(eval_chunk_size, int) and eval_chunk_size >= 1, "eval_chunk_size", eval_chunk_size,
                "an integer ≥ 1")
        require(isinstance(raw, bool), "raw", raw, "true or false")
        require(len(hits_at) > 0 and all(isinstance(k, int) and k >= 1 for k in hits_at), "hits_at", hits_at,
                "a list of integers ≥ 1")
        require(compile_step is None or compile_step in COMPILE_MODES, "compile_step", compile_step,
                "null (eager) or a torch.compile mode: " + ", ".join(COMPILE_MODES))
        self.model: KGEModel = from_spec(model)
        self.selection: Selection = Weighting() if selection is None else from_spec(selection)
        self.graph: GraphInfo | None = GraphInfo.from_dict(graph) if isinstance(graph, Mapping) else graph
        if self.graph is not None and (self.graph.num_entities, self.graph.num_relations) != (
            self.model.num_entities, self.model.num_relations
        ):
            raise ValueError(
                f"the graph has {self.graph.num_entities} entities and {self.graph.num_relations} relations, "
                f"the model {self.model.num_entities} and {self.model.num_relations}"
            )
        self.optimizer_factory = from_spec(optimizer)
        self.lr_scheduler_factory = from_spec(lr_scheduler)
        self.regularization = regularization
        self.ties = ties
        self.eval_chunk_size = eval_chunk_size
        self.hits_at = tuple(hits_at)
        self.raw = raw
        self.compile_step = compile_step
        self._compiled_loss: Callable[[NegativeBatch], Tensor] | None = None
        self.save_plain_hyperparameters(
            model=self.model, selection=self.selection, optimizer=None if optimizer is None else self.optimizer_factory,
            lr_scheduler=None if lr_scheduler is None else self.lr_scheduler_factory,
        )
        self.metrics = nn.ModuleDict(
            {stage: RankingMetrics(self.model.num_relations, self.hits_at) for stage in STAGES}
        )
        self.raw_metrics = nn.ModuleDict(
            {stage: RankingMetrics(self.model.num_relations, self.hits_at) for stage in STAGES}
        )
        """Unfiltered ranks of each stage, updated and logged when :attr:`raw` is set."""
        self.rankings: dict[str, RankingSummary] = {}
        """The last evaluation summary of each stage (``"val"``, ``"test"``)."""

    def save_plain_hyperparameters(self, **objects: Any) -> None:
        """Save the constructor's arguments as plain values: objects as specs, the graph not at all.

        The hyperparameters are what a checkpoint rebuilds the module from, what loggers show and
        what LightningCLI merges back with ``--ckpt_path``, so they hold no objects and no labels
        (which OmegaConf would interpolate): the model, selection, optimizer and scheduler become
        specs (``_target_`` specs, or ``class_path``/``init_args`` ones when LightningCLI built the
        module), and the graph's labels go into the checkpoint as a compact blob instead
        (:meth:`on_save_checkpoint`). Subclasses' own arguments are saved too, as Lightning does.
        """
        frame = inspect.currentframe()
        self.save_hyperparameters(ignore=[*OBJECT_ARGUMENTS, "graph"], logger=False,
                                  frame=frame.f_back if frame is not None else None)
        form = "class_path" if "_instantiator" in self.hparams else "target"
        for name, value in objects.items():
            self.hparams[name] = None if value is None else to_spec(value, form)

    def loggable_hparams(self) -> dict[str, Any]:
        """The hyperparameters with a summary of the graph (sizes, fingerprint, source), never its labels."""
        values = dict(self.hparams)
        values["graph"] = None if self.graph is None else self.graph.summary()
        return values

    def on_fit_start(self) -> None:
        if self.trainer.checkpoint_callbacks and not self.trainer.fast_dev_run:
            self.check_importable()  # refused now, before training, rather than at the first save
        for logger in self.loggers:
            logger.log_hyperparams(self.loggable_hparams())

    # --- checkpoints --------------------------------------------------------------------------------
    def check_importable(self) -> None:
        """Refuse to checkpoint a module, model or selection class that no other program could import.

        Raises:
            UserError: a class defined in ``__main__`` (the script being run) or inside a function.
        """
        check_importable(class_path(self), "the module")
        for name in ("model", "selection"):
            spec = self.hparams.get(name) or {}
            check_importable(str(spec.get("_target_") or spec.get("class_path") or ""), f"the {name}")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record this module's class and the graph (labels as a compact blob) beside the weights."""
        self.check_importable()
        checkpoint[CHECKPOINT_KEY] = {
            "format": 1,
            "module_class": class_path(self),
            "graph": None if self.graph is None else self.graph.to_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the graph's description saved by :meth:`on_save_checkpoint`."""
        state = (checkpoint.get(CHECKPOINT_KEY) or {}).get("graph")
        if state is not None:
            self.graph = GraphInfo.from_state(state)

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | Path | IO,
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        weights_only: bool | None = None,
        trust: Iterable[str] | str | None = None,
        **kwargs: Any,
    ) -> KGEModule:
        """The module saved at ``checkpoint_path``, rebuilt as the class that saved it, loaded as data.

        The file is read with ``torch.load(weights_only=True)`` (a pickled object that would run code
        is refused), and every class its hyperparameters name must be allowed: this package's
        models, samplers, selections and callbacks, ``torch.optim`` optimizers and schedulers — or
        defined in a module listed in ``trust`` (e.g. ``trust=["my_project.models"]`` for your own
        model or ``KGEModule`` subclass). The module is rebuilt as the class recorded in the
        checkpoint (a subclass of ``cls``), so a subclass's overrides are kept.

        Args:
            checkpoint_path: a ``.ckpt`` file.
            map_location: a device to move the module to (it is read on the CPU).
            hparams_file: not supported (hyperparameters come from the checkpoint only).
            strict: whether the weights must match the module's exactly (default: ``strict_loading``).
            weights_only: must be ``None`` or ``True``: checkpoints are loaded as data only.
            trust: modules whose classes the checkpoint may name beyond the allow-list.
            kwargs: hyperparameters to override.

        Raises:
            UserError: an unreadable or unsafe file, a class not allowed or not importable, a
                checkpoint of another kind of module (one line each, naming the file).
        """
        if hparams_file is not None or weights_only is False:
            raise ValueError("lightning_kge checkpoints load as data only, from their own hyperparameters: "
                             "hparams_file and weights_only=False are not supported")
        from lightning_kge import loading

        with trusting(trust):
            return loading.load_module(cls, checkpoint_path, map_location, strict, kwargs)

    # --- scoring ----------------------------------------------------------------------------------
    def forward(self, h: Tensor, r: Tensor, t: Tensor) -> Tensor:
        return self.model.score_hrt(h, r, t)

    def score_hrt(self, h: Tensor, r: Tensor, t: Tensor) -> Tensor:
        """Scores of triples given as broadcastable index tensors (higher is better)."""
        return self.model.score_hrt(h, r, t)

    def score_negatives(self, batch: NegativeBatch) -> Tensor:
        """``(B, k)`` scores of the corrupted triples of ``batch``.

        Each row is scored from its head query ``(?, r, t)`` or its tail query ``(h, r, ?)``,
        as ``batch.corrupt_head`` says, with fixed shapes (both queries are formed, one kept).
        """
        h, r, t = batch.positives.unbind(1)
        query = torch.where(batch.corrupt_head[:, None], self.model.head_query(r, t), self.model.tail_query(h, r))
        return self.model.score_candidates(query, batch.negatives)

    def score_all_candidates(self, triples: Tensor, side: str) -> Tensor:
        """``(B, E)`` scores of every entity as the ``side`` (``head``/``tail``) of each query."""
        h, r, t = triples.unbind(1)
        query = self.model.tail_query(h, r) if side == "tail" else self.model.head_query(r, t)
        ids = torch.arange(self.model.num_entities, device=triples.device)
        chunks = [self.model.score_candidates(query, c) for c in ids.split(self.eval_chunk_size)]
        return torch.cat(chunks, dim=1)

    # --- prediction ---------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_tails(
        self, head: str | int, relation: str | int, k: int = 10, exclude: TripleIndex | None = None
    ) -> list[prediction.Candidate]:
        """The best ``k`` tails of ``(head, relation, ?)``, best first.

        Args:
            head, relation: labels (as in the training files) or ids.
            k: how many answers.
            exclude: known triples to leave out, e.g. ``datamodule.train_index`` (training
                triples) or ``datamodule.filter_index`` (every split); ``None`` keeps all.

        Returns:
            the answers as :class:`~lightning_kge.prediction.Candidate` (label, id, score), best first.
        """
        return self._predict_one("tail", head, relation, k, exclude)

    @torch.no_grad()
    def predict_heads(
        self, relation: str | int, tail: str | int, k: int = 10, exclude: TripleIndex | None = None
    ) -> list[prediction.Candidate]:
        """The best ``k`` heads of ``(?, relation, tail)``, best first; as :meth:`predict_tails`."""
        return self._predict_one("head", tail, relation, k, exclude)

    def _predict_one(
        self, side: str, entity: str | int, relation: str | int, k: int, exclude: TripleIndex | None
    ) -> list[prediction.Candidate]:
        counts = (self.model.num_entities, self.model.num_relations)
        e = prediction.entity_id(self.graph, entity, counts[0], "argument " + ("head" if side == "tail" else "tail"))
        r = prediction.relation_id(self.graph, relation, counts[1], "argument relation")
        e_t, r_t = torch.tensor([e], device=self.device), torch.tensor([r], device=self.device)
        batch = QueryBatch(e_t, r_t, side, k, prediction.known_answers(exclude, e_t, r_t, side))
        return prediction.candidates(self.predict_step(batch, 0), self.graph)

    @torch.no_grad()
    def score_triples(self, triples: Sequence[Sequence[str | int]]) -> Tensor:
        """``(n,)`` scores of ``(head, relation, tail)`` triples given by labels or ids."""
        counts = (self.model.num_entities, self.model.num_relations)
        ids = prediction.triple_ids(self.graph, triples, counts, [f"triple {i}" for i in range(len(triples))])
        h, r, t = ids.to(self.device).unbind(1)
        return self.model.score_hrt(h, r, t)

    def predict_step(self, batch: QueryBatch, batch_idx: int) -> prediction.Answers:
        """The best ``batch.k`` answers of each query (``Trainer.predict`` with
        ``KGEDataModule.predict_on``), scored ``eval_chunk_size`` entities at a time."""
        return prediction.answer(self.model, batch, self.eval_chunk_size)

    # --- training -----------------------------------------------------------------------------------
    def compute_loss(self, positive: Tensor, negative: Tensor, batch: NegativeBatch) -> Tensor:
        """The loss of one batch from positive ``(B,)`` and negative ``(B, k)`` scores."""
        weights = self.selection.weights(negative, batch.mask)
        loss = negative_sampling_loss(positive, negative, weights, batch.weight)
        if self.regularization:
            loss = loss + self.regularization * self.model.penalty()
        return loss

    def score_batch(self, batch: NegativeBatch) -> tuple[Tensor, Tensor]:
        """Positive ``(B,)`` and negative ``(B, k)`` scores of a training batch.

        With per-positive negatives (and :meth:`score_negatives` not overridden) both come from one
        scoring call: row ``b``'s query, ``(?, r, t)`` where ``corrupt_head[b]`` else ``(h, r, ?)``,
        against its true entity followed by its ``k`` candidates. The scoring contract
        (``score_candidates(head_query(r, t), h)`` equals ``score_hrt(h, r, t)``) makes the first
        column the positive score. Otherwise :meth:`KGEModel.score_hrt` and :meth:`score_negatives`.
        """
        h, r, t = batch.positives.unbind(1)
        if batch.negatives.dim() != 2 or type(self).score_negatives is not KGEModule.score_negatives:
            return self.model.score_hrt(h, r, t), self.score_negatives(batch)
        head = batch.corrupt_head
        query = torch.where(head[:, None], self.model.head_query(r, t), self.model.tail_query(h, r))
        candidates = torch.cat([torch.where(head, h, t)[:, None], batch.negatives], dim=1)
        scores = self.model.score_candidates(query, candidates)
        return scores[:, 0], scores[:, 1:]

    def batch_loss(self, batch: NegativeBatch) -> Tensor:
        """The loss of a training batch from its tensors: scores, weights, loss; the step's tensor part.

        It changes no state and never waits for the device, so ``compile_step`` compiles it whole.
        """
        positive, negative = self.score_batch(batch)
        return self.compute_loss(positive, negative, batch)

    def training_step(self, batch: NegativeBatch, batch_idx: int) -> Tensor:
        batch = self.selection.select(batch, self.score_negatives)
        loss = self.training_loss(batch)
        # Handed to Lightning only on the steps its loggers write (self.log costs host time each call), and
        # not on the progress bar (showing it would read the value back from the device every step).
        if self.logs_this_step():
            self.log("train/loss", loss, batch_size=batch.positives.shape[0])
        return loss

    def training_loss(self, batch: NegativeBatch) -> Tensor:
        """:meth:`batch_loss`, compiled at the first call when ``compile_step`` names a mode.

        With sparse row gradients the step's entity rows are read once
        (:meth:`~lightning_kge.models.base.KGEModel.reading_rows`).
        """
        if self.compile_step is None:
            if not self.model.sparse_gradients:
                return self.batch_loss(batch)
            entities = torch.cat([batch.positives[:, 0], batch.positives[:, 2], batch.negatives.reshape(-1)])
            with self.model.reading_rows(entities):
                return self.batch_loss(batch)
        if self._compiled_loss is None:
            self._compiled_loss = torch.compile(self.batch_loss, mode=self.compile_step, fullgraph=True, dynamic=False)
        if self.compile_step in CUDA_GRAPH_MODES:
            torch.compiler.cudagraph_mark_step_begin()  # a new step: the last one's graph outputs may be reused
        return self._compiled_loss(batch)

    def logs_this_step(self) -> bool:
        """Whether the trainer's loggers write this training step's metrics (every
        ``trainer.log_every_n_steps``, when stopping, and every step of ``fast_dev_run``).

        This is Lightning's own rule, ``should_update_logs``, which its ``LearningRateMonitor``
        reads too. A callback monitoring ``train/loss`` sees the value of the last such step.
        """
        trainer = self._trainer
        if trainer is None:
            return False
        return bool(trainer.fast_dev_run) or trainer._logger_connector.should_update_logs

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_compiled_loss"] = None  # compiled again where it is used (ddp_spawn pickles the module)
        return state

    # --- optimizers ---------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Before fitting, switch the model's lookups to sparse row gradients when the optimizer takes
        them (:func:`~lightning_kge.optim.takes_sparse_gradients`), dense ones otherwise.

        It runs before the strategy wraps the model: ``DistributedDataParallel`` reads each
        ``nn.Embedding``'s ``sparse`` flag when it wraps. What cannot train with sparse gradients is
        refused here, with one line: ``compile_step``, the L3 ``regularization`` (it reads whole
        tables) and a NCCL process group (sparse all-reduce exists only over gloo).
        """
        if stage != "fit":
            return
        sparse = takes_sparse_gradients(self.optimizer_factory)
        if sparse:
            self._refuse_sparse_problems()
        self.model.use_sparse_gradients(sparse)

    def _refuse_sparse_problems(self) -> None:
        fix = "or train with optimizer=adam (dense gradients)"
        if self.compile_step is not None:
            raise UserError("a compiled step cannot use sparse row gradients (the unique candidate rows have a "
                            "data-dependent shape)", "config key module.compile_step",
                            f"set module.compile_step=null, {fix}")
        if self.regularization:
            raise UserError("the L3 regularization reads whole tables, so their gradient is dense, which a sparse "
                            "optimizer does not take", "config key module.regularization",
                            f"set module.regularization=0, {fix}")
        trainer = self._trainer
        backend = None if trainer is None else getattr(trainer.strategy, "process_group_backend", None)
        if backend == "nccl":
            raise UserError("sparse row gradients cannot be all-reduced over NCCL (only gloo has a sparse "
                            "all-reduce)", "strategy process_group_backend=nccl",
                            f"train on one device or on CPU processes (trainer=ddp_cpu), {fix}")

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The module's parameters as named optimizer groups: the model's ``tables`` and ``dense``
        (:meth:`~lightning_kge.models.base.KGEModel.parameter_groups`); any other parameter of the
        module joins ``dense``. A strategy that keeps the tables elsewhere takes out ``tables``."""
        groups = self.model.parameter_groups()
        grouped = {id(p) for group in groups for p in group["params"]}
        others = [p for p in self.parameters() if id(p) not in grouped]
        if others:
            dense = next((g for g in groups if g["name"] == DENSE), None)
            if dense is None:
                groups.append({"name": DENSE, "params": others})
            else:
                dense["params"] = [*dense["params"], *others]
        return groups

    def configure_optimizers(self) -> Any:
        factory = self.optimizer_factory or torch.optim.Adam
        optimizer = factory(self.parameter_groups())
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Lightning's clipping (``trainer.gradient_clip_val``, ``gradient_clip_algorithm``), which
        torch refuses for sparse gradients: with them, :func:`~lightning_kge.optim.clip_gradients`
        clips as torch clips the equal dense gradients."""
        if not self.model.sparse_gradients:
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        elif gradient_clip_val:
            algorithm = str(getattr(gradient_clip_algorithm, "value", gradient_clip_algorithm) or "norm").lower()
            clip_gradients([p for group in optimizer.param_groups for p in group["params"]], gradient_clip_val,
                           algorithm)

    # --- evaluation ---------------------------------------------------------------------------------
    def rank_batch(self, batch: EvaluationBatch, stage: str) -> None:
        """Rank each query of ``batch`` as head and as tail prediction; hand the ranks to :meth:`update_metrics`."""
        triples = batch.triples
        for side in SIDES:
            rows, cols = batch.filter(side)
            target = triples[:, 0 if side == "head" else 2]
            scores = self.score_all_candidates(triples, side)
            ranks = filtered_ranks(scores, target, rows, cols, self.ties)
            raw = filtered_ranks(scores, target, ties=self.ties) if self.raw else None
            self.update_metrics(stage, Ranks(triples, side, ranks, raw))

    def update_metrics(self, stage: str, ranks: Ranks) -> None:
        """Add one side of an evaluation batch's ranks to ``stage``'s metrics: the hook for rank-based metrics.

        Called once per side of every validation and test batch with the filtered ranks (and the
        raw ones when ``raw`` is set), the query triples and their relations. Override it to add a
        metric computed from the ranks (call ``super().update_metrics(stage, ranks)`` to keep the
        standard ones), e.g. a TorchMetrics object updated here and logged with
        ``self.log(f"{stage}/my_metric", metric, on_epoch=True)``.
        """
        self.metrics[stage].update(ranks.ranks, ranks.relations, ranks.side)
        if ranks.raw is not None:
            self.raw_metrics[stage].update(ranks.raw, ranks.relations, ranks.side)

    def validation_step(self, batch: EvaluationBatch, batch_idx: int) -> None:
        self.rank_batch(batch, "val")

    def test_step(self, batch: EvaluationBatch, batch_idx: int) -> None:
        self.rank_batch(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self.log_ranking("val")

    def on_test_epoch_end(self) -> None:
        self.log_ranking("test")

    def log_ranking(self, stage: str) -> None:
        """Log ``{stage}/mrr`` etc. from the metric states summed over processes, then reset.

        Every breakdown (sides, relation categories, per relation, raw) is read inside one
        ``sync_context``, so under DDP each process sees the same totals and logs the same keys;
        the typed :class:`~lightning_kge.metrics.ranking.RankingSummary` stays in
        ``self.rankings[stage]``.
        """
        metric: RankingMetrics = self.metrics[stage]
        categories = None if self.graph is None else self.graph.categories()
        with metric.sync_context():
            summary = metric.ranking(categories, CATEGORIES)
        metric.reset()
        if self.raw:
            raw: RankingMetrics = self.raw_metrics[stage]
            with raw.sync_context():
                summary.raw = raw.ranking()
            raw.reset()
        self.rankings[stage] = summary
        # The values are already totals over all processes, equal on every rank: sync_dist only
        # averages equal copies (and tells Lightning they are global).
        self.log_dict({f"{stage}/{k}": float(v) for k, v in summary.values().items()}, sync_dist=True)
