"""Host overhead of a training step: a tiny RotatE through Lightning against a plain PyTorch loop.

Run from the repository root (under the shared lock, which other timings take too):

    flock /tmp/kge-cpu.lock python benchmarks/step_overhead.py
    flock /tmp/kge-cpu.lock python benchmarks/step_overhead.py --device cuda     # on a GPU
    python benchmarks/step_overhead.py --data tests/data/countries_tiny --steps 3 --repeats 1  # smoke run

The model is ``experiment=rotate_countries_s1 model.dim=8`` (batch 512, 64 self-adversarial
negatives, complex dim 8): its arithmetic is small, so a step costs mostly host work. Variants:

* ``ours as configured``: that command's config composed as ``python -m lightning_kge.train``
  composes it (trainer, CSV logger, callbacks, progress bar), run by ``Trainer.fit``;
  ``trainer=cpu`` or ``trainer=gpu`` by ``--device``.
* ``ours, sampler.filtered=false``: the same without filtered negatives.
* ``ours, data.last_batch=fill``: every batch full (the baseline of the next).
* ``ours, … module.compile_step=default``: also the step's tensor part compiled
  (``torch.compile``; one shape, so compiled once); on CUDA ``--compile-mode reduce-overhead``
  replays it as CUDA graphs.
* ``ours without Lightning``: the datamodule's ``training_batch`` and the module's
  ``training_step``, backward, optimizer and scheduler in a bare loop: the rest is Lightning's.
* ``plain loop, same maths``: the step written directly in PyTorch, the floor of Python
  overhead: slices of a permutation, uniform tail negatives (unfiltered), the same RotatE
  distance op for positives and negatives in one call, self-adversarial and subsampling
  weights, the loss, backward, fused Adam.

Times are the best of ``--repeats`` windows of ``--steps`` steps after ``--warmup`` steps (the
first steps build kernels, compile, move tables): wall time per step, and this process's CPU
time per step (all threads), which a busy shared machine disturbs less. ``positives/step`` is
the mean batch in the window: as configured the last batch of each countries epoch has 87
positives (1,111 = 2 × 512 + 87); ``data.last_batch=fill`` makes every batch 512. Validation
lies beyond the window. On a shared, busy machine ``--threads 1`` keeps torch's threads from
waiting for each other on busy cores (2 threads then cost several times more).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from torch import Tensor

from common import REPO, data_folder, default_device, machine, markdown, synchronize
from lightning_kge.batches import NegativeBatch
from lightning_kge.kernels.rotate_distance import rotate_distance
from lightning_kge.configs import build_trainer
from lightning_kge.train import build

EXPERIMENT = ["experiment=rotate_countries_s1", "model.dim=8"]
VARIANTS = {
    "configured": ("ours as configured", []),
    "unfiltered": ("ours, sampler.filtered=false", ["sampler.filtered=false"]),
    "filled": ("ours, data.last_batch=fill", ["data.last_batch=fill"]),
    "compiled": ("ours, data.last_batch=fill module.compile_step={mode}",
                 ["data.last_batch=fill", "module.compile_step={mode}"]),
    "bare": ("ours without Lightning", []),
    "plain": ("plain loop, same maths", []),
}


def compose_config(folder: Path, device: str, steps: int, output: str, overrides: list[str]):
    """The experiment's config as the entry point composes it, on ``folder`` and ``device``."""
    trainer = "trainer=gpu" if torch.device(device).type == "cuda" else "trainer=cpu"
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=[
            *EXPERIMENT, trainer, "data.name=null", f"data.path={folder}", f"trainer.max_steps={steps}",
            f"output_dir={output}", *overrides,
        ])


class Clock:
    """Wall time, CPU time and positives trained at the edges of timed windows of steps.

    Call :meth:`tick` after every step with its number of positives; the clocks are read (after
    :func:`synchronize`, so queued GPU work counts) at the end of step ``warmup`` and of every
    ``steps`` steps after it.
    """

    def __init__(self, warmup: int, steps: int, device: str) -> None:
        self.warmup, self.steps, self.device = warmup, steps, device
        self.done = self.positives = 0
        self.marks: list[tuple[float, float, int]] = []

    def tick(self, positives: int) -> None:
        self.done += 1
        self.positives += positives
        if self.done >= self.warmup and (self.done - self.warmup) % self.steps == 0:
            synchronize(self.device)
            self.marks.append((time.perf_counter(), time.process_time(), self.positives))

    def best(self) -> tuple[float, float, float]:
        """Wall and CPU seconds per step, and positives per step, of the fastest window."""
        windows = [(b[0] - a[0], b[1] - a[1], b[2] - a[2]) for a, b in zip(self.marks, self.marks[1:])]
        wall, cpu, positives = min(windows)
        return wall / self.steps, cpu / self.steps, positives / self.steps


class StepClock(L.Callback):
    """A :class:`Clock` ticked at the end of every training step of a ``Trainer``."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: object,
                           batch: NegativeBatch, batch_idx: int) -> None:
        self.clock.tick(batch.positives.shape[0])


def run_lightning(cfg, clock: Clock, device: str) -> None:
    """``Trainer.fit`` of the composed config, ticking ``clock``."""
    L.seed_everything(cfg.seed, verbose=False)
    trainer = build_trainer(cfg)
    trainer.callbacks.append(StepClock(clock))
    module, datamodule = build(cfg)
    trainer.fit(module, datamodule=datamodule)


def cycle(loader: torch.utils.data.DataLoader) -> Iterator[Tensor]:
    while True:
        yield from loader


def run_bare(cfg, clock: Clock, device: str) -> None:
    """Our datamodule and module, stepped by a bare loop on ``device``."""
    L.seed_everything(cfg.seed, verbose=False)
    module, datamodule = build(cfg)
    module.to(device)
    optimization = module.configure_optimizers()
    if isinstance(optimization, dict):
        optimizer, scheduler = optimization["optimizer"], optimization["lr_scheduler"]["scheduler"]
    else:
        optimizer, scheduler = optimization, None
    rows = cycle(datamodule.train_dataloader())
    for _ in range(cfg.trainer.max_steps):
        batch = datamodule.training_batch(next(rows).to(device, non_blocking=True))
        loss = module.training_step(batch, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        clock.tick(batch.positives.shape[0])


def run_plain(cfg, clock: Clock, device: str) -> None:
    """The same maths in a plain loop: the same distance op, uniform tail negatives, no filtering."""
    L.seed_everything(cfg.seed, verbose=False)
    module, datamodule = build(cfg)
    k, alpha = cfg.sampler.num_negatives, cfg.sampler.temperature
    model = module.model.to(device)
    entity, relation = model.entity.weight, model.relation.weight
    scale, gamma = model.embedding_range / math.pi, model.gamma
    optimizer = torch.optim.Adam([entity, relation], lr=cfg.optimizer.lr, fused=True)
    train = datamodule.triples["train"].to(device)
    weight = datamodule.train_weight.to(device)
    size = min(datamodule.batch_size, len(train))
    order = torch.randperm(len(train), device=device)
    for step in range(cfg.trainer.max_steps):
        start = step * size % (len(train) - size + 1)
        rows = order[start : start + size]
        (h, r, t), w = train[rows].unbind(1), weight[rows]
        candidates = torch.cat([t[:, None], torch.randint(len(entity), (size, k), device=device)], dim=1)
        re_h, im_h = entity[h].chunk(2, dim=-1)
        phase = relation[r] / scale
        re_r, im_r = torch.cos(phase), torch.sin(phase)
        query = torch.cat([re_h * re_r - im_h * im_r, re_h * im_r + im_h * re_r], dim=-1)
        scores = gamma - rotate_distance(query, entity, candidates, backend=model.distance_backend)
        positive, negative = scores[:, 0], scores[:, 1:]
        adversarial = torch.softmax(alpha * negative, dim=1).detach()
        positive_loss = -(w * F.logsigmoid(positive)).sum() / w.sum()
        negative_loss = -(w * (adversarial * F.logsigmoid(-negative)).sum(1)).sum() / w.sum()
        loss = (positive_loss + negative_loss) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        clock.tick(size)


def measure(name: str, args: argparse.Namespace, folder: Path, output: str) -> tuple[str, float, float, float]:
    """``(label, wall s/step, CPU s/step, positives/step)`` of variant ``name``."""
    label, overrides = VARIANTS[name]
    label = label.format(mode=args.compile_mode)
    overrides = [o.format(mode=args.compile_mode) for o in overrides] + args.override
    cfg = compose_config(folder, args.device, args.warmup + args.steps * args.repeats, output, overrides)
    clock = Clock(args.warmup, args.steps, args.device)
    runner: Callable = {"bare": run_bare, "plain": run_plain}.get(name, run_lightning)
    runner(cfg, clock, args.device)
    return (label, *clock.best())


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="countries_S1 folder (default: ../shared/data/countries_S1)")
    parser.add_argument("--device", default=default_device(), help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--steps", type=int, default=100, help="steps per timed window")
    parser.add_argument("--repeats", type=int, default=5, help="timed windows; the best counts")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--compile-mode", default="default", help="module.compile_step of the compiled variant")
    parser.add_argument("--override", nargs="*", default=[], help="more Hydra overrides for every variant")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*too few.*log.*")
    folder = data_folder("countries_S1", args.data)
    print(machine(args.device), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as output:
        for name in args.variants:
            label, wall, cpu, positives = measure(name, args, folder, str(Path(output) / name))
            print(f"  {label}: {wall * 1e3:.2f} ms/step", flush=True)
            rows.append((label, wall, cpu, positives))
    plain = next((wall for label, wall, *_ in rows if label == VARIANTS["plain"][0]), None)
    table = markdown(
        ["variant", "ms/step", "CPU ms/step", "positives/step", "x plain loop"],
        [[label, f"{wall * 1e3:.2f}", f"{cpu * 1e3:.2f}", f"{positives:.0f}",
          "-" if plain is None else f"{wall / plain:.1f}"] for label, wall, cpu, positives in rows],
    )
    command = " ".join(EXPERIMENT)
    print(f"\n{command}, {args.device}: best of {args.repeats} windows of {args.steps} steps after {args.warmup}")
    print(table)
    return table


if __name__ == "__main__":
    main()
