"""Reading a trained model back: the module, its data, and the checks that they belong together."""

from __future__ import annotations

import pickle
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from lightning_kge.data.info import GraphInfo
from lightning_kge.datamodule import KGEDataModule
from lightning_kge.errors import UserError, shorten
from lightning_kge.module import KGEModule


def read_checkpoint(path: str | Path, key: str = "ckpt") -> dict[str, Any]:
    """The checkpoint dictionary at ``path`` (on the CPU), or a :class:`UserError` saying why not.

    Args:
        path: a ``.ckpt`` file.
        key: the config key that gave ``path``, for messages (``ckpt``, ``ckpt_path``).
    """
    path = require_file(path, key)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        raise UserError(
            f"cannot read the checkpoint ({type(error).__name__}: {str(error).split('. ')[0][:120]})",
            str(path),
            "the file is truncated or not a checkpoint: use another one (checkpoints/last.ckpt or best.ckpt)",
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserError("not a Lightning checkpoint", str(path), "give a .ckpt file written by lightning_kge.train")
    return checkpoint


def require_file(path: str | Path, key: str = "ckpt") -> Path:
    """``path`` as a :class:`Path` if it is a file, else a :class:`UserError` naming ``key``."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a checkpoint file" if path.is_dir() else "no such checkpoint"
        raise UserError(what, str(path),
                        f"give {key}=PATH of a .ckpt file, e.g. outputs/<date>/<time>/checkpoints/last.ckpt")
    return path


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
        from lightning_kge.configs import instantiate_node

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
    compare_graphs(saved, found, where)
    if saved.fingerprint and found.fingerprint and saved.fingerprint != found.fingerprint:
        warnings.warn(
            f"{where}: the data has the model's labels but other triples than at training "
            f"(fingerprint {found.fingerprint[:12]}, trained on {saved.fingerprint[:12]})",
            UserWarning, stacklevel=2,
        )


def compare_graphs(saved: GraphInfo, found: GraphInfo, where: str) -> None:
    """Raise a :class:`UserError` naming the first difference between two graphs' labels."""
    pairs = (("entity", saved.entities, found.entities), ("relation", saved.relations, found.relations))
    for kind, ours, theirs in pairs:
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


# Settings a resumed run may change: they affect evaluation only, not what training computes.
EVALUATION_ONLY = {"module": {"ties", "eval_chunk_size", "hits_at"},
                   "data": {"eval_batch_size", "num_workers", "name", "path", "url"}}
"""Per config node, the hyperparameters a resumed run may change (``data.name``/``path``/``url``:
the data is compared by its labels and fingerprint instead)."""

CONFIG_KEY = {"model": "model", "selection": "sampler", "optimizer": "optimizer", "corruption": "sampler"}
"""Hyperparameters whose config key is a group of its own rather than ``module.<name>``/``data.<name>``."""


def check_resumable(checkpoint: dict[str, Any], module: KGEModule, datamodule: KGEDataModule, where: str,
                    seed: int | None = None) -> None:
    """Refuse to resume training from ``checkpoint`` with other settings or data than it was trained with.

    A resumed run must compute what the interrupted one would have: the same model, sampler,
    optimizer, schedule, batches and seed, on data with the same labels and triples. Settings
    that affect only evaluation (:data:`EVALUATION_ONLY`) may change. The error names the first
    config key that differs, with both values.

    Args:
        checkpoint: the loaded checkpoint (:func:`read_checkpoint`).
        module: the module built from the resuming run's config.
        datamodule: its datamodule, set up.
        where: the checkpoint's path, for messages.
        seed: the resuming run's seed, compared with the one saved by the checkpoint callback.
    """
    fix = "resume with the overrides the run was started with (see .hydra/overrides.yaml in its folder)"
    saved_module = dict(checkpoint.get("hyper_parameters") or {})
    graph = saved_module.pop("graph", None)
    if graph is not None:
        saved, found = GraphInfo.from_dict(graph), datamodule.info
        compare_graphs(saved, found, where)
        if saved.fingerprint and found.fingerprint and saved.fingerprint != found.fingerprint:
            raise UserError(
                f"the data has the checkpoint's labels but other triples (fingerprint {found.fingerprint[:12]}, "
                f"trained on {saved.fingerprint[:12]})", where, "resume on the data the run was trained on",
            )
    ours_module = {k: v for k, v in module.hparams.items() if k != "graph"}
    saved_data = dict(checkpoint.get(KGEDataModule.CHECKPOINT_HYPER_PARAMS_KEY) or {})
    nodes = (("module", saved_module, ours_module), ("data", saved_data, dict(datamodule.hparams)))
    for node, saved_values, ours in nodes:
        for name in sorted(set(saved_values) | set(ours)):
            if name in EVALUATION_ONLY[node]:
                continue
            difference = first_difference(saved_values.get(name), ours.get(name))
            if difference is not None:
                path, was, now = difference
                key = ".".join([CONFIG_KEY.get(name, f"{node}.{name}"), *path])
                raise UserError(f"{key} was {was!r} when the checkpoint was saved, now {now!r}", where, fix)
    states = checkpoint.get("callbacks") or {}
    saved_seed = next((s.get("seed") for s in states.values() if isinstance(s, dict) and "seed" in s), None)
    if seed is not None and saved_seed is not None and int(saved_seed) != int(seed):
        raise UserError(f"seed was {saved_seed} when the checkpoint was saved, now {seed}", where, fix)


def first_difference(a: Any, b: Any, path: tuple[str, ...] = ()) -> tuple[list[str], Any, Any] | None:
    """The first ``(key path, a value, b value)`` where two hyperparameter values differ, or None.

    Mappings are compared key by key (a spec's ``_target_`` and ``_partial_`` included), lists
    and tuples alike.

    Example:
        >>> first_difference({"_target_": "RotatE", "dim": 8}, {"_target_": "RotatE", "dim": 16})
        (['dim'], 8, 16)
        >>> first_difference([1, 3, 10], (1, 3, 10)) is None
        True
    """
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in sorted(set(a) | set(b), key=str):
            found = first_difference(a.get(key), b.get(key), (*path, str(key)))
            if found is not None:
                return found
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) == len(b) and all(first_difference(x, y) is None for x, y in zip(a, b)):
            return None
        return list(path), a, b
    return None if a == b else (list(path), a, b)
