"""KGEDataModule: splits, loaders, on-the-fly corruption and the filter index."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lightning_kge.data.datasets import resolve_dataset
from lightning_kge.data.graph import SPLITS, KnowledgeGraph, UnseenPolicy, load_graph
from lightning_kge.data.index import TripleIndex
from lightning_kge.data.sampler import UnpaddedDistributedSampler
from lightning_kge.data.tsv import TripleFileError, read_labels
from lightning_kge.losses import subsampling_weights
from lightning_kge.metrics.categories import relation_categories
from lightning_kge.sampling import NegativeBatch, UniformSampler


class KGEDataModule(L.LightningDataModule):
    """Triples of a knowledge graph with corruption for training and filters for evaluation.

    Training batches are ``(positives (B, 3), weight (B,))``; once on the device,
    :meth:`on_after_batch_transfer` corrupts them into a :class:`NegativeBatch` with the
    ``sampler``, alternating tail-batch and head-batch as the paper's code does, from a
    generator seeded by the global seed and the process rank. Evaluation batches are dicts with
    ``triples (B, 3)`` and the ``(row, entity)`` pairs of the other true tails and heads over
    train + valid + test, so the module ranks them filtered with no index of its own.

    Args:
        sampler: draws the negatives (``conf/sampler``).
        name: a bundled (``nations``, ``kinships``, ``umls``) or downloadable dataset name.
        path: a folder with ``train.txt``, ``valid.txt``, ``test.txt``; instead of ``name``.
        url: base URL overriding the download source of ``name``.
        unseen: what to do with valid/test triples whose labels train never saw: ``error``,
            ``drop`` (the count is reported in a warning, on rank zero) or ``keep`` (vocabulary over all splits).
        batch_size: positives per training batch (per process under DDP).
        eval_batch_size: queries per evaluation batch.
        subsampling: weight positives by the paper code's subsampling weight.
        num_workers: DataLoader workers.
        regions: a file of candidate labels in the dataset folder (``regions.list`` for the
            countries datasets): evaluation batches then carry their ids as ``regions`` and
            the module reports AUC-PR over them.
    """

    def __init__(
        self,
        sampler: UniformSampler,
        name: str | None = None,
        path: str | None = None,
        url: str | None = None,
        unseen: UnseenPolicy = "error",
        batch_size: int = 512,
        eval_batch_size: int = 16,
        subsampling: bool = True,
        num_workers: int = 0,
        regions: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["sampler"])
        if (name is None) == (path is None):
            raise ValueError("give exactly one of data.name (a known dataset) or data.path (a folder)")
        self.sampler = sampler
        self.name = name
        self.path = path
        self.url = url
        self.unseen = unseen
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.subsampling = subsampling
        self.num_workers = num_workers
        self.regions = regions
        self.region_ids: Tensor | None = None
        self.graph: KnowledgeGraph | None = None
        self._generator: torch.Generator | None = None
        self._train_batches = 0

    # --- loading --------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Download the dataset if it is a remote one (once per node under DDP)."""
        self.folder()

    def folder(self) -> Path:
        """The local folder of the dataset, downloading it first if needed."""
        return Path(self.path) if self.path is not None else resolve_dataset(self.name, self.url)

    def setup(self, stage: str | None = None) -> None:
        if self.graph is not None:
            return
        folder = self.folder()
        self.graph = load_graph(folder, self.unseen)
        for split, count in self.graph.dropped.items():
            rank_zero_warn(f"dropped {count} {split} triples with an entity or relation not in train (data.unseen=drop)")
        train = self.graph.triples["train"]
        self.train_index = TripleIndex(train, self.num_entities, self.num_relations)
        everything = torch.cat([self.graph.triples[s] for s in SPLITS])
        self.filter_index = TripleIndex(everything, self.num_entities, self.num_relations)
        self.relation_categories = relation_categories(everything, self.num_relations)
        if self.regions is not None:
            self.region_ids = self._label_ids(folder / self.regions)
        self.train_weight = (
            subsampling_weights(train, self.num_entities, self.num_relations)
            if self.subsampling
            else torch.ones(len(train))
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

    def _label_ids(self, path: Path) -> Tensor:
        labels = read_labels(path)
        unknown = [label for label in labels if label not in self.entity_to_id]
        if unknown:
            raise TripleFileError(path, None, f"labels {unknown} are not entities of the graph")
        return torch.tensor([self.entity_to_id[label] for label in labels])

    def _loaded(self) -> KnowledgeGraph:
        if self.graph is None:
            self.setup()
        assert self.graph is not None
        return self.graph

    # --- loaders ----------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        dataset = TensorDataset(self.triples["train"], self.train_weight)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("valid")

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")

    def eval_dataloader(self, split: str) -> DataLoader:
        """Filtered-ranking batches of ``split``; under DDP each query goes to exactly one rank."""
        dataset = QueryDataset(self.triples[split])
        sampler = None
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:
            sampler = UnpaddedDistributedSampler(dataset, trainer.world_size, trainer.global_rank)
        return DataLoader(
            dataset,
            batch_size=self.eval_batch_size,
            sampler=sampler,
            collate_fn=FilterCollate(self.filter_index, self.region_ids),
            num_workers=self.num_workers,
        )

    # --- corruption -------------------------------------------------------------------------------
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Corrupt training batches on their device; evaluation batches pass through."""
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return batch
        positives, weight = batch
        return self.corrupt(positives, weight)

    def corrupt(self, positives: Tensor, weight: Tensor) -> NegativeBatch:
        """Draw negatives for ``positives``; tail-batch and head-batch alternate per call."""
        device = positives.device
        if self._generator is None or self._generator.device != device:
            rank = self.trainer.global_rank if self.trainer is not None else 0
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(torch.initial_seed() + 7919 * rank)
        if self.train_index.device != device:
            self.train_index.to(device)
        corrupt_head = self._train_batches % 2 == 1
        self._train_batches += 1
        negatives, mask = self.sampler.corrupt(
            positives, corrupt_head, self.num_entities, self.train_index, self._generator
        )
        return NegativeBatch(positives, negatives, corrupt_head, mask, weight)


class QueryDataset(Dataset):
    """The triples of one split, one query triple per item."""

    def __init__(self, triples: Tensor) -> None:
        self.triples = triples

    def __len__(self) -> int:
        return len(self.triples)

    def __getitem__(self, i: int) -> Tensor:
        return self.triples[i]


class FilterCollate:
    """Collate query triples with the ``(row, entity)`` pairs of their other true answers."""

    def __init__(self, index: TripleIndex, regions: Tensor | None = None) -> None:
        self.index = index
        self.regions = regions

    def __call__(self, items: list[Tensor]) -> dict[str, Tensor]:
        triples = torch.stack(items)
        h, r, t = triples.unbind(1)
        batch = {
            "triples": triples,
            "tail_filter": torch.stack(self.index.true_tails(h, r)),
            "head_filter": torch.stack(self.index.true_heads(r, t)),
        }
        if self.regions is not None:
            batch["regions"] = self.regions
        return batch
