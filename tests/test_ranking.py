"""Tie-aware filtered ranks and the sum-state ranking metrics, against Python loops."""

from __future__ import annotations

import pytest
import torch

from lightning_kge.metrics.ranking import RankingMetrics, filtered_ranks

TIES = ("realistic", "optimistic", "pessimistic")


def brute_force_rank(row: list[float], target: int, filtered: set[int], ties: str) -> float:
    """Rank of ``row[target]`` among candidates not in ``filtered`` (the target always counts)."""
    score = row[target]
    higher = sum(1 for j, s in enumerate(row) if (j == target or j not in filtered) and s > score)
    equal = sum(1 for j, s in enumerate(row) if (j == target or j not in filtered) and s == score)
    optimistic, pessimistic = 1 + higher, higher + equal
    return {"optimistic": optimistic, "pessimistic": pessimistic, "realistic": (optimistic + pessimistic) / 2}[ties]


def random_problem(seed: int, B: int = 40, E: int = 25):
    """Integer-valued scores (many planted ties), targets and random filter pairs incl. targets."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(-3, 4, (B, E), generator=g).to(torch.float32)
    targets = torch.randint(E, (B,), generator=g)
    keep = torch.rand(B, E, generator=g) < 0.3
    keep[torch.arange(B), targets] |= torch.rand(B, generator=g) < 0.5  # the target is often listed
    rows, cols = keep.nonzero(as_tuple=True)
    return scores, targets, rows, cols


@pytest.mark.parametrize("ties", TIES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_filtered_ranks_equal_brute_force_with_ties_and_filters(ties: str, seed: int) -> None:
    scores, targets, rows, cols = random_problem(seed)
    got = filtered_ranks(scores, targets, rows, cols, ties=ties)
    filters: dict[int, set[int]] = {}
    for r, c in zip(rows.tolist(), cols.tolist()):
        filters.setdefault(r, set()).add(c)
    expected = [
        brute_force_rank(row, int(t), filters.get(b, set()), ties)
        for b, (row, t) in enumerate(zip(scores.tolist(), targets.tolist()))
    ]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=got.dtype), rtol=0, atol=1e-6)
    assert len(set(expected)) > 3  # the problem is not degenerate


@pytest.mark.parametrize("ties", TIES)
def test_unfiltered_ranks_equal_brute_force(ties: str) -> None:
    scores, targets, _, _ = random_problem(7)
    got = filtered_ranks(scores, targets, ties=ties)
    expected = [brute_force_rank(row, int(t), set(), ties) for row, t in zip(scores.tolist(), targets.tolist())]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=got.dtype), rtol=0, atol=1e-6)


def test_filtered_rank_never_filters_the_target_even_if_listed() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.7]])
    target = torch.tensor([2])
    rows, cols = torch.tensor([0, 0]), torch.tensor([2, 3])  # the target itself and a true tail
    ranks = filtered_ranks(scores, target, rows, cols)
    assert ranks.tolist() == [2.0]  # only 0.9 is above 0.5 once 0.7 is filtered
    assert torch.isfinite(ranks).all()


def test_filtered_rank_ignores_other_true_tails() -> None:
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    target = torch.tensor([4])
    rows, cols = torch.tensor([0, 0, 0]), torch.tensor([0, 1, 2])
    assert filtered_ranks(scores, target, rows, cols).tolist() == [2.0]


def test_filtered_ranks_do_not_modify_scores() -> None:
    scores, targets, rows, cols = random_problem(3)
    before = scores.clone()
    filtered_ranks(scores, targets, rows, cols)
    assert torch.equal(scores, before)


def test_unknown_ties_policy_is_rejected() -> None:
    with pytest.raises(ValueError, match="ties"):
        filtered_ranks(torch.zeros(1, 3), torch.tensor([0]), ties="random")  # type: ignore[arg-type]


# --- RankingMetrics --------------------------------------------------------------------------------


def summary(ranks: list[float], hits_at: tuple[int, ...]) -> dict[str, float]:
    out = {"mrr": sum(1 / r for r in ranks) / len(ranks), "mr": sum(ranks) / len(ranks)}
    for k in hits_at:
        out[f"hits@{k}"] = sum(1 for r in ranks if r <= k) / len(ranks)
    return out


def random_updates(seed: int, R: int = 4):
    g = torch.Generator().manual_seed(seed)
    updates = []
    for side in ("head", "tail", "tail", "head", "tail"):
        n = int(torch.randint(3, 12, (1,), generator=g))
        ranks = torch.randint(1, 30, (n,), generator=g).to(torch.float64) + (torch.rand(n, generator=g) < 0.3) * 0.5
        relations = torch.randint(R, (n,), generator=g)
        updates.append((ranks, relations, side))
    return updates


def test_ranking_metrics_equal_brute_force_per_side_and_overall() -> None:
    hits_at = (1, 3, 10)
    metric = RankingMetrics(num_relations=4, hits_at=hits_at)
    per_side: dict[str, list[float]] = {"head": [], "tail": []}
    for ranks, relations, side in random_updates(0):
        metric.update(ranks, relations, side)
        per_side[side].extend(ranks.tolist())
    values = metric.compute()
    expected = {k: v for k, v in summary(per_side["head"] + per_side["tail"], hits_at).items()}
    for side in ("head", "tail"):
        expected.update({f"{side}/{k}": v for k, v in summary(per_side[side], hits_at).items()})
    assert set(values) == set(expected)
    for key, value in expected.items():
        assert values[key].item() == pytest.approx(value, rel=1e-9), key


def test_ranking_metrics_per_relation_equal_brute_force() -> None:
    metric = RankingMetrics(num_relations=4, hits_at=(1, 10))
    updates = random_updates(1)
    for ranks, relations, side in updates:
        metric.update(ranks, relations, side)
    table = metric.per_relation()
    for s, side in enumerate(("head", "tail")):
        for rel in range(4):
            ranks = [r for rk, rl, sd in updates if sd == side for r, x in zip(rk.tolist(), rl.tolist()) if x == rel]
            assert table["count"][s, rel].item() == len(ranks)
            if ranks:
                for key, value in summary(ranks, (1, 10)).items():
                    assert table[key][s, rel].item() == pytest.approx(value), (side, rel, key)


def test_ranking_metrics_by_relation_group_equal_brute_force() -> None:
    metric = RankingMetrics(num_relations=4, hits_at=(1, 3))
    updates = random_updates(3)
    for ranks, relations, side in updates:
        metric.update(ranks, relations, side)
    groups = torch.tensor([1, 0, 1, 1])
    values = metric.summary(groups, ("small", "large"))
    for g, name in enumerate(("small", "large")):
        members = {rel for rel in range(4) if groups[rel] == g}
        ranks = [r for rk, rl, _ in updates for r, x in zip(rk.tolist(), rl.tolist()) if x in members]
        for key, value in summary(ranks, (1, 3)).items():
            assert values[f"{name}/{key}"].item() == pytest.approx(value), (name, key)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_ranking_metric_states_reduce_by_sum() -> None:
    updates = random_updates(2)
    whole = RankingMetrics(num_relations=4)
    first, second = RankingMetrics(num_relations=4), RankingMetrics(num_relations=4)
    for ranks, relations, side in updates:
        whole.update(ranks, relations, side)
        half = len(ranks) // 2
        first.update(ranks[:half], relations[:half], side)
        second.update(ranks[half:], relations[half:], side)
    expected = whole.compute()

    summed = RankingMetrics(num_relations=4)
    for name in ("count", "reciprocal_sum", "rank_sum", "hits"):
        setattr(summed, name, getattr(first, name) + getattr(second, name))
    merged = RankingMetrics(num_relations=4)  # merge_state reduces with each state's dist_reduce_fx
    merged.merge_state(first)
    merged.merge_state(second)
    for other in (summed.compute(), merged.compute()):
        assert set(other) == set(expected)
        for key in expected:
            torch.testing.assert_close(other[key], expected[key])


def test_ranking_metrics_reset_clears_states() -> None:
    metric = RankingMetrics(num_relations=2, hits_at=(1,))
    metric.update(torch.tensor([1.0, 3.0]), torch.tensor([0, 1]), "tail")
    metric.reset()
    metric.update(torch.tensor([2.0]), torch.tensor([1]), "head")
    values = metric.compute()
    assert values["mr"].item() == 2.0 and values["head/mrr"].item() == 0.5
