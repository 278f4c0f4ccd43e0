"""Negative samplers: filtered corruption, shapes, RNG, masking and self-adversarial weights."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_kge.data.index import TripleIndex
from lightning_kge.losses import negative_sampling_loss
from lightning_kge.sampling import SelfAdversarialSampler, UniformSampler


@pytest.fixture(scope="module")
def train_index(nations) -> TripleIndex:
    return TripleIndex(nations.triples["train"], nations.num_entities, nations.num_relations)


def corrupted(positive: list[int], negative: int, corrupt_head: bool) -> tuple[int, int, int]:
    h, r, t = positive
    return (negative, r, t) if corrupt_head else (h, r, negative)


@pytest.mark.parametrize("corrupt_head", [False, True])
def test_filtered_corruption_never_returns_a_known_training_triple(nations, train_index, corrupt_head: bool) -> None:
    known = {tuple(x) for x in nations.triples["train"].tolist()}
    positives = nations.triples["train"]
    sampler = UniformSampler(num_negatives=16, filtered=True)
    negatives, mask = sampler.corrupt(positives, corrupt_head, nations.num_entities, train_index, torch.Generator().manual_seed(0))
    assert negatives.shape == (len(positives), 16)
    valid = torch.ones_like(negatives, dtype=torch.bool) if mask is None else mask
    checked = 0
    for positive, row, ok in zip(positives.tolist(), negatives.tolist(), valid.tolist()):
        for negative, is_valid in zip(row, ok):
            triple = corrupted(positive, negative, corrupt_head)
            if is_valid:
                assert triple not in known, triple
                checked += 1
            else:
                assert triple in known  # only a known triple may be masked
    assert checked > 0.99 * negatives.numel()


@pytest.mark.parametrize("corrupt_head", [False, True])
def test_shared_filtered_corruption_masks_every_known_triple(nations, train_index, corrupt_head: bool) -> None:
    known = {tuple(x) for x in nations.triples["train"].tolist()}
    positives = nations.triples["train"][:200]
    sampler = UniformSampler(num_negatives=12, filtered=True, shared=True)
    negatives, mask = sampler.corrupt(positives, corrupt_head, nations.num_entities, train_index, torch.Generator().manual_seed(1))
    assert negatives.shape == (12,) and mask.shape == (200, 12)
    for b, positive in enumerate(positives.tolist()):
        for j, negative in enumerate(negatives.tolist()):
            assert bool(mask[b, j]) == (corrupted(positive, negative, corrupt_head) not in known)


@pytest.mark.parametrize("corrupt_head", [False, True])
def test_unfiltered_corruption_does_return_known_triples(nations, train_index, corrupt_head: bool) -> None:
    known = {tuple(x) for x in nations.triples["train"].tolist()}
    positives = nations.triples["train"][:300]
    sampler = UniformSampler(num_negatives=16, filtered=False)
    negatives, mask = sampler.corrupt(positives, corrupt_head, nations.num_entities, train_index, torch.Generator().manual_seed(0))
    assert mask is None
    hits = sum(
        corrupted(p, n, corrupt_head) in known for p, row in zip(positives.tolist(), negatives.tolist()) for n in row
    )
    assert hits > 0


@pytest.mark.parametrize("shared", [False, True])
def test_negative_shapes_and_entity_range(train_index, nations, shared: bool) -> None:
    positives = nations.triples["train"][:7]
    sampler = UniformSampler(num_negatives=5, shared=shared)
    negatives, mask = sampler.corrupt(positives, False, nations.num_entities, train_index, torch.Generator().manual_seed(3))
    assert negatives.shape == ((5,) if shared else (7, 5))
    assert negatives.dtype == torch.long
    assert int(negatives.min()) >= 0 and int(negatives.max()) < nations.num_entities
    if mask is not None:
        assert mask.shape == (7, 5) and mask.dtype == torch.bool


@pytest.mark.parametrize("shared", [False, True])
def test_same_seed_same_negatives_different_seed_different_negatives(train_index, nations, shared: bool) -> None:
    positives = nations.triples["train"][:64]
    sampler = UniformSampler(num_negatives=32, shared=shared)

    def draw(seed: int) -> torch.Tensor:
        return sampler.corrupt(positives, True, nations.num_entities, train_index, torch.Generator().manual_seed(seed))[0]

    assert torch.equal(draw(5), draw(5))
    assert not torch.equal(draw(5), draw(6))


def test_query_with_every_entity_true_is_masked_not_looped_forever() -> None:
    E = 6
    # (0, 0, ?) has every entity as a true tail; (1, 0, ?) has only tail 2.
    triples = torch.tensor([[0, 0, t] for t in range(E)] + [[1, 0, 2]])
    index = TripleIndex(triples, E, 1)
    positives = torch.tensor([[0, 0, 3], [1, 0, 2]])
    sampler = UniformSampler(num_negatives=8, filtered=True, max_redraws=5)
    negatives, mask = sampler.corrupt(positives, False, E, index, torch.Generator().manual_seed(0))
    assert mask is not None
    assert not mask[0].any()
    assert mask[1].all() and (negatives[1] != 2).all()
    weights = SelfAdversarialSampler(num_negatives=8, temperature=1.0).weights(torch.randn(2, 8), mask)
    assert torch.isfinite(weights).all()
    assert torch.equal(weights[0], torch.zeros(8))


# --- weights ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_mask", [False, True])
def test_self_adversarial_weights_at_temperature_zero_equal_uniform(with_mask: bool) -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(5, 7, generator=g) * 4
    mask = (torch.rand(5, 7, generator=g) > 0.3) if with_mask else None
    uniform = UniformSampler(num_negatives=7).weights(scores, mask)
    adversarial = SelfAdversarialSampler(num_negatives=7, temperature=0.0).weights(scores, mask)
    torch.testing.assert_close(adversarial, uniform, rtol=0, atol=1e-7)


def test_self_adversarial_weights_equal_softmax_by_hand() -> None:
    alpha = 0.7
    scores = torch.tensor([[1.0, -2.0, 0.5], [3.0, 3.0, -1.0]])
    weights = SelfAdversarialSampler(num_negatives=3, temperature=alpha).weights(scores, None)
    for b, row in enumerate(scores.tolist()):
        z = sum(math.exp(alpha * s) for s in row)
        for j, s in enumerate(row):
            assert weights[b, j].item() == pytest.approx(math.exp(alpha * s) / z, abs=1e-6)


def test_self_adversarial_weights_carry_no_gradient() -> None:
    alpha = 1.3
    g = torch.Generator().manual_seed(0)
    positive = torch.randn(4, generator=g)
    negative = (torch.randn(4, 6, generator=g) * 2).requires_grad_(True)
    weights = SelfAdversarialSampler(num_negatives=6, temperature=alpha).weights(negative, None)
    assert not weights.requires_grad
    negative_sampling_loss(positive, negative, weights).backward()

    # By hand, with the weights as constants: L = ½·mean_b(−Σ_j w_bj log σ(−n_bj)) + const,
    # so ∂L/∂n_bj = ½ · (1/B) · w_bj · σ(n_bj).
    B = negative.shape[0]
    for b, row in enumerate(negative.detach().tolist()):
        z = sum(math.exp(alpha * s) for s in row)
        for j, s in enumerate(row):
            w = math.exp(alpha * s) / z
            expected = 0.5 / B * w / (1 + math.exp(-s))
            assert negative.grad[b, j].item() == pytest.approx(expected, rel=1e-5, abs=1e-8)


def test_self_adversarial_gradient_equals_gradient_with_constant_weights() -> None:
    g = torch.Generator().manual_seed(1)
    positive = torch.randn(3, generator=g)
    base = torch.randn(3, 5, generator=g)
    sampler = SelfAdversarialSampler(num_negatives=5, temperature=2.0)

    live = base.clone().requires_grad_(True)
    negative_sampling_loss(positive, live, sampler.weights(live, None)).backward()
    const = base.clone().requires_grad_(True)
    weights = torch.softmax(2.0 * base, dim=-1)  # a plain constant tensor
    negative_sampling_loss(positive, const, weights).backward()
    torch.testing.assert_close(live.grad, const.grad)


@pytest.mark.parametrize("sampler", [UniformSampler(3), SelfAdversarialSampler(3, temperature=1.0)], ids=["uniform", "adversarial"])
def test_masked_negatives_get_zero_weight_and_fully_masked_rows_give_zeros(sampler: UniformSampler) -> None:
    scores = torch.tensor([[1.0, 2.0, 3.0], [0.5, -0.5, 4.0], [100.0, -100.0, 0.0]])
    mask = torch.tensor([[True, False, True], [False, False, False], [True, True, True]])
    weights = sampler.weights(scores, mask)
    assert torch.isfinite(weights).all()
    assert (weights[~mask] == 0).all()
    assert torch.equal(weights[1], torch.zeros(3))
    torch.testing.assert_close(weights[[0, 2]].sum(-1), torch.ones(2))
    if isinstance(sampler, SelfAdversarialSampler):
        z = math.exp(1.0) + math.exp(3.0)
        assert weights[0, 0].item() == pytest.approx(math.exp(1.0) / z, abs=1e-6)
    else:
        assert weights[0, 0].item() == pytest.approx(0.5)
    loss = negative_sampling_loss(torch.zeros(3), scores, weights)
    assert torch.isfinite(loss)


def test_shared_mask_broadcasts_against_per_row_scores() -> None:
    scores = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    mask = torch.tensor([[True, False]])
    for sampler in (UniformSampler(2), SelfAdversarialSampler(2)):
        weights = sampler.weights(scores, mask)
        torch.testing.assert_close(weights, torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
