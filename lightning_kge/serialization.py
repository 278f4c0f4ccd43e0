"""Objects as plain specs, so checkpoints rebuild what trained them — and only what is allowed.

A spec names a class (or function) by its import path and gives its constructor arguments as plain
values. Two forms are read and written:

* Hydra's, ``{"_target_": path, "_partial_": bool, **args}``: what ``conf/`` holds, so a config
  node and a checkpoint's hyperparameters describe an object the same way;
* LightningCLI's (jsonargparse), ``{"class_path": path, "init_args": {...}}``: what a module
  built by ``LightningCLI`` keeps, so ``--ckpt_path`` can merge its hyperparameters back.

**A checkpoint is data, never code.** Rebuilding a spec imports and calls what it names, so every
path is checked against an allow-list *before* anything is imported (:func:`resolve`): classes
defined in this package's models, samplers, selections, callbacks, schedules, optimizers and the
module and datamodule themselves; ``torch.optim`` optimizers and ``torch.optim.lr_scheduler``
schedulers. Anything else — a user's own model or subclass — is resolved only inside
:func:`trusting` the module that defines it (the ``trust=[...]`` keyword and config key of the
loaders); otherwise :class:`UntrustedError` names the class and how to allow it.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import inspect
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal

from lightning_kge.errors import UserError

Form = Literal["target", "class_path"]

SAFE_MODULES = (
    "lightning_kge.models",
    "lightning_kge.sampling",
    "lightning_kge.callbacks",
    "lightning_kge.schedules",
    "lightning_kge.optim",
    "lightning_kge.module",
    "lightning_kge.datamodule",
)
"""Modules whose classes a checkpoint may name (classes defined there only, never functions)."""

TORCH_OPTIM = "torch.optim"
"""``torch.optim``: its ``Optimizer`` and ``LRScheduler`` subclasses are allowed too."""

_trusted: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("lightning_kge_trusted", default=())


class UntrustedError(UserError):
    """A spec names something outside the allow-list and outside the trusted modules."""


class UnresolvableError(UserError):
    """A spec names a class that cannot be imported here (missing package, renamed class, ``__main__``)."""


@contextlib.contextmanager
def trusting(modules: Iterable[str] | str | None) -> Iterator[None]:
    """Allow specs to name anything defined in ``modules`` (and their submodules) inside the block.

    Example:
        >>> with trusting(["collections"]):
        ...     resolve("collections.OrderedDict").__name__
        'OrderedDict'
    """
    if isinstance(modules, str):
        modules = [modules]
    names = tuple(str(m).strip().rstrip(".") for m in (modules or ()) if str(m).strip())
    token = _trusted.set(_trusted.get() + names)
    try:
        yield
    finally:
        _trusted.reset(token)


def trusted_modules() -> tuple[str, ...]:
    """The modules trusted in the current context (see :func:`trusting`)."""
    return _trusted.get()


def _within(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def resolve(path: str, where: str = "the checkpoint") -> Any:
    """The object at ``path``, if the allow-list or a trusted module allows it.

    The check on the path happens before any import, so naming an untrusted module never runs its
    code. An allowed object must be a class defined at exactly that path (not a re-exported
    function); ``torch.optim`` paths must name an optimizer or learning-rate scheduler class.

    Raises:
        UntrustedError: the path is neither allowed nor trusted (the message says how to trust it).
        UnresolvableError: the path cannot be imported.
    """
    if not isinstance(path, str) or not path or "." not in path:
        raise UntrustedError(f"{path!r} is not an import path", where, "give a checkpoint written by lightning_kge")
    module_name, _, attribute = path.rpartition(".")
    trusted = _within(module_name, trusted_modules())
    safe = _within(module_name, SAFE_MODULES) or _within(module_name, (TORCH_OPTIM,))
    if not (trusted or safe):
        raise _untrusted(path, where)
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        hint = ("it was defined in the script that trained it (__main__): move the class into an importable module "
                "and train again" if module_name == "__main__" else
                "install the package that defines it, or make its module importable (PYTHONPATH)")
        raise UnresolvableError(f"cannot import {path} ({type(error).__name__}: {str(error)[:120]})", where,
                                hint) from None
    if trusted:
        return found
    if not inspect.isclass(found) or f"{found.__module__}.{found.__qualname__}" != path:
        raise _untrusted(path, where)
    if _within(module_name, (TORCH_OPTIM,)):
        import torch

        if not issubclass(found, (torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler)):
            raise _untrusted(path, where)
    return found


def _untrusted(path: str, where: str) -> UntrustedError:
    module = path.rpartition(".")[0] or path
    return UntrustedError(
        f"{where} names {path}, which is not allowed: loading it would run code of the checkpoint's choosing",
        where,
        f"if you trust the file's source, allow its module with trust=[{module}] (config key trust, or the "
        f"trust=[...] argument of KGEModule.load_from_checkpoint)",
    )


def is_spec(value: Any) -> bool:
    """Whether ``value`` is a spec mapping of either form."""
    return isinstance(value, Mapping) and ("_target_" in value or "class_path" in value)


def check_specs(tree: Any, where: str = "the checkpoint") -> None:
    """Resolve every class a hyperparameter tree names (``_target_``, ``class_path``, ``_class_path``)
    without building anything, so a refused one stops loading before any object exists.

    Raises:
        UntrustedError, UnresolvableError: as :func:`resolve`.
    """
    if isinstance(tree, Mapping):
        for key in ("_target_", "class_path", "_class_path"):
            if key in tree:
                resolve(tree[key], f"{where} ({key} {tree[key]!r})")
        for value in tree.values():
            check_specs(value, where)
    elif isinstance(tree, (list, tuple)):
        for value in tree:
            check_specs(value, where)


def to_spec(obj: Any, form: Form = "target") -> dict[str, Any]:
    """Describe ``obj`` by its class path and constructor arguments, in either form.

    The object must keep each constructor argument as an attribute of the same name, or as
    ``_name`` where its class has a method of that name (``nn.Module.compile``). A
    ``functools.partial`` is described by its function and keywords (also jsonargparse's partials,
    whose positional arguments end with the class they build); an importable function or class by
    its path. Lambdas and local functions cannot be described (``TypeError``).

    Example:
        >>> to_spec(functools.partial(dict, a=1))
        {'_target_': 'builtins.dict', '_partial_': True, 'a': 1}
        >>> to_spec(functools.partial(dict, a=1), form="class_path")
        {'class_path': 'builtins.dict', 'init_args': {'a': 1}}
    """
    if isinstance(obj, functools.partial):
        return _spec(_path(partial_target(obj)), dict(obj.keywords), form, partial=True)
    if inspect.isroutine(obj) or inspect.isclass(obj):
        if "<" in obj.__qualname__:  # a lambda or a local function: not importable
            raise TypeError(
                f"cannot describe {obj.__qualname__!r} so that a checkpoint can rebuild it: pass an "
                "importable function or class, or functools.partial(torch.optim.Adam, lr=...)"
            )
        return _spec(_path(obj), {}, form, partial=True)
    names = [n for n in inspect.signature(type(obj).__init__).parameters if n != "self"]
    return _spec(_path(type(obj)), {n: _argument(obj, n) for n in names}, form, partial=False)


def partial_target(partial: functools.partial) -> Any:
    """What a ``functools.partial`` builds: its function, or for jsonargparse's partials
    (``partial(wrapper, instantiator, cls, **kwargs)``, what LightningCLI gives for a ``class_path``
    callable) the class its positional arguments end with.

    Raises:
        TypeError: other positional arguments, which a spec cannot hold (give them as keywords).
    """
    if not partial.args:
        return partial.func
    if inspect.isclass(partial.args[-1]) and all(callable(a) for a in partial.args[:-1]):
        return partial.args[-1]
    raise TypeError(f"cannot describe {partial!r}: give its arguments as keywords")


def _spec(path: str, args: dict[str, Any], form: Form, partial: bool) -> dict[str, Any]:
    if form == "class_path":
        return {"class_path": path, "init_args": args}
    return {"_target_": path, **({"_partial_": True} if partial else {}), **args}


def from_spec(spec: Mapping[str, Any] | Any, **extra: Any) -> Any:
    """Rebuild an object from a spec of either form (allow-listed, see :func:`resolve`); anything
    else is returned as it is.

    A ``_partial_`` spec gives a ``functools.partial``. A ``class_path`` spec builds its class,
    except for an optimizer or scheduler class, which gives a partial (it still needs its
    parameters or optimizer, as jsonargparse's callables do); nested ``class_path`` arguments are
    built too.
    """
    if not is_spec(spec):
        return spec
    if "_target_" in spec:
        args = {k: v for k, v in spec.items() if k not in ("_target_", "_partial_")}
        target = resolve(spec["_target_"])
        if spec.get("_partial_", False):
            return functools.partial(target, **args, **extra)
        return target(**args, **extra)
    target = resolve(spec["class_path"])
    args = {k: from_spec(v) if is_spec(v) and "class_path" in v else v
            for k, v in {**dict(spec.get("init_args") or {}), **dict(spec.get("dict_kwargs") or {})}.items()}
    if _needs_first_argument(target):
        return functools.partial(target, **args, **extra)
    return target(**args, **extra)


def _needs_first_argument(target: Any) -> bool:
    """Optimizers and schedulers: built later, from their parameters or optimizer."""
    import torch

    return inspect.isclass(target) and issubclass(target, (torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler))


def _argument(obj: Any, name: str) -> Any:
    value = getattr(obj, name)
    return getattr(obj, f"_{name}") if inspect.ismethod(value) else value


def _path(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def class_path(obj: Any) -> str:
    """The import path of ``obj``'s class (``module.QualName``)."""
    return _path(type(obj))


def check_importable(path: str, what: str) -> None:
    """Refuse a class path another program could never import: defined in ``__main__`` or locally.

    Raises:
        UserError: naming the class and saying to move it into an importable module.

    Example:
        >>> check_importable("my_project.models.HolE", "the model")
        >>> check_importable("__main__.HolE", "the model")
        Traceback (most recent call last):
        ...
        lightning_kge.errors.UserError: the model's class __main__.HolE is defined in the script being run ...
    """
    if path.startswith("__main__.") or "<locals>" in path:
        raise UserError(
            f"{what}'s class {path} is defined in the script being run (__main__) or inside a function, so no "
            "other program could load the checkpoint",
            "saving a checkpoint",
            "move the class into an importable module (a .py file of your project), import it from there and train again",
        )
