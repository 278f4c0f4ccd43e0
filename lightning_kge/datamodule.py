"""KGEDataModule: splits, loaders, on-the-fly corruption and the filter index."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lightning_kge.batches import EvaluationBatch, NegativeBatch, QueryBatch
from lightning_kge.data.batches import LAST_BATCH, LastBatch, Rows, TrainSampler, mix_seed
from lightning_kge.data.datasets import resolve_dataset
from lightning_kge.data.distributed import UnpaddedDistributedSampler
from lightning_kge.data.graph import SPLITS, KnowledgeGraph, UnseenPolicy, describe_duplicates, read_entity_ids
from lightning_kge.data.index import TripleIndex, UnionIndex
from lightning_kge.data.info import GraphInfo, describe
from lightning_kge.data.prepared import prepare_graph
from lightning_kge.data.statistics import GraphStatistics
from lightning_kge.errors import UserError, require
from lightning_kge.sampling.corruption import Corruption
from lightning_kge.serialization import class_path, from_spec, to_spec


class KGEDataModule(L.LightningDataModule):
    """Triples of a knowledge graph with corruption for training and filters for evaluation.

    Training batches are row numbers ``(B,)`` of the training triples in the order of a
    :class:`~lightning_kge.data.batches.TrainSampler`; once on the device, :meth:`on_after_batch_transfer`
    gathers their triples and weights there (from copies made once per device) and corrupts them into a
    :class:`~lightning_kge.batches.NegativeBatch` with the ``corruption``
    (a ``sampler=`` option's ``corruption()``), from a generator seeded by the global seed, the
    process rank and the step, so negatives differ across ranks and steps, repeat under the same
    seed, and a resumed run draws what an uninterrupted one would. Evaluation batches are
    :class:`~lightning_kge.batches.EvaluationBatch`es with the other true answers over all
    splits, so the module ranks them filtered with no index of its own.

    Args:
        corruption: draws the negatives, or its spec; only training needs it.
        name: a bundled (``nations``, ``kinships``, ``umls``) or downloadable dataset name.
        path: a folder with ``train.txt``, ``valid.txt``, ``test.txt``; instead of ``name``
            (kept resolved to an absolute path, as checkpoints record it).
        url: base URL overriding the download source of ``name``.
        unseen: what to do with valid/test triples whose labels train never saw: ``error``,
            ``drop`` (the count is reported in a warning, on rank zero) or ``keep`` (vocabulary over all splits).
        batch_size: positives per training batch (per process under DDP).
        eval_batch_size: queries per evaluation batch.
        subsampling: weight positives by the paper code's subsampling weight.
        num_workers: DataLoader workers of the evaluation loaders (training batches are slices).
        last_batch: the last, partial training batch of each epoch: ``keep`` it smaller, ``drop``
            it, or ``fill`` it with positives from the start of the epoch's order; ``drop`` and
            ``fill`` give every step the same shapes, as CUDA graphs need
            (``module.compile_step=reduce-overhead``).
        regions: a file of candidate labels in the dataset folder (``regions.list`` for the
            countries datasets): its entity ids go into the :class:`GraphInfo`, and the
            ``RegionAUCPR`` callback reports AUC-PR over them.
        eval_sample: validation during training ranks this many valid triples, a sample drawn
            once from the global seed (the same triples at every validation and in every run with
            that seed; under DDP each process ranks its share), instead of all of them. The final
            test, ``Trainer.validate`` and ``evaluate`` rank every triple. ``None``: all.
    """

    def __init__(
        self,
        corruption: Corruption | Mapping[str, Any] | None = None,
        name: str | None = None,
        path: str | None = None,
        url: str | None = None,
        unseen: UnseenPolicy = "error",
        batch_size: int = 512,
        eval_batch_size: int = 16,
        subsampling: bool = True,
        num_workers: int = 0,
        regions: str | None = None,
        last_batch: LastBatch = "keep",
        eval_sample: int | None = None,
    ) -> None:
        super().__init__()
        if (name is None) == (path is None):
            raise ValueError("give exactly one of data.name (a known dataset) or data.path (a folder)")
        require(isinstance(batch_size, int) and batch_size >= 1, "batch_size", batch_size, "an integer ≥ 1")
        require(isinstance(eval_batch_size, int) and eval_batch_size >= 1, "eval_batch_size", eval_batch_size,
                "an integer ≥ 1")
        require(isinstance(num_workers, int) and num_workers >= 0, "num_workers", num_workers, "an integer ≥ 0")
        require(last_batch in LAST_BATCH, "last_batch", last_batch, " or ".join(LAST_BATCH))
        require(eval_sample is None or (isinstance(eval_sample, int) and not isinstance(eval_sample, bool)
                                        and eval_sample >= 1), "eval_sample", eval_sample, "null or an integer ≥ 1")
        self.corruption: Corruption | None = from_spec(corruption)
        if path is not None:  # stored resolved, so a checkpoint's data is found from any folder
            path = str(Path(path).expanduser().resolve())
        self.save_hyperparameters(ignore=["corruption"])
        self.hparams["path"] = path
        form = "class_path" if "_instantiator" in self.hparams else "target"
        self.hparams["corruption"] = None if self.corruption is None else to_spec(self.corruption, form)
        self.name = name
        self.path = path
        self.url = url
        self.unseen = unseen
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.subsampling = subsampling
        self.num_workers = num_workers
        self.regions = regions
        self.last_batch = last_batch
        self.eval_sample = eval_sample
        self.graph: KnowledgeGraph | None = None
        self.train_batches_done = 0
        """Training batches consumed so far (saved in checkpoints: a resumed run continues from it)."""
        self._generator: torch.Generator | None = None
        self._predict: tuple[Tensor, str, str, int] | None = None
        self._train_on_device: tuple[Tensor, Tensor] | None = None

    # --- loading --------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Download the dataset if it is a remote one (once per node under DDP)."""
        self.folder()

    def folder(self) -> Path:
        """The local folder of the dataset, downloading it first if needed."""
        return Path(self.path) if self.path is not None else resolve_dataset(self.name, self.url)

    def setup(self, stage: str | None = None) -> None:
        """Load the graph, its indexes and statistics: parsed once, then from the cache
        (:func:`~lightning_kge.data.prepared.prepare_graph`)."""
        if self.graph is not None:
            return
        folder = self.folder()
        prepared = prepare_graph(folder, self.unseen)
        graph = prepared.graph
        for split, count in graph.dropped.items():
            rank_zero_warn(f"dropped {count} {split} triples with an entity or relation not in train (data.unseen=drop)")
        for sentence in describe_duplicates(graph.duplicates):
            rank_zero_warn(f"{folder}: {sentence}")
        self.graph = graph
        self.statistics: GraphStatistics = prepared.statistics
        self.train_index: TripleIndex = prepared.train_index
        """The training triples: corruption draws outside them."""
        self.filter_index: UnionIndex = prepared.filter_index
        """Every split's triples: the evaluation filter."""
        region_ids = None if self.regions is None else read_entity_ids(folder / self.regions, graph.entity_to_id)
        self.info: GraphInfo = describe(graph, region_ids, source=self.name or str(folder),
                                        statistics=prepared.statistics, fingerprint=prepared.fingerprint)
        self.head_probability = prepared.statistics.head_probability
        self.train_weight = (
            prepared.statistics.subsampling_weights if self.subsampling else torch.ones(len(graph.triples["train"]))
        )

    @property
    def triples(self) -> dict[str, Tensor]:
        """``{"train"|"valid"|"test": LongTensor (n, 3)}`` of ``(h, r, t)`` ids."""
        return self._loaded().triples

    @property
    def num_entities(self) -> int:
        return self._loaded().num_entities

    @property
    def num_relations(self) -> int:
        return self._loaded().num_relations

    @property
    def entity_to_id(self) -> dict[str, int]:
        return self._loaded().entity_to_id

    @property
    def relation_to_id(self) -> dict[str, int]:
        return self._loaded().relation_to_id

    def _loaded(self) -> KnowledgeGraph:
        if self.graph is None:
            self.setup()
        assert self.graph is not None
        return self.graph

    # --- loaders ----------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        """Batches of training row numbers ``(B,)``; each process takes its share (no distributed
        sampler needed); :meth:`training_batch` turns them into a ``NegativeBatch`` on the device."""
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        size = len(self.triples["train"])
        sampler = TrainSampler(size, self.batch_size, torch.initial_seed(), rank, world, self.last_batch)
        if len(sampler) == 0:
            raise UserError(
                f"last_batch=drop leaves no training batch: {sampler.per_rank} training triples per process are "
                f"fewer than batch_size={self.batch_size}",
                "config key data.last_batch",
                f"use data.last_batch=fill (or keep), or a data.batch_size ≤ {sampler.per_rank}",
            )
        sampler.start = self.train_batches_done
        # Pinned ids reach a GPU by a truly asynchronous copy (a pageable one may wait for the stream).
        pin = trainer is not None and trainer.strategy.root_device.type == "cuda"
        return TrainLoader(self, Rows(size), batch_size=None, sampler=sampler, pin_memory=pin)

    def val_dataloader(self) -> DataLoader:
        """The valid split; while fitting, the ``eval_sample`` of it (if set)."""
        fitting = self.trainer is not None and self.trainer.state.fn == TrainerFn.FITTING
        return self.eval_dataloader("valid", self.eval_sample if fitting else None)

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")

    def eval_rows(self, split: str, sample: int | None = None) -> Tensor:
        """Row numbers of the ``split`` triples to rank: all, or ``sample`` of them drawn once from
        the global seed (``torch.initial_seed()``), in file order.

        Example:
            >>> dm = KGEDataModule(name="nations")
            >>> _ = torch.manual_seed(0)
            >>> rows = dm.eval_rows("valid", 5)
            >>> len(rows), torch.equal(rows, dm.eval_rows("valid", 5)), len(dm.eval_rows("valid"))
            (5, True, 199)
        """
        size = len(self.triples[split])
        if sample is None or sample >= size:
            return torch.arange(size)
        generator = torch.Generator().manual_seed(mix_seed(torch.initial_seed(), 0, size))
        return torch.randperm(size, generator=generator)[:sample].sort().values

    def eval_dataloader(self, split: str, sample: int | None = None) -> DataLoader:
        """Filtered-ranking batches of ``split`` (or of ``sample`` of its triples, see
        :meth:`eval_rows`); under DDP each query goes to exactly one rank."""
        triples = self.triples[split]
        dataset = QueryDataset(triples if sample is None else triples[self.eval_rows(split, sample)])
        sampler = None
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:
            sampler = UnpaddedDistributedSampler(dataset, trainer.world_size, trainer.global_rank)
        return DataLoader(
            dataset,
            batch_size=self.eval_batch_size,
            sampler=sampler,
            collate_fn=FilterCollate(self.filter_index),
            num_workers=self.num_workers,
        )

    def predict_on(self, queries: str | Tensor = "test", side: str = "tail", exclude: str = "train", k: int = 10) -> None:
        """Set the queries that ``Trainer.predict`` answers through :meth:`predict_dataloader`.

        Each query is answered by the module's ``predict_step`` with its best ``k`` entities
        (an :class:`~lightning_kge.prediction.Answers` per batch).

        Args:
            queries: a split name (``train``, ``valid``, ``test``: its distinct queries), or
                ``(n, 2)`` ids ``(entity, relation)``: the head of each tail query ``(h, r, ?)``,
                the tail of each head query ``(?, r, t)``.
            side: ``tail`` or ``head``: the entity asked for.
            exclude: known answers to leave out: of the ``train`` split, of ``all`` splits, or ``none``.
            k: answers per query.
        """
        require(side in ("tail", "head"), "side", side, "tail or head")
        require(exclude in ("train", "all", "none"), "exclude", exclude, "train, all or none")
        require(isinstance(k, int) and k >= 1, "k", k, "an integer ≥ 1")
        if isinstance(queries, str):
            require(queries in SPLITS, "queries", queries, "a split name (" + ", ".join(SPLITS) + ") or (n, 2) ids")
            triples = self.triples[queries]  # its distinct (entity, relation) pairs, sorted: one packed key each
            keys = torch.unique(triples[:, 0 if side == "tail" else 2] * self.num_relations + triples[:, 1])
            pairs = torch.stack([keys // self.num_relations, keys % self.num_relations], dim=1)
        else:
            pairs = torch.as_tensor(queries, dtype=torch.long)
            require(pairs.ndim == 2 and pairs.shape[1] == 2, "queries", tuple(pairs.shape), "(n, 2) ids (entity, relation)")
            bad = (pairs[:, 0] < 0) | (pairs[:, 0] >= self.num_entities) | (pairs[:, 1] < 0) | (pairs[:, 1] >= self.num_relations)
            require(not bool(bad.any()), "queries", pairs[bad][:3].tolist(), "entity and relation ids of this graph")
        self._predict = (pairs, side, exclude, k)

    def predict_dataloader(self) -> DataLoader:
        """Batches of the queries set by :meth:`predict_on` (:class:`~lightning_kge.batches.QueryBatch`)."""
        if self._predict is None:
            raise UserError(
                "no prediction queries were set", "KGEDataModule.predict_dataloader",
                "call datamodule.predict_on(queries, side=..., exclude=..., k=...) before Trainer.predict",
            )
        pairs, side, exclude, k = self._predict
        index = {"train": self.train_index, "all": self.filter_index, "none": None}[exclude]
        return DataLoader(QueryDataset(pairs), batch_size=self.eval_batch_size, collate_fn=QueryCollate(index, side, k),
                          num_workers=self.num_workers)

    # --- corruption -------------------------------------------------------------------------------
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Turn training row batches into ``NegativeBatch``es on their device; evaluation batches pass through."""
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return batch
        return self.training_batch(batch)

    def training_batch(self, rows: Tensor) -> NegativeBatch:
        """The ``NegativeBatch`` of training rows ``rows`` (``(B,)`` ids into ``triples["train"]``).

        The triples and weights are gathered on the device of ``rows``, from copies kept there
        (made at the first batch on that device), then corrupted by :meth:`corrupt`.
        """
        if self._train_on_device is None or self._train_on_device[0].device != rows.device:
            self._train_on_device = (self.triples["train"].to(rows.device), self.train_weight.to(rows.device))
        triples, weight = self._train_on_device
        return self.corrupt(triples[rows], weight[rows])

    def corrupt(self, positives: Tensor, weight: Tensor) -> NegativeBatch:
        """Draw the negatives of the next training batch (tail-batch and head-batch alternate)."""
        if self.corruption is None:
            raise RuntimeError("this KGEDataModule has no corruption: give corruption=<sampler>.corruption() to train")
        device = positives.device
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device)
        if self.train_index.device != device:  # once: the index and statistics live on the device
            self.train_index.to(device)
            self.head_probability = self.head_probability.to(device)
        rank = self.trainer.global_rank if self.trainer is not None else 0
        step = self.train_batches_done
        self._generator.manual_seed(mix_seed(torch.initial_seed(), rank, step))
        self.train_batches_done += 1
        return self.corruption.corrupt(positives, weight, step, self.train_index, self.head_probability, self._generator)

    # --- checkpoints ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs: the number of training batches consumed (and this datamodule's class,
        which ``checkpoints.load_datamodule`` rebuilds)."""
        return {"train_batches_done": self.train_batches_done, "datamodule_class": class_path(self)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train_batches_done = int(state_dict["train_batches_done"])


class TrainLoader(DataLoader):
    """The training loader, resumable in Lightning's sense: its position is a ``state_dict``.

    The position is the number of training batches the datamodule has consumed (not how far the
    loader has prefetched), the same count the datamodule's own state holds; loading it makes the
    next iteration start after those batches, mid-epoch included. Lightning sees a stateful loader
    and so does not warn that a mid-epoch resume is unreliable.
    """

    def __init__(self, datamodule: KGEDataModule, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.datamodule = datamodule

    def state_dict(self) -> dict[str, int]:
        return {"train_batches_done": self.datamodule.train_batches_done}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        done = int(state_dict["train_batches_done"])
        self.datamodule.train_batches_done = done
        self.sampler.start = done


class QueryDataset(Dataset):
    """The triples of one split, one query triple per item."""

    def __init__(self, triples: Tensor) -> None:
        self.triples = triples

    def __len__(self) -> int:
        return len(self.triples)

    def __getitem__(self, i: int) -> Tensor:
        return self.triples[i]

    def __getitems__(self, indices: list[int]) -> Tensor:
        return self.triples[torch.as_tensor(indices)]


class FilterCollate:
    """Collate query triples (already stacked) with the pairs of their other true answers."""

    def __init__(self, index: TripleIndex | UnionIndex) -> None:
        self.index = index

    def __call__(self, triples: Tensor) -> EvaluationBatch:
        h, r, t = triples.unbind(1)
        tail_rows, tail_entities = self.index.true_tails(h, r)
        head_rows, head_entities = self.index.true_heads(r, t)
        return EvaluationBatch(triples, (tail_rows, tail_entities), (head_rows, head_entities))


class QueryCollate:
    """Collate ``(entity, relation)`` pairs into a :class:`QueryBatch` with the answers ``index`` knows."""

    def __init__(self, index: TripleIndex | UnionIndex | None, side: str, k: int) -> None:
        self.index, self.side, self.k = index, side, k

    def __call__(self, pairs: Tensor) -> QueryBatch:
        entity, relation = pairs.unbind(1)
        if self.index is None:
            empty = torch.empty(0, dtype=torch.long)
            return QueryBatch(entity, relation, self.side, self.k, (empty, empty))
        known = self.index.true_tails(entity, relation) if self.side == "tail" else self.index.true_heads(relation, entity)
        return QueryBatch(entity, relation, self.side, self.k, known)
