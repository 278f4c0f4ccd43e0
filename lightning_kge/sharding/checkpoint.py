"""Sharded checkpoints: a folder holding the sharded tensors (``torch.distributed.checkpoint``) and the rest.

A checkpoint of ``strategy=torchrec`` is a folder (``last.ckpt/``) with

- ``checkpoint.pt``: the Lightning checkpoint without its sharded tensors (the weights of everything but the
  entity table, the dense optimizer's state, loops, callbacks, hyperparameters, the graph), written by
  process 0 with ``torch.save`` and read back as data (``torch.load(weights_only=True)``);
- ``.metadata`` and ``__<rank>_0.distcp``: the sharded tensors (the entity table, its fused optimizer's
  state), each process writing its own rows (DCP), so no process ever holds the whole table.

Each sharded tensor is stored under its place in the checkpoint dictionary (``state_dict/model.entity.weight``,
``optimizer_states/0/fused/entity.momentum1``). Loading in the processes of a run reads each process's rows
in place, whatever the number of processes that saved (DCP reshards); :func:`read_sharded` reads it on one
process as an ordinary checkpoint dictionary with whole tensors (``evaluate``, ``predict``, ``export``).

**Read as data.** DCP's own reader unpickles ``.metadata`` with plain ``pickle.load`` and loads non-tensor
entries with ``torch.load(weights_only=False)``: a crafted folder could run code. :class:`SafeReader` reads
``.metadata`` with :class:`MetadataUnpickler` (DCP's metadata dataclasses, torch sizes, dtypes and layouts,
paths and builtins only; anything else is refused before it is built), accepts only data files inside the
folder, and :class:`SafeLoadPlanner` loads any non-tensor entry with ``weights_only=True``.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from lightning_kge.errors import UserError

REST = "checkpoint.pt"
"""The file of a sharded checkpoint folder holding everything but the sharded tensors."""
METADATA = ".metadata"
"""DCP's index of the sharded tensors."""

ALLOWED_GLOBALS: dict[str, frozenset[str]] = {
    "torch.distributed.checkpoint.metadata": frozenset({
        "Metadata", "MetadataIndex", "StorageMeta", "TensorProperties", "TensorStorageMetadata",
        "ChunkStorageMetadata", "BytesStorageMetadata", "_MEM_FORMAT_ENCODING"}),
    "torch.distributed.checkpoint.filesystem": frozenset({"_StorageInfo"}),
    "torch.serialization": frozenset({"_get_layout"}),
    "torch": frozenset({"Size"}),
    "pathlib": frozenset({"PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath", "Path"}),
    "builtins": frozenset({"set", "frozenset", "slice"}),
    "collections": frozenset({"OrderedDict"}),
}
"""What ``.metadata`` may name: module -> names (plus every ``torch.<dtype>``)."""


def is_sharded_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by :func:`save_sharded` (``checkpoint.pt`` and ``.metadata``)."""
    path = Path(path)
    return path.is_dir() and (path / REST).is_file() and (path / METADATA).is_file()


# --- reading as data ----------------------------------------------------------------------------------
class MetadataUnpickler(pickle.Unpickler):
    """Unpickle DCP's ``.metadata``, building only the classes of :data:`ALLOWED_GLOBALS` and torch dtypes.

    Example:
        >>> import os
        >>> class Payload:
        ...     def __reduce__(self):
        ...         return (os.system, ("echo pwned",))
        >>> MetadataUnpickler(io.BytesIO(pickle.dumps(Payload()))).load()
        Traceback (most recent call last):
        ...
        _pickle.UnpicklingError: the checkpoint's .metadata names posix.system, which is not DCP metadata
    """

    def find_class(self, module: str, name: str) -> Any:
        if name in ALLOWED_GLOBALS.get(module, ()):
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"the checkpoint's .metadata names {module}.{name}, which is not DCP metadata")


def read_metadata(folder: Path) -> Any:
    """DCP's ``Metadata`` of a sharded checkpoint folder, unpickled as data (:class:`MetadataUnpickler`).

    Raises:
        UserError: a refused or unreadable ``.metadata``, or one that sends reads outside the folder.
    """
    from torch.distributed.checkpoint.metadata import Metadata

    where = str(folder)
    try:
        with open(folder / METADATA, "rb") as handle:
            metadata = MetadataUnpickler(handle).load()
    except pickle.UnpicklingError as error:
        raise UserError(f"{error}; loading it could run code of the file's choosing, so it was refused without "
                        "running anything", where,
                        "load only checkpoints written by lightning_kge (strategy=torchrec)") from None
    except (OSError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise UserError(f"cannot read the sharded checkpoint's .metadata ({type(error).__name__}: {str(error)[:120]})",
                        where, "the folder is incomplete or not a checkpoint: use another one") from None
    if not isinstance(metadata, Metadata) or not isinstance(metadata.storage_data, dict):
        raise UserError("the sharded checkpoint's .metadata is not DCP metadata", where,
                        "load only checkpoints written by lightning_kge (strategy=torchrec)")
    for info in metadata.storage_data.values():
        name = str(getattr(info, "relative_path", ""))
        if not name or Path(name).name != name or name in (".", ".."):
            raise UserError(f"the sharded checkpoint's .metadata points outside its folder ({name[:80]!r})", where,
                            "load only checkpoints written by lightning_kge (strategy=torchrec)")
    if getattr(metadata, "storage_meta", None) is None:
        from torch.distributed.checkpoint.metadata import StorageMeta

        metadata.storage_meta = StorageMeta()
    return metadata


def safe_reader(folder: Path) -> Any:
    """A ``FileSystemReader`` of ``folder`` whose metadata is read by :func:`read_metadata`."""
    from torch.distributed.checkpoint import FileSystemReader

    class SafeReader(FileSystemReader):
        """DCP's file reader, reading ``.metadata`` as data (see the module)."""

        def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
            metadata = read_metadata(Path(self.path))
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return SafeReader(folder)


def safe_planner() -> Any:
    """DCP's default load planner, loading any non-tensor entry with ``torch.load(weights_only=True)``."""
    from torch.distributed.checkpoint import DefaultLoadPlanner

    class SafeLoadPlanner(DefaultLoadPlanner):
        """Non-tensor entries are loaded as data (DCP's own planner unpickles them)."""

        def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
            self.state_dict[read_item.dest_index.fqn] = torch.load(value, weights_only=True)

    return SafeLoadPlanner(flatten_state_dict=False, flatten_sharded_tensors=True)


# --- where the sharded tensors sit in a checkpoint dictionary -------------------------------------------
def is_sharded(value: Any) -> bool:
    """Whether ``value`` is a tensor spread over processes (a ``ShardedTensor``)."""
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    return isinstance(value, ShardedTensor)


def split(tree: Any, keep: Callable[[Any], bool] = is_sharded, path: str = "") -> tuple[Any, dict[str, Any]]:
    """``tree`` without the values ``keep`` selects, and those values by their path (keys joined by ``/``).

    Example:
        >>> split({"a": 1, "b": [2, {"c": 3}]}, keep=lambda v: v == 3)
        ({'a': 1, 'b': [2, {}]}, {'b/1/c': 3})
    """
    found: dict[str, Any] = {}
    if isinstance(tree, Mapping):
        rest = type(tree)() if isinstance(tree, dict) else {}
        for key, value in tree.items():
            where = f"{path}/{key}" if path else str(key)
            if keep(value):
                found[where] = value
                continue
            rest[key], inner = split(value, keep, where)
            found.update(inner)
        return rest, found
    if isinstance(tree, (list, tuple)):
        items = []
        for i, value in enumerate(tree):
            rest_value, inner = split(value, keep, f"{path}/{i}" if path else str(i))
            items.append(rest_value)
            found.update(inner)
        return type(tree)(items) if isinstance(tree, list) else tuple(items), found
    return tree, {}


def put(tree: Any, path: str, value: Any) -> None:
    """Set the value at ``path`` (keys joined by ``/``; list indices as numbers) inside ``tree``.

    Example:
        >>> tree = {"b": [2, {}]}
        >>> put(tree, "b/1/c", 3)
        >>> tree
        {'b': [2, {'c': 3}]}
    """
    *parents, last = path.split("/")
    node = tree
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


# --- writing and reading ----------------------------------------------------------------------------
def save_sharded(checkpoint: Mapping[str, Any], folder: Path, is_global_zero: bool, barrier: Callable[[], None],
                 group: Any = None) -> None:
    """Write ``checkpoint`` (a Lightning checkpoint dictionary holding ``ShardedTensor``s) as the folder
    ``folder``: a collective call of every process. A rank with no rows of a sharded tensor leaves it out
    (an empty entry would make loading into another sharding wait forever)."""
    import torch.distributed.checkpoint as dcp

    rest, sharded = split(dict(checkpoint))
    sharded = {k: v for k, v in sharded.items() if v.local_shards()}
    if is_global_zero:
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(rest, folder / REST)
    barrier()
    dcp.save(sharded, storage_writer=dcp.FileSystemWriter(folder), process_group=group)


def load_sharded_into(folder: Path, targets: Mapping[str, Any], group: Any = None) -> None:
    """Read the sharded tensors of ``folder`` into ``targets`` (``{path: ShardedTensor}``, the live tensors of
    this run, in place), whatever sharding and number of processes saved them: a collective call."""
    import torch.distributed.checkpoint as dcp

    state = {k: v for k, v in targets.items() if v.local_shards()}
    metadata = read_metadata(folder)
    missing = sorted(set(targets) - set(metadata.state_dict_metadata))
    if missing:
        raise UserError(f"the sharded checkpoint holds no {', '.join(missing)}", str(folder),
                        "resume from a checkpoint of the same model and table optimizer (see .hydra/overrides.yaml)")
    dcp.load(state, storage_reader=safe_reader(folder), planner=safe_planner(), process_group=group)


def read_sharded(folder: str | Path) -> dict[str, Any]:
    """A sharded checkpoint folder as an ordinary checkpoint dictionary, on one process, read as data.

    ``checkpoint.pt`` is read with ``torch.load(weights_only=True)`` and every sharded tensor is read whole
    (rows of every process) into its place, so ``evaluate``, ``predict`` and ``export`` of a checkpoint
    written by N processes work on one.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    from lightning_kge.loading import read_checkpoint

    folder = Path(folder)
    checkpoint = read_checkpoint(folder / REST)
    metadata = read_metadata(folder)
    whole: dict[str, torch.Tensor] = {}
    for key, entry in metadata.state_dict_metadata.items():
        if not isinstance(entry, TensorStorageMetadata):
            raise UserError(f"the sharded checkpoint holds a non-tensor entry {key!r}", str(folder),
                            "load only checkpoints written by lightning_kge (strategy=torchrec)")
        whole[key] = torch.empty(tuple(entry.size), dtype=entry.properties.dtype)
    try:
        dcp.load(whole, storage_reader=safe_reader(folder), planner=safe_planner(), no_dist=True)
    except (OSError, RuntimeError, ValueError, AssertionError) as error:
        raise UserError(f"cannot read the sharded checkpoint's tensors ({type(error).__name__}: {str(error)[:120]})",
                        str(folder), "the folder is incomplete: use another checkpoint") from None
    for key, tensor in whole.items():
        put(checkpoint, key, tensor)
    return checkpoint


def sharded_entries(checkpoint: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """The ``(path, ShardedTensor)`` entries of a checkpoint dictionary."""
    yield from split(dict(checkpoint))[1].items()
