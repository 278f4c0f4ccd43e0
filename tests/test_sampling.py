"""Negative sampling: corruption (sides, exact filtered draws, masks, RNG) and weights."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from lightning_kge.data.index import TripleIndex
from lightning_kge.data.statistics import head_corruption_probability
from lightning_kge.errors import ArgumentError
from lightning_kge.losses import negative_sampling_loss
from lightning_kge.sampling import BernoulliSampler, Corruption, SelfAdversarialSampler, UniformSampler, Weighting


@pytest.fixture(scope="module")
def train_index(nations) -> TripleIndex:
    return TripleIndex(nations.triples["train"], nations.num_entities, nations.num_relations)


def corrupted(positive: list[int], negative: int, corrupt_head: bool) -> tuple[int, int, int]:
    h, r, t = positive
    return (negative, r, t) if corrupt_head else (h, r, negative)


def draw(corruption: Corruption, positives: torch.Tensor, index: TripleIndex, step: int = 0, seed: int = 0,
         head_probability: torch.Tensor | None = None):
    weight = torch.ones(len(positives))
    return corruption.corrupt(positives, weight, step, index, head_probability, torch.Generator().manual_seed(seed))


# --- sides -----------------------------------------------------------------------------------------


def test_alternate_side_replaces_tails_on_even_steps_and_heads_on_odd_steps(nations, train_index) -> None:
    positives = nations.triples["train"][:10]
    for step in range(4):
        batch = draw(Corruption(4, "alternate"), positives, train_index, step)
        assert batch.corrupt_head.shape == (10,) and batch.step == step
        assert batch.corrupt_head.tolist() == [step % 2 == 1] * 10


def test_bernoulli_probabilities_on_a_hand_made_graph_equal_tph_over_tph_plus_hpt() -> None:
    # r0: head 0 -> tails 1,2,3 and head 4 -> tail 1: tph = 4/2 = 2, hpt = 4/3.
    # r1: heads 0,1,2 -> tail 5: tph = 1, hpt = 3.  r2: one triple: tph = hpt = 1.
    triples = torch.tensor([[0, 0, 1], [0, 0, 2], [0, 0, 3], [4, 0, 1], [0, 1, 5], [1, 1, 5], [2, 1, 5], [3, 2, 4]])
    got = head_corruption_probability(triples, 4).tolist()
    expected = [2 / (2 + 4 / 3), 1 / (1 + 3), 0.5, 0.5]  # r3 has no triple
    assert got == pytest.approx(expected, abs=1e-6)


def test_bernoulli_side_replaces_heads_at_each_relations_rate(nations, train_index) -> None:
    train = nations.triples["train"]
    probability = head_corruption_probability(train, nations.num_relations)
    positives = train.repeat(20, 1)  # 31,840 positives
    batch = draw(Corruption(1, "bernoulli"), positives, train_index, head_probability=probability, seed=3)
    for r in range(nations.num_relations):
        rows = positives[:, 1] == r
        n, p = int(rows.sum()), float(probability[r])
        rate = batch.corrupt_head[rows].double().mean().item()
        assert abs(rate - p) < 5 * math.sqrt(p * (1 - p) / n) + 1e-9, (r, rate, p, n)


def test_bernoulli_side_draws_negatives_for_the_side_it_replaces(nations, train_index) -> None:
    known = {tuple(x) for x in nations.triples["train"].tolist()}
    positives = nations.triples["train"]
    probability = head_corruption_probability(positives, nations.num_relations)
    batch = draw(Corruption(8, "bernoulli"), positives, train_index, head_probability=probability, seed=1)
    for positive, row, head in zip(positives.tolist(), batch.negatives.tolist(), batch.corrupt_head.tolist()):
        assert all(corrupted(positive, n, head) not in known for n in row)


# --- filtered draws --------------------------------------------------------------------------------


@pytest.mark.parametrize("corrupt_head", [False, True])
def test_filtered_corruption_never_returns_a_known_training_triple(nations, train_index, corrupt_head: bool) -> None:
    known = {tuple(x) for x in nations.triples["train"].tolist()}
    positives = nations.triples["train"]
    batch = draw(Corruption(16, filtered=True), positives, train_index, step=int(corrupt_head))
    assert batch.negatives.shape == (len(positives), 16) and batch.mask is None
    for positive, row in zip(positives.tolist(), batch.negatives.tolist()):
        for negative in row:
            assert corrupted(positive, negative, corrupt_head) not in known


@pytest.mark.parametrize("corrupt_head", [False, True])
def test_filtered_draws_are_uniform_over_the_entities_that_are_not_known_answers(
    nations, train_index, corrupt_head: bool
) -> None:
    known = {tuple(x) for x in nations.triples["train"].tolist()}
    positive = nations.triples["train"][7]
    h, r, t = positive.tolist()
    allowed = [e for e in range(nations.num_entities) if corrupted([h, r, t], e, corrupt_head) not in known]
    batch = draw(Corruption(20_000, filtered=True), positive[None, :], train_index, step=int(corrupt_head), seed=11)
    counts = Counter(batch.negatives[0].tolist())
    assert set(counts) == set(allowed)
    expected = 20_000 / len(allowed)
    chi2 = sum((counts[e] - expected) ** 2 / expected for e in allowed)
    # 99.9% quantile of chi-square with (len(allowed) - 1) <= 13 degrees of freedom is 34.5.
    assert chi2 < 34.5, (chi2, counts)


def test_a_query_with_every_entity_known_gets_masked_negatives_and_zero_weights() -> None:
    E = 6
    # (0, 0, ?) has every entity as a true tail; (1, 0, ?) has only tail 2.
    triples = torch.tensor([[0, 0, t] for t in range(E)] + [[1, 0, 2]])
    index = TripleIndex(triples, E, 1)
    positives = torch.tensor([[0, 0, 3], [1, 0, 2]])
    batch = draw(Corruption(8, filtered=True), positives, index)
    assert batch.mask is not None
    mask = batch.mask.expand(2, 8)
    assert not mask[0].any()
    assert mask[1].all() and (batch.negatives[1] != 2).all()
    weights = Weighting(temperature=1.0).weights(torch.randn(2, 8), batch.mask)
    assert torch.isfinite(weights).all()
    assert torch.equal(weights[0], torch.zeros(8))


@pytest.mark.parametrize("corrupt_head", [False, True])
def test_shared_filtered_corruption_masks_every_known_triple(nations, train_index, corrupt_head: bool) -> None:
    known = {tuple(x) for x in nations.triples["train"].tolist()}
    positives = nations.triples["train"][:200]
    batch = draw(Corruption(12, filtered=True, shared=True), positives, train_index, step=int(corrupt_head), seed=1)
    assert batch.negatives.shape == (12,) and batch.mask.shape == (200, 12)
    for b, positive in enumerate(positives.tolist()):
        for j, negative in enumerate(batch.negatives.tolist()):
            assert bool(batch.mask[b, j]) == (corrupted(positive, negative, corrupt_head) not in known)


@pytest.mark.parametrize("corrupt_head", [False, True])
def test_unfiltered_corruption_does_return_known_triples(nations, train_index, corrupt_head: bool) -> None:
    known = {tuple(x) for x in nations.triples["train"].tolist()}
    positives = nations.triples["train"][:300]
    batch = draw(Corruption(16, filtered=False), positives, train_index, step=int(corrupt_head))
    assert batch.mask is None
    hits = sum(
        corrupted(p, n, corrupt_head) in known for p, row in zip(positives.tolist(), batch.negatives.tolist()) for n in row
    )
    assert hits > 0


@pytest.mark.parametrize("shared", [False, True])
def test_negative_shapes_and_entity_range(train_index, nations, shared: bool) -> None:
    positives = nations.triples["train"][:7]
    batch = draw(Corruption(5, shared=shared), positives, train_index, seed=3)
    assert batch.negatives.shape == ((5,) if shared else (7, 5))
    assert batch.negatives.dtype == torch.long
    assert int(batch.negatives.min()) >= 0 and int(batch.negatives.max()) < nations.num_entities


@pytest.mark.parametrize("shared", [False, True])
def test_same_seed_same_negatives_different_seed_different_negatives(train_index, nations, shared: bool) -> None:
    positives = nations.triples["train"][:64]
    corruption = Corruption(32, shared=shared)
    assert torch.equal(draw(corruption, positives, train_index, seed=5).negatives,
                       draw(corruption, positives, train_index, seed=5).negatives)
    assert not torch.equal(draw(corruption, positives, train_index, seed=5).negatives,
                           draw(corruption, positives, train_index, seed=6).negatives)


# --- options ---------------------------------------------------------------------------------------


def test_sampler_options_split_into_the_datamodules_corruption_and_the_modules_selection() -> None:
    sampler = SelfAdversarialSampler(num_negatives=9, temperature=0.5, side="bernoulli", shared=True)
    corruption, selection = sampler.corruption(), sampler.selection()
    assert (corruption.num_negatives, corruption.side, corruption.filtered, corruption.shared) == (9, "bernoulli", True, True)
    assert isinstance(selection, Weighting) and selection.temperature == 0.5


def test_options_differ_only_by_their_defaults_so_their_keys_compose() -> None:
    def parts(sampler):
        c, s = sampler.corruption(), sampler.selection()
        return c.num_negatives, c.side, c.filtered, c.shared, s.temperature

    assert parts(UniformSampler(temperature=1.0)) == parts(SelfAdversarialSampler())
    assert parts(BernoulliSampler(temperature=0.5)) == parts(SelfAdversarialSampler(side="bernoulli", temperature=0.5))
    assert parts(UniformSampler(side="bernoulli")) == parts(BernoulliSampler())


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"temperature": -1.0}, "temperature"), ({"num_negatives": 0}, "num_negatives"), ({"side": "left"}, "side")],
)
def test_sampler_options_refuse_bad_values_naming_the_argument(kwargs: dict, name: str) -> None:
    with pytest.raises(ArgumentError) as error:
        SelfAdversarialSampler(**kwargs)
    assert error.value.name == name
    assert str(error.value.at("sampler")).startswith(f"sampler.{name}=")


# --- weights ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_mask", [False, True])
def test_self_adversarial_weights_at_temperature_zero_equal_uniform(with_mask: bool) -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(5, 7, generator=g) * 4
    mask = (torch.rand(5, 7, generator=g) > 0.3) if with_mask else None
    adversarial = Weighting(temperature=1e-30).weights(scores, mask)  # the softmax path, α → 0
    uniform = Weighting(temperature=0.0).weights(scores, mask)
    torch.testing.assert_close(adversarial, uniform, rtol=0, atol=1e-7)
    valid = torch.ones(5, 7) if mask is None else mask.float()
    torch.testing.assert_close(uniform, valid / valid.sum(-1, keepdim=True))


def test_self_adversarial_weights_equal_softmax_by_hand() -> None:
    alpha = 0.7
    scores = torch.tensor([[1.0, -2.0, 0.5], [3.0, 3.0, -1.0]])
    weights = Weighting(temperature=alpha).weights(scores, None)
    for b, row in enumerate(scores.tolist()):
        z = sum(math.exp(alpha * s) for s in row)
        for j, s in enumerate(row):
            assert weights[b, j].item() == pytest.approx(math.exp(alpha * s) / z, abs=1e-6)


def test_self_adversarial_weights_carry_no_gradient() -> None:
    alpha = 1.3
    g = torch.Generator().manual_seed(0)
    positive = torch.randn(4, generator=g)
    negative = (torch.randn(4, 6, generator=g) * 2).requires_grad_(True)
    weights = Weighting(temperature=alpha).weights(negative, None)
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
    weighting = Weighting(temperature=2.0)

    live = base.clone().requires_grad_(True)
    negative_sampling_loss(positive, live, weighting.weights(live, None)).backward()
    const = base.clone().requires_grad_(True)
    weights = torch.softmax(2.0 * base, dim=-1)  # a plain constant tensor
    negative_sampling_loss(positive, const, weights).backward()
    torch.testing.assert_close(live.grad, const.grad)


@pytest.mark.parametrize("temperature", [0.0, 1.0], ids=["uniform", "adversarial"])
def test_masked_negatives_get_zero_weight_and_fully_masked_rows_give_zeros(temperature: float) -> None:
    scores = torch.tensor([[1.0, 2.0, 3.0], [0.5, -0.5, 4.0], [100.0, -100.0, 0.0]])
    mask = torch.tensor([[True, False, True], [False, False, False], [True, True, True]])
    weights = Weighting(temperature).weights(scores, mask)
    assert torch.isfinite(weights).all()
    assert (weights[~mask] == 0).all()
    assert torch.equal(weights[1], torch.zeros(3))
    torch.testing.assert_close(weights[[0, 2]].sum(-1), torch.ones(2))
    if temperature:
        z = math.exp(1.0) + math.exp(3.0)
        assert weights[0, 0].item() == pytest.approx(math.exp(1.0) / z, abs=1e-6)
    else:
        assert weights[0, 0].item() == pytest.approx(0.5)
    loss = negative_sampling_loss(torch.zeros(3), scores, weights)
    assert torch.isfinite(loss)


def test_shared_mask_broadcasts_against_per_row_scores() -> None:
    scores = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    mask = torch.tensor([[True, False]])
    for temperature in (0.0, 1.0):
        weights = Weighting(temperature).weights(scores, mask)
        torch.testing.assert_close(weights, torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
