"""Graph statistics, computed once and vectorised, against brute-force Python loops."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_kge.data.index import TripleIndex
from lightning_kge.data.statistics import (
    CATEGORIES,
    GraphStatistics,
    entity_degrees,
    head_corruption_probability,
    relation_categories,
    subsampling_weights,
)

# A hand-made graph over 7 entities and 5 relations: relation 0 is 1-to-N (0 → 1, 2, 3), relation 1
# N-to-1 (1, 2, 3 → 4), relation 2 N-to-N, relation 3 1-to-1, relation 4 appears in test only;
# train repeats two lines, and valid/test add triples (some already in train).
TRAIN = [(0, 0, 1), (0, 0, 2), (0, 0, 3), (0, 0, 1), (1, 1, 4), (2, 1, 4), (3, 1, 4),
         (1, 2, 5), (1, 2, 6), (2, 2, 5), (2, 2, 6), (5, 3, 6), (5, 3, 6), (4, 0, 5)]
VALID = [(6, 3, 5), (0, 0, 1), (3, 2, 5)]
TEST = [(6, 4, 0), (4, 0, 6), (4, 0, 6)]
E, R = 7, 5


def brute_degree_ratios(triples: list[tuple[int, int, int]]) -> tuple[list[float], list[float]]:
    """tph and hpt of each relation over the distinct triples, by loops."""
    tph, hpt = [], []
    for relation in range(R):
        distinct = {x for x in triples if x[1] == relation}
        heads = {h for h, _, _ in distinct}
        tails = {t for _, _, t in distinct}
        tph.append(len(distinct) / len(heads) if heads else 0.0)
        hpt.append(len(distinct) / len(tails) if tails else 0.0)
    return tph, hpt


def brute_categories(triples: list[tuple[int, int, int]]) -> list[int]:
    tph, hpt = brute_degree_ratios(triples)
    return [(a >= 1.5) + 2 * (b >= 1.5) for a, b in zip(tph, hpt)]


def brute_head_probability(triples: list[tuple[int, int, int]]) -> list[float]:
    tph, hpt = brute_degree_ratios(triples)
    return [a / (a + b) if a + b > 0 else 0.5 for a, b in zip(tph, hpt)]


def brute_weights(triples: list[tuple[int, int, int]]) -> list[float]:
    weights = []
    for h, r, t in triples:
        with_head = sum(1 for x in triples if (x[0], x[1]) == (h, r))
        with_tail = sum(1 for x in triples if (x[2], x[1]) == (t, r))
        weights.append(1 / math.sqrt(with_head + 3 + with_tail + 3))  # a pair seen once counts 4
    return weights


def brute_degrees(triples: list[tuple[int, int, int]]) -> list[int]:
    return [sum((h == e) + (t == e) for h, _, t in triples) for e in range(E)]


def test_the_graph_statistics_equal_brute_force_loops_on_a_hand_made_graph() -> None:
    train = torch.tensor(TRAIN)
    index, row_queries = TripleIndex.with_row_queries(train, E, R)
    evaluation = torch.tensor(VALID + TEST)
    extra = TripleIndex(evaluation[~index.contains(*evaluation.unbind(1))], E, R)
    statistics = GraphStatistics.compute(train, index, row_queries, extra)

    assert statistics.relation_categories.tolist() == brute_categories(TRAIN + VALID + TEST)
    assert [CATEGORIES[c] for c in statistics.relation_categories[:4]] == ["1-to-N", "N-to-1", "N-to-N", "1-to-1"]
    assert statistics.head_probability.tolist() == pytest.approx(brute_head_probability(TRAIN))
    assert statistics.head_probability.dtype == torch.float32 and statistics.head_probability[4] == 0.5
    assert statistics.subsampling_weights.tolist() == pytest.approx(brute_weights(TRAIN))
    assert statistics.degrees.tolist() == brute_degrees(TRAIN)
    # The functions of one statistic give the same numbers through the same code.
    assert relation_categories(torch.tensor(TRAIN + VALID + TEST), R).tolist() == brute_categories(TRAIN + VALID + TEST)
    assert head_corruption_probability(train, R).tolist() == pytest.approx(brute_head_probability(TRAIN))
    assert subsampling_weights(train, E, R).tolist() == pytest.approx(brute_weights(TRAIN))
    assert entity_degrees(train, E).tolist() == brute_degrees(TRAIN)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_statistics_of_random_graphs_equal_brute_force_loops(random_triples, seed: int) -> None:
    train = random_triples(E, R, 60, seed=seed)
    evaluation = random_triples(E, R, 15, seed=seed + 10)
    index, row_queries = TripleIndex.with_row_queries(train, E, R)
    extra = TripleIndex(evaluation[~index.contains(*evaluation.unbind(1))], E, R)
    statistics = GraphStatistics.compute(train, index, row_queries, extra)
    labelled = [tuple(x) for x in train.tolist()]
    assert statistics.relation_categories.tolist() == brute_categories(labelled + [tuple(x) for x in evaluation.tolist()])
    assert statistics.head_probability.tolist() == pytest.approx(brute_head_probability(labelled))
    assert statistics.subsampling_weights.tolist() == pytest.approx(brute_weights(labelled))
    assert statistics.degrees.tolist() == brute_degrees(labelled)
