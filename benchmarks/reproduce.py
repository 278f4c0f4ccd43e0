"""Run paper experiments through the real entry point and tabulate ours against the paper.

    python benchmarks/reproduce.py EXPERIMENT... [--steps N] [--out DIR] [--table FILE] [overrides...]

Each ``EXPERIMENT`` (a name in ``conf/experiment/``) runs as
``python -m lightning_kge.train experiment=EXPERIMENT hydra.run.dir=OUT/EXPERIMENT [overrides]``;
``--steps N`` stops it after its first ``N`` steps: the learning-rate schedule keeps the published
length, so a shortened run is the start of the full one (add ``module.lr_scheduler.max_steps=N``
to squeeze the whole schedule into ``N`` steps instead). The run's
``metrics.json``, its CSV log and a ``reproduce.json`` (command, wall time, device) stay in
``OUT/EXPERIMENT``; a summary of each run (command, wall time, device, test metrics, validation
curve) is kept in ``--records`` (``benchmarks/results/runs/EXPERIMENT.json``, committed with the
code). The Markdown table covers every record there (so experiments run one command at a time, on
different machines, add up), with validation curves, and is written to ``--table`` and printed.
``--report`` rebuilds the table from the records without running anything.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "outputs" / "reproduce"
DEFAULT_TABLE = REPO / "benchmarks" / "results" / "reproduce.md"
DEFAULT_RECORDS = REPO / "benchmarks" / "results" / "runs"

RANKING = ("mrr", "mr", "hits@1", "hits@3", "hits@10")
COLUMNS = (*RANKING, "auc_pr")
HEADERS = ("MRR", "MR", "H@1", "H@3", "H@10", "AUC-PR")

# RotatE paper (Sun et al., ICLR 2019), filtered, as listed in shared/data/README.md.
PAPER: dict[str, dict[str, float]] = {
    "rotate_fb15k237": {"mrr": 0.338, "mr": 177, "hits@1": 0.241, "hits@3": 0.375, "hits@10": 0.533},
    "rotate_wn18rr": {"mrr": 0.476, "mr": 3340, "hits@1": 0.428, "hits@3": 0.492, "hits@10": 0.571},
    "rotate_countries_s1": {"auc_pr": 1.00},
    "rotate_countries_s2": {"auc_pr": 1.00},
    "rotate_countries_s3": {"auc_pr": 0.95},
}
TARGETS: dict[str, tuple[str, dict[str, float], str]] = {
    "rotate_wikidata5m": ("target (GraphVite)", {"mrr": 0.290, "mr": 89459, "hits@1": 0.234, "hits@3": 0.322,
                                                 "hits@10": 0.390}, "| GraphVite's own schedule | 2h06m | 4× V100 |"),
}
"""Published results of experiments not in the paper (label, metrics, the row's last cells), shown as target
rows whether or not we have a run of them (GraphVite's docs/source/benchmark.rst for Wikidata5M)."""
ORDER = (
    *PAPER,
    "rotate_nations",
    "rotate_kinships",
    "rotate_umls",
)


@dataclass
class Run:
    """One finished (or failed) experiment run: its record, test metrics and validation curve."""

    name: str
    record: dict
    metrics: dict[str, float]
    curve: list[dict[str, float]]

    @property
    def steps(self) -> int:
        return int(self.record["steps"])

    @property
    def paper_steps(self) -> int:
        return int(self.record["paper_steps"])

    def to_json(self) -> str:
        return json.dumps({**self.record, "metrics": self.metrics, "curve": self.curve}, indent=2) + "\n"

    @classmethod
    def from_json(cls, path: Path) -> Run:
        record = json.loads(path.read_text())
        metrics, curve = record.pop("metrics"), record.pop("curve")
        return cls(record["experiment"], record, metrics, curve)


# --- running ------------------------------------------------------------------------------------
def published(experiment: str):
    """The experiment's composed config, without any override."""
    from hydra import compose, initialize_config_dir

    from lightning_kge.configs import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=[f"experiment={experiment}", "output_dir=unused"])


def shortening(cfg, steps: int | None) -> list[str]:
    """Overrides that stop a run after ``steps`` updates of its unchanged schedule."""
    if steps is None:
        return []
    overrides = [f"trainer.max_steps={steps}"]
    scheduler = cfg.module.lr_scheduler
    if scheduler is not None and "max_steps" in scheduler:
        overrides.append(f"module.lr_scheduler.max_steps={cfg.trainer.max_steps}")
    return overrides


def device_name() -> str:
    """The GPU the runs use if there is one, otherwise the CPU model and its core count."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"CPU {model} ({os.cpu_count()} cores)"


def run_experiment(
    experiment: str, out: Path, steps: int | None, overrides: list[str], env: dict | None = None
) -> Path:
    """Run one experiment through ``python -m lightning_kge.train``; returns its folder."""
    folder = out.resolve() / experiment
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    cfg = published(experiment)
    paper_steps = int(cfg.trainer.max_steps)
    # Later overrides win, so the caller's come last.
    extra = [*shortening(cfg, steps), "trainer.enable_progress_bar=false"]
    command = [
        sys.executable, "-m", "lightning_kge.train",
        f"experiment={experiment}", f"hydra.run.dir={folder}", *extra, *overrides,
    ]
    print(f"[reproduce] {experiment}: {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    with open(folder / "train.log", "w") as log:
        result = subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    record = {
        "experiment": experiment,
        "command": [arg.replace(f"{REPO}/", "") for arg in command[1:]],  # no machine's paths
        "returncode": result.returncode,
        "wall_s": wall,
        "device": device_name(),
        "steps": steps_run(folder, steps if steps is not None else paper_steps),
        "paper_steps": paper_steps,
        "overrides": [*extra, *overrides],
    }
    (folder / "reproduce.json").write_text(json.dumps(record, indent=2) + "\n")
    status = "done" if result.returncode == 0 else f"FAILED (exit {result.returncode}, see {folder / 'train.log'})"
    print(f"[reproduce] {experiment}: {status} in {format_duration(wall)}", flush=True)
    return folder


def steps_run(folder: Path, planned: int) -> int:
    """The global step of the run's final checkpoint (``planned`` if there is none)."""
    last = folder / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return planned
    import torch

    checkpoint = torch.load(last, map_location="cpu", mmap=True, weights_only=True)
    return int(checkpoint["global_step"])


# --- reading back ---------------------------------------------------------------------------------
def read_curve(folder: Path) -> list[dict[str, float]]:
    """Rows ``{"step": s, "val/mrr": …, …}`` of every validation in the run's CSV log.

    ``s`` counts the updates made before that validation: Lightning validates inside the
    step loop before counting the current batch, so its logged step is one less.
    """
    rows: list[dict[str, float]] = []
    for path in sorted(folder.glob("csv/**/metrics.csv")):
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                values = {k: float(v) for k, v in row.items() if k.startswith("val/") and v != ""}
                if values:
                    rows.append({"step": float(row["step"]) + 1, **values})
    return rows


def read_run(folder: Path) -> Run | None:
    """The run recorded in an experiment's output folder, or ``None`` if it holds none."""
    record_path = folder / "reproduce.json"
    if not record_path.is_file():
        return None
    record = json.loads(record_path.read_text())
    metrics_path = folder / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    return Run(record["experiment"], record, metrics, read_curve(folder))


def collect(records: Path) -> list[Run]:
    """Every run recorded in ``records``, in the table's order."""
    runs = [Run.from_json(path) for path in sorted(records.glob("*.json"))]
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(runs, key=lambda run: (rank.get(run.name, len(rank)), run.name))


# --- the table ------------------------------------------------------------------------------------
def format_value(value: float | None, column: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if column == "mr":
        return f"{value:.1f}"
    return f"{value:.3f}"


def format_duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def format_steps(run: Run) -> str:
    text = f"{run.steps:,} of {run.paper_steps:,}"
    return text + " (shortened)" if run.steps < run.paper_steps else text


def table(runs: list[Run]) -> str:
    """The Markdown report: ours vs paper, then the overrides and validation curves of each run."""
    head = ["experiment", "", *HEADERS, "steps: run of configured", "wall time", "device"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in runs:
        if run.record["returncode"] != 0:
            ours = ["failed"] + ["-"] * (len(COLUMNS) - 1)
        else:
            ours = [format_value(run.metrics.get(f"test/{c}"), c) for c in COLUMNS]
        lines.append(
            f"| {run.name} | ours | " + " | ".join(ours)
            + f" | {format_steps(run)} | {format_duration(run.record['wall_s'])} | {run.record['device']} |"
        )
        if run.name in PAPER:
            paper = [format_value(PAPER[run.name].get(c), c) for c in COLUMNS]
            lines.append("| | paper | " + " | ".join(paper) + f" | {run.paper_steps:,} | | |")
    ran = {run.name for run in runs}
    for name, (label, metrics, tail) in TARGETS.items():
        cells = [format_value(metrics.get(c), c) for c in COLUMNS]
        lines.append(f"| {name if name not in ran else ''} | {label} | " + " | ".join(cells) + f" {tail}")
    lines += [
        "",
        "Test metrics are filtered, averaged over head and tail prediction; AUC-PR is over the",
        "candidate regions of the countries datasets. Paper: Sun et al., ICLR 2019. The configured",
        "steps of a paper experiment are the paper's; a shortened run is the first steps of the",
        "full run (same learning-rate schedule, stopped early), so it is not a final result.",
        "Wall time covers the whole command (start-up, training, validation, test).",
        "",
    ]
    for run in runs:
        lines.append(f"### {run.name}")
        lines.append("")
        lines.append(f"`python {' '.join(run.record['command'])}`")
        lines.append("")
        if "note" in run.record:
            lines += [run.record["note"], ""]
        if run.curve:
            keys = [k for k in ("val/mrr", "val/hits@10", "val/auc_pr") if any(k in row for row in run.curve)]
            lines.append("| step | " + " | ".join(keys) + " |")
            lines.append("|" + "---|" * (len(keys) + 1))
            for row in run.curve:
                cells = [format_value(row.get(k), k.split("/", 1)[1]) for k in keys]
                lines.append(f"| {int(row['step']):,} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("items", nargs="*", metavar="EXPERIMENT|override",
                        help="experiment names; arguments with '=' are Hydra overrides for every run")
    parser.add_argument("--steps", type=int, default=None, help="shorten each run to N steps")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder of the runs")
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE, help="Markdown file to write")
    parser.add_argument("--records", type=Path, default=DEFAULT_RECORDS,
                        help="folder of the run summaries the table is built from")
    parser.add_argument("--report", action="store_true", help="only rebuild the table from --records")
    args = parser.parse_intermixed_args(argv)
    experiments = [item for item in args.items if "=" not in item]
    overrides = [item for item in args.items if "=" in item]
    if not experiments and not args.report:
        parser.error("name at least one experiment (or --report)")
    failed = 0
    for experiment in experiments:
        run = read_run(run_experiment(experiment, args.out, args.steps, overrides))
        args.records.mkdir(parents=True, exist_ok=True)
        (args.records / f"{experiment}.json").write_text(run.to_json())
        failed += run.record["returncode"] != 0
    runs = collect(args.records) if args.records.is_dir() else []
    report = table(runs) if runs else "no runs\n"
    args.table.parent.mkdir(parents=True, exist_ok=True)
    args.table.write_text(report)
    print(report)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
