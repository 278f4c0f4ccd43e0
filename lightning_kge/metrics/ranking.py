"""Filtered ranking: tie-aware ranks (functional) and a TorchMetrics class with sum states."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from torchmetrics import Metric

Ties = Literal["realistic", "optimistic", "pessimistic"]
TIES: tuple[str, ...] = ("realistic", "optimistic", "pessimistic")
SIDES = ("head", "tail")


def filtered_ranks(
    scores: Tensor,
    targets: Tensor,
    filter_rows: Tensor | None = None,
    filter_cols: Tensor | None = None,
    ties: Ties = "realistic",
) -> Tensor:
    """Rank of each target among all candidates, after removing the other true candidates.

    The target's score is read from the same row of ``scores`` it is ranked in. Filtered
    candidates (other true answers) never count; the target itself is never filtered. A NaN
    score ranks below every number, and a NaN target gets the worst rank (the number of unfiltered
    candidates) whatever the tie policy, so a diverged model never looks good. With ties,
    ``optimistic`` = 1 + #higher, ``pessimistic`` = #higher + #equal (the target included), and
    ``realistic`` their mean.

    Args:
        scores: ``(B, E)``, higher is better.
        targets: ``(B,)`` the true candidate of each row.
        filter_rows, filter_cols: pairs ``(row, candidate)`` to filter (may include the target).
        ties: ``realistic`` (default), ``optimistic`` or ``pessimistic``.

    Returns:
        ``(B,)`` float ranks, 1 is best.

    Example:
        >>> scores = torch.tensor([[0.9, 0.5, 0.5, 0.1]])
        >>> filtered_ranks(scores, torch.tensor([1])).tolist()
        [2.5]
        >>> filtered_ranks(scores, torch.tensor([1]), torch.tensor([0, 0]), torch.tensor([0, 1])).tolist()
        [1.5]
        >>> filtered_ranks(torch.full((1, 4), float("nan")), torch.tensor([1])).tolist()
        [4.0]
    """
    if ties not in TIES:
        raise ValueError(f"ties must be 'realistic', 'optimistic' or 'pessimistic', got {ties!r}")
    rows = torch.arange(scores.shape[0], device=scores.device)
    target_scores = scores[rows, targets].unsqueeze(1)
    nan_target = target_scores.isnan().squeeze(1)
    # A NaN score ranks below every number (−∞); filtered candidates become NaN, which compares
    # false both ways and so never counts, not even against a −∞ target.
    worst = torch.tensor(float("-inf"), dtype=scores.dtype, device=scores.device)
    scores = torch.where(scores.isnan(), worst, scores)
    target_scores = torch.where(target_scores.isnan(), worst, target_scores)
    if filter_rows is not None and filter_rows.numel():
        keep = filter_cols != targets[filter_rows]
        nan = torch.tensor(float("nan"), dtype=scores.dtype, device=scores.device)
        scores = scores.index_put((filter_rows[keep], filter_cols[keep]), nan)
    higher = (scores > target_scores).sum(dim=1).to(torch.float64)
    at_least = (scores >= target_scores).sum(dim=1).to(torch.float64)
    return tie_ranks(higher, at_least, nan_target, ties)


def tie_ranks(higher: Tensor, at_least: Tensor, nan_target: Tensor, ties: Ties) -> Tensor:
    """``(B,)`` ranks from the counts of unfiltered candidates scoring higher than (``higher``) and at
    least as high as (``at_least``, the target included) each target, by the tie policy.

    A NaN target is last among the unfiltered candidates (``at_least``), whatever the policy.
    Sharded evaluation sums the counts over processes and ranks with this too.

    Example:
        >>> tie_ranks(torch.tensor([1.0, 1.0]), torch.tensor([3.0, 3.0]), torch.tensor([False, True]), "realistic")
        tensor([2.5000, 3.0000])
    """
    if ties == "optimistic":
        ranks = higher + 1
    elif ties == "pessimistic":
        ranks = at_least
    else:
        ranks = (higher + 1 + at_least) / 2
    return torch.where(nan_target, at_least, ranks)


@dataclass(frozen=True)
class Scores:
    """MRR, MR and Hits@k of a group of ranked queries.

    Attributes:
        mrr: mean reciprocal rank.
        mr: mean rank.
        hits: ``{k: share of ranks ≤ k}`` for each ``k`` of ``hits_at``.
        count: how many queries (head and tail predictions count once each).
    """

    mrr: float
    mr: float
    hits: dict[int, float]
    count: int

    def values(self) -> dict[str, float]:
        """``{"mrr": …, "mr": …, "hits@k": …}``.

        Example:
            >>> Scores(0.5, 3.0, {1: 0.25, 10: 1.0}, 4).values()
            {'mrr': 0.5, 'mr': 3.0, 'hits@1': 0.25, 'hits@10': 1.0}
        """
        return {"mrr": self.mrr, "mr": self.mr, **{f"hits@{k}": v for k, v in self.hits.items()}}


@dataclass
class RankingSummary:
    """What one evaluation of a stage gave, typed: both sides, each side, each relation group.

    Attributes:
        both: the mean over head and tail predictions (the headline numbers).
        sides: ``{"head": Scores, "tail": Scores}``.
        groups: ``{"1-to-N": Scores, …}``: each group of relations with queries (relation
            categories); empty without a graph.
        per_relation: :meth:`RankingMetrics.per_relation` (``"count"``, ``"mrr"``, … each ``(2, R)``).
        raw: the same for raw (unfiltered) ranks, where they were computed.
    """

    both: Scores
    sides: dict[str, Scores]
    groups: dict[str, Scores]
    per_relation: dict[str, Tensor]
    raw: RankingSummary | None = None

    @property
    def hits_at(self) -> tuple[int, ...]:
        """The ``k`` of the Hits@k values."""
        return tuple(self.both.hits)

    def values(self) -> dict[str, float]:
        """The flat values that are logged under ``{stage}/``: ``mrr``, ``head/hits@1``, ``1-to-N/mrr``,
        ``raw/mrr`` …"""
        out = dict(self.both.values())
        for prefix, scores in (*self.sides.items(), *self.groups.items()):
            out.update({f"{prefix}/{k}": v for k, v in scores.values().items()})
        if self.raw is not None:
            out.update({f"raw/{k}": v for k, v in self.raw.values().items()})
        return out


@dataclass
class Ranks:
    """The filtered ranks of one side of an evaluation batch: what :meth:`KGEModule.update_metrics` gets.

    Attributes:
        triples: ``(B, 3)`` the query triples.
        side: ``"head"`` or ``"tail"``: which entity was ranked.
        ranks: ``(B,)`` filtered ranks of the true entity (float64, ties per ``module.ties``).
        raw: ``(B,)`` raw (unfiltered) ranks, or ``None`` when ``module.raw`` is off.
    """

    triples: Tensor
    side: str
    ranks: Tensor
    raw: Tensor | None = None

    @property
    def relations(self) -> Tensor:
        """``(B,)`` the relation of each query."""
        return self.triples[:, 1]


class RankingMetrics(Metric):
    """MRR, MR and Hits@k of filtered ranks, per prediction side and per relation.

    States are sums indexed ``[side, relation]`` (``side`` 0 = head, 1 = tail), reduced by
    ``sum`` across processes, so the result is exact under DDP as long as each query is
    counted by exactly one process. :meth:`compute` returns the mean over both sides
    (``mrr``, ``mr``, ``hits@k``) and each side (``head/mrr``, ``tail/hits@10``, …).

    Args:
        num_relations: ``R``; per-relation sums allow the breakdowns by relation.
        hits_at: the ``k`` of Hits@k.

    Example:
        >>> metric = RankingMetrics(num_relations=1, hits_at=(1,))
        >>> metric.update(torch.tensor([1.0, 4.0]), torch.tensor([0, 0]), side="tail")
        >>> metric.update(torch.tensor([2.0]), torch.tensor([0]), side="head")
        >>> {k: round(float(v), 4) for k, v in metric.compute().items()}
        {'mrr': 0.5833, 'mr': 2.3333, 'hits@1': 0.3333, 'head/mrr': 0.5, 'head/mr': 2.0, 'head/hits@1': 0.0, 'tail/mrr': 0.625, 'tail/mr': 2.5, 'tail/hits@1': 0.5}
    """

    full_state_update = False
    higher_is_better = None  # MRR and Hits@k are higher-is-better, MR lower-is-better

    def __init__(self, num_relations: int, hits_at: tuple[int, ...] = (1, 3, 10)) -> None:
        super().__init__()
        self.num_relations = num_relations
        self.hits_at = tuple(hits_at)
        shape = (len(SIDES), num_relations)
        dtype = torch.float64
        self.add_state("count", torch.zeros(shape, dtype=dtype), dist_reduce_fx="sum")
        self.add_state("reciprocal_sum", torch.zeros(shape, dtype=dtype), dist_reduce_fx="sum")
        self.add_state("rank_sum", torch.zeros(shape, dtype=dtype), dist_reduce_fx="sum")
        self.add_state("hits", torch.zeros(*shape, len(self.hits_at), dtype=dtype), dist_reduce_fx="sum")

    def update(self, ranks: Tensor, relations: Tensor, side: str) -> None:
        """Add filtered ``ranks (B,)`` of queries with ``relations (B,)`` on ``side`` (head/tail)."""
        s = SIDES.index(side)
        ranks = ranks.to(torch.float64)
        self.count[s].index_add_(0, relations, torch.ones_like(ranks))
        self.reciprocal_sum[s].index_add_(0, relations, 1.0 / ranks)
        self.rank_sum[s].index_add_(0, relations, ranks)
        hits = (ranks[:, None] <= torch.tensor(self.hits_at, device=ranks.device)).to(torch.float64)
        self.hits[s].index_add_(0, relations, hits)

    def compute(self) -> dict[str, Tensor]:
        """MRR, MR and Hits@k over both sides (``mrr``) and each side (``head/mrr``, ``tail/…``)."""
        return self.summary()

    def summary(self, groups: Tensor | None = None, names: tuple[str, ...] = ()) -> dict[str, Tensor]:
        """The values of :meth:`compute`, plus MRR, MR and Hits@k per group of relations.

        Reads the states as they are: under DDP call it inside ``self.sync_context()`` (as
        :class:`~lightning_kge.module.KGEModule` does), so that every process sees the sums over
        all processes. ``compute`` syncs by itself.

        Args:
            groups: ``(R,)`` group index of each relation (e.g. relation categories), or ``None``.
            names: the name of each group index; keys are ``{name}/mrr``, ``{name}/hits@k``.
                Groups without queries are left out.
        """
        result = self._summarise(slice(None), slice(None), "")
        for s, side in enumerate(SIDES):
            result.update(self._summarise(s, slice(None), f"{side}/"))
        for g, name in self._groups(groups, names):
            result.update(self._summarise(slice(None), g, f"{name}/"))
        return result

    def ranking(self, groups: Tensor | None = None, names: tuple[str, ...] = ()) -> RankingSummary:
        """The states as a typed :class:`RankingSummary` (read as they are, like :meth:`summary`)."""
        return RankingSummary(
            both=self._scores(slice(None), slice(None)),
            sides={side: self._scores(s, slice(None)) for s, side in enumerate(SIDES)},
            groups={name: self._scores(slice(None), g) for g, name in self._groups(groups, names)},
            per_relation=self.per_relation(),
        )

    def _groups(self, groups: Tensor | None, names: tuple[str, ...]) -> list[tuple[Tensor, str]]:
        if groups is None:
            return []
        found = []
        for g, name in enumerate(names):
            members = (groups == g).to(self.count.device)
            if self.count[:, members].sum() > 0:
                found.append((members, name))
        return found

    def _scores(self, side: int | slice, relations: Tensor | slice) -> Scores:
        values = self._summarise(side, relations, "")
        count = int(self.count[side][..., relations].sum())
        return Scores(float(values["mrr"]), float(values["mr"]), {k: float(values[f"hits@{k}"]) for k in self.hits_at},
                      count)

    def _summarise(self, side: int | slice, relations: Tensor | slice, prefix: str) -> dict[str, Tensor]:
        count = self.count[side][..., relations].sum().clamp(min=1)
        out = {
            f"{prefix}mrr": self.reciprocal_sum[side][..., relations].sum() / count,
            f"{prefix}mr": self.rank_sum[side][..., relations].sum() / count,
        }
        hits = self.hits[side][..., relations, :].reshape(-1, len(self.hits_at)).sum(0) / count
        out.update({f"{prefix}hits@{k}": hits[i] for i, k in enumerate(self.hits_at)})
        return out

    def per_relation(self) -> dict[str, Tensor]:
        """MRR and Hits@k per relation and side: ``{"count"|"mrr"|"mr"|"hits@k": (2, R)}``.

        Reads the states as they are, like :meth:`summary`.
        """
        count = self.count.clamp(min=1)
        out = {"count": self.count.clone(), "mrr": self.reciprocal_sum / count, "mr": self.rank_sum / count}
        out.update({f"hits@{k}": self.hits[..., i] / count for i, k in enumerate(self.hits_at)})
        return out
