"""KGEDataModule: splits, graph description, sliced and resumable training batches, filters."""

from __future__ import annotations

import functools
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.trainer.states import TrainerFn

from lightning_kge.batches import EvaluationBatch
from lightning_kge.data.batches import Rows, TrainSampler
from lightning_kge.data.distributed import UnpaddedDistributedSampler
from lightning_kge.data.info import GraphInfo
from lightning_kge.datamodule import KGEDataModule
from lightning_kge.models import RotatE
from lightning_kge.module import KGEModule
from lightning_kge.sampling import UniformSampler


def folder_with(root: Path, train: str, valid: str = "a\tlikes\tc\n", test: str = "b\thates\tc\n") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split, text in (("train", train), ("valid", valid), ("test", test)):
        (root / f"{split}.txt").write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def datamodule() -> KGEDataModule:
    dm = KGEDataModule(UniformSampler(num_negatives=4).corruption(), name="nations", batch_size=64, eval_batch_size=8)
    dm.setup("fit")
    return dm


def test_datamodule_exposes_splits_and_vocabulary(datamodule: KGEDataModule, nations) -> None:
    assert datamodule.num_entities == 14 and datamodule.num_relations == 55
    assert datamodule.entity_to_id == nations.entity_to_id
    assert datamodule.relation_to_id == nations.relation_to_id
    for split, n in (("train", 1592), ("valid", 199), ("test", 201)):
        tensor = datamodule.triples[split]
        assert tensor.dtype == torch.long and tensor.shape == (n, 3)
        assert torch.equal(tensor, nations.triples[split])


def test_graph_info_holds_the_labels_in_id_order_and_the_relation_categories(datamodule: KGEDataModule) -> None:
    info = datamodule.info
    assert isinstance(info, GraphInfo) and info.source == "nations"
    assert [info.entity_id[label] for label in info.entities] == list(range(14))
    assert info.entity_id == datamodule.entity_to_id and info.relation_id == datamodule.relation_to_id
    assert len(info.relation_categories) == 55 and info.regions is None


def test_graph_fingerprint_changes_when_one_label_is_renamed(tmp_path: Path) -> None:
    train = "a\tlikes\tb\nb\tlikes\tc\nc\thates\ta\n"
    one = KGEDataModule(path=str(folder_with(tmp_path / "one", train)))
    same = KGEDataModule(path=str(folder_with(tmp_path / "same", train)))
    renamed = KGEDataModule(path=str(folder_with(tmp_path / "renamed", train.replace("c", "z"), "a\tlikes\tz\n", "b\thates\tz\n")))
    for dm in (one, same, renamed):
        dm.setup()
    assert one.info.fingerprint == same.info.fingerprint
    assert one.info.fingerprint != renamed.info.fingerprint
    assert one.triples["train"].tolist() == renamed.triples["train"].tolist()  # same ids, other labels


def test_datamodule_reports_how_many_triples_it_dropped(tmp_path: Path) -> None:
    folder = folder_with(tmp_path, "a\tlikes\tb\nb\tlikes\tc\nc\thates\ta\n", test="a\tloves\tb\nb\tlikes\tnew2\nc\tlikes\tb\n")
    datamodule = KGEDataModule(path=str(folder), unseen="drop")
    with pytest.warns(UserWarning, match="dropped 2 test triples"):
        datamodule.setup()
    assert len(datamodule.triples["test"]) == 1


@pytest.mark.parametrize("split", ["valid", "test"])
def test_eval_batch_filters_equal_brute_force(datamodule: KGEDataModule, split: str) -> None:
    everything = {tuple(x) for s in ("train", "valid", "test") for x in datamodule.triples[s].tolist()}
    E = datamodule.num_entities
    seen = 0
    for batch in datamodule.eval_dataloader(split):
        assert isinstance(batch, EvaluationBatch)
        triples = batch.triples
        for side, other in (("tail", 2), ("head", 0)):
            rows, ents = batch.filter(side)
            for b, (h, r, t) in enumerate(triples.tolist()):
                if side == "tail":
                    expected = {e for e in range(E) if (h, r, e) in everything}
                else:
                    expected = {e for e in range(E) if (e, r, t) in everything}
                got = ents[rows == b].tolist()
                assert sorted(got) == sorted(expected)
                assert triples[b, other].item() in got
        seen += len(triples)
    assert seen == len(datamodule.triples[split])


def test_corrupt_alternates_tail_batch_and_head_batch(datamodule: KGEDataModule) -> None:
    positives = datamodule.triples["train"][:10]
    weight = torch.ones(10)
    sides = [datamodule.corrupt(positives, weight).corrupt_head.tolist() for _ in range(4)]
    assert sides == [[False] * 10, [True] * 10, [False] * 10, [True] * 10]
    batch = datamodule.corrupt(positives, weight)
    assert batch.negatives.shape == (10, 4)
    assert torch.equal(batch.positives, positives) and torch.equal(batch.weight, weight)


def test_training_batches_are_slices_of_the_samplers_rows(datamodule: KGEDataModule) -> None:
    loader = datamodule.train_dataloader()
    rows = list(TrainSampler(1592, 64, torch.initial_seed()))
    for batch, index in zip(loader, rows):
        assert torch.equal(batch, index)
        negative_batch = datamodule.training_batch(batch)
        assert torch.equal(negative_batch.positives, datamodule.triples["train"][index])
        assert torch.equal(negative_batch.weight, datamodule.train_weight[index])
    assert len(loader) == len(rows) == 25


@pytest.mark.parametrize("world", [1, 2, 3])
def test_each_epoch_ranks_share_the_positives_disjointly_in_equal_batch_counts(world: int) -> None:
    samplers = [TrainSampler(101, 8, seed=4, rank=k, world_size=world) for k in range(world)]
    epochs = [[torch.cat(list(s)) for s in samplers] for _ in range(2)]
    for shards in epochs:
        together = torch.cat(shards).tolist()
        assert set(together) == set(range(101)) and len(together) - 101 < world  # cyclic padding only
        assert len({len(s) for s in samplers}) == 1
    assert not torch.equal(epochs[0][0], epochs[1][0])  # another order each epoch


def test_a_sampler_started_after_n_batches_continues_the_uninterrupted_stream() -> None:
    whole = TrainSampler(50, 7, seed=1)
    stream = [b.tolist() for _ in range(3) for b in whole]  # 3 epochs of 8 batches
    for n in (0, 5, 8, 13, 23):
        resumed = TrainSampler(50, 7, seed=1)
        resumed.start = n
        rest = [b.tolist() for _ in range(3) for b in resumed][: len(stream) - n]
        assert rest == stream[n:], n


def test_datamodule_state_resumes_the_negatives_of_the_next_step(datamodule: KGEDataModule) -> None:
    positives, weight = datamodule.triples["train"][:16], torch.ones(16)
    torch.manual_seed(3)
    for _ in range(5):
        datamodule.corrupt(positives, weight)
    state = datamodule.state_dict()
    expected = datamodule.corrupt(positives, weight)
    fresh = KGEDataModule(UniformSampler(num_negatives=4).corruption(), name="nations")
    fresh.setup()
    fresh.load_state_dict(state)
    again = fresh.corrupt(positives, weight)
    assert torch.equal(again.negatives, expected.negatives) and torch.equal(again.corrupt_head, expected.corrupt_head)


def test_rows_dataset_returns_a_whole_batch_of_rows_at_once() -> None:
    assert Rows(4)[torch.tensor([2, 0])].tolist() == [2, 0] and len(Rows(4)) == 4


@pytest.mark.parametrize(("size", "replicas"), [(1, 2), (5, 2), (7, 3), (11, 4), (13, 2)])
def test_unpadded_sampler_covers_each_index_exactly_once(size: int, replicas: int) -> None:
    shards = [list(UnpaddedDistributedSampler(range(size), num_replicas=replicas, rank=k)) for k in range(replicas)]
    assert sorted(i for shard in shards for i in shard) == list(range(size))
    for k, shard in enumerate(shards):
        assert len(UnpaddedDistributedSampler(range(size), num_replicas=replicas, rank=k)) == len(shard)


def test_training_without_a_corruption_says_what_to_give() -> None:
    dm = KGEDataModule(name="nations")
    dm.setup()
    with pytest.raises(RuntimeError, match="corruption"):
        dm.corrupt(dm.triples["train"][:2], torch.ones(2))


# --- data.eval_sample --------------------------------------------------------------------------------


def test_eval_sample_draws_the_same_triples_under_the_same_seed() -> None:
    dm = KGEDataModule(name="nations", eval_sample=30)
    samples = []
    for seed in (5, 5, 6):
        L.seed_everything(seed, verbose=False)
        samples.append(dm.eval_rows("valid", 30).tolist())
    assert samples[0] == samples[1] != samples[2]
    for rows in samples:
        assert len(rows) == 30 == len(set(rows)) and rows == sorted(rows) and max(rows) < 199
    assert dm.eval_rows("valid", 500).tolist() == list(range(199)) == dm.eval_rows("valid").tolist()


@pytest.mark.parametrize("world", [2, 3])
def test_under_ddp_each_rank_ranks_its_share_of_the_sample(world: int) -> None:
    dm = KGEDataModule(name="nations", eval_sample=31, eval_batch_size=4)
    dm.setup()
    L.seed_everything(2, verbose=False)
    sample = dm.triples["valid"][dm.eval_rows("valid", 31)]
    shares = []
    for rank in range(world):
        dm.trainer = SimpleNamespace(world_size=world, global_rank=rank, state=SimpleNamespace(fn=TrainerFn.FITTING))
        shares.append(torch.cat([batch.triples for batch in dm.val_dataloader()]))
    together = torch.cat(shares)
    assert len(together) == 31 and {tuple(x) for x in together.tolist()} == {tuple(x) for x in sample.tolist()}


def brute_force_mrr(model, triples: torch.Tensor, known: set[tuple[int, int, int]], num_entities: int) -> float:
    """Filtered MRR (realistic ties) of ``triples``, ranking each side against every entity by loops."""
    reciprocal = []
    with torch.no_grad():
        for h, r, t in triples.tolist():
            for head in (True, False):
                candidates = torch.arange(num_entities)
                if head:
                    scores = model.score_hrt(candidates, torch.tensor(r), torch.tensor(t)).tolist()
                    target, others = h, [e for e in range(num_entities) if e != h and (e, r, t) not in known]
                else:
                    scores = model.score_hrt(torch.tensor(h), torch.tensor(r), candidates).tolist()
                    target, others = t, [e for e in range(num_entities) if e != t and (h, r, e) not in known]
                higher = sum(scores[e] > scores[target] for e in others)
                equal = sum(scores[e] == scores[target] for e in others)
                reciprocal.append(1 / (1 + higher + equal / 2))
    return sum(reciprocal) / len(reciprocal)


def test_validation_while_fitting_ranks_exactly_the_sample_and_validate_ranks_all() -> None:
    sampler = UniformSampler(num_negatives=4)
    dm = KGEDataModule(sampler.corruption(), name="nations", batch_size=64, eval_batch_size=7, eval_sample=23)
    dm.setup()
    L.seed_everything(4, verbose=False)
    module = KGEModule(RotatE(dm.num_entities, dm.num_relations, dim=6), sampler.selection(), dm.info,
                       optimizer=functools.partial(torch.optim.Adam, lr=0.05))
    trainer = L.Trainer(accelerator="cpu", max_steps=2, val_check_interval=2, num_sanity_val_steps=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=dm)
    known = {tuple(x) for s in ("train", "valid", "test") for x in dm.triples[s].tolist()}
    sample = dm.triples["valid"][dm.eval_rows("valid", 23)]
    assert float(trainer.callback_metrics["val/mrr"]) == pytest.approx(brute_force_mrr(module.model, sample, known, 14), abs=1e-5)
    [validated] = trainer.validate(module, datamodule=dm, verbose=False)
    everything = brute_force_mrr(module.model, dm.triples["valid"], known, 14)
    assert validated["val/mrr"] == pytest.approx(everything, abs=1e-5)
    assert abs(everything - float(brute_force_mrr(module.model, sample, known, 14))) > 1e-4  # a different set
