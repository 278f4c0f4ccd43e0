"""Time of one training step and peak memory against the number of entities, dense and sparse optimizers.

Run from the repository root (CPU heavy: under the shared lock):

    flock /tmp/kge-cpu.lock python benchmarks/sparse_step.py                       # 10k and 1M entities
    flock /tmp/kge-cpu.lock python benchmarks/sparse_step.py --entities 10000 4600000 --optimizers adam sparse_adam
    python benchmarks/sparse_step.py --device cuda --entities 10000 4600000         # one GPU

No data files: each step is the module's real tensor step (``KGEModule.training_loss``: RotatE
through the fused distance, self-adversarial weights, the loss; then backward and the optimizer of
``conf/optimizer/<name>.yaml``) on a batch of synthetic ids drawn uniformly from ``E`` entities
(``--batch`` positives, ``--negatives`` per positive, head and tail corruption alternating),
without a Trainer or a datamodule. So the step's cost is the batch's work (the same at every
``E``) plus whatever grows with the table: dense Adam reads and writes the whole table, its
gradient and two moments every step; ``sparse_adam`` and ``adagrad`` touch the rows of the batch.

Each (entities, optimizer) pair runs in a fresh process. ``ms/step`` is the best of ``--repeats``
windows of ``--steps`` steps after ``--warmup`` steps (wall and CPU time; CUDA work waited for);
``× first`` divides it by the same optimizer's time at the first ``--entities``. Memory: on CPU the
process's peak RSS from just before the tables are made to the end of the timed steps, minus its
RSS then (``common.PeakRSS``); on CUDA the peak of allocated bytes. ``table + state`` is the
tables' bytes plus the optimizer state's (after the steps); ``over`` is the peak minus that: the
gradient, the batch's temporaries and the allocator's slack. The issue's target: ``over`` ≤ 1 GiB
for the sparse optimizers, and ``sparse_adam``'s time at 4.6M entities ≤ 1.5 × its time at 10k.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from common import REPO, PeakMemory, default_device, machine, step_time, synchronize

from lightning_kge.batches import NegativeBatch
from lightning_kge.models import RotatE
from lightning_kge.module import KGEModule
from lightning_kge.sampling import SelfAdversarialSampler

OPTIMIZERS = ("adam", "sparse_adam", "adagrad")
"""Options of ``conf/optimizer``."""


def batches(entities: int, relations: int, args: argparse.Namespace, device: str, count: int = 4) -> list[NegativeBatch]:
    """``count`` batches of uniform synthetic ids; head and tail corruption alternate."""
    g = torch.Generator().manual_seed(0)
    out = []
    for n in range(count):
        positives = torch.stack([torch.randint(entities, (args.batch,), generator=g),
                                 torch.randint(relations, (args.batch,), generator=g),
                                 torch.randint(entities, (args.batch,), generator=g)], dim=1)
        negatives = torch.randint(entities, (args.batch, args.negatives), generator=g)
        out.append(NegativeBatch(positives.to(device), negatives.to(device),
                                 torch.full((args.batch,), n % 2 == 0, device=device), None,
                                 torch.ones(args.batch, device=device), step=n))
    return out


def measure(entities: int, option: str, args: argparse.Namespace) -> dict:
    """One (entities, optimizer) pair in this process: times and memory."""
    device = args.device
    factory = instantiate(OmegaConf.load(REPO / "conf" / "optimizer" / f"{option}.yaml"))
    data = batches(entities, args.relations, args, device)
    with PeakMemory(device) as memory:
        torch.manual_seed(0)
        model = RotatE(entities, args.relations, dim=args.dim, gamma=6.0).to(device)
        selection = SelfAdversarialSampler(num_negatives=args.negatives, temperature=1.0).selection()
        module = KGEModule(model, selection, optimizer=factory).to(device)
        module.setup("fit")  # switches the lookups for a sparse optimizer, as fitting does
        optimizer = module.configure_optimizers()
        cycle = itertools.cycle(data)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            module.training_loss(next(cycle)).backward()
            optimizer.step()

        for _ in range(args.warmup):
            step()
        synchronize(device)
        wall, cpu = step_time(step, args.steps, args.repeats, device)
    tables = sum(p.numel() * p.element_size() for p in module.parameters())
    state = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
                if isinstance(t, torch.Tensor))
    touched = torch.unique(torch.cat([data[0].positives[:, [0, 2]].flatten(), data[0].negatives.flatten()])).numel()
    gib = 2**30
    return {"entities": entities, "optimizer": option, "step_ms": 1000 * wall, "cpu_ms": 1000 * cpu,
            "rows_touched": touched, "table_and_state_gib": (tables + state) / gib,
            "peak_gib": memory.extra * 1024 / gib, "over_gib": (memory.extra * 1024 - tables - state) / gib}


def child_command(entities: int, option: str, args: argparse.Namespace) -> list[str]:
    flags = ["--device", args.device, "--dim", str(args.dim), "--batch", str(args.batch), "--negatives",
             str(args.negatives), "--relations", str(args.relations), "--steps", str(args.steps), "--repeats",
             str(args.repeats), "--warmup", str(args.warmup)]
    return [sys.executable, __file__, "--child", str(entities), option, *flags]


def table(rows: list[dict], first: int) -> str:
    base = {r["optimizer"]: r["step_ms"] for r in rows if r["entities"] == first}
    lines = ["| entities | optimizer | ms/step | CPU ms/step | × first | rows touched | table + state GiB | "
             "peak GiB | over GiB |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['entities']:,} | {r['optimizer']} | {r['step_ms']:.1f} | {r['cpu_ms']:.1f} | "
                     f"{r['step_ms'] / base[r['optimizer']]:.2f}x | {r['rows_touched']:,} | "
                     f"{r['table_and_state_gib']:.3f} | {r['peak_gib']:.3f} | {r['over_gib']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--optimizers", nargs="+", default=["adam", "sparse_adam"], choices=OPTIMIZERS)
    parser.add_argument("--device", default=default_device(), help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--dim", type=int, default=64, help="complex dimension (rows of 2·dim reals)")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--negatives", type=int, default=128)
    parser.add_argument("--relations", type=int, default=100)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed window")
    parser.add_argument("--repeats", type=int, default=3, help="timed windows (the best counts)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (state allocation)")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument("--child", nargs=2, metavar=("ENTITIES", "OPTIMIZER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(int(args.child[0]), args.child[1], args)))
        return
    print(machine(args.device))
    print(f"RotatE dim {args.dim} (complex), batch {args.batch}, {args.negatives} negatives per positive, "
          f"{args.relations} relations; best of {args.repeats} x {args.steps} steps after {args.warmup}")
    rows = []
    for entities in args.entities:
        for option in args.optimizers:
            result = subprocess.run(child_command(entities, option, args), capture_output=True, text=True)
            if result.returncode != 0:
                sys.exit(f"sparse_step: {entities} entities, {option} failed:\n{result.stderr[-3000:]}")
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
            print(f"  {entities:,} entities, {option}: {rows[-1]['step_ms']:.1f} ms/step", file=sys.stderr)
    print(table(rows, args.entities[0]))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(args.device), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
