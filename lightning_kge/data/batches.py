"""Training batches: positives sliced by index batches from a seeded, resumable order."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler


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


class Positives(Dataset):
    """Training triples and their weights, indexed by a whole batch of rows at once.

    ``dataset[rows]`` with a ``LongTensor`` of rows returns ``(triples[rows], weight[rows])``:
    one gather per batch, not one call per item. Used with :class:`TrainSampler` and
    ``DataLoader(batch_size=None)``.
    """

    def __init__(self, triples: Tensor, weight: Tensor) -> None:
        self.triples, self.weight = triples, weight

    def __len__(self) -> int:
        return len(self.triples)

    def __getitem__(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        return self.triples[rows], self.weight[rows]


class TrainSampler(DistributedSampler):
    """Index batches of one process: a per-epoch permutation, cut into batches, resumable.

    Epoch ``e`` shuffles all positions with a generator seeded by ``(seed, e)``, the same on every
    rank; under ``world_size`` processes the permutation is extended cyclically to a multiple of
    ``world_size`` (as PyTorch's ``DistributedSampler`` does) and rank ``k`` takes every
    ``world_size``-th position from ``k``, so ranks see disjoint positives and equal numbers of
    batches. The last batch of an epoch may be smaller.

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

    Example:
        >>> sampler = TrainSampler(5, 2, seed=0)
        >>> batches = list(sampler)
        >>> len(sampler), [len(b) for b in batches], sorted(torch.cat(batches).tolist())
        (3, [2, 2, 1], [0, 1, 2, 3, 4])
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(range(size), num_replicas=world_size, rank=rank, shuffle=False, seed=seed)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.size, self.batch_size = size, batch_size
        self.per_rank = math.ceil(size / world_size) if size else 0
        self.start = 0
        """Batches already consumed by the run: iteration resumes after them."""

    def __len__(self) -> int:
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
            yield order[b * self.batch_size : (b + 1) * self.batch_size]
