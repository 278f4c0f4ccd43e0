"""KGEModule: training step, loss hooks, a short fit/test on nations, metrics and checkpoints."""

from __future__ import annotations

import copy
from pathlib import Path

import lightning as L
import pytest
import torch

from lightning_kge.datamodule import KGEDataModule
from lightning_kge.errors import ArgumentError
from lightning_kge.losses import negative_sampling_loss
from lightning_kge.models import RotatE
from lightning_kge.module import KGEModule
from lightning_kge.batches import NegativeBatch
from lightning_kge.sampling import SelfAdversarialSampler, Weighting

pytestmark = pytest.mark.filterwarnings(
    "ignore:You are trying to",  # training_step called directly, without a Trainer
    "ignore:.*LeafSpec.*is deprecated",
    "ignore:.*does not have many workers",
    "ignore:.*smaller than the logging interval",
)
METRIC_KEYS = {"mrr", "mr", "hits@1", "hits@3", "hits@10"}
TIE_TOL = 1e-6


def small_module(selection=None, seed: int = 0, cls: type[KGEModule] = KGEModule, graph=None) -> KGEModule:
    torch.manual_seed(seed)
    model = RotatE(num_entities=14, num_relations=55, dim=8, gamma=6.0)
    return cls(model=model, selection=selection or Weighting(temperature=1.0), graph=graph)


def negative_batch(nations, corrupt_head: bool | str, with_mask: bool = True) -> NegativeBatch:
    """A batch of 16 nations positives; ``corrupt_head`` True, False or ``"mixed"`` (per row)."""
    g = torch.Generator().manual_seed(0)
    positives = nations.triples["train"][:16]
    negatives = torch.randint(14, (16, 8), generator=g)
    mask = torch.rand(16, 8, generator=g) > 0.25 if with_mask else None
    if mask is not None:
        mask[3] = False  # a fully masked row
    weight = torch.rand(16, generator=g) + 0.5
    heads = torch.arange(16) % 3 == 0 if corrupt_head == "mixed" else torch.full((16,), bool(corrupt_head))
    return NegativeBatch(positives, negatives, heads, mask, weight)


def trainer(**overrides) -> L.Trainer:
    options = dict(
        max_steps=3,
        limit_val_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )
    options.update(overrides)
    return L.Trainer(**options)


# --- training step ---------------------------------------------------------------------------------


@pytest.mark.parametrize("corrupt_head", [False, True])
def test_training_step_returns_a_finite_scalar_loss_with_gradients(nations, corrupt_head: bool) -> None:
    module = small_module()
    loss = module.training_step(negative_batch(nations, corrupt_head), 0)
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("corrupt_head", [False, True, "mixed"])
def test_training_step_equals_loss_of_scores_from_score_hrt(nations, corrupt_head: bool | str) -> None:
    module = small_module(Weighting(0.0))
    batch = negative_batch(nations, corrupt_head, with_mask=False)
    with torch.no_grad():
        loss = module.training_step(batch, 0)
        h, r, t = batch.positives.unbind(1)
        negative = torch.stack(
            [
                torch.stack(
                    [
                        module.score_hrt(n, r[b], t[b]) if batch.corrupt_head[b] else module.score_hrt(h[b], r[b], n)
                        for n in batch.negatives[b]
                    ]
                )
                for b in range(len(h))
            ]
        )
        expected = negative_sampling_loss(
            module.score_hrt(h, r, t), negative, torch.full_like(negative, 1 / 8), batch.weight
        )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("corrupt_head", [False, True])
def test_self_adversarial_loss_at_temperature_zero_equals_uniform_loss(nations, corrupt_head: bool) -> None:
    adversarial = small_module(Weighting(temperature=1e-30))
    uniform = small_module(Weighting(temperature=0.0))
    uniform.model.load_state_dict(adversarial.model.state_dict())
    batch = negative_batch(nations, corrupt_head)
    a, u = adversarial.training_step(batch, 0), uniform.training_step(batch, 0)
    torch.testing.assert_close(a, u, rtol=1e-6, atol=1e-7)
    hot = small_module(Weighting(temperature=5.0))
    hot.model.load_state_dict(adversarial.model.state_dict())
    assert abs(hot.training_step(batch, 0).item() - u.item()) > 1e-6  # the temperature matters


def test_subclass_overriding_compute_loss_is_used_by_training_step(nations) -> None:
    class Shifted(KGEModule):
        def compute_loss(self, positive, negative, batch):
            return super().compute_loss(positive, negative, batch) + 10.0

    base = small_module()
    shifted = small_module(cls=Shifted)
    shifted.model.load_state_dict(base.model.state_dict())
    batch = negative_batch(nations, False)
    torch.testing.assert_close(shifted.training_step(batch, 0), base.training_step(batch, 0) + 10.0)


def test_regularization_adds_the_weighted_l3_penalty(nations) -> None:
    plain = small_module()
    regular = KGEModule(model=copy.deepcopy(plain.model), selection=plain.selection, regularization=0.01)
    batch = negative_batch(nations, False)
    expected = plain.training_step(batch, 0) + 0.01 * plain.model.penalty()
    torch.testing.assert_close(regular.training_step(batch, 0), expected)


# --- fit / test on nations -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A module fitted for 3 steps and tested on nations, its datamodule, test results and a checkpoint."""
    L.seed_everything(0, verbose=False)
    sampler = SelfAdversarialSampler(num_negatives=8)
    dm = KGEDataModule(corruption=sampler.corruption(), name="nations", batch_size=128, eval_batch_size=64)
    dm.setup()
    module = small_module(sampler.selection(), graph=dm.info)
    initial = copy.deepcopy(module.model.state_dict())
    run = trainer(val_check_interval=2, log_every_n_steps=1)  # train/loss is handed over on logging steps
    run.fit(module, datamodule=dm)
    val_logged = dict(run.callback_metrics)
    results = run.test(module, datamodule=dm, verbose=False)
    path = tmp_path_factory.mktemp("ckpt") / "nations.ckpt"
    run.save_checkpoint(path)
    return {"module": module, "dm": dm, "results": results, "path": path, "initial": initial, "val": val_logged}


def test_fit_trains_and_validates(fitted) -> None:
    module = fitted["module"]
    changed = any(not torch.equal(v, module.model.state_dict()[k]) for k, v in fitted["initial"].items())
    assert changed
    assert torch.isfinite(fitted["val"]["train/loss"])
    assert {f"val/{k}" for k in METRIC_KEYS} <= set(fitted["val"])


def test_test_logs_every_metric_for_both_sides_and_each_side(fitted) -> None:
    [results] = fitted["results"]
    expected = {f"test/{p}{k}" for p in ("", "head/", "tail/") for k in METRIC_KEYS}
    assert expected <= set(results)
    for key in expected:
        assert results[key] == results[key]  # not NaN
    assert 1.0 <= results["test/mr"] <= 14.0
    assert 0.0 < results["test/mrr"] <= 1.0


def brute_force_ranking(module: KGEModule, dm: KGEDataModule) -> dict[str, float]:
    known = {tuple(x) for s in ("train", "valid", "test") for x in dm.triples[s].tolist()}
    E = dm.num_entities
    every = torch.arange(E)
    ranks: dict[str, list[float]] = {"head": [], "tail": []}
    with torch.no_grad():
        for h, r, t in dm.triples["test"].tolist():
            for side in ("head", "tail"):
                if side == "tail":
                    row = module.score_hrt(torch.tensor(h), torch.tensor(r), every).tolist()
                    target, candidates = t, [e for e in range(E) if e == t or (h, r, e) not in known]
                else:
                    row = module.score_hrt(every, torch.tensor(r), torch.tensor(t)).tolist()
                    target, candidates = h, [e for e in range(E) if e == h or (e, r, t) not in known]
                higher = sum(1 for e in candidates if row[e] > row[target] + TIE_TOL)
                equal = sum(1 for e in candidates if abs(row[e] - row[target]) <= TIE_TOL)
                ranks[side].append((1 + higher + higher + equal) / 2)

    def summary(rs: list[float]) -> dict[str, float]:
        out = {"mrr": sum(1 / x for x in rs) / len(rs), "mr": sum(rs) / len(rs)}
        out.update({f"hits@{k}": sum(x <= k for x in rs) / len(rs) for k in (1, 3, 10)})
        return out

    result = {f"test/{k}": v for k, v in summary(ranks["head"] + ranks["tail"]).items()}
    for side in ("head", "tail"):
        result.update({f"test/{side}/{k}": v for k, v in summary(ranks[side]).items()})
    return result


def test_test_metrics_equal_brute_force_filtered_ranking(fitted) -> None:
    [results] = fitted["results"]
    expected = brute_force_ranking(fitted["module"], fitted["dm"])
    for key, value in expected.items():
        assert results[key] == pytest.approx(value, rel=1e-5, abs=1e-5), key


def test_checkpoint_loads_with_no_other_argument_and_scores_the_same(fitted) -> None:
    original = fitted["module"]
    loaded = KGEModule.load_from_checkpoint(fitted["path"])
    assert type(loaded.model) is RotatE and type(loaded.selection) is Weighting
    assert loaded.selection.temperature == original.selection.temperature
    triples = torch.cat([fitted["dm"].triples["test"], fitted["dm"].triples["valid"]])
    h, r, t = triples.unbind(1)
    with torch.no_grad():
        assert torch.equal(loaded.score_hrt(h, r, t), original.score_hrt(h, r, t))
        every = torch.arange(14)
        assert torch.equal(loaded.score_hrt(h[:, None], r[:, None], every), original.score_hrt(h[:, None], r[:, None], every))


def test_checkpoint_reloaded_module_tests_to_the_same_metrics(fitted) -> None:
    loaded = KGEModule.load_from_checkpoint(fitted["path"])
    [again] = trainer().test(loaded, datamodule=fitted["dm"], verbose=False)
    [results] = fitted["results"]
    for key, value in results.items():
        assert again[key] == pytest.approx(value, rel=1e-6), key


def test_subclass_with_its_own_argument_round_trips_through_a_checkpoint(fitted, tmp_path: Path) -> None:
    from client_models import Margin

    module = Margin(margin=2.5, model=copy.deepcopy(fitted["module"].model), selection=fitted["module"].selection)
    path = tmp_path / "margin.ckpt"
    run = trainer(max_steps=1, limit_val_batches=0)
    run.fit(module, datamodule=fitted["dm"])
    run.save_checkpoint(path)
    loaded = Margin.load_from_checkpoint(path)
    assert loaded.margin == 2.5
    h, r, t = fitted["dm"].triples["test"].unbind(1)
    with torch.no_grad():
        assert torch.equal(loaded.score_hrt(h, r, t), module.score_hrt(h, r, t))


def test_a_lambda_optimizer_is_refused_with_advice_since_checkpoints_could_not_rebuild_it() -> None:
    with pytest.raises(TypeError, match="functools.partial"):
        small_module_with(optimizer=lambda params: torch.optim.SGD(params, lr=0.1))


def small_module_with(**kwargs) -> KGEModule:
    model = RotatE(num_entities=14, num_relations=55, dim=4, gamma=6.0)
    return KGEModule(model=model, **kwargs)


def test_a_checkpoint_loaded_with_no_datamodule_reports_its_graphs_sizes_and_labels(fitted) -> None:
    loaded = KGEModule.load_from_checkpoint(fitted["path"])
    dm = fitted["dm"]
    assert loaded.graph == dm.info
    assert (loaded.graph.num_entities, loaded.graph.num_relations) == (dm.num_entities, dm.num_relations)
    assert loaded.graph.entity_id == dm.entity_to_id and loaded.graph.relation_id == dm.relation_to_id
    assert loaded.graph.fingerprint == dm.info.fingerprint and len(loaded.graph.fingerprint) == 64


def test_a_graph_of_other_sizes_than_the_model_is_refused(nations) -> None:
    data = KGEDataModule(name="nations")
    data.setup()
    with pytest.raises(ValueError, match="14 entities"):
        KGEModule(model=RotatE(num_entities=15, num_relations=55, dim=4, gamma=6.0), graph=data.info)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"ties": "weird"}, "ties"), ({"eval_chunk_size": 0}, "eval_chunk_size"), ({"regularization": -1.0}, "regularization"),
     ({"hits_at": (0,)}, "hits_at")],
)
def test_module_refuses_bad_settings_before_any_training_naming_the_argument(kwargs: dict, name: str) -> None:
    with pytest.raises(ArgumentError) as error:
        small_module_with(**kwargs)
    assert error.value.name == name


def test_per_stage_metrics_are_separate_torchmetrics_in_a_module_dict() -> None:
    module = small_module_with()
    assert set(module.metrics) == {"val", "test"}
    assert module.metrics["val"] is not module.metrics["test"]
