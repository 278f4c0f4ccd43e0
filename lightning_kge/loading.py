"""Reading checkpoints as data: ``torch.load(weights_only=True)``, allow-listed classes, one-line errors.

Every file this package loads goes through :func:`read_checkpoint`, which never unpickles an
object (a pickle that would call ``os.system`` is refused, not run), and every module is rebuilt
by :func:`load_module`, which checks each class the hyperparameters name against the allow-list of
:mod:`lightning_kge.serialization` before building anything.
"""

from __future__ import annotations

import inspect
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import torch

from lightning_kge.errors import UserError
from lightning_kge.serialization import UnresolvableError, UntrustedError, check_specs, resolve

if TYPE_CHECKING:
    from lightning_kge.module import KGEModule

CLI_KEYS = ("_instantiator", "_class_path")
"""What LightningCLI adds to a module's hyperparameters; not constructor arguments."""


def require_file(path: str | Path, key: str = "ckpt") -> Path:
    """``path`` as a :class:`Path` if it is a file (or a sharded checkpoint folder), else a :class:`UserError`
    naming ``key``."""
    from lightning_kge.sharding.checkpoint import is_sharded_checkpoint

    path = Path(path)
    if not path.is_file() and not is_sharded_checkpoint(path):
        what = "is a directory, not a checkpoint file" if path.is_dir() else "no such checkpoint"
        raise UserError(what, str(path),
                        f"give {key}=PATH of a .ckpt file, e.g. outputs/<date>/<time>/checkpoints/last.ckpt")
    return path


def read_checkpoint(path: str | Path | IO, key: str = "ckpt", mmap: bool = False) -> dict[str, Any]:
    """The checkpoint dictionary at ``path`` on the CPU, loaded as data, or a :class:`UserError` saying why not.

    ``torch.load(weights_only=True)`` rebuilds only tensors and plain containers, so a file whose
    pickle names any other global (``os.system``, a class of its own) is refused without running it.

    A sharded checkpoint folder (``strategy=torchrec``) is read whole on this process, as data too
    (:func:`lightning_kge.sharding.checkpoint.read_sharded`).

    Args:
        path: a ``.ckpt`` file or sharded checkpoint folder (or an open binary file).
        key: the config key that gave ``path``, for messages (``ckpt``, ``ckpt_path``).
        mmap: map the tensors' storage instead of reading it (cheap when only metadata is needed); a
            sharded folder's sharded tensors are then left out.
    """
    where = str(path) if isinstance(path, (str, Path)) else getattr(path, "name", "the checkpoint")
    if isinstance(path, (str, Path)):
        path = require_file(path, key)
        if path.is_dir():
            from lightning_kge.sharding.checkpoint import REST, read_sharded

            return read_checkpoint(path / REST, key, mmap) if mmap else read_sharded(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and isinstance(path, Path))
    except Exception as error:  # noqa: BLE001 - whatever the bytes are, the answer is one line
        raise unreadable(error, where) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserError("not a Lightning checkpoint", where, "give a .ckpt file written by lightning_kge.train")
    return checkpoint


def unreadable(error: Exception, where: str) -> UserError:
    """The one-line error of a file ``torch.load(weights_only=True)`` refused: unsafe, or not a checkpoint."""
    text = str(error)
    found = next((line.strip() for line in text.splitlines() if "Unsupported global" in line or "GLOBAL" in line), "")
    if isinstance(error, pickle.UnpicklingError) and found:
        return UserError(
            "the checkpoint holds pickled objects, not only data; loading them could run code of the file's choosing, "
            f"so it was refused without running anything ({found[:160]})",
            where,
            "load only checkpoints written by lightning_kge (or Lightning) that hold tensors and plain values",
        )
    return UserError(
        f"cannot read the checkpoint ({type(error).__name__}: {text.split('. ')[0].splitlines()[0][:120] if text else ''})",
        where,
        "the file is truncated or not a checkpoint: use another one (checkpoints/last.ckpt or best.ckpt)",
    )


def recorded_class(checkpoint: Mapping[str, Any], base: type, where: str) -> type:
    """The module class that wrote ``checkpoint`` (a subclass of ``base``, allow-listed or trusted), else ``base``.

    The class is the one :meth:`KGEModule.on_save_checkpoint` recorded, or LightningCLI's
    ``_class_path``; checkpoints without either rebuild ``base``.
    """
    from lightning_kge.module import CHECKPOINT_KEY

    path = (checkpoint.get(CHECKPOINT_KEY) or {}).get("module_class")
    path = path or (checkpoint.get("hyper_parameters") or {}).get("_class_path")
    if not path or path == f"{base.__module__}.{base.__qualname__}":
        return base
    found = resolve(path, f"{where}, its module class")
    if not (inspect.isclass(found) and issubclass(found, base)):
        raise UserError(f"the checkpoint holds a {path}, which is not a {base.__qualname__}", where,
                        f"load it with its own class ({path}.load_from_checkpoint)")
    return found


def constructor_arguments(cls: type, hparams: Mapping[str, Any]) -> dict[str, Any]:
    """The hyperparameters ``cls.__init__`` accepts (all of them if it takes ``**kwargs``)."""
    parameters = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return dict(hparams)
    return {k: v for k, v in hparams.items() if k in parameters and k != "self"}


def load_module(base: type[KGEModule], path: str | Path | IO, map_location: Any = None, strict: bool | None = None,
                overrides: Mapping[str, Any] | None = None) -> KGEModule:
    """Rebuild the module saved at ``path`` (see :meth:`KGEModule.load_from_checkpoint`), in the
    current trust context (:func:`~lightning_kge.serialization.trusting`)."""
    where = str(path) if isinstance(path, (str, Path)) else "the checkpoint"
    checkpoint = read_checkpoint(path)
    hparams = {k: v for k, v in dict(checkpoint.get("hyper_parameters") or {}).items() if k not in CLI_KEYS}
    try:
        cls = recorded_class(checkpoint, base, where)
        check_specs(hparams, where)
        module = cls(**constructor_arguments(cls, {**hparams, **dict(overrides or {})}))
    except (UntrustedError, UnresolvableError):
        raise
    except UserError as error:
        raise UserError(error.what, where, error.fix) from None
    except (KeyError, TypeError, ValueError) as error:
        raise UserError(f"not a lightning_kge checkpoint ({type(error).__name__}: {str(error)[:160]})", where,
                        "give a .ckpt file written by lightning_kge.train or a KGEModule") from None
    module.on_load_checkpoint(checkpoint)
    try:
        module.load_state_dict(checkpoint["state_dict"], strict=module.strict_loading if strict is None else strict)
    except RuntimeError as error:
        raise UserError(f"the checkpoint's weights do not fit its model ({str(error).splitlines()[0][:160]})", where,
                        "give a checkpoint written by lightning_kge, unmodified") from None
    if isinstance(map_location, (str, torch.device, int)):
        module = module.to(torch.device(map_location) if not isinstance(map_location, int) else map_location)
    return module
