"""Hydra entry point: ``python -m lightning_kge.train model=rotate sampler=self_adversarial``.

Only this module (and :mod:`lightning_kge.evaluate`) touches Hydra: :func:`train` builds the
plain objects from a composed config and runs Lightning; tests call it directly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor

from lightning_kge.datamodule import KGEDataModule
from lightning_kge.metrics.categories import CATEGORIES
from lightning_kge.module import KGEModule

HEADLINE = ("mrr", "mr", "hits@1", "hits@3", "hits@10")


def config_dir() -> Path:
    """The ``conf/`` folder: inside the installed package, or at the top of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"no conf/config.yaml in {here} or {here.parent}")


def build(cfg: DictConfig) -> tuple[KGEModule, KGEDataModule]:
    """Instantiate the datamodule and the module (with its model, sampler and optimizer)."""
    sampler = instantiate(cfg.sampler, _convert_="all")
    datamodule = instantiate(cfg.data, sampler=sampler, _convert_="all")
    datamodule.prepare_data()
    datamodule.setup()
    model = instantiate(
        cfg.model,
        num_entities=datamodule.num_entities,
        num_relations=datamodule.num_relations,
        _convert_="all",
    )
    module = instantiate(
        cfg.module,
        model=model,
        sampler=sampler,
        optimizer=instantiate(cfg.optimizer, _convert_="all"),
        _convert_="all",
    )
    return module, datamodule


def train(cfg: DictConfig) -> dict[str, float]:
    """Train, test, and write ``metrics.json`` to ``cfg.output_dir``; returns the test metrics."""
    L.seed_everything(cfg.seed, workers=True)
    module, datamodule = build(cfg)
    trainer: L.Trainer = instantiate(cfg.trainer, _convert_="all")
    trainer.fit(module, datamodule=datamodule)
    return test_and_report(trainer, module, datamodule, Path(cfg.output_dir), cfg.per_relation)


def test_and_report(
    trainer: L.Trainer,
    module: KGEModule,
    datamodule: KGEDataModule,
    output_dir: Path,
    per_relation: bool = True,
) -> dict[str, float]:
    """Run the test loop; on rank zero print the headline table and write ``metrics.json``.

    With ``per_relation``, ``per_relation.tsv`` holds MRR and Hits@10 of each relation.
    """
    results = trainer.test(module, datamodule=datamodule, verbose=False)
    metrics = {k: float(v) for k, v in results[0].items()} if results else {}
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        if per_relation and "test" in module.per_relation:
            table = per_relation_table(module.per_relation["test"], datamodule)
            (output_dir / "per_relation.tsv").write_text(table)
        print(format_table(metrics, "test"))
        print(f"metrics written to {output_dir / 'metrics.json'}")
    return metrics


def per_relation_table(values: dict[str, Tensor], datamodule: KGEDataModule) -> str:
    """A TSV of test queries, MRR and Hits@10 per relation and side, with its category."""
    lines = ["relation\tcategory\tqueries\thead_mrr\ttail_mrr\thead_hits@10\ttail_hits@10"]
    categories = datamodule.relation_categories
    for label, r in sorted(datamodule.relation_to_id.items(), key=lambda item: item[1]):
        count = int(values["count"][:, r].sum())
        if count:
            cells = [label, CATEGORIES[int(categories[r])], str(count)]
            cells += [f"{float(values[m][s, r]):.4f}" for m in ("mrr", "hits@10") for s in (0, 1)]
            lines.append("\t".join(cells))
    return "\n".join(lines) + "\n"


def format_table(metrics: dict[str, float], stage: str) -> str:
    """A Markdown table of the headline metrics: both sides, head and tail prediction."""
    rows = ["| side | " + " | ".join(HEADLINE) + " |", "|---" * (len(HEADLINE) + 1) + "|"]
    for side, prefix in (("both", f"{stage}/"), ("head", f"{stage}/head/"), ("tail", f"{stage}/tail/")):
        cells = [_format(metrics.get(prefix + name), name) for name in HEADLINE]
        rows.append(f"| {side} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _format(value: float | None, name: str) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if name == "mr" else f"{value:.4f}"


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def main(cfg: DictConfig) -> Any:
    """Command-line entry point (Hydra)."""
    return train(cfg)


if __name__ == "__main__":
    main()
