"""Train briefly with 2 CPU processes under ``strategy=torchrec`` and save what each rank saw and holds.

Run by ``tests/test_sharding.py`` as ``python tests/sharding_probe.py OUT``; Lightning's DDP re-runs this
script for rank 1. For each case of :data:`CASES` each rank writes ``OUT/<case>/rank{r}.pt``: its table rows
and the other parameters before and after training, every training batch it drew and its loss, and the test
metrics; rank 0's trainer writes the sharded checkpoint ``OUT/<case>/final.ckpt``. ``OUT/divergence/rank{r}.pt``
says how a run whose loss becomes infinite ended, ``OUT/memory/rank{r}.pt`` holds the shard of a 400k-row
table and the resident memory around its training.
"""

from __future__ import annotations

import functools
import gc
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch

from lightning_kge.datamodule import KGEDataModule
from lightning_kge.models import ComplEx, DistMult, RotatE, TransE, pRotatE
from lightning_kge.module import KGEModule
from lightning_kge.sampling.options import (BernoulliSampler, SelfAdversarialSampledSampler, SelfAdversarialSampler,
                                            UniformSampler)
from lightning_kge.schedules import GeometricStepDecay
from lightning_kge.sharding.strategy import TorchRecStrategy

STEPS = 4
ADAM_LR = 0.01
CASES: dict[str, dict[str, Any]] = {
    # the two reference cases: RotatE, self-adversarial negatives, subsampling weights, a schedule on one
    "sgd": dict(model=functools.partial(RotatE, dim=4, distance_backend="reference"),
                sampler=SelfAdversarialSampler(num_negatives=6), table_optimizer="exact_sgd", table_lr=0.5,
                schedule=functools.partial(GeometricStepDecay, max_steps=STEPS, warm_up_fraction=0.25, decay=0.5)),
    "rowwise_adagrad": dict(model=functools.partial(RotatE, dim=4, distance_backend="reference"),
                            sampler=SelfAdversarialSampler(num_negatives=6), table_optimizer="exact_rowwise_adagrad",
                            table_lr=0.1, schedule=None),
    # every other table model, each with another sampler that draws ids
    "transe": dict(model=functools.partial(TransE, dim=4), sampler=UniformSampler(num_negatives=6),
                   table_optimizer="exact_adagrad", table_lr=0.1, schedule=None),
    "distmult": dict(model=functools.partial(DistMult, dim=4), sampler=BernoulliSampler(num_negatives=6),
                     table_optimizer="exact_rowwise_adagrad", table_lr=0.1, schedule=None),
    "complex": dict(model=functools.partial(ComplEx, dim=2), sampler=SelfAdversarialSampledSampler(num_negatives=4,
                    pool_size=8), table_optimizer="exact_rowwise_adagrad", table_lr=0.1, schedule=None),
    "protate": dict(model=functools.partial(pRotatE, dim=4), sampler=SelfAdversarialSampler(num_negatives=6, shared=True),
                    table_optimizer="exact_sgd", table_lr=0.1, schedule=None),
}


def own_rows(module: KGEModule) -> tuple[int, torch.Tensor]:
    offset, rows = module.model.entity.own_rows()
    return offset, rows.detach().clone()


class Recorder(L.Callback):
    """Keeps this rank's rows and parameters before and after training, and every batch with its loss."""

    def __init__(self) -> None:
        self.record: dict[str, Any] = {"batches": [], "losses": []}

    def on_train_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        self.record["before"] = own_rows(pl_module)
        self.record["params_before"] = {n: p.detach().clone() for n, p in pl_module.named_parameters()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        fields = ("positives", "negatives", "corrupt_head", "mask", "weight", "step", "query", "num_queries")
        self.record["batches"].append({f: getattr(batch, f) for f in fields})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.record["losses"].append(float(loss))

    def on_train_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        self.record["after"] = own_rows(pl_module)
        self.record["params_after"] = {n: p.detach().clone() for n, p in pl_module.named_parameters()}


def trainer(strategy: TorchRecStrategy, callbacks: list) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=2, strategy=strategy, max_steps=STEPS, limit_val_batches=0,
                     logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                     callbacks=callbacks)


def run_case(name: str, case: dict[str, Any], out: Path) -> None:
    L.seed_everything(0, verbose=False)
    sampler = case["sampler"]
    datamodule = KGEDataModule(sampler.corruption(), name="nations", batch_size=128)
    datamodule.setup()
    model = case["model"](num_entities=datamodule.num_entities, num_relations=datamodule.num_relations)
    module = KGEModule(model=model, selection=sampler.selection(), graph=datamodule.info,
                       optimizer=functools.partial(torch.optim.Adam, lr=ADAM_LR), lr_scheduler=case["schedule"])
    recorder = Recorder()
    strategy = TorchRecStrategy(table_optimizer=case["table_optimizer"], table_lr=case["table_lr"])
    run = trainer(strategy, [recorder])
    run.fit(module, datamodule=datamodule)
    (out / name).mkdir(parents=True, exist_ok=True)
    run.save_checkpoint(out / name / "final.ckpt")
    recorder.record["test"] = run.test(module, datamodule=datamodule, verbose=False)[0]
    torch.save(recorder.record, out / name / f"rank{run.global_rank}.pt")


def run_divergence(out: Path) -> None:
    """A table learning rate that makes the loss infinite: the divergence guard stops every process."""
    from lightning_kge.callbacks.divergence import DivergenceGuard, Diverged

    L.seed_everything(0, verbose=False)
    sampler = SelfAdversarialSampler(num_negatives=6)
    datamodule = KGEDataModule(sampler.corruption(), name="nations", batch_size=128)
    datamodule.setup()
    model = RotatE(num_entities=14, num_relations=55, dim=4, distance_backend="reference")
    module = KGEModule(model=model, selection=sampler.selection(), graph=datamodule.info)
    run = trainer(TorchRecStrategy(table_optimizer="exact_sgd", table_lr=1e38), [DivergenceGuard()])
    run.log_every_n_steps = 1
    try:
        run.fit(module, datamodule=datamodule)
        outcome = "trained"
    except Diverged as error:
        outcome = str(error)
    (out / "divergence").mkdir(parents=True, exist_ok=True)
    torch.save({"outcome": outcome, "step": run.global_step}, out / "divergence" / f"rank{run.global_rank}.pt")


def resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096


def run_memory(out: Path, rows: int = 400_000, width: int = 64) -> None:
    """A 400k x 64 table (97.7 MiB) sharded over the 2 processes and trained for a few steps."""
    import torch.distributed as dist

    from lightning_kge.sharding.optimizers import fused_params
    from lightning_kge.sharding.table import ShardedEntityTable

    gc.collect()
    before = resident_bytes()
    weight = torch.rand(rows, width)
    table = ShardedEntityTable(weight, "row_wise", fused_params("exact_rowwise_adagrad", 0.1, 1e-8, (0.9, 0.999), "cpu"),
                               dist.group.WORLD, torch.device("cpu"))
    del weight
    gc.collect()
    generator = torch.Generator().manual_seed(dist.get_rank())
    for _ in range(5):
        ids = torch.randint(0, rows, (4096,), generator=generator)
        with table.reading_rows(ids):
            table(ids).square().sum().backward()
    gc.collect()
    offset, own = table.own_rows()
    record = {"offset": offset, "shape": tuple(own.shape), "table_bytes": rows * width * 4,
              "growth": resident_bytes() - before}
    (out / "memory").mkdir(parents=True, exist_ok=True)
    torch.save(record, out / "memory" / f"rank{dist.get_rank()}.pt")


def main(out: Path) -> None:
    for name, case in CASES.items():
        run_case(name, case, out)
    run_divergence(out)
    run_memory(out)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
