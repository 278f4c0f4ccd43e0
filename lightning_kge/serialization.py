"""Objects as ``{"_target_": ..., **args}`` specs, so checkpoints rebuild what trained them.

The spec format is Hydra's (``_target_``, ``_partial_``), so a config node and a checkpoint's
hyperparameters describe an object the same way.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Mapping
from typing import Any


def to_spec(obj: Any) -> dict[str, Any]:
    """Describe ``obj`` by its class path and constructor arguments.

    The object must keep each constructor argument as an attribute of the same name, or as
    ``_name`` where its class has a method of that name (``nn.Module.compile``); a
    ``functools.partial`` is described by its function and keywords, an importable function
    or class by its path. Lambdas and local functions cannot be described (``TypeError``).

    Example:
        >>> to_spec(functools.partial(dict, a=1))
        {'_target_': 'builtins.dict', '_partial_': True, 'a': 1}
    """
    if isinstance(obj, functools.partial):
        if obj.args:
            raise TypeError(f"cannot describe {obj!r}: give its arguments as keywords")
        return {"_target_": _path(obj.func), "_partial_": True, **obj.keywords}
    if inspect.isroutine(obj):
        if "<" in obj.__qualname__:  # a lambda or a local function: not importable
            raise TypeError(
                f"cannot describe {obj.__qualname__!r} so that a checkpoint can rebuild it: pass an "
                "importable function or class, or functools.partial(torch.optim.Adam, lr=...)"
            )
        return {"_target_": _path(obj), "_partial_": True}
    names = [n for n in inspect.signature(type(obj).__init__).parameters if n != "self"]
    return {"_target_": _path(type(obj)), **{n: _argument(obj, n) for n in names}}


def from_spec(spec: Mapping[str, Any] | Any, **extra: Any) -> Any:
    """Rebuild an object from :func:`to_spec`'s output; anything else is returned as it is."""
    if not isinstance(spec, Mapping) or "_target_" not in spec:
        return spec
    args = {k: v for k, v in spec.items() if k not in ("_target_", "_partial_")}
    target = _import(spec["_target_"])
    if spec.get("_partial_", False):
        return functools.partial(target, **args, **extra)
    return target(**args, **extra)


def _argument(obj: Any, name: str) -> Any:
    value = getattr(obj, name)
    return getattr(obj, f"_{name}") if inspect.ismethod(value) else value


def _path(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def _import(path: str) -> Any:
    module_name, _, attribute = path.rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)
