"""Scale: data set-up, training step, evaluation and checkpoints on synthetic graphs from 10k to 4.6M entities.

Run from the repository root; the full run needs the machine to itself (at 4.6M entities a dense
Adam step holds about 10 GB) and takes roughly 20-30 minutes on 2 CPU cores with ``--optimizers
adam`` (the 4.6M training steps and test dominate):

    flock /tmp/kge-cpu.lock python benchmarks/scale.py                        # 10k, 100k, 1M, 4.6M
    python benchmarks/scale.py --sizes 10000,100000                           # a quick run
    python benchmarks/scale.py --optimizers adam,sparse_adam                  # any conf/optimizer options
    python benchmarks/scale.py --device cuda --sizes 10000,100000,1000000,4600000   # on a GPU

Graphs: ``E`` entities with Zipf-distributed degree (each entity once, then heads and tails drawn
with probability ∝ 1/rank), 100 relations (Zipf too), ``4.5·E`` training triples and 1,000 valid
and 1,000 test triples over entities seen in train; labels ``Q<n>`` and ``P<n>`` in shuffled order
(Wikidata's form), written once per size as a ``data=tsv`` folder under ``--root``. Wikidata5M
is 4.6M entities and 20.6M training triples.

Each measurement runs in a fresh subprocess (``--child``), so its peak RSS is its own:

* ``setup``: ``KGEDataModule.setup()`` with an empty graph cache (``first``) and again with the
  cache it wrote (``cached``; the benchmark caches every size, also those under
  ``store.MIN_CACHED_BYTES``), against a plain loader in the same run (``plain``: a Python loop
  of ``line.split("\\t")`` and ``dict.setdefault`` ids into a list, then a numpy array; nothing
  else: no checks, no index, no statistics, no cache). Times start after the imports; CPU time
  is the child's (all threads); peak RSS includes the imports (torch for all three, and
  Lightning for ours: ``rss_imports`` in the JSON).
* ``step``: milliseconds per training step through ``Trainer.fit`` for each ``--optimizers``
  option (RotatE complex dim 64, batch 512, 128 self-adversarial negatives, as in issue 22), the
  best of ``--repeats`` windows of ``--steps`` steps after ``--warmup``, and the child's peak RSS.
* ``eval``: seconds of ``Trainer.test`` over the 1,000 test triples (each ranked both ways
  against every entity, filtered), with the first optimizer's weights.
* ``checkpoint``: size and save time of ``Trainer.save_checkpoint`` after the steps, per optimizer.

Prints Markdown tables (ratios against the plain loader and against the smallest size), writes
``benchmarks/results/scale.json`` and the plot ``docs/images/scale.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine, markdown  # noqa: E402

RELATIONS = 100
TRIPLES_PER_ENTITY = 4.5
EVAL_TRIPLES = 1000
DEFAULT_SIZES = "10000,100000,1000000,4600000"
MODEL = ["model=rotate", "model.dim=64", "sampler=self_adversarial", "sampler.num_negatives=128",
         "data.batch_size=512"]


# --- graphs -----------------------------------------------------------------------------------------


def zipf_draws(rng: np.random.Generator, size: int, count: int) -> np.ndarray:
    """``count`` ids in ``[0, size)`` with probability ∝ ``1 / (id + 1)``."""
    cumulative = np.cumsum(1.0 / np.arange(1, size + 1))
    return np.searchsorted(cumulative, rng.random(count) * cumulative[-1]).astype(np.int64)


def write_graph(folder: Path, entities: int, seed: int = 0) -> Path:
    """Write the synthetic ``data=tsv`` folder of ``entities`` entities (once; kept for later runs)."""
    if all((folder / f"{split}.txt").is_file() for split in ("train", "valid", "test")):
        return folder
    rng = np.random.default_rng(seed)
    n = int(TRIPLES_PER_ENTITY * entities)
    heads, tails = zipf_draws(rng, entities, n), zipf_draws(rng, entities, n)
    every = rng.permutation(entities)  # each entity occurs at least once, as head or tail
    heads[: entities // 2], tails[: entities - entities // 2] = every[: entities // 2], every[entities // 2 :]
    relations = zipf_draws(rng, RELATIONS, n)
    entity_label = rng.permutation(entities)  # Q-numbers in no relation to degree
    scratch = folder.with_name(folder.name + ".part")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    rows = {"train": (heads, relations, tails)}
    for split in ("valid", "test"):
        pick = rng.integers(0, n, EVAL_TRIPLES)
        rows[split] = (heads[pick], zipf_draws(rng, RELATIONS, EVAL_TRIPLES), tails[rng.integers(0, n, EVAL_TRIPLES)])
    for split, (h, r, t) in rows.items():
        with open(scratch / f"{split}.txt", "w", encoding="utf-8") as handle:
            for start in range(0, len(h), 1 << 20):
                block = zip(entity_label[h[start:start + (1 << 20)]].tolist(), r[start:start + (1 << 20)].tolist(),
                            entity_label[t[start:start + (1 << 20)]].tolist())
                handle.write("".join(f"Q{a}\tP{b}\tQ{c}\n" for a, b, c in block))
    os.replace(scratch, folder)
    return folder


# --- children: one measurement each, in a fresh process -------------------------------------------


def _status_gib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def peak_rss_gib() -> float:
    """This process's peak resident memory so far (``VmHWM``), GiB."""
    return _status_gib("VmHWM")


def current_rss_gib() -> float:
    return _status_gib("VmRSS")


def plain_load(folder: Path) -> dict[str, np.ndarray]:
    """The plain loader: labels to ids with a dict, line by line; no checks, no index, no statistics."""
    entities: dict[str, int] = {}
    relations: dict[str, int] = {}
    splits = {}
    for split in ("train", "valid", "test"):
        rows = []
        with open(folder / f"{split}.txt", encoding="utf-8") as handle:
            for line in handle:
                h, r, t = line.rstrip("\n").split("\t")
                rows.append((entities.setdefault(h, len(entities)), relations.setdefault(r, len(relations)),
                             entities.setdefault(t, len(entities))))
        splits[split] = np.array(rows, dtype=np.int64)
    return splits


def child_setup(spec: dict) -> dict:
    """One set-up, timed from after the imports (their memory is in ``rss_imports``)."""
    import torch  # noqa: F401  (both variants import torch: a project with the plain loader trains with it)

    if spec["variant"] != "plain":
        from lightning_kge.data import store
        from lightning_kge.datamodule import KGEDataModule

        store.MIN_CACHED_BYTES = 0  # cache every size, so that "cached" is the cache at every size
    folder = Path(spec["folder"])
    imports = current_rss_gib()
    wall, cpu = time.perf_counter(), time.process_time()
    if spec["variant"] == "plain":
        splits = plain_load(folder)
        triples = len(splits["train"])
    else:
        datamodule = KGEDataModule(path=str(folder))
        datamodule.setup()
        triples = len(datamodule.triples["train"])
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "rss": peak_rss_gib(),
            "rss_imports": imports, "train_triples": triples}


class _Clock:
    """Wall and CPU time at the end of step ``warmup`` and every ``steps`` steps after it."""

    def __init__(self, warmup: int, steps: int, device: str) -> None:
        self.warmup, self.steps, self.device = warmup, steps, device
        self.done = 0
        self.marks: list[tuple[float, float]] = []

    def tick(self) -> None:
        import torch

        self.done += 1
        if self.done >= self.warmup and (self.done - self.warmup) % self.steps == 0:
            if self.device == "cuda":
                torch.cuda.synchronize()
            self.marks.append((time.perf_counter(), time.process_time()))

    def best(self) -> tuple[float, float]:
        windows = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(self.marks, self.marks[1:])]
        wall, cpu = min(windows)
        return wall / self.steps, cpu / self.steps


def child_train(spec: dict) -> dict:
    """Steps through Trainer.fit with one optimizer option; then a checkpoint; then (optionally) the test."""
    import lightning as L
    import torch
    from hydra import compose, initialize_config_dir

    from lightning_kge.configs import build_trainer
    from lightning_kge.train import build

    warnings.filterwarnings("ignore")
    device, output = spec["device"], spec["output"]
    steps = spec["warmup"] + spec["steps"] * spec["repeats"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[
            *MODEL, f"optimizer={spec['optimizer']}", "data=tsv", f"data.path={spec['folder']}",
            "trainer=gpu" if device == "cuda" else "trainer=cpu", f"trainer.max_steps={steps}",
            "trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false",
            "callbacks.checkpoint=null", "logger=csv", f"output_dir={output}",
        ])

    clock = _Clock(spec["warmup"], spec["steps"], device)

    class Tick(L.Callback):
        def on_train_batch_end(self, *args: object) -> None:
            clock.tick()

    L.seed_everything(cfg.seed, verbose=False)
    trainer = build_trainer(cfg)
    trainer.callbacks.append(Tick())
    module, datamodule = build(cfg)
    trainer.fit(module, datamodule=datamodule)
    wall, cpu = clock.best()
    result = {"step_wall": wall, "step_cpu": cpu, "train_rss": peak_rss_gib()}
    path = Path(output) / "scale.ckpt"
    start = time.perf_counter()
    trainer.save_checkpoint(path)
    result.update(checkpoint_seconds=time.perf_counter() - start, checkpoint_bytes=path.stat().st_size)
    path.unlink()
    if spec["eval"]:
        start = time.perf_counter()
        trainer.test(module, datamodule=datamodule, verbose=False)
        if device == "cuda":
            torch.cuda.synchronize()
        result.update(eval_seconds=time.perf_counter() - start, eval_triples=len(datamodule.triples["test"]))
    return result


def run_child(kind: str, spec: dict, env: dict[str, str]) -> dict:
    """Run one measurement in a fresh interpreter; its last stdout line is the result as JSON."""
    done = subprocess.run([sys.executable, __file__, "--child", kind, json.dumps(spec)], cwd=REPO, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"scale: the {kind} child failed ({spec}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the run -----------------------------------------------------------------------------------------


def measure(args: argparse.Namespace) -> dict:
    root = Path(args.root)
    results: dict = {"machine": machine(args.device), "sizes": {}, "optimizers": args.optimizers,
                     "device": args.device, "command": " ".join(sys.argv)}
    for size in args.sizes:
        print(f"{size:,} entities", flush=True)
        start = time.perf_counter()
        folder = write_graph(root / f"zipf_{size}", size)
        print(f"  graph at {folder} ({time.perf_counter() - start:.0f} s)", flush=True)
        cache = root / "cache" / f"zipf_{size}"
        env = {**os.environ, "LIGHTNING_KGE_CACHE": str(cache), "PYTHONPATH": str(REPO)}
        if args.threads:
            env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        row: dict = {}
        if "setup" in args.parts:
            shutil.rmtree(cache / "graphs", ignore_errors=True)
            for variant in ("plain", "first", "cached"):
                row[variant] = run_child("setup", {"folder": str(folder), "variant": variant}, env)
                print(f"  setup {variant}: {row[variant]['wall']:.1f} s wall, {row[variant]['cpu']:.1f} s CPU, "
                      f"{row[variant]['rss']:.2f} GiB peak RSS", flush=True)
        if "step" in args.parts:
            for i, optimizer in enumerate(args.optimizers):
                with tempfile.TemporaryDirectory() as output:
                    spec = {"folder": str(folder), "optimizer": optimizer, "device": args.device, "output": output,
                            "warmup": args.warmup, "steps": args.steps, "repeats": args.repeats,
                            "eval": i == 0 and "eval" in args.parts}
                    row[f"train_{optimizer}"] = run_child("train", spec, env)
                measured = row[f"train_{optimizer}"]
                print(f"  optimizer={optimizer}: {measured['step_wall'] * 1e3:.1f} ms/step, "
                      f"checkpoint {measured['checkpoint_bytes'] / 2**20:.0f} MiB in {measured['checkpoint_seconds']:.1f} s"
                      + (f", test of {measured['eval_triples']} triples {measured['eval_seconds']:.1f} s"
                         if "eval_seconds" in measured else ""), flush=True)
        results["sizes"][str(size)] = row
    return results


def tables(results: dict) -> str:
    sizes = results["sizes"]
    out = [results["machine"], f"command: {results['command']}", ""]
    setup_rows = []
    for size, row in sizes.items():
        if "plain" not in row:
            continue
        plain, first, cached = row["plain"], row["first"], row["cached"]
        setup_rows.append([
            f"{int(size):,} / {plain_triples(row):,}",
            f"{first['cpu']:.1f} s ({first['wall']:.1f} s wall)", f"{cached['cpu']:.1f} s ({cached['wall']:.1f} s wall)",
            f"{plain['cpu']:.1f} s ({plain['wall']:.1f} s wall)",
            f"{first['cpu'] / plain['cpu']:.2f}×", f"{cached['cpu'] / plain['cpu']:.2f}×",
            f"{first['rss']:.2f} / {cached['rss']:.2f} / {plain['rss']:.2f}", f"{first['rss'] / plain['rss']:.2f}×",
            f"{first.get('rss_imports', float('nan')):.2f} / {plain.get('rss_imports', float('nan')):.2f}",
        ])
    if setup_rows:
        out += ["Set-up (`KGEDataModule.setup()`, CPU time) against the plain loader in the same run:", "",
                markdown(["entities / train triples", "first (parse, index, cache)", "from the cache", "plain loader",
                          "first / plain", "cached / plain", "peak RSS GiB first / cached / plain",
                          "first RSS / plain", "RSS after imports, ours / plain"], setup_rows), ""]
    optimizers = results["optimizers"]
    step_rows = []
    smallest = next(iter(sizes.values()))
    for size, row in sizes.items():
        cells = [f"{int(size):,}"]
        for optimizer in optimizers:
            measured, base = row.get(f"train_{optimizer}"), smallest.get(f"train_{optimizer}")
            if measured is None:
                cells += ["-", "-"]
                continue
            cells += [f"{measured['step_wall'] * 1e3:.1f} ({measured['step_cpu'] * 1e3:.1f} CPU) ms, "
                      f"{measured['train_rss']:.2f} GiB",
                      f"{measured['step_wall'] / base['step_wall']:.2f}×" if base else "-"]
        first = row.get(f"train_{optimizers[0]}", {})
        cells.append(f"{first['eval_seconds']:.1f} s" if "eval_seconds" in first else "-")
        cells.append(", ".join(f"{row[f'train_{o}']['checkpoint_bytes'] / 2**20:.0f} MiB in "
                               f"{row[f'train_{o}']['checkpoint_seconds']:.1f} s" for o in optimizers if f"train_{o}" in row))
        step_rows.append(cells)
    if any(len(r) > 1 for r in step_rows) and any(f"train_{o}" in smallest for o in optimizers):
        header = ["entities"]
        for optimizer in optimizers:
            header += [f"optimizer={optimizer}: step, peak RSS", f"× at {int(next(iter(sizes))):,}"]
        header += [f"test of {EVAL_TRIPLES:,} triples (distinct: fewer)", "checkpoint size, save time"]
        out += ["Training through `Trainer.fit` (RotatE complex dim 64, batch 512, 128 negatives), "
                f"{results['device']}:", "", markdown(header, step_rows)]
    return "\n".join(out)


def plain_triples(row: dict) -> int:
    return int(row["plain"]["train_triples"])


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [int(s) for s in results["sizes"]]
    rows = list(results["sizes"].values())
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for variant, label in (("first", "ours, first set-up"), ("cached", "ours, from the cache"), ("plain", "plain loader")):
        points = [(s, r[variant]["cpu"]) for s, r in zip(sizes, rows) if variant in r]
        if points:
            left.plot(*zip(*points), marker="o", label=label)
    left.set(xscale="log", yscale="log", xlabel="entities (4.5 training triples each)", ylabel="set-up CPU seconds",
             title="Data set-up")
    for optimizer in results["optimizers"]:
        points = [(s, r[f"train_{optimizer}"]["step_wall"] * 1e3) for s, r in zip(sizes, rows) if f"train_{optimizer}" in r]
        if points:
            right.plot(*zip(*points), marker="o", label=f"optimizer={optimizer}")
    right.set(xscale="log", yscale="log", xlabel="entities", ylabel="ms per training step",
              title=f"Training step ({results['device']})")
    for axis in (left, right):
        axis.grid(True, which="both", alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help=f"entity counts, comma-separated (default {DEFAULT_SIZES})")
    parser.add_argument("--optimizers", default="adam", help="conf/optimizer options, comma-separated (default adam)")
    parser.add_argument("--parts", default="setup,step,eval", help="setup, step, eval (checkpoints come with step)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed window")
    parser.add_argument("--repeats", type=int, default=3, help="timed windows; the best counts")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS of the children (default: inherited)")
    parser.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "lightning_kge_scale"),
                        help="where the synthetic graphs and their cache go (kept between runs)")
    parser.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "scale.json"))
    parser.add_argument("--plot", default=str(REPO / "docs" / "images" / "scale.png"))
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, spec = args.child
        print(json.dumps({"setup": child_setup, "train": child_train}[kind](json.loads(spec))), flush=True)
        return
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.optimizers = args.optimizers.split(",")
    args.parts = set(args.parts.split(","))
    unknown = [o for o in args.optimizers if not (REPO / "conf" / "optimizer" / f"{o}.yaml").is_file()]
    if unknown:
        sys.exit(f"scale: no conf/optimizer option {', '.join(unknown)}")
    results = measure(args)
    report = tables(results)
    print("\n" + report)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    plot(results, Path(args.plot))
    print(f"\nwrote {args.json} and {args.plot}")


if __name__ == "__main__":
    main()
