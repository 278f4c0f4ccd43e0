"""A distributed sampler for evaluation that never pads with duplicate queries."""

from __future__ import annotations

from collections.abc import Iterator, Sized

from torch.utils.data import DistributedSampler


class UnpaddedDistributedSampler(DistributedSampler):
    """Rank ``k`` of ``N`` gets items ``k, k + N, k + 2N, …``: every item exactly once overall.

    PyTorch's :class:`~torch.utils.data.DistributedSampler` pads the last round with repeated
    items so that all ranks have equal length, which counts some queries twice in ranking
    metrics. This subclass (a ``DistributedSampler``, so Lightning keeps it instead of
    replacing it) returns uneven shards instead; sum-state metrics then reduce exactly.

    Example:
        >>> [list(UnpaddedDistributedSampler(range(5), num_replicas=2, rank=k)) for k in (0, 1)]
        [[0, 2, 4], [1, 3]]
    """

    def __init__(self, dataset: Sized, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, len(self.dataset), self.num_replicas))
