"""The ``self_adversarial_sampled`` and ``cached`` samplers: their draws, their refusals, their state."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import Counter
from pathlib import Path

import pytest
import torch

from lightning_kge.batches import NegativeBatch
from lightning_kge.checkpoints import load_module
from lightning_kge.data.index import TripleIndex
from lightning_kge.errors import ArgumentError
from lightning_kge.models import RotatE
from lightning_kge.module import KGEModule
from lightning_kge.sampling import (
    CachedSampler,
    CacheSelection,
    Corruption,
    SampledSelection,
    SelfAdversarialSampledSampler,
)
from lightning_kge.train import train
from runs import config, entry, one_line_error, weights_of

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*LeafSpec.*is deprecated", "ignore:.*does not have many workers", "ignore:.*smaller than the logging interval",
)


def pool_batch(negatives: torch.Tensor, mask: torch.Tensor | None = None, step: int = 0) -> NegativeBatch:
    rows = negatives.shape[0] if negatives.dim() == 2 else 1
    positives = torch.zeros(rows, 3, dtype=torch.long)
    return NegativeBatch(positives, negatives, torch.zeros(rows, dtype=torch.bool), mask, torch.ones(rows), step)


def by_entity(scores: torch.Tensor):
    """A scorer giving entity ``e`` the score ``scores[e]`` in every row (a frozen model)."""
    return lambda batch: scores[batch.negatives].expand(batch.positives.shape[0], -1)


# --- self_adversarial_sampled ----------------------------------------------------------------------


def test_sampled_draw_frequencies_match_softmax_of_alpha_times_the_scores() -> None:
    scores, alpha, rows = torch.tensor([1.0, 0.0, -1.0, 2.0, 0.5, -3.0]), 0.7, 30_000
    pool = torch.arange(6).expand(rows, 6)
    chosen = SampledSelection(1, alpha).select(pool_batch(pool, step=4), by_entity(scores)).negatives
    counts = Counter(chosen[:, 0].tolist())
    expected = torch.softmax(alpha * scores, 0) * rows
    chi2 = sum((counts[e] - float(expected[e])) ** 2 / float(expected[e]) for e in range(6))
    assert chi2 < 20.5, (chi2, counts)  # the 99.9% quantile of chi-square with 5 degrees of freedom


def test_sampled_draws_without_replacement_include_each_candidate_at_its_exact_rate() -> None:
    # k = 2 of 3 without replacement: candidate i is left out when the two others are drawn, in either order.
    scores, rows = torch.tensor([1.5, 0.0, -0.5]), 30_000
    p = torch.softmax(scores, 0).tolist()
    left_out = [sum(p[j] * p[l] / (1 - p[j]) for j, l in itertools.permutations([x for x in range(3) if x != i]))
                for i in range(3)]
    chosen = SampledSelection(2, 1.0).select(pool_batch(torch.arange(3).expand(rows, 3)), by_entity(scores)).negatives
    assert (chosen[:, 0] != chosen[:, 1]).all()
    for i in range(3):
        rate, expected = float((chosen == i).any(1).double().mean()), 1 - left_out[i]
        assert abs(rate - expected) < 5 * math.sqrt(expected * (1 - expected) / rows), (i, rate, expected)


def test_sampled_negatives_are_weighed_uniformly_and_masked_candidates_come_last_and_stay_masked() -> None:
    pool = torch.arange(5).expand(4, 5)
    mask = torch.tensor([True, True, True, False, False]).expand(4, 5)
    selection = SampledSelection(4, 1.0)
    batch = selection.select(pool_batch(pool, mask), by_entity(torch.tensor([0.0, 0.0, 0.0, 50.0, 50.0])))
    for row, row_mask in zip(batch.negatives.tolist(), batch.mask.tolist()):
        assert set(row[:]) >= {0, 1, 2}                      # every valid candidate before any masked one
        assert row_mask == [e < 3 for e in row]
    weights = selection.weights(torch.randn(4, 4), batch.mask)
    assert torch.allclose(weights, batch.mask.double().float() / 3)


def test_a_shared_pool_gives_each_positive_its_own_draw() -> None:
    shared = dataclasses.replace(pool_batch(torch.arange(6).expand(500, 6)), negatives=torch.arange(6))
    batch = SampledSelection(2, 1.0).select(shared, by_entity(torch.zeros(6)))
    assert batch.negatives.shape == (500, 2)
    assert len({tuple(sorted(row)) for row in batch.negatives.tolist()}) == 15  # all pairs of 6 occur


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"num_negatives": 10, "pool_size": 5}, "pool_size"),
    ({"temperature": 0.0}, "temperature"),
])
def test_sampled_sampler_refuses_k_above_the_pool_and_a_zero_temperature(kwargs: dict, name: str) -> None:
    with pytest.raises(ArgumentError) as error:
        SelfAdversarialSampledSampler(**kwargs)
    assert error.value.name == name


def test_k_above_the_pool_stops_the_training_command_with_one_line_naming_the_key(tmp_path: Path) -> None:
    result = entry("train", "sampler=self_adversarial_sampled", "sampler.num_negatives=16", "sampler.pool_size=8",
                   f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    line = one_line_error(result)
    assert line.startswith("error: sampler.pool_size=8") and "num_negatives (16)" in line, line
    assert not list((tmp_path / "run").rglob("*.ckpt")) and not (tmp_path / "run" / "metrics.json").exists()


def test_the_sampled_pool_is_scored_by_the_modules_scorer_with_the_models_distance(nations) -> None:
    torch.manual_seed(0)
    index = TripleIndex(nations.triples["train"], nations.num_entities, nations.num_relations)
    sampler = SelfAdversarialSampledSampler(num_negatives=4, pool_size=12, temperature=2.0)
    batch = sampler.corruption().corrupt(nations.triples["train"][:32], torch.ones(32), 1, index,
                                         generator=torch.Generator().manual_seed(0))
    module = KGEModule(RotatE(nations.num_entities, nations.num_relations, 8, 6.0), sampler.selection())
    seen: list[torch.Tensor] = []

    def scorer(b: NegativeBatch) -> torch.Tensor:
        seen.append(module.score_negatives(b))
        return seen[-1]

    chosen = module.selection.select(batch, scorer)
    h, r, t = batch.positives.unbind(1)
    by_hand = module.model.score_hrt(batch.negatives, r[:, None], t[:, None])  # step 1: heads replaced
    assert torch.allclose(seen[0], by_hand, atol=1e-5) and not seen[0].requires_grad
    assert chosen.negatives.shape == (32, 4)
    assert all(set(c) <= set(p) for c, p in zip(chosen.negatives.tolist(), batch.negatives.tolist()))


# --- cached ----------------------------------------------------------------------------------------


def cached_batches(index: TripleIndex, positives: torch.Tensor, candidates: int, steps: int):
    corruption = Corruption(candidates, filtered=True, queries=True)
    for step in range(steps):
        yield corruption.corrupt(positives, torch.ones(len(positives)), step, index,
                                 generator=torch.Generator().manual_seed(step))


def test_the_cache_holds_the_highest_scoring_candidates_it_has_seen(nations) -> None:
    index = TripleIndex(nations.triples["train"], nations.num_entities, nations.num_relations)
    positives = nations.triples["train"][:40]
    scores = torch.randn(nations.num_entities, generator=torch.Generator().manual_seed(1))
    selection = CacheSelection(num_negatives=6, cache_size=3)
    seen: dict[int, set[int]] = {}
    for batch in cached_batches(index, positives, candidates=2, steps=6):
        selection.select(batch, by_entity(scores))
        for q, row in zip(batch.query.tolist(), batch.negatives.tolist()):
            seen.setdefault(q, set()).update(row)
    for q, entities in seen.items():
        best = sorted(entities, key=lambda e: -float(scores[e]))[:3]
        held = [e for e in selection.entries[q].tolist() if e >= 0]
        assert held == best, (q, held, best)


def test_cached_negatives_come_from_the_cache_and_an_uncached_query_uses_its_fresh_candidates(nations) -> None:
    index = TripleIndex(nations.triples["train"], nations.num_entities, nations.num_relations)
    positives = nations.triples["train"][:50]
    selection = CacheSelection(num_negatives=20, cache_size=4, refresh_every=2)
    first, second = cached_batches(index, positives, candidates=10, steps=2)
    scores = torch.randn(nations.num_entities)
    step0 = selection.select(first, by_entity(scores))  # a refresh step: caches filled, then drawn from
    for q, row in zip(first.query.tolist(), step0.negatives.tolist()):
        assert set(row) <= set(selection.entries[q].tolist())
    assert second.corrupt_head.all() and set(second.query.tolist()).isdisjoint(first.query.tolist())
    before = selection.entries.clone()
    step1 = selection.select(second, by_entity(scores))  # no refresh at step 1: the head queries are not cached yet
    assert torch.equal(selection.entries, before)
    assert step1.negatives.tolist() == second.negatives[:, torch.arange(20) % 10].tolist()
    selection.select(dataclasses.replace(second, step=2), by_entity(scores))  # a refresh fills them
    assert (selection.entries[second.query] >= 0).any(dim=1).all()


def test_cached_sampler_refuses_shared_candidates() -> None:
    with pytest.raises(ArgumentError) as error:
        CachedSampler(shared=True)
    assert error.value.name == "shared"


def test_the_cache_survives_a_checkpoint_round_trip_and_resume_continues_it(tmp_path: Path) -> None:
    run = ["sampler=cached", "sampler.num_negatives=8", "sampler.cache_size=5", "sampler.candidates=6",
           "data.batch_size=256", "trainer.check_val_every_n_epoch=100"]
    uninterrupted = tmp_path / "uninterrupted"
    train(config(uninterrupted, *run, "trainer.max_steps=12"))
    module = load_module(uninterrupted / "checkpoints" / "last.ckpt")
    entries = module.selection.entries
    saved = weights_of(uninterrupted / "checkpoints" / "last.ckpt")["selection._extra_state"]["entries"]
    assert torch.equal(entries, saved) and (entries >= 0).sum() > 0
    assert entries.shape == (TripleIndex(*_nations_train()).num_queries + 1, 5)

    out = tmp_path / "resumed"
    train(config(out, *run, "trainer.max_steps=5"))
    train(config(out, *run, "trainer.max_steps=12", f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}"))
    a, b = weights_of(uninterrupted / "checkpoints" / "last.ckpt"), weights_of(out / "checkpoints" / "last.ckpt")
    assert torch.equal(a["selection._extra_state"]["entries"], b["selection._extra_state"]["entries"])
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a if k != "selection._extra_state")


def _nations_train():
    from lightning_kge.data.datasets import resolve_dataset
    from lightning_kge.data.graph import load_graph

    graph = load_graph(resolve_dataset("nations"))
    return graph.triples["train"], graph.num_entities, graph.num_relations


@pytest.mark.parametrize("sampler", ["self_adversarial_sampled", "cached"])
def test_each_new_sampler_trains_a_model_that_ranks_above_chance(tmp_path: Path, sampler: str) -> None:
    metrics = train(config(tmp_path / sampler, f"sampler={sampler}", "sampler.num_negatives=8", "model.dim=16",
                           "trainer.max_steps=40", "optimizer.lr=0.02", "trainer.check_val_every_n_epoch=100"))
    assert metrics["test/mrr"] > 0.3  # chance on 14 entities is about 0.23


# --- the comparison benchmark -------------------------------------------------------------------------


def test_the_sampler_report_compares_within_the_fastest_options_training_time_and_plots_each_set(
    monkeypatch, tmp_path: Path
) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import samplers

    def record(strategy: str, seed: int, seconds: float, values: list[float], test: float) -> dict:
        points = [{"step": 100 * (i + 1), "seconds": seconds * (i + 1) / len(values), "value": v, "metric": "val/mrr"}
                  for i, v in enumerate(values)]
        return {"set": "kinships", "strategy": strategy, "seed": seed, "points": points, "steps": 200,
                "train_seconds": seconds, "peak_gib": 0.5, "device": "cpu", "test": {"test/mrr": test}}

    records = [record("uniform", s, 10.0, [0.2, 0.4], 0.40 + s / 100) for s in (0, 1)]
    records += [record("cached", s, 20.0, [0.3, 0.6], 0.60) for s in (0, 1)]
    text = samplers.table(records)
    uniform = next(line for line in text.splitlines() if line.startswith("| `uniform`"))
    cached = next(line for line in text.splitlines() if line.startswith("| `cached`"))
    assert "budget 10 s" in text
    assert uniform.split(" | ")[1:3] == ["0.405 ± 0.007", "0.400 ± 0.000"]  # its last validation at 10 s
    assert cached.split(" | ")[1:3] == ["0.600 ± 0.000", "0.300 ± 0.000"]   # only its first is within 10 s
    assert cached.split(" | ")[3] == "10.0"                                     # steps per training second
    samplers.plot(records, "kinships", tmp_path / "kinships.png")
    assert (tmp_path / "kinships.png").read_bytes()[:4] == b"\x89PNG"


def test_the_cache_is_module_state_but_not_a_buffer_so_ddp_never_overwrites_a_ranks_cache_with_rank_zeros() -> None:
    module = KGEModule(RotatE(5, 2, 4, 6.0), CachedSampler(num_negatives=2, cache_size=3).selection())
    module.selection.entries = torch.arange(9, dtype=torch.int32).reshape(3, 3)
    assert not any(name.startswith("selection") for name, _ in module.named_buffers())  # DDP broadcasts buffers only
    assert torch.equal(module.state_dict()["selection._extra_state"]["entries"], module.selection.entries)
