"""How many bytes DDP all-reduces per training step, and how many a row-sparse exchange would.

Part 1 (measured): trains RotatE with 2 CPU processes (Lightning DDP over gloo) on a graph with
fb15k237's entity and relation counts and counts, with a DDP communication hook, the bytes of
every gradient bucket all-reduced per step. DDP sends the whole dense gradient of every
parameter each step, whatever the batch touched.

Part 2 (counted): for the same setting and for a Wikidata5M-size graph (4.8M entities, complex
dimension 512), draws real batches with the project's sampler and counts the distinct entity
rows one step touches (positives' heads and tails plus negatives), per-positive and shared
negatives: the rows a row-sparse exchange (all-gather of touched rows) would send instead.

    python benchmarks/allreduce_volume.py            # both parts (part 1: ~1 GB RAM, a minute)
    python benchmarks/allreduce_volume.py --no-ddp   # part 2 only

Numbers are for one process's gradient; ring all-reduce moves about 2·(N−1)/N of it per rank.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import lightning as L
import torch
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

from lightning_kge.datamodule import KGEDataModule
from lightning_kge.models import RotatE
from lightning_kge.module import KGEModule
from lightning_kge.data.index import TripleIndex
from lightning_kge.sampling import SelfAdversarialSampler

FLOAT_BYTES = 4
SETTINGS = {
    # name: entities, relations, complex dim, batch, negatives. fb15k237: the RotatE paper's
    # setting. Wikidata5M size: 4.8M entities, 822 relations, dim 512, fb15k237's batch/negatives.
    "fb15k237": (14_541, 237, 1000, 1024, 256),
    "wikidata5m": (4_800_000, 822, 512, 1024, 256),
}


def dense_bytes(entities: int, relations: int, dim: int) -> int:
    """Bytes of RotatE's gradient: entities ``2·dim`` reals, relations ``dim`` phases."""
    return (entities * 2 * dim + relations * dim) * FLOAT_BYTES


def touched_rows(entities: int, batch: int, negatives: int, shared: bool, steps: int = 5) -> float:
    """Mean distinct entity rows per step: positives' heads and tails plus the negatives."""
    generator = torch.Generator().manual_seed(0)
    corruption = SelfAdversarialSampler(num_negatives=negatives, shared=shared, filtered=False).corruption()
    index = TripleIndex(torch.zeros(0, 3, dtype=torch.long), entities, 1)  # unfiltered: only the sizes are read
    counts = []
    for step in range(steps):
        positives = torch.randint(entities, (batch, 3), generator=generator)
        positives[:, 1] = 0
        negs = corruption.corrupt(positives, torch.ones(batch), step, index, None, generator).negatives
        rows = torch.cat([positives[:, 0], positives[:, 2], negs.flatten()])
        counts.append(torch.unique(rows).numel())
    return sum(counts) / len(counts)


class BucketBytes(L.Callback):
    """Registers :func:`counting_hook` on the DDP model; reads its byte counter after each step.

    (Lightning's ``DDPStrategy(ddp_comm_hook=...)`` registers hooks on CUDA only; DDP itself
    runs them over gloo too.)
    """

    def __init__(self) -> None:
        self.state = {"bytes": 0}
        self.per_step: list[int] = []

    def on_fit_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        trainer.strategy.model.register_comm_hook(self.state, counting_hook)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.per_step.append(self.state["bytes"])
        self.state["bytes"] = 0


def counting_hook(state, bucket):  # noqa: ANN001, ANN201 - DDP checks the annotations at run time
    """DDP's default all-reduce, counting the bytes of each bucket (a ``dist.GradBucket``) it sends."""
    buffer = bucket.buffer()
    state["bytes"] += buffer.numel() * buffer.element_size()
    return default_hooks.allreduce_hook(None, bucket)


def write_graph(folder: Path, entities: int, relations: int, triples: int) -> None:
    """A random graph with exactly ``entities`` and ``relations`` labels, in TSV files."""
    generator = torch.Generator().manual_seed(0)
    h = torch.randint(entities, (triples,), generator=generator)
    r = torch.randint(relations, (triples,), generator=generator)
    t = torch.randint(entities, (triples,), generator=generator)
    h[:entities], t[:entities] = torch.arange(entities), torch.arange(entities).roll(1)
    r[:relations] = torch.arange(relations)
    lines = [f"e{a}\tr{b}\te{c}\n" for a, b, c in zip(h.tolist(), r.tolist(), t.tolist())]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.txt").write_text("".join(lines))
    (folder / "valid.txt").write_text(lines[0])
    (folder / "test.txt").write_text(lines[1])


def measure_ddp(folder: Path, steps: int) -> list[int] | None:
    """Bytes all-reduced per step by 2-process DDP on the fb15k237-size graph (rank 0's list)."""
    entities, relations, dim, batch, negatives = SETTINGS["fb15k237"]
    L.seed_everything(0, verbose=False)
    sampler = SelfAdversarialSampler(num_negatives=negatives)
    datamodule = KGEDataModule(sampler.corruption(), path=str(folder), batch_size=batch)
    datamodule.setup()
    assert datamodule.num_entities == entities and datamodule.num_relations == relations
    model = RotatE(entities, relations, dim=dim, gamma=9.0)
    recorder = BucketBytes()
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_steps=steps, limit_val_batches=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[recorder],
    )
    trainer.fit(KGEModule(model=model, selection=sampler.selection(), graph=datamodule.info), datamodule=datamodule)
    return recorder.per_step if trainer.is_global_zero else None


def mib(x: float) -> str:
    return f"{x / 2**20:,.1f} MiB" if x < 2**30 else f"{x / 2**30:,.2f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-ddp", action="store_true", help="skip the measured 2-process part")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--graph", type=Path, default=Path(tempfile.gettempdir()) / "lightning_kge_fb15k237_size")
    args = parser.parse_args()

    measured = None
    if not args.no_ddp:
        if not (args.graph / "train.txt").is_file():
            write_graph(args.graph, *SETTINGS["fb15k237"][:2], triples=272_115)
        measured = measure_ddp(args.graph, args.steps)
        if measured is None:  # rank 1 (re-launched by DDP) prints nothing
            return

    print("| graph | entities | dim | dense gradient (computed) | all-reduced per step (measured, 2 CPU ranks) |")
    print("|---|---:|---:|---:|---:|")
    for name, (entities, relations, dim, _, _) in SETTINGS.items():
        cell = "-"
        if measured is not None and name == "fb15k237":
            cell = " / ".join(mib(b) for b in measured)
        print(f"| {name} | {entities:,} | {dim} | {mib(dense_bytes(entities, relations, dim))} | {cell} |")
    print()
    print("| graph | negatives | entity rows touched per step | share of table | row-sparse bytes per step | dense / sparse |")
    print("|---|---|---:|---:|---:|---:|")
    for name, (entities, relations, dim, batch, negatives) in SETTINGS.items():
        dense = dense_bytes(entities, relations, dim)
        for shared in (False, True):
            rows = touched_rows(entities, batch, negatives, shared)
            sparse = rows * (2 * dim * FLOAT_BYTES + 8) + relations * dim * FLOAT_BYTES  # rows + ids + relations
            print(
                f"| {name} | {'shared' if shared else 'per positive'} ({negatives}) | {rows:,.0f} | "
                f"{rows / entities:.2%} | {mib(sparse)} | {dense / sparse:,.1f}x |"
            )


if __name__ == "__main__":
    sys.exit(main())
