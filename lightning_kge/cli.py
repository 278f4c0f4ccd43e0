"""KGECLI: Lightning's ``LightningCLI`` for knowledge-graph embedding, with the wiring done.

``LightningCLI(KGEModule, KGEDataModule)`` works as it is (optimizers as ``class_path``/``init_args``,
``--ckpt_path`` for ``fit``, ``validate``, ``test`` and ``predict``), but its config must repeat what
the data already knows. :class:`KGECLI` links it instead:

- the datamodule's sizes go to ``model.model.init_args.num_entities``/``num_relations`` and its
  :class:`~lightning_kge.data.info.GraphInfo` (labels, relation categories) to ``model.graph``, so a
  config names no counts and prediction works by label;
- one ``sampler`` option (any :class:`~lightning_kge.sampling.options.Sampler`, default
  ``SelfAdversarialSampler``) gives the datamodule its corruption and the module its selection, so
  the two halves cannot disagree;
- ``predict`` answers the ``queries`` of the config (a split's queries, or label pairs) and writes
  them by label to ``predictions.tsv`` in the run's log folder;
- ``--ckpt_path`` checks the checkpoint's classes against the allow-list (``trust`` names more
  modules) before LightningCLI builds anything from its hyperparameters.

Needs jsonargparse: ``pip install 'lightning-kge[cli]'``. A ``cli.py`` of your project::

    from lightning_kge import KGECLI

    if __name__ == "__main__":
        KGECLI()

and ``python cli.py fit --config config.yaml``; see ``examples/lightning_cli/``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch.cli import LightningCLI

from lightning_kge.callbacks.answers import AnswerWriter
from lightning_kge.data.info import GraphInfo
from lightning_kge.datamodule import KGEDataModule
from lightning_kge.errors import EXIT_STATUS, UserError
from lightning_kge.loading import read_checkpoint
from lightning_kge.module import KGEModule
from lightning_kge.prediction import entity_id, relation_id
from lightning_kge.sampling.corruption import Corruption
from lightning_kge.sampling.options import Sampler
from lightning_kge.sampling.selection import Selection
from lightning_kge.serialization import check_specs, trusting


@dataclass
class Queries:
    """The questions ``KGECLI predict`` answers (ignored by the other subcommands).

    Attributes:
        split: answer the distinct queries of this split (``train``, ``valid``, ``test``) …
        labels: … or these ``[entity, relation]`` label pairs instead (the head of a tail query, the
            tail of a head query).
        side: ``tail`` (``(entity, relation, ?)``) or ``head`` (``(?, relation, entity)``).
        exclude: leave out the answers known in ``train``, in ``all`` splits, or ``none``.
        k: answers per query.
        out: the TSV file of answers; by default ``predictions.tsv`` in the trainer's log folder.
    """

    split: str = "test"
    labels: list[list[str]] | None = None
    side: Literal["tail", "head"] = "tail"
    exclude: Literal["train", "all", "none"] = "train"
    k: int = 10
    out: str | None = None


def corruption_of(sampler: Sampler) -> Corruption:
    """The datamodule's half of a sampler option."""
    return sampler.corruption()


def selection_of(sampler: Sampler) -> Selection:
    """The module's half of a sampler option."""
    return sampler.selection()


def graph_of(datamodule: KGEDataModule) -> GraphInfo:
    """The datamodule's graph description (its data is read now, once)."""
    datamodule.setup()
    return datamodule.info


class KGECLI(LightningCLI):
    """``LightningCLI`` over :class:`KGEModule` and :class:`KGEDataModule` (or subclasses), linked.

    Args:
        model_class: the module class (a :class:`KGEModule` subclass of yours, say).
        datamodule_class: the datamodule class.
        args, kwargs: as :class:`~lightning.pytorch.cli.LightningCLI`.
    """

    def __init__(self, model_class: type[KGEModule] = KGEModule,
                 datamodule_class: type[KGEDataModule] = KGEDataModule, *args: Any, **kwargs: Any) -> None:
        try:
            super().__init__(model_class, datamodule_class, *args, **kwargs)
        except UserError as error:  # as the Hydra entry points: one line on stderr, exit status 2
            print(error.report(), file=sys.stderr, flush=True)
            raise SystemExit(EXIT_STATUS) from None

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_subclass_arguments(Sampler, "sampler", required=False,
                                      default={"class_path": "lightning_kge.sampling.SelfAdversarialSampler"})
        parser.link_arguments("sampler", "data.corruption", compute_fn=corruption_of, apply_on="instantiate")
        parser.link_arguments("sampler", "model.selection", compute_fn=selection_of, apply_on="instantiate")
        parser.link_arguments("data.num_entities", "model.model.init_args.num_entities", apply_on="instantiate")
        parser.link_arguments("data.num_relations", "model.model.init_args.num_relations", apply_on="instantiate")
        parser.link_arguments("data", "model.graph", compute_fn=graph_of, apply_on="instantiate")
        parser.add_class_arguments(Queries, "queries")
        parser.add_argument("--trust", type=list[str], default=[],
                            help="modules whose classes a --ckpt_path checkpoint may name (beyond lightning_kge's)")

    def _parse_ckpt_path(self) -> None:
        """Check the checkpoint's classes (allow-list, ``trust``) before LightningCLI merges its
        hyperparameters, and leave out the values this CLI links (sizes, selection, graph)."""
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if path and Path(path).is_file():
            checkpoint = read_checkpoint(path, key="ckpt_path")
            with trusting(self.config[subcommand].get("trust") or []):
                check_specs(checkpoint.get("hyper_parameters") or {}, str(path))
        super()._parse_ckpt_path()

    def after_instantiate_classes(self) -> None:
        if self.subcommand != "predict":
            return
        queries: Any = self.config[self.subcommand]["queries"]
        datamodule: KGEDataModule = self.datamodule
        if queries.labels:
            info = graph_of(datamodule)
            sizes = (info.num_entities, info.num_relations)
            pairs = [[entity_id(info, e, sizes[0], "config key queries.labels"),
                      relation_id(info, r, sizes[1], "config key queries.labels")] for e, r in queries.labels]
            datamodule.predict_on(pairs, queries.side, queries.exclude, queries.k)
        else:
            datamodule.predict_on(queries.split, queries.side, queries.exclude, queries.k)
        out = queries.out or str(Path(self.trainer.log_dir or ".") / "predictions.tsv")
        self.trainer.callbacks.append(AnswerWriter(out))
