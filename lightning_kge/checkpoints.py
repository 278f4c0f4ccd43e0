"""Reading a trained model back: the module, its data, and the checks that they belong together."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lightning_kge.data.info import GraphInfo
from lightning_kge.datamodule import KGEDataModule
from lightning_kge.errors import UserError, shorten
from lightning_kge.loading import constructor_arguments, read_checkpoint, require_file
from lightning_kge.module import CHECKPOINT_KEY, KGEModule
from lightning_kge.serialization import resolve, trusting

__all__ = ["read_checkpoint", "require_file", "load_module", "load_datamodule", "check_same_graph",
           "compare_graphs", "check_resumable", "saved_graph", "first_difference"]


def load_module(path: str | Path, trust: Iterable[str] | str | None = None) -> KGEModule:
    """The module saved at ``path`` (on the CPU), rebuilt as the class that saved it, with its graph.

    Loaded as data (:meth:`KGEModule.load_from_checkpoint`): classes outside the allow-list load
    only from the modules named in ``trust`` (the entry points' config key ``trust``).
    """
    return KGEModule.load_from_checkpoint(path, map_location="cpu", trust=trust)


def load_datamodule(path: str | Path, module: KGEModule, data: DictConfig | KGEDataModule | None = None,
                    trust: Iterable[str] | str | None = None) -> KGEDataModule:
    """The data to evaluate ``module`` on, set up: ``data`` if given, else what it was trained on.

    The saved datamodule is rebuilt as the class that saved it (allow-listed, or from a module in
    ``trust``), without its corruption (evaluation needs none). Labels are checked against the
    module's :class:`GraphInfo` (:func:`check_same_graph`), so ids can never be scrambled silently.
    """
    if isinstance(data, KGEDataModule):
        datamodule = data
    elif data is not None:
        from lightning_kge.configs import instantiate_node

        datamodule = instantiate_node(data, "data")
    else:
        checkpoint = read_checkpoint(path, mmap=True)  # the settings only
        saved = checkpoint.get(KGEDataModule.CHECKPOINT_HYPER_PARAMS_KEY)
        if saved is None:
            raise UserError("the checkpoint holds no datamodule settings", str(path), "give data=NAME")
        with trusting(trust):
            cls = saved_datamodule_class(checkpoint, str(path))
            datamodule = cls(**constructor_arguments(cls, {**dict(saved), "corruption": None}))
    datamodule.prepare_data()
    datamodule.setup()
    check_same_graph(module, datamodule.info, str(path))
    return datamodule


def saved_datamodule_class(checkpoint: Mapping[str, Any], where: str) -> type[KGEDataModule]:
    """The datamodule class recorded in ``checkpoint`` (:meth:`KGEDataModule.state_dict`), or KGEDataModule."""
    state = next((v for v in checkpoint.values() if isinstance(v, Mapping) and "datamodule_class" in v), None)
    path = None if state is None else state["datamodule_class"]
    if not path or path == f"{KGEDataModule.__module__}.{KGEDataModule.__qualname__}":
        return KGEDataModule
    found = resolve(path, f"{where}, its datamodule class")
    if not (isinstance(found, type) and issubclass(found, KGEDataModule)):
        raise UserError(f"the checkpoint's datamodule is a {path}, not a KGEDataModule", where,
                        "give data=NAME to evaluate on a dataset instead")
    return found


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
                   "data": {"eval_batch_size", "num_workers", "name", "path", "url", "eval_sample"}}
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
    saved_module = {k: v for k, v in dict(checkpoint.get("hyper_parameters") or {}).items()
                    if k not in ("graph", "_instantiator", "_class_path")}
    saved = saved_graph(checkpoint)
    if saved is not None:
        found = datamodule.info
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


def saved_graph(checkpoint: Mapping[str, Any]) -> GraphInfo | None:
    """The :class:`GraphInfo` a checkpoint holds: its compact blob, or (older files) its hyperparameters."""
    state = (checkpoint.get(CHECKPOINT_KEY) or {}).get("graph")
    if state is not None:
        return GraphInfo.from_state(state)
    graph = (checkpoint.get("hyper_parameters") or {}).get("graph")
    return None if graph is None else GraphInfo.from_dict(graph)


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
