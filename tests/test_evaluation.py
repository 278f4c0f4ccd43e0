"""Evaluation breakdowns: chunking, tie policies, relation categories and the countries AUC-PR."""

from __future__ import annotations

import dataclasses

import lightning as L
import pytest
import torch

from lightning_kge.batches import EvaluationBatch
from lightning_kge.callbacks import RegionAUCPR
from lightning_kge.data.statistics import CATEGORIES, relation_categories
from lightning_kge.datamodule import KGEDataModule
from lightning_kge.models import RotatE
from lightning_kge.module import KGEModule

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated", "ignore:.*does not have many workers")


def make_tester() -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False)


@pytest.fixture(scope="module")
def nations_dm() -> KGEDataModule:
    dm = KGEDataModule(name="nations", eval_batch_size=37)
    dm.setup()
    return dm


def rotate_module(dm: KGEDataModule, **kwargs) -> KGEModule:
    torch.manual_seed(3)
    model = RotatE(dm.num_entities, dm.num_relations, dim=6, gamma=6.0)
    return KGEModule(model=model, graph=kwargs.pop("graph", dm.info), **kwargs)


def test_eval_chunk_size_does_not_change_any_metric(nations_dm: KGEDataModule) -> None:
    whole = rotate_module(nations_dm, eval_chunk_size=4096)
    chunked = rotate_module(nations_dm, eval_chunk_size=3)  # 14 entities: chunks of 3, 3, 3, 3, 2
    [a] = make_tester().test(whole, datamodule=nations_dm, verbose=False)
    [b] = make_tester().test(chunked, datamodule=nations_dm, verbose=False)
    assert a.keys() == b.keys() and len(a) > 15
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=1e-6), key


def test_tie_policies_order_the_metrics_and_realistic_is_their_mean(nations_dm: KGEDataModule) -> None:
    results = {}
    for ties in ("optimistic", "realistic", "pessimistic"):
        module = rotate_module(nations_dm, ties=ties)
        with torch.no_grad():
            module.model.entity.weight[:7] = module.model.entity.weight[0]  # 7 equal entities: ties
        [results[ties]] = make_tester().test(module, datamodule=nations_dm, verbose=False)
    mr = {k: v["test/mr"] for k, v in results.items()}
    assert mr["optimistic"] < mr["realistic"] < mr["pessimistic"]
    assert mr["realistic"] == pytest.approx((mr["optimistic"] + mr["pessimistic"]) / 2, abs=1e-5)


# --- relation categories ---------------------------------------------------------------------------


def test_relation_categories_of_a_hand_made_graph() -> None:
    # r0: a bijection (1-to-1); r1: head 0 has three tails (1-to-N); r2: three heads share tail 9
    # (N-to-1); r3: two heads x two tails (N-to-N); r4: no triples (1-to-1 by convention).
    triples = torch.tensor(
        [[0, 0, 1], [2, 0, 3], [4, 0, 5]]
        + [[0, 1, 1], [0, 1, 2], [0, 1, 3]]
        + [[1, 2, 9], [2, 2, 9], [3, 2, 9]]
        + [[5, 3, 7], [5, 3, 8], [6, 3, 7], [6, 3, 8]]
        + [[0, 0, 1]]  # a duplicate does not change a degree
    )
    got = [CATEGORIES[c] for c in relation_categories(triples, num_relations=5)]
    assert got == ["1-to-1", "1-to-N", "N-to-1", "N-to-N", "1-to-1"]


def test_relation_category_threshold_is_an_average_degree_of_one_and_a_half() -> None:
    # r0: heads 0 and 1 have 2 and 1 tails: 1.5 tails per head reaches the threshold;
    # r1: heads 0, 1, 2 have 2, 1, 1 tails: 1.33 does not.
    triples = torch.tensor([[0, 0, 5], [0, 0, 6], [1, 0, 7], [0, 1, 5], [0, 1, 6], [1, 1, 7], [2, 1, 8]])
    assert [CATEGORIES[c] for c in relation_categories(triples, 2)] == ["1-to-N", "1-to-1"]


def test_logged_category_metrics_equal_the_ranks_of_their_relations(nations_dm: KGEDataModule) -> None:
    module = rotate_module(nations_dm)
    [results] = make_tester().test(module, datamodule=nations_dm, verbose=False)
    table = module.rankings["test"].per_relation
    categories = nations_dm.info.categories()
    for c, name in enumerate(CATEGORIES):
        members = categories == c
        count = table["count"][:, members].sum()
        if count == 0:
            assert f"test/{name}/mrr" not in results
            continue
        expected = (table["mrr"][:, members] * table["count"][:, members]).sum() / count
        assert results[f"test/{name}/mrr"] == pytest.approx(float(expected), rel=1e-5)


# --- countries: AUC-PR over the candidate regions --------------------------------------------------


def brute_force_average_precision(scores: list[float], labels: list[int]) -> float:
    """Mean over positives of the precision among all pairs scoring at least as high."""
    precisions = []
    for s, y in zip(scores, labels):
        if y:
            above = [l for s2, l in zip(scores, labels) if s2 >= s]
            precisions.append(sum(above) / len(above))
    return sum(precisions) / len(precisions)


def test_region_auc_pr_scores_every_test_query_against_every_region(nations_dm) -> None:
    regions = (0, 3, 5, 8, 11)
    module = rotate_module(nations_dm, graph=dataclasses.replace(nations_dm.info, regions=regions))
    callback = RegionAUCPR()
    callback.setup(None, module, "test")
    region_ids = torch.tensor(regions)
    triples = nations_dm.triples["test"][:40].clone()
    triples[:, 2] = region_ids[torch.arange(40) % 5]  # each query's true answer is one region
    with torch.no_grad():
        for i, start in enumerate(range(0, 40, 16)):
            chunk = triples[start : start + 16]
            h, r, t = chunk.unbind(1)
            batch = EvaluationBatch(chunk, nations_dm.filter_index.true_tails(h, r), nations_dm.filter_index.true_heads(r, t))
            callback.on_test_batch_end(None, module, None, batch, i)
        got = callback.metrics["test"].compute().item()
        scores = module.score_hrt(triples[:, :1], triples[:, 1:2], region_ids[None, :])
    labels = (region_ids[None, :] == triples[:, 2:3]).long()
    expected = brute_force_average_precision(scores.flatten().tolist(), labels.flatten().tolist())
    assert got == pytest.approx(expected, abs=1e-6)


def test_region_auc_pr_is_logged_beside_the_ranking_only_for_graphs_with_regions(nations_dm) -> None:
    with_regions = rotate_module(nations_dm, graph=dataclasses.replace(nations_dm.info, regions=(0, 3, 5)))
    tester = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                       enable_model_summary=False, callbacks=[RegionAUCPR()])
    [logged] = tester.test(with_regions, datamodule=nations_dm, verbose=False)
    assert 0.0 < logged["test/auc_pr"] <= 1.0 and "test/mrr" in logged
    [plain] = tester.test(rotate_module(nations_dm), datamodule=nations_dm, verbose=False)
    assert "test/auc_pr" not in plain and "test/mrr" in plain
