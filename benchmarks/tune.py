"""Summarise a Hydra sweep by its last validation metrics, best first (validation set only).

    python -m lightning_kge.train -m experiment=rotate_kinships model.dim=100,200 \\
        trainer.limit_test_batches=0 hydra.sweep.dir=outputs/tune/kinships
    python benchmarks/tune.py outputs/tune/kinships [--append benchmarks/results/tuning.md]

Each job of the sweep folder is read from its ``.hydra/overrides.yaml`` and CSV log; the table
has one row per job with the swept values and the final ``val/mrr``, ``val/hits@1``,
``val/hits@10`` (``--curve``: one row per validation). ``--append`` adds the command and the
table to a Markdown record.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omegaconf import OmegaConf

from reproduce import format_value, read_curve

METRICS = ("val/mrr", "val/hits@1", "val/hits@10")


def jobs(sweep: Path, curve: bool = False) -> list[tuple[dict[str, str], dict[str, float]]]:
    """``(overrides, validation row)`` of every job in the sweep folder that validated: its last
    validation, or with ``curve`` every one."""
    found = []
    for folder in sorted(p for p in sweep.iterdir() if (p / ".hydra" / "overrides.yaml").is_file()):
        overrides = dict(o.split("=", 1) for o in OmegaConf.load(folder / ".hydra" / "overrides.yaml"))
        rows = read_curve(folder)
        found += [(overrides, row) for row in (rows if curve else rows[-1:])]
    return found


def summary(sweep: Path, curve: bool = False) -> str:
    """The sweep's command and a Markdown table of its jobs, best validation MRR first (with
    ``curve``: every validation of every job, in order)."""
    results = jobs(sweep, curve)
    if not results:
        return f"no validated jobs in {sweep}\n"
    swept = sorted({k for o, _ in results for k in o if len({r[0].get(k) for r in results}) > 1})
    task = OmegaConf.load(sweep / "multirun.yaml").hydra.overrides.task if (sweep / "multirun.yaml").is_file() else []
    lines = [f"`python -m lightning_kge.train -m {' '.join(task)}`", ""]
    lines.append("| " + " | ".join([*swept, "step", *METRICS]) + " |")
    lines.append("|" + "---|" * (len(swept) + 1 + len(METRICS)))
    ordered = results if curve else sorted(results, key=lambda item: -item[1].get("val/mrr", 0.0))
    for overrides, row in ordered:
        cells = [overrides.get(k, "") for k in swept]
        cells += [f"{int(row['step'])}", *(format_value(row.get(m), m) for m in METRICS)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path, help="the sweep folder (hydra.sweep.dir)")
    parser.add_argument("--append", type=Path, default=None, help="Markdown file to add the summary to")
    parser.add_argument("--title", default=None, help="heading above the summary in --append")
    parser.add_argument("--curve", action="store_true", help="every validation, not only the last")
    args = parser.parse_args(argv)
    text = summary(args.sweep, args.curve)
    print(text)
    if args.append is not None:
        heading = f"## {args.title or args.sweep.name}\n\n"
        separator = "\n" if args.append.is_file() and args.append.stat().st_size else ""
        with open(args.append, "a") as handle:
            handle.write(separator + heading + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
