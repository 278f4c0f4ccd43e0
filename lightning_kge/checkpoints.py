"""Reading a trained model back: the module, its data, and the checks that they belong together."""

from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from lightning_kge.data.info import GraphInfo
from lightning_kge.datamodule import KGEDataModule
from lightning_kge.errors import UserError, shorten
from lightning_kge.module import KGEModule


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dictionary at ``path`` (on the CPU), or a :class:`UserError` saying why not."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "no such checkpoint"
        raise UserError(what, str(path), "give ckpt=PATH of a .ckpt file, e.g. outputs/<date>/<time>/checkpoints/last.ckpt")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        raise UserError(
            f"cannot read the checkpoint ({type(error).__name__}: {str(error)[:120]})",
            str(path),
            "the file is truncated or not a checkpoint: use another one (checkpoints/last.ckpt or best.ckpt)",
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserError("not a Lightning checkpoint", str(path), "give a .ckpt file written by lightning_kge.train")
    return checkpoint


def load_module(path: str | Path) -> KGEModule:
    """The :class:`KGEModule` saved at ``path`` (on the CPU), with its graph description."""
    read_checkpoint(path)  # readable, or a one-line error
    try:
        return KGEModule.load_from_checkpoint(path, map_location="cpu")
    except (KeyError, TypeError) as error:
        raise UserError(
            f"not a lightning_kge checkpoint ({type(error).__name__}: {str(error)[:120]})",
            str(path),
            "give a .ckpt file written by lightning_kge.train",
        ) from None


def load_datamodule(path: str | Path, module: KGEModule, data: DictConfig | KGEDataModule | None = None) -> KGEDataModule:
    """The data to evaluate ``module`` on, set up: ``data`` if given, else what it was trained on.

    Labels are checked against the module's :class:`GraphInfo` (:func:`check_same_graph`), so
    ids can never be scrambled silently.
    """
    if isinstance(data, KGEDataModule):
        datamodule = data
    elif data is not None:
        from lightning_kge.train import instantiate_node

        datamodule = instantiate_node(data, "data")
    else:
        saved = read_checkpoint(path).get(KGEDataModule.CHECKPOINT_HYPER_PARAMS_KEY)
        if saved is None:
            raise UserError("the checkpoint holds no datamodule settings", str(path), "give data=NAME")
        datamodule = KGEDataModule(**{**dict(saved), "corruption": None})
    datamodule.prepare_data()
    datamodule.setup()
    check_same_graph(module, datamodule.info, str(path))
    return datamodule


def check_same_graph(module: KGEModule, found: GraphInfo, where: str) -> None:
    """Refuse data whose entity or relation labels differ from the ones ``module`` was trained on.

    The error says what differs: the counts, or the first id whose label differs. Equal labels
    with other triples (another test split, say) are allowed, with a warning.
    """
    model, saved = module.model, module.graph
    if saved is None:  # a module built without a graph: only the sizes can be compared
        if (found.num_entities, found.num_relations) != (model.num_entities, model.num_relations):
            raise UserError(
                f"the model has {model.num_entities} entities and {model.num_relations} relations, "
                f"the data {found.num_entities} and {found.num_relations}",
                where, "evaluate on the data the model was trained on",
            )
        return
    for kind, ours, theirs in (("entity", saved.entities, found.entities), ("relation", saved.relations, found.relations)):
        if len(ours) != len(theirs):
            raise UserError(
                f"the checkpoint has {len(ours)} {kind} labels, the data {len(theirs)}",
                where, f"use the data the model was trained on ({saved.source or 'see its config'})",
            )
        for i, (a, b) in enumerate(zip(ours, theirs)):
            if a != b:
                raise UserError(
                    f"{kind} {i} is {shorten(a)} in the checkpoint but {shorten(b)} in the data",
                    where, f"use the data the model was trained on ({saved.source or 'see its config'})",
                )
    if saved.fingerprint and found.fingerprint and saved.fingerprint != found.fingerprint:
        warnings.warn(
            f"{where}: the data has the model's labels but other triples than at training "
            f"(fingerprint {found.fingerprint[:12]}, trained on {saved.fingerprint[:12]})",
            UserWarning, stacklevel=2,
        )
