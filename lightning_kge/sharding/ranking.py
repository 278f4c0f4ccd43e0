r"""Filtered ranking on a sharded entity table: each process scores its own rows and the counts are summed.

A filtered rank needs, per query, how many unfiltered candidates score above the target (``higher``) and
how many at least as high (``at_least``, the target included); both are sums over the candidates, so over
the processes' rows. Every process takes the same queries, scores them against its own rows only, reads
the target's score where it holds the target's row (one all-reduce spreads it), counts, and one
all-reduce of the ``(B, 2)`` counts gives every process the ranks of all the queries; no row ever moves
except the queries' own. The rules are :func:`~lightning_kge.metrics.ranking.filtered_ranks`\ 's: NaN
scores rank below every number, filtered candidates never count (the target always does), a NaN target
gets the worst rank, ties as ``realistic``, ``optimistic`` or ``pessimistic``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from lightning_kge.batches import EvaluationBatch
from lightning_kge.errors import UserError
from lightning_kge.metrics.ranking import SIDES, Ranks, Ties, tie_ranks


def own_counts(scores: Tensor, target_scores: Tensor, filter_rows: Tensor | None = None,
               filter_cols: Tensor | None = None) -> Tensor:
    """``(B, 2)`` float64 counts ``(higher, at_least)`` of one process's candidate scores ``(B, n)`` against
    the targets' scores ``(B,)``; filter pairs ``(row, column)`` index into ``scores`` (the target's own
    column must not be among them)."""
    worst = torch.tensor(float("-inf"), dtype=scores.dtype, device=scores.device)
    scores = torch.where(scores.isnan(), worst, scores)
    target = torch.where(target_scores.isnan(), worst, target_scores).unsqueeze(1)
    if filter_rows is not None and filter_rows.numel():
        nan = torch.tensor(float("nan"), dtype=scores.dtype, device=scores.device)
        scores = scores.index_put((filter_rows, filter_cols), nan)
    higher = (scores > target).sum(dim=1)
    at_least = (scores >= target).sum(dim=1)
    return torch.stack([higher, at_least], dim=1).to(torch.float64)


def ranks_from_counts(counts: Tensor, nan_target: Tensor, ties: Ties) -> Tensor:
    """``(B,)`` ranks from summed counts ``(B, 2)`` (higher, at least), as
    :func:`~lightning_kge.metrics.ranking.filtered_ranks` ranks them.

    Example:
        >>> ranks_from_counts(torch.tensor([[1.0, 3.0]], dtype=torch.float64), torch.tensor([False]), "realistic")
        tensor([2.5000], dtype=torch.float64)
    """
    higher, at_least = counts.unbind(1)
    return tie_ranks(higher, at_least, nan_target, ties)


def sharded_ranks(scores: Tensor, offset: int, targets: Tensor, filter_rows: Tensor | None, filter_cols: Tensor | None,
                  ties: Ties, group: Any = None) -> Tensor:
    """``(B,)`` filtered ranks of ``targets`` among all entities, from this process's scores ``(B, n)`` of the
    entities ``offset … offset + n − 1``; a collective call (two all-reduces) of every process of ``group``,
    each with its own rows and the same queries. The filter pairs are ``(row, entity id)`` over all entities."""
    n = scores.shape[1]
    local = targets - offset
    mine = (local >= 0) & (local < n)
    rows = torch.arange(len(targets), device=scores.device)
    target_scores = torch.where(mine, scores[rows, local.clamp(0, max(n - 1, 0))] if n else scores.new_zeros(len(rows)),
                                scores.new_zeros(()))
    target_scores = target_scores.to(torch.float64)
    dist.all_reduce(target_scores, group=group)  # held by one process: the others add 0
    target_scores = target_scores.to(scores.dtype)
    own_rows = own_cols = None
    if filter_rows is not None and filter_rows.numel():
        cols = filter_cols - offset
        keep = (cols >= 0) & (cols < n) & (filter_cols != targets[filter_rows])
        own_rows, own_cols = filter_rows[keep], cols[keep]
    counts = own_counts(scores, target_scores, own_rows, own_cols)
    dist.all_reduce(counts, group=group)
    return ranks_from_counts(counts, target_scores.isnan(), ties)


def require_same_queries(triples: Tensor, group: Any = None) -> None:
    """Refuse evaluation batches that differ between processes (each must rank every query on its rows).

    One all-gather of a ``(2,)`` signature (the count and a weighted sum of the ids).
    """
    world = dist.get_world_size(group)
    if world == 1:
        return
    weights = torch.arange(1, triples.numel() + 1, device=triples.device, dtype=torch.float64)
    signature = torch.stack([torch.tensor(float(len(triples)), dtype=torch.float64, device=triples.device),
                             (triples.reshape(-1).to(torch.float64) * weights).sum()])
    gathered = [torch.empty_like(signature) for _ in range(world)]
    dist.all_gather(gathered, signature, group=group)
    if any(not torch.equal(g, gathered[0]) for g in gathered):
        raise UserError("under strategy=torchrec every process ranks every evaluation query against its own rows, "
                        "but the processes were given different queries", "the evaluation dataloader",
                        "give every process the same evaluation batches (KGEDataModule's loaders do)")


def rank_batch(module: Any, table: Any, batch: EvaluationBatch, stage: str, group: Any = None) -> None:
    """Rank the queries of ``batch`` (the same on every process) as head and tail predictions on the sharded
    ``table`` and update ``stage``'s metrics of ``module`` (a ``KGEModule``) with this process's share.

    The queries are formed by the model (their entity rows looked up through the table), scored against this
    process's own rows (``eval_chunk_size`` at a time), and ranked by :func:`sharded_ranks`. Each process
    hands ``module.update_metrics`` the queries ``b ≡ rank (mod world size)``, so the metric states, summed
    over processes, count every query once.
    """
    model = module.model
    triples = batch.triples
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    require_same_queries(triples, group)
    share = torch.arange(len(triples), device=triples.device) % world == rank
    h, r, t = triples.unbind(1)
    for side in SIDES:
        query = model.tail_query(h, r) if side == "tail" else model.head_query(r, t)
        with table.scoring_own_rows() as (offset, n):
            ids = torch.arange(n, device=query.device)
            chunks = [model.score_candidates(query, chunk) for chunk in ids.split(module.eval_chunk_size)]
        scores = torch.cat(chunks, dim=1) if chunks else query.new_zeros(len(triples), 0)
        target = triples[:, 0 if side == "head" else 2]
        rows, cols = batch.filter(side)
        ranks = sharded_ranks(scores, offset, target, rows, cols, module.ties, group)
        raw = sharded_ranks(scores, offset, target, None, None, module.ties, group) if module.raw else None
        module.update_metrics(stage, Ranks(triples[share], side, ranks[share], None if raw is None else raw[share]))
