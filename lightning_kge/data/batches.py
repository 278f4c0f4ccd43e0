"""Training batches: positives sliced by index batches from a seeded, resumable order."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Literal

import torch
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler

LastBatch = Literal["keep", "drop", "fill"]
LAST_BATCH: tuple[str, ...] = ("keep", "drop", "fill")
"""What an epoch does with its last, partial batch: ``keep`` it smaller, ``drop`` it, or ``fill`` it."""


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (SplitMix64 steps), so nearby inputs give unrelated seeds.

    Example:
        >>> mix_seed(0, 1) != mix_seed(1, 0), 0 <= mix_seed(2**70, -1) < 2**63
        (True, True)
    """
    state = 0x9E3779B97F4A7C15
    for part in parts:
        state = (state ^ (part & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        state = (state ^ (state >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        state ^= state >> 29
    return state & 0x7FFFFFFFFFFFFFFF


class Rows(Dataset):
    """Row numbers of the training triples, indexed by a whole batch at once: ``Rows(n)[rows]`` is ``rows``.

    The training loader yields these index batches, not triples: the datamodule gathers the
    triples and their weights on the device the batch is moved to, from copies it keeps there
    (:meth:`~lightning_kge.datamodule.KGEDataModule.training_batch`), so a step moves ``B`` ids to
    the device and never collates item by item. Used with :class:`TrainSampler` and
    ``DataLoader(batch_size=None)``.

    Example:
        >>> Rows(5)[torch.tensor([3, 0])]
        tensor([3, 0])
    """

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, rows: Tensor) -> Tensor:
        return rows


class TrainSampler(DistributedSampler):
    """Index batches of one process: a per-epoch permutation, cut into batches, resumable.

    Epoch ``e`` shuffles all positions with a generator seeded by ``(seed, e)``, the same on every
    rank; under ``world_size`` processes the permutation is extended cyclically to a multiple of
    ``world_size`` (as PyTorch's ``DistributedSampler`` does) and rank ``k`` takes every
    ``world_size``-th position from ``k``, so ranks see disjoint positives and equal numbers of
    batches. The last batch of an epoch is smaller unless ``last_batch`` says otherwise: ``drop``
    leaves it out (those positives wait for another epoch's order), ``fill`` completes it with the
    first positions of the same epoch's order (cyclically, if one batch is more than an epoch), so
    every batch has ``batch_size`` rows: fixed shapes, as CUDA graphs need
    (``module.compile_step=reduce-overhead``).

    The stream is a function of ``(seed, rank, batches consumed)``: setting :attr:`start` (from a
    checkpoint) makes the next iteration continue where a run stopped, mid-epoch included. It is a
    ``DistributedSampler`` (so Lightning keeps it instead of injecting its own) that partitions by
    itself.

    Args:
        size: number of training positives.
        batch_size: positives per batch.
        seed: the run's seed.
        rank: this process's rank.
        world_size: number of processes.
        last_batch: ``keep``, ``drop`` or ``fill`` the last, partial batch of an epoch.

    Example:
        >>> sampler = TrainSampler(5, 2, seed=0)
        >>> batches = list(sampler)
        >>> len(sampler), [len(b) for b in batches], sorted(torch.cat(batches).tolist())
        (3, [2, 2, 1], [0, 1, 2, 3, 4])
        >>> [len(b) for b in TrainSampler(5, 2, seed=0, last_batch="drop")]
        [2, 2]
        >>> [len(b) for b in TrainSampler(5, 2, seed=0, last_batch="fill")]
        [2, 2, 2]
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 last_batch: LastBatch = "keep") -> None:
        super().__init__(range(size), num_replicas=world_size, rank=rank, shuffle=False, seed=seed)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if last_batch not in LAST_BATCH:
            raise ValueError(f"last_batch must be one of {LAST_BATCH}, got {last_batch!r}")
        self.size, self.batch_size, self.last_batch = size, batch_size, last_batch
        self.per_rank = math.ceil(size / world_size) if size else 0
        self.start = 0
        """Batches already consumed by the run: iteration resumes after them."""

    def __len__(self) -> int:
        if self.last_batch == "drop":
            return self.per_rank // self.batch_size
        return math.ceil(self.per_rank / self.batch_size)

    def epoch_order(self, epoch: int) -> Tensor:
        """This rank's positions in epoch ``epoch``, in order."""
        generator = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        order = torch.randperm(self.size, generator=generator)
        total = self.per_rank * self.num_replicas
        if total > len(order):
            order = torch.cat([order, order[: total - len(order)]])
        return order[self.rank : total : self.num_replicas]

    def __iter__(self) -> Iterator[Tensor]:  # type: ignore[override]
        per_epoch = len(self)
        if per_epoch == 0:
            return
        epoch, position = divmod(self.start, per_epoch)
        order = self.epoch_order(epoch)
        for b in range(position, per_epoch):
            self.start += 1
            rows = order[b * self.batch_size : (b + 1) * self.batch_size]
            missing = self.batch_size - len(rows)
            if missing and self.last_batch == "fill":
                rows = torch.cat([rows, order[torch.arange(missing) % len(order)]])
            yield rows
