"""Ask a trained model: ``python -m lightning_kge.predict ckpt=PATH head=LABEL relation=LABEL``.

Three kinds of question, each printed as a tab-separated table on stdout:

- ``head=H relation=R``: the best ``k`` tails of ``(H, R, ?)``;
- ``relation=R tail=T``: the best ``k`` heads of ``(?, R, T)``;
- ``triples=FILE``: the score of every ``head<TAB>relation<TAB>tail`` line of ``FILE``.

``filter`` leaves out the answers already known in the training split (``train``, the default),
in every split (``all``) or none (``none``); the known triples come from the data the
checkpoint was trained on (or ``data=NAME``). The ``known`` column says in which split an
answer is a known triple. The checkpoint holds the labels (see :mod:`lightning_kge.checkpoints`),
so labels are typed as in the training files; an unknown one gets the closest known labels.
Labels that Hydra's grammar reads specially (``#rel``, ``NULL``, ``a=b``, ``a,b``, ``café``) are
quoted: ``relation="'#rel'"`` (:mod:`lightning_kge.overrides`; a misread one is refused with a
message showing the quoting). Labels in the printed tables are escaped as
:mod:`lightning_kge.escaping` says, so every line is one row.
"""

from __future__ import annotations

from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from lightning_kge import prediction
from lightning_kge.checkpoints import load_datamodule, load_module
from lightning_kge.data.graph import SPLITS
from lightning_kge.data.index import TripleIndex
from lightning_kge.datamodule import KGEDataModule
from lightning_kge.errors import UserError, reports_user_errors
from lightning_kge.escaping import escape, tsv_line
from lightning_kge.module import KGEModule
from lightning_kge.configs import config_dir
from lightning_kge.overrides import checked_command_line, label_value

USAGE = "give head=LABEL relation=LABEL (tails), relation=LABEL tail=LABEL (heads) or triples=FILE (scores)"

LABEL_KEYS = ("head", "relation", "tail")
"""The keys whose values are labels: taken as typed (:mod:`lightning_kge.overrides`)."""


def predict(cfg: DictConfig) -> list[dict[str, Any]]:
    """Answer the question of ``cfg`` (see the module docstring); print and return the rows."""
    given = {key: cfg_text(cfg, key) for key in LABEL_KEYS}
    given["triples"] = None if cfg.get("triples") is None else str(cfg.triples)
    module = load_module(cfg.ckpt, cfg.get("trust")).to(cfg.device).eval()
    if given["triples"] is not None:
        if any(given[key] is not None for key in ("head", "relation", "tail")):
            raise UserError("triples=FILE cannot be combined with head, relation or tail", "config key triples", USAGE)
        rows = score_file(module, given["triples"])
        print_rows(rows, ["head", "relation", "tail", "score"])
        return rows
    side = question_side(given)
    if cfg.filter not in prediction.FILTERS:
        raise UserError(f"filter={cfg.filter!r} is not allowed", "config key filter", "set filter to train, all or none")
    if not isinstance(cfg.k, int) or cfg.k < 1:
        raise UserError(f"k={cfg.k!r} is not allowed", "config key k", "set k to an integer ≥ 1")
    datamodule = None if cfg.filter == "none" else load_datamodule(cfg.ckpt, module, cfg.get("data"), cfg.get("trust"))
    counts = (module.model.num_entities, module.model.num_relations)
    anchor = "head" if side == "tail" else "tail"
    entity = prediction.entity_id(module.graph, given[anchor], counts[0], f"config key {anchor}")
    relation = prediction.relation_id(module.graph, given["relation"], counts[1], "config key relation")
    exclude = None if datamodule is None else (datamodule.train_index if cfg.filter == "train" else datamodule.filter_index)
    if side == "tail":
        found = module.predict_tails(entity, relation, cfg.k, exclude)
    else:
        found = module.predict_heads(relation, entity, cfg.k, exclude)
    indexes = None if datamodule is None else split_indexes(datamodule)
    rows = []
    for rank, candidate in enumerate(found, start=1):
        triple = (entity, relation, candidate.id) if side == "tail" else (candidate.id, relation, entity)
        row = {"rank": rank, side: candidate.label, "score": candidate.score}
        if indexes is not None:
            row["known"] = known_in(indexes, triple)
        rows.append(row)
    query = (given["head"], given["relation"], "?") if side == "tail" else ("?", given["relation"], given["tail"])
    print(f"# {side}s of ({', '.join(escape(label) for label in query)}), filter={cfg.filter}")
    print_rows(rows, ["rank", side, "score"] + (["known"] if datamodule is not None else []))
    return rows


def cfg_text(cfg: DictConfig, key: str) -> str | None:
    """The value of ``key`` as the user typed it: labels are text, even ``1.50``, ``true`` or ``${x}``.

    Hydra reads ``head=1.50`` as the float 1.5 and ``head=true`` as a bool; a value that Hydra
    did not read as a string is taken from the command line as written, and ``${…}`` is never
    resolved. ``head=NULL`` (null for Hydra), ``head=[a,b]`` (a list) stop with a message saying
    how to quote the label (:func:`lightning_kge.overrides.label_value`).
    """
    return label_value(cfg, key)


def question_side(given: dict[str, str | None]) -> str:
    """``tail`` for ``head= relation=``, ``head`` for ``relation= tail=``; anything else is refused."""
    if given["relation"] is None:
        raise UserError("no relation given", "config key relation", USAGE)
    if (given["head"] is None) == (given["tail"] is None):
        both = "both head and tail" if given["head"] is not None else "neither head nor tail"
        raise UserError(f"{both} given", "config keys head, tail", USAGE)
    return "tail" if given["head"] is not None else "head"


def score_file(module: KGEModule, path: str) -> list[dict[str, Any]]:
    """The score of each labelled triple of the TSV file ``path``, in file order."""
    counts = (module.model.num_entities, module.model.num_relations)
    labels, ids = prediction.read_labelled_triples(path, module.graph, counts)
    with torch.no_grad():
        h, r, t = ids.to(module.device).unbind(1)
        scores = module.score_hrt(h, r, t).tolist()
    return [{"head": a, "relation": b, "tail": c, "score": s} for (a, b, c), s in zip(labels, scores)]


def split_indexes(datamodule: KGEDataModule) -> dict[str, TripleIndex]:
    """A :class:`TripleIndex` of each split."""
    sizes = (datamodule.num_entities, datamodule.num_relations)
    return {split: TripleIndex(datamodule.triples[split], *sizes) for split in SPLITS}


def known_in(indexes: dict[str, TripleIndex], triple: tuple[int, int, int]) -> str:
    """The splits holding ``triple`` (e.g. ``train`` or ``valid,test``), or ``-``."""
    h, r, t = (torch.tensor([x]) for x in triple)
    return ",".join(split for split, index in indexes.items() if bool(index.contains(h, r, t)[0])) or "-"


def print_rows(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Print ``rows`` as a tab-separated table with a header line, labels escaped (:mod:`lightning_kge.escaping`)."""
    print(tsv_line(columns), end="")
    for row in rows:
        print(tsv_line(f"{row[c]:.4f}" if isinstance(row[c], float) else row[c] for c in columns), end="")


@checked_command_line(LABEL_KEYS)
@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="predict")
@reports_user_errors
def main(cfg: DictConfig) -> Any:
    """Command-line entry point (Hydra); labels Hydra cannot read are refused first, in one line."""
    return predict(cfg)


if __name__ == "__main__":
    main()
