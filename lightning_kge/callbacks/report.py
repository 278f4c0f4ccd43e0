"""TestReport: the callback that prints the test table and writes ``metrics.json`` once per run."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn

from lightning_kge import atomic
from lightning_kge.data.info import GraphInfo
from lightning_kge.data.statistics import CATEGORIES
from lightning_kge.errors import write_failed
from lightning_kge.escaping import tsv_line
from lightning_kge.metrics.ranking import SIDES, RankingSummary, Scores
from lightning_kge.module import KGEModule


class TestReport(L.Callback):
    """At the end of testing, on global rank zero only: print and write the test metrics.

    A validation run on its own (``Trainer.validate``, as ``evaluate split=valid`` does) is
    reported the same way with its ``val/…`` metrics; validations during training are not.

    Writes ``metrics.json`` (every ``test/…`` value logged, e.g. ``test/mrr``, ``test/hits@10``,
    ``test/head/mrr``, ``test/1-to-N/mrr``, ``test/auc_pr``) and, with ``per_relation``,
    ``per_relation.tsv`` (queries, MRR and Hits@k per relation and side for each ``k`` of
    ``module.hits_at``, with the relation's category), each whole or not at all
    (:mod:`lightning_kge.atomic`: a failed write, such as a full disk, stops with one line and leaves
    the previous file as it was). The table follows ``module.hits_at``. Being a callback, it runs
    inside the processes that test, so it works with every strategy (``ddp`` re-launched ranks and
    ``ddp_spawn`` workers alike).

    Args:
        output_dir: the folder to write to (the Hydra run directory).
        per_relation: also write ``per_relation.tsv``.
    """

    __test__ = False  # not a pytest test class despite its name

    def __init__(self, output_dir: str, per_relation: bool = True) -> None:
        self.output_dir = output_dir
        self.per_relation = per_relation

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.report(trainer, pl_module, "test")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self.report(trainer, pl_module, "val")

    def report(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Print the table of ``stage``'s metrics and write ``metrics.json`` (and ``per_relation.tsv``)."""
        if not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(f"{stage}/")}
        folder = Path(self.output_dir)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise write_failed(error, folder) from None
        if not isinstance(pl_module, KGEModule):
            raise TypeError(f"TestReport needs a KGEModule, got {type(pl_module).__name__}")
        summary = pl_module.rankings.get(stage)
        if self.per_relation and summary is not None and pl_module.graph is not None:
            atomic.write_text(folder / "per_relation.tsv", per_relation_table(summary, pl_module.graph))
        atomic.write_text(folder / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        if summary is not None:
            print(format_table(summary, stage))
        if f"{stage}/auc_pr" in metrics:
            print(f"\n{stage}/auc_pr: {metrics[f'{stage}/auc_pr']:.4f}")
        print(f"metrics written to {folder / 'metrics.json'}")


def per_relation_table(summary: RankingSummary, graph: GraphInfo) -> str:
    """A TSV of the queries, MRR and Hits@k per relation and side, with its category.

    A header line, then one line per relation with test queries; labels are escaped as
    :mod:`lightning_kge.escaping` says (``\\t``, ``\\n``, ``\\\\``, …), so every line is one row.

    Args:
        summary: an evaluation's summary (its ``per_relation`` breakdown and ``hits_at``).
        graph: the relation labels and categories.
    """
    values = summary.per_relation
    metrics = ["mrr", *(f"hits@{k}" for k in summary.hits_at)]
    lines = [tsv_line(["relation", "category", "queries", *(f"{side}_{m}" for m in metrics for side in SIDES)])]
    for r, label in enumerate(graph.relations):
        count = int(values["count"][:, r].sum())
        if count:
            cells = [label, CATEGORIES[graph.relation_categories[r]], str(count)]
            cells += [f"{float(values[m][s, r]):.4f}" for m in metrics for s in (0, 1)]
            lines.append(tsv_line(cells))
    return "".join(lines)


def format_table(summary: RankingSummary, stage: str) -> str:
    """A Markdown table of the headline metrics: both sides, head and tail prediction (and raw rows).

    Its Hits@k columns are those of the summary (``module.hits_at``).

    Example:
        >>> both = Scores(0.5, 3.0, {1: 0.25, 5: 0.75}, 4)
        >>> print(format_table(RankingSummary(both, {"head": both, "tail": both}, {}, {}), "test"))
        | side | mrr | mr | hits@1 | hits@5 |
        |---|---|---|---|---|
        | both | 0.5000 | 3.0 | 0.2500 | 0.7500 |
        | head | 0.5000 | 3.0 | 0.2500 | 0.7500 |
        | tail | 0.5000 | 3.0 | 0.2500 | 0.7500 |
    """
    columns = ["mrr", "mr", *(f"hits@{k}" for k in summary.hits_at)]
    rows = ["| side | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    tables = [("", summary)] + ([("raw ", summary.raw)] if summary.raw is not None else [])
    for prefix, ranking in tables:
        for side, scores in (("both", ranking.both), *ranking.sides.items()):
            rows.append(f"| {prefix}{side} | " + " | ".join(_row(scores, columns)) + " |")
    return "\n".join(rows)


def _row(scores: Scores, columns: list[str]) -> list[str]:
    values = scores.values()
    return [f"{values[c]:.1f}" if c == "mr" else f"{values[c]:.4f}" for c in columns]
