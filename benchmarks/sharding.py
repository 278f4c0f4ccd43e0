"""strategy=torchrec against strategy=ddp: bytes each process sends per step, step time and memory per process.

    python benchmarks/sharding.py --save                # the README's table (1M entities; ~15 min)
    python benchmarks/sharding.py --entities 20000 --steps 6 --processes 1 2   # a quick look

For each strategy and number of CPU processes (1, 2, 4; gloo) it trains RotatE on one synthetic graph
(random triples, every entity used, written once as TSV files) through Lightning, in a fresh run per
setting, and measures on every process:

- **sent per step**: bytes this process sends to the others in a training step: DDP's gradient buckets
  (counted by a DDP communication hook, times ``2 (N − 1) / N`` for a ring all-reduce) plus TorchRec's
  all-to-alls of ids and rows to the other processes (counted at ``torch.distributed.all_to_all_single``);
- **step time**: the median wall time of a training step (after ``--warmup`` steps), on process 0;
- **memory**: the table rows the process holds, its resident memory after the last step (``RSS training``)
  and its peak (``RSS peak``, which includes the whole table once: every process builds the model before
  the strategy shards it).

``strategy=ddp`` trains the table with fused Adam (table, gradient, two moments on every process);
``strategy=torchrec`` shards it row-wise with ``exact_rowwise_adagrad`` (one real of state per row) and
trains the relations with the same Adam. The table is printed (``--save``: also written to
``benchmarks/results/sharding.md`` and ``.json``). With ``--accelerator gpu`` the same runs on CUDA (nccl) with the fused ``adam`` table optimizer
(not measured yet: no GPU was lent when this was written).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def write_graph(folder: Path, entities: int, relations: int, triples: int) -> None:
    """Random triples over ``entities`` integer labels (each used at least once), as TSV files."""
    generator = torch.Generator().manual_seed(0)
    h = torch.randint(entities, (triples,), generator=generator)
    r = torch.randint(relations, (triples,), generator=generator)
    t = torch.randint(entities, (triples,), generator=generator)
    n = min(entities, triples)
    h[:n], t[:n] = torch.arange(n), torch.arange(n).roll(1)
    r[:relations] = torch.arange(relations)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "train.txt", "w") as handle:
        for a, b, c in zip(h.tolist(), r.tolist(), t.tolist()):
            handle.write(f"{a}\t{b}\t{c}\n")
    (folder / "valid.txt").write_text(f"{h[0]}\t{r[0]}\t{t[0]}\n")
    (folder / "test.txt").write_text(f"{h[1]}\t{r[1]}\t{t[1]}\n")


def resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# --- one run (each process of it) ---------------------------------------------------------------------
def worker(args: argparse.Namespace) -> None:
    import lightning as L
    import torch.distributed as dist
    from lightning.pytorch.strategies import DDPStrategy
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    from lightning_kge.datamodule import KGEDataModule
    from lightning_kge.models import RotatE
    from lightning_kge.module import KGEModule
    from lightning_kge.sampling import SelfAdversarialSampler

    sent = {"reduced": 0, "a2a": 0}

    def counting_hook(state, bucket):  # noqa: ANN001, ANN202 - DDP checks the annotations at run time
        buffer = bucket.buffer()
        state["reduced"] += buffer.numel() * buffer.element_size()
        return default_hooks.allreduce_hook(None, bucket)

    all_to_all = dist.all_to_all_single

    def counting_all_to_all(output, input, output_split_sizes=None, input_split_sizes=None, group=None,  # noqa: A002
                            async_op=False):
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        splits = input_split_sizes or [input.shape[0] // world] * world
        rows = sum(s for i, s in enumerate(splits) if i != rank)
        sent["a2a"] += rows * (input[0].numel() if input.dim() > 1 else 1) * input.element_size()
        return all_to_all(output, input, output_split_sizes, input_split_sizes, group=group, async_op=async_op)

    dist.all_to_all_single = counting_all_to_all

    class Meter(L.Callback):
        def __init__(self) -> None:
            self.steps: list[dict[str, float]] = []

        def on_fit_start(self, trainer, pl_module) -> None:  # noqa: ANN001
            model = trainer.strategy.model
            if hasattr(model, "register_comm_hook"):
                model.register_comm_hook(sent, counting_hook)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
            sent["reduced"] = sent["a2a"] = 0
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
            world = trainer.world_size
            self.steps.append({"seconds": time.perf_counter() - self.start,
                               "sent": sent["reduced"] * 2 * (world - 1) / world + sent["a2a"]})

    L.seed_everything(0, verbose=False)
    sampler = SelfAdversarialSampler(num_negatives=args.negatives, shared=args.shared)
    datamodule = KGEDataModule(sampler.corruption(), path=str(args.graph), batch_size=args.batch)
    datamodule.setup()
    model = RotatE(datamodule.num_entities, datamodule.num_relations, dim=args.dim)
    cuda = args.accelerator == "gpu"
    module = KGEModule(model=model, selection=sampler.selection(), graph=datamodule.info,
                       optimizer=functools.partial(torch.optim.Adam, lr=1e-3, fused=True))
    if args.strategy == "torchrec":
        from lightning_kge.sharding.strategy import TorchRecStrategy

        strategy = TorchRecStrategy(table_optimizer="adam" if cuda else "exact_rowwise_adagrad", table_lr=0.05)
    else:
        strategy = DDPStrategy()
    meter = Meter()
    processes = args.processes[0]
    trainer = L.Trainer(accelerator=args.accelerator, devices=processes, strategy=strategy,
                        max_steps=args.warmup + args.steps, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[meter])
    trainer.fit(module, datamodule=datamodule)
    entity = module.model.entity
    rows = entity.own_rows()[1].shape[0] if hasattr(entity, "own_rows") else entity.weight.shape[0]
    timed = meter.steps[args.warmup:]
    record = {"strategy": args.strategy, "processes": processes, "rank": trainer.global_rank,
              "step_seconds": statistics.median(s["seconds"] for s in timed),
              "sent_bytes": statistics.median(s["sent"] for s in timed), "rows": rows,
              "rss_training": resident_bytes(), "rss_peak": max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, resident_bytes()),
              "entities": datamodule.num_entities, "dim": args.dim}
    if cuda:
        record["gpu_peak"] = torch.cuda.max_memory_allocated()
    (args.out / f"{args.strategy}-{processes}-rank{trainer.global_rank}.json").write_text(json.dumps(record))


# --- all runs -------------------------------------------------------------------------------------------
def gib(x: float) -> str:
    return f"{x / 2**30:.2f} GiB" if x >= 2**30 else f"{x / 2**20:.1f} MiB"


def table(records: list[dict]) -> str:
    lines = ["| strategy | processes | step time | sent per process per step | table rows per process | "
             "RSS training (max) | RSS peak (max) |", "|---|---:|---:|---:|---:|---:|---:|"]
    runs: dict[tuple[str, int], list[dict]] = {}
    for record in records:
        runs.setdefault((record["strategy"], record["processes"]), []).append(record)
    for (strategy, processes), ranks in sorted(runs.items()):
        first = min(ranks, key=lambda r: r["rank"])
        lines.append(
            f"| {strategy} | {processes} | {first['step_seconds'] * 1000:.0f} ms | "
            f"{gib(max(r['sent_bytes'] for r in ranks))} | {max(r['rows'] for r in ranks):,} | "
            f"{gib(max(r['rss_training'] for r in ranks))} | {gib(max(r['rss_peak'] for r in ranks))} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", default="all", choices=["all", "worker"])
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--relations", type=int, default=100)
    parser.add_argument("--triples-per-entity", type=float, default=4.5)
    parser.add_argument("--dim", type=int, default=64, help="RotatE's complex dimension (2·dim reals a row)")
    parser.add_argument("--batch", type=int, default=512, help="positives per process and step")
    parser.add_argument("--negatives", type=int, default=128)
    parser.add_argument("--shared", action="store_true", help="shared negatives (sampler.shared=true)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--strategies", nargs="+", default=["ddp", "torchrec"], choices=["ddp", "torchrec"])
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--graph", type=Path, default=None, help="folder of the synthetic graph (made once)")
    parser.add_argument("--out", type=Path, default=None, help="folder of the per-process records")
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/sharding.md and .json")
    parser.add_argument("--strategy", default="ddp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode == "worker":
        return worker(args)

    graph = args.graph or Path(tempfile.gettempdir()) / f"lightning_kge_sharding_{args.entities}"
    if not (graph / "train.txt").is_file():
        write_graph(graph, args.entities, args.relations, int(args.entities * args.triples_per_entity))
    out = args.out or Path(tempfile.mkdtemp(prefix="sharding_"))
    out.mkdir(parents=True, exist_ok=True)
    common = ["--graph", str(graph), "--out", str(out), "--dim", str(args.dim), "--batch", str(args.batch),
              "--negatives", str(args.negatives), "--steps", str(args.steps), "--warmup", str(args.warmup),
              "--accelerator", args.accelerator, *(["--shared"] if args.shared else [])]
    for processes in args.processes:
        for strategy in args.strategies:
            command = [sys.executable, __file__, "worker", "--strategy", strategy, "--processes", str(processes), *common]
            print(f"{strategy}, {processes} process(es) ...", file=sys.stderr, flush=True)
            log = out / f"{strategy}-{processes}.log"
            with open(log, "w") as handle:
                done = subprocess.run(command, cwd=out, stdout=handle, stderr=subprocess.STDOUT,
                                      env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
            if done.returncode != 0:
                sys.exit(f"benchmark: the {strategy} run with {processes} process(es) failed; see {log}:\n"
                         + log.read_text()[-3000:])
    records = [json.loads(p.read_text()) for p in sorted(out.glob("*-rank*.json"))]
    setting = (f"RotatE dim {args.dim} ({2 * args.dim} reals a row), {records[0]['entities']:,} entities, "
               f"batch {args.batch} per process, {args.negatives} {'shared ' if args.shared else ''}negatives, "
               f"{args.accelerator.upper()} processes ({'nccl' if args.accelerator == 'gpu' else 'gloo'}), "
               f"median of {args.steps} steps")
    report = f"{setting}\n\n{table(records)}\n"
    print(report)
    if not args.save:
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sharding.md").write_text(report)
    (RESULTS / "sharding.json").write_text(json.dumps({"setting": setting, "records": records}, indent=1) + "\n")


if __name__ == "__main__":
    main()
