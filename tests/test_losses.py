"""The negative-sampling loss and the paper code's subsampling weights, against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_kge.data.statistics import subsampling_weights
from lightning_kge.losses import negative_sampling_loss


def neg_log_sigmoid(x: float) -> float:
    """−log σ(x) = log(1 + e^{−x})."""
    return math.log(1.0 + math.exp(-x))


POSITIVE = [2.0, -1.0, 0.5]
NEGATIVE = [[-1.0, 3.0], [0.0, -2.5], [1.5, 1.5]]
WEIGHTS = [[0.25, 0.75], [0.5, 0.5], [1.0, 0.0]]


def per_triple_terms() -> tuple[list[float], list[float]]:
    positive = [neg_log_sigmoid(p) for p in POSITIVE]
    negative = [sum(w * neg_log_sigmoid(-n) for w, n in zip(ws, ns)) for ws, ns in zip(WEIGHTS, NEGATIVE)]
    return positive, negative


def test_negative_sampling_loss_equals_hand_computation() -> None:
    positive, negative = per_triple_terms()
    expected = (sum(positive) / 3 + sum(negative) / 3) / 2
    loss = negative_sampling_loss(torch.tensor(POSITIVE), torch.tensor(NEGATIVE), torch.tensor(WEIGHTS))
    assert loss.shape == ()
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_negative_sampling_loss_with_subsampling_weights_equals_hand_computation() -> None:
    sample = [0.2, 1.0, 0.5]
    positive, negative = per_triple_terms()
    total = sum(sample)
    expected = (
        sum(s * p for s, p in zip(sample, positive)) / total + sum(s * n for s, n in zip(sample, negative)) / total
    ) / 2
    loss = negative_sampling_loss(
        torch.tensor(POSITIVE), torch.tensor(NEGATIVE), torch.tensor(WEIGHTS), torch.tensor(sample)
    )
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_uniform_sample_weights_equal_the_plain_mean() -> None:
    args = torch.tensor(POSITIVE), torch.tensor(NEGATIVE), torch.tensor(WEIGHTS)
    torch.testing.assert_close(negative_sampling_loss(*args, torch.full((3,), 0.3)), negative_sampling_loss(*args))


def test_negative_sampling_loss_is_stable_for_large_scores() -> None:
    loss = negative_sampling_loss(torch.tensor([-200.0]), torch.tensor([[200.0]]), torch.tensor([[1.0]]))
    assert loss.item() == pytest.approx(200.0, rel=1e-6)


def count_frequency(triples: list[tuple[int, int, int]], start: int = 4) -> dict[tuple[int, int], int]:
    """The RotatE paper code's ``count_frequency``."""
    count: dict[tuple[int, int], int] = {}
    for head, relation, tail in triples:
        if (head, relation) not in count:
            count[(head, relation)] = start
        else:
            count[(head, relation)] += 1
        if (tail, -relation - 1) not in count:
            count[(tail, -relation - 1)] = start
        else:
            count[(tail, -relation - 1)] += 1
    return count


@pytest.mark.parametrize("start", [4, 1])
def test_subsampling_weights_equal_the_paper_codes_count_frequency(random_triples, start: int) -> None:
    E, R = 6, 3
    triples = random_triples(E, R, 120, seed=4)  # duplicates and shared (h, r) / (t, r) pairs
    as_tuples = [tuple(x) for x in triples.tolist()]
    count = count_frequency(as_tuples, start=start)
    expected = [math.sqrt(1 / (count[(h, r)] + count[(t, -r - 1)])) for h, r, t in as_tuples]
    got = subsampling_weights(triples, E, R, start=start)
    assert got.shape == (len(as_tuples),)
    for g, e in zip(got.tolist(), expected):
        assert g == pytest.approx(e, rel=1e-6)


def test_subsampling_weights_on_nations_equal_the_paper_code(nations) -> None:
    triples = nations.triples["train"]
    as_tuples = [tuple(x) for x in triples.tolist()]
    count = count_frequency(as_tuples)
    expected = torch.tensor([math.sqrt(1 / (count[(h, r)] + count[(t, -r - 1)])) for h, r, t in as_tuples])
    got = subsampling_weights(triples, nations.num_entities, nations.num_relations)
    torch.testing.assert_close(got, expected.to(got.dtype), rtol=1e-6, atol=0)
