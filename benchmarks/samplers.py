"""Every ``sampler=`` option on equal footing: same settings, same steps, same seeds, same wall-clock budget.

    flock /tmp/kge-cpu.lock python benchmarks/samplers.py                          # everything (long)
    python benchmarks/samplers.py --sets kinships --seeds 0 --steps 200            # a smoke run
    python benchmarks/samplers.py --report                                         # table and plots only

Each run is ``python -m lightning_kge.train experiment=rotate_<set> sampler=<option> seed=<seed>``
with the experiment's model, batch, ``k``, learning rate and schedule (squeezed into ``--steps``
steps), validating five times; only the sampler differs:

* ``uniform``, ``bernoulli`` and ``cached`` weigh negatives uniformly (``sampler.temperature=0``;
  the experiments set the paper's ``α``, which would turn on self-adversarial weights);
* ``self_adversarial`` keeps the experiment's ``α``; ``self_adversarial_sampled`` draws with it
  from a pool of ``2k`` (``sampler.pool_size``);
* ``cached`` keeps 50 entities per query, refreshed from 50 fresh candidates each step.

Sets: kinships and umls (bundled), countries_S1 (AUC-PR over the regions; ``experiment=rotate_countries_s1``
with ``--countries-lr``, as its published rate needs 40,000 steps), and a wn18rr prefix
(``experiment=rotate_wn18rr``, the paper's setting, ``--wn18rr-steps`` steps, validation on the
first ``--wn18rr-valid`` queries, the full test split at the end). ``countries_S1`` and
``wn18rr`` come from ``--data`` (default ``../shared/data``).

A run's record (test metrics, validation timeline against steps and training seconds, steps per
second, peak memory) goes to ``benchmarks/results/samplers.json`` (replacing an older record of
the same set, option and seed). ``--report`` (also after the runs) writes the table to
``benchmarks/results/samplers.md`` and the plots, validation metric against steps and against
training seconds (mean over seeds, the band from the lowest to the highest seed), to
``docs/images/samplers_<set>.png``. The table gives, per option, the test metric (mean ± standard
deviation over seeds), the validation metric reached within the same training-time budget (the
training seconds of the fastest option: the last validation at or before it), steps per second and
peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from common import REPO, SHARED_DATA

RECORDS = REPO / "benchmarks" / "results" / "samplers.json"
TABLE = REPO / "benchmarks" / "results" / "samplers.md"
IMAGES = REPO / "docs" / "images"
OUT = REPO / "outputs" / "samplers"

STRATEGIES = ("uniform", "self_adversarial", "bernoulli", "self_adversarial_sampled", "cached")
SETS = ("kinships", "umls", "countries_s1", "wn18rr")
FOLDERS = {"countries_s1": "countries_S1", "wn18rr": "wn18rr"}
"""Sets read from ``--data``; the others are bundled."""


def negatives(experiment: str) -> int:
    """``k`` of an experiment config."""
    return int(OmegaConf.load(REPO / "conf" / "experiment" / f"{experiment}.yaml").sampler.num_negatives)


def overrides(name: str, strategy: str, seed: int, args: argparse.Namespace) -> list[str]:
    """The command-line overrides of one run."""
    experiment = f"rotate_{name}"
    steps = args.wn18rr_steps if name == "wn18rr" else args.steps
    out = [f"experiment={experiment}", f"sampler={strategy}", f"seed={seed}", f"trainer.max_steps={steps}",
           f"trainer.val_check_interval={max(1, steps // 5)}", "trainer.check_val_every_n_epoch=null",
           "trainer.enable_progress_bar=false", "callbacks.checkpoint=null", f"trainer.accelerator={args.accelerator}"]
    if strategy in ("uniform", "bernoulli", "cached"):
        out.append("sampler.temperature=0.0")
    if strategy == "self_adversarial_sampled":
        out.append(f"sampler.pool_size={2 * negatives(experiment)}")
    if name in FOLDERS:
        out += ["data.name=null", f"data.path={Path(args.data) / FOLDERS[name]}"]
    if name == "countries_s1":
        out.append(f"optimizer.lr={args.countries_lr}")
    if name == "wn18rr":
        out.append(f"trainer.limit_val_batches={max(1, args.wn18rr_valid // 8)}")
    return out


def run(name: str, strategy: str, seed: int, args: argparse.Namespace) -> dict:
    """Train one run through the entry point; its record."""
    folder = OUT / name / strategy / f"seed{seed}"
    timeline = folder / "timeline.json"
    command = [sys.executable, "-m", "lightning_kge.train", *overrides(name, strategy, seed, args),
               f"hydra.run.dir={folder}", "+callbacks.timeline._target_=timeline.Timeline",
               f"+callbacks.timeline.path={timeline}"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "benchmarks"), os.environ.get("PYTHONPATH")])))
    shutil.rmtree(folder, ignore_errors=True)  # a run of the same set, option and seed before
    started = time.time()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"samplers: {name} {strategy} seed {seed} failed:\n{result.stderr[-3000:]}")
    record = json.loads(timeline.read_text())
    record.update(set=name, strategy=strategy, seed=seed, wall_seconds=time.time() - started,
                  test=json.loads((folder / "metrics.json").read_text()),
                  command="python -m lightning_kge.train " + " ".join(command[3:-3]))
    return record


def load_records() -> list[dict]:
    return json.loads(RECORDS.read_text()) if RECORDS.is_file() else []


def save_record(record: dict) -> None:
    key = (record["set"], record["strategy"], record["seed"])
    records = [r for r in load_records() if (r["set"], r["strategy"], r["seed"]) != key] + [record]
    RECORDS.write_text(json.dumps(records, indent=1) + "\n")


# --- report ----------------------------------------------------------------------------------------


def metric_of(name: str) -> tuple[str, str]:
    """The test metric key and its column title."""
    return ("test/auc_pr", "test AUC-PR") if name == "countries_s1" else ("test/mrr", "test MRR")


def value_within(record: dict, seconds: float) -> float | None:
    """The validation metric of the last validation at or before ``seconds`` of training."""
    values = [p["value"] for p in record["points"] if p["seconds"] <= seconds + 1e-9]
    return values[-1] if values else None


def mean_sd(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def table(records: list[dict]) -> str:
    """The Markdown report: one table per set, options in :data:`STRATEGIES` order."""
    lines = ["# Sampling strategies on equal footing", "",
             "Written by `python benchmarks/samplers.py --report` from `benchmarks/results/samplers.json`;",
             "each row's runs are listed there with their full commands. ± is the standard deviation over seeds.", ""]
    for name in SETS:
        rows = [r for r in records if r["set"] == name]
        if not rows:
            continue
        key, title = metric_of(name)
        by_strategy = {s: [r for r in rows if r["strategy"] == s] for s in STRATEGIES}
        by_strategy = {s: rs for s, rs in by_strategy.items() if rs}
        budget = min(statistics.mean(r["train_seconds"] for r in rs) for rs in by_strategy.values())
        first = next(iter(by_strategy.values()))[0]
        metric = first["points"][-1]["metric"] if first["points"] else "val"
        seeds = sorted({r["seed"] for r in rows})
        lines += [f"## {name}", "",
                  f"{first['steps']} steps, seeds {', '.join(map(str, seeds))}, on {first['device']}; "
                  f"training-time budget {budget:.0f} s (the fastest option's training time).", "",
                  f"| sampler | {title} | {metric} within {budget:.0f} s | steps/s | peak memory (GiB) | runs |",
                  "|---|---:|---:|---:|---:|---:|"]
        for strategy, rs in by_strategy.items():
            within = [v for v in (value_within(r, budget) for r in rs) if v is not None]
            rate = statistics.mean(r["steps"] / r["train_seconds"] for r in rs)
            peak = max(r["peak_gib"] for r in rs)
            lines.append(f"| `{strategy}` | {mean_sd([r['test'][key] for r in rs])} | {mean_sd(within)} | "
                         f"{rate:.1f} | {peak:.2f} | {len(rs)} |")
        lines += ["", f"![{name}](../../docs/images/samplers_{name}.png)", ""]
    return "\n".join(lines)


def plot(records: list[dict], name: str, path: Path) -> None:
    """Validation metric against steps and against training seconds, one line per option."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in records if r["set"] == name]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for strategy in STRATEGIES:
        runs = [r for r in rows if r["strategy"] == strategy and r["points"]]
        if not runs:
            continue
        count = min(len(r["points"]) for r in runs)
        values = [[r["points"][i]["value"] for r in runs] for i in range(count)]
        mean = [statistics.mean(v) for v in values]
        low, high = [min(v) for v in values], [max(v) for v in values]
        for axis, field in zip(axes, ("step", "seconds")):
            x = [statistics.mean(r["points"][i][field] for r in runs) for i in range(count)]
            (line,) = axis.plot(x, mean, marker="o", label=strategy)
            axis.fill_between(x, low, high, color=line.get_color(), alpha=0.15)
    metric = rows[0]["points"][-1]["metric"] if rows and rows[0]["points"] else "validation metric"
    axes[0].set_xlabel("training steps")
    axes[1].set_xlabel("training seconds (validation excluded)")
    axes[0].set_ylabel(metric)
    axes[0].legend()
    seeds = len({r["seed"] for r in rows})
    figure.suptitle(f"{name}: {metric} by sampler (mean of {seeds} seed{'s' if seeds > 1 else ''}, band: min–max)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)


def report() -> None:
    records = load_records()
    if not records:
        sys.exit(f"samplers: no records in {RECORDS}; run the benchmark first")
    text = table(records)
    TABLE.write_text(text + "\n")
    for name in sorted({r["set"] for r in records}):
        plot(records, name, IMAGES / f"samplers_{name}.png")
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds of the small sets")
    parser.add_argument("--wn18rr-seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", type=int, default=600, help="steps on kinships, umls and countries_S1")
    parser.add_argument("--wn18rr-steps", type=int, default=3000)
    parser.add_argument("--wn18rr-valid", type=int, default=400, help="validation queries of wn18rr")
    parser.add_argument("--countries-lr", type=float, default=0.001)
    parser.add_argument("--data", default=str(SHARED_DATA), help="folder holding countries_S1/ and wn18rr/")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--report", action="store_true", help="only write the table and plots from the records")
    args = parser.parse_args()
    if not args.report:
        for name in args.sets:
            if name in FOLDERS and not (Path(args.data) / FOLDERS[name] / "train.txt").is_file():
                sys.exit(f"samplers: no {name} data at {Path(args.data) / FOLDERS[name]}; pass --data")
            for seed in args.wn18rr_seeds if name == "wn18rr" else args.seeds:
                for strategy in args.strategies:
                    record = run(name, strategy, seed, args)
                    save_record(record)
                    key, _ = metric_of(name)
                    print(f"{name} {strategy} seed {seed}: {key} {record['test'].get(key, float('nan')):.3f}, "
                          f"{record['steps'] / record['train_seconds']:.1f} steps/s", flush=True)
    report()


if __name__ == "__main__":
    main()
