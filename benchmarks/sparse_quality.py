"""Test MRR of the tuned experiments with dense Adam and with the sparse optimizers, at the same budget.

    python benchmarks/sparse_quality.py                                   # nations, kinships, umls; adam and sparse_adam
    python benchmarks/sparse_quality.py rotate_umls --variants "sparse_adam lr 0.005=optimizer=sparse_adam,optimizer.lr=0.005"
    python benchmarks/sparse_quality.py --report                          # only print the table of the records

Each run is ``python -m lightning_kge.train experiment=EXPERIMENT <variant's overrides>
hydra.run.dir=OUT/EXPERIMENT/LABEL`` (the experiment's steps, schedule and every other setting
unchanged), run one after another. A variant is ``LABEL=OVERRIDE,OVERRIDE…``; the default variants
are ``adam=optimizer=adam`` and ``sparse_adam=optimizer=sparse_adam``. Each finished run's test
metrics, wall time and command are kept in ``--records`` (a JSON file, committed with the code;
runs made by separate commands add up), and the table of every record, with each variant's
difference from ``adam``, is written to ``--table`` and printed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
EXPERIMENTS = ("rotate_nations", "rotate_kinships", "rotate_umls")
VARIANTS = ("adam=optimizer=adam", "sparse_adam=optimizer=sparse_adam")
KEYS = ("test/mrr", "test/hits@1", "test/hits@10")


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``"LABEL=a=1,b=2"`` -> ``("LABEL", ["a=1", "b=2"])``.

    Example:
        >>> parse_variant("sparse_adam=optimizer=sparse_adam,optimizer.lr=0.005")
        ('sparse_adam', ['optimizer=sparse_adam', 'optimizer.lr=0.005'])
    """
    label, _, overrides = text.partition("=")
    return label, [o for o in overrides.split(",") if o]


def run(experiment: str, label: str, overrides: list[str], out: Path) -> dict:
    folder = out / experiment / label.replace(" ", "_")
    command = [sys.executable, "-m", "lightning_kge.train", f"experiment={experiment}", *overrides,
               "trainer.enable_progress_bar=false", f"hydra.run.dir={folder}"]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"sparse_quality: {experiment} {label} failed:\n{result.stderr[-3000:]}")
    metrics = json.loads((folder / "metrics.json").read_text())
    shown = " ".join(["python -m lightning_kge.train", f"experiment={experiment}", *overrides])
    return {"experiment": experiment, "variant": label, "command": shown, "wall_s": time.perf_counter() - start,
            **{k: metrics[k] for k in KEYS}}


def table(records: list[dict]) -> str:
    lines = ["| experiment | variant | test MRR | vs adam | H@1 | H@10 | wall |", "|---|---|---:|---:|---:|---:|---:|"]
    dense = {r["experiment"]: r["test/mrr"] for r in records if r["variant"] == "adam"}
    for r in sorted(records, key=lambda r: (EXPERIMENTS.index(r["experiment"]) if r["experiment"] in EXPERIMENTS
                                            else 99, r["experiment"], r["variant"] != "adam", r["variant"])):
        difference = "-" if r["experiment"] not in dense or r["variant"] == "adam" else \
            f"{r['test/mrr'] - dense[r['experiment']]:+.3f}"
        lines.append(f"| {r['experiment']} | {r['variant']} | {r['test/mrr']:.3f} | {difference} | "
                     f"{r['test/hits@1']:.3f} | {r['test/hits@10']:.3f} | {r['wall_s']:.0f} s |")
    commands = sorted({f"`{r['command']}`" for r in records})
    return "\n".join(lines) + "\n\nCommands:\n" + "\n".join(f"- {c}" for c in commands) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiments", nargs="*", default=list(EXPERIMENTS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), help="LABEL=OVERRIDE,OVERRIDE…")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "sparse_quality")
    parser.add_argument("--records", type=Path, default=RESULTS / "sparse_quality.json")
    parser.add_argument("--table", type=Path, default=RESULTS / "sparse_quality.md")
    parser.add_argument("--report", action="store_true", help="only rebuild the table from --records")
    args = parser.parse_args()
    records = json.loads(args.records.read_text()) if args.records.is_file() else []
    if not args.report:
        for experiment in args.experiments:
            for label, overrides in map(parse_variant, args.variants):
                record = run(experiment, label, overrides, args.out)
                print(f"{experiment} {label}: test MRR {record['test/mrr']:.4f} in {record['wall_s']:.0f} s",
                      file=sys.stderr)
                records = [r for r in records if (r["experiment"], r["variant"]) != (experiment, label)] + [record]
                args.records.parent.mkdir(parents=True, exist_ok=True)
                args.records.write_text(json.dumps(records, indent=1) + "\n")
    text = table(records)
    args.table.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
