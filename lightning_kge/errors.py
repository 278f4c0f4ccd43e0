"""Errors a user can act on, and how the command-line entry points report them.

Every problem a user can fix (a data file, a config value, a checkpoint, a run directory) is a
:class:`UserError`. The entry points print it as one line on stderr,

    error: <what> (<where>): <how to fix>

with no traceback, and exit with status 2; ``HYDRA_FULL_ERROR=1`` shows the traceback instead.
Library code raises them like any exception, so Python users can catch them.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

EXIT_STATUS = 2
"""Exit status of a command stopped by a :class:`UserError`."""

MAX_LABEL = 200
"""Labels longer than this are shortened in messages."""

F = TypeVar("F", bound=Callable[..., Any])


def shorten(text: str, limit: int = MAX_LABEL) -> str:
    """``repr`` of a label, shortened to about ``limit`` characters for messages.

    Example:
        >>> shorten("x" * 300)[:8], len(shorten("x" * 300)) < 230
        ("'xxxxxxx", True)
        >>> shorten("café")
        "'café'"
    """
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit]) + f"… ({len(text)} characters)"


class UserError(Exception):
    """A problem the user can fix; ``str(error)`` is ``<what> (<where>): <how to fix>``.

    Args:
        what: what is wrong, e.g. ``expected 3 tab-separated columns, found 2``.
        where: where, e.g. ``data/train.txt:12``, ``config key model.dim`` or a path.
        fix: how to fix it, e.g. ``separate head, relation and tail by one tab each``.

    Example:
        >>> str(UserError("file holds no triples", "train.txt", "add triples"))
        'file holds no triples (train.txt): add triples'
    """

    def __init__(self, what: str, where: str, fix: str) -> None:
        self.what, self.where, self.fix = what, where, fix
        super().__init__(f"{what} ({where}): {fix}")

    def report(self) -> str:
        """The one line an entry point prints: ``error: <what> (<where>): <how to fix>``."""
        return f"error: {self}"

    def __reduce__(self) -> tuple:  # picklable: errors cross process boundaries (DDP spawn)
        return type(self), (self.what, self.where, self.fix)


class ArgumentError(UserError, ValueError):
    """A constructor argument outside its allowed range.

    Raised by the classes that configs instantiate, naming the argument; the entry point that
    instantiated the class from a config node re-raises it with :meth:`at`, naming the config key.

    Args:
        name: the argument, e.g. ``dim``.
        value: the value given.
        requirement: what the value must be, e.g. ``an integer ≥ 1``.

    Example:
        >>> error = ArgumentError("dim", 0, "an integer ≥ 1")
        >>> str(error)
        'dim=0 is not allowed (argument dim): give an integer ≥ 1'
        >>> str(error.at("model"))
        'model.dim=0 is not allowed (config key model.dim): set model.dim to an integer ≥ 1'
    """

    def __init__(self, name: str, value: Any, requirement: str, key: str | None = None) -> None:
        self.name, self.value, self.requirement, self.key = name, value, requirement, key
        if key is None:
            super().__init__(f"{name}={value!r} is not allowed", f"argument {name}", f"give {requirement}")
        else:
            super().__init__(f"{key}={value!r} is not allowed", f"config key {key}", f"set {key} to {requirement}")

    def __reduce__(self) -> tuple:
        return type(self), (self.name, self.value, self.requirement, self.key)

    def at(self, node: str) -> ArgumentError:
        """The same error, naming the config key ``<node>.<name>``."""
        return ArgumentError(self.name, self.value, self.requirement, key=f"{node}.{self.name}")


def require(condition: bool, name: str, value: Any, requirement: str) -> None:
    """Raise :class:`ArgumentError` unless ``condition``.

    Example:
        >>> require(3 >= 1, "dim", 3, "an integer ≥ 1")
        >>> require(0 >= 1, "dim", 0, "an integer ≥ 1")
        Traceback (most recent call last):
        ...
        lightning_kge.errors.ArgumentError: dim=0 is not allowed (argument dim): give an integer ≥ 1
    """
    if not condition:
        raise ArgumentError(name, value, requirement)


WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})
"""``errno`` values that only a write gives: a full disk or quota, a read-only file system, a file too large."""


def write_failed(error: OSError, path: str | os.PathLike) -> UserError:
    """The one-line error of a write of ``path`` that failed with ``error``.

    Example:
        >>> str(write_failed(OSError(errno.ENOSPC, "No space left on device"), "out/metrics.json"))
        'no space left on device (out/metrics.json): free space or choose another folder'
        >>> str(write_failed(OSError(errno.EROFS, "Read-only file system"), "out"))
        'cannot write: read-only file system (out): choose a folder you can write to'
        >>> str(write_failed(OSError("killed while writing"), "out/last.ckpt"))
        'cannot write: killed while writing (out/last.ckpt): check the disk and the folder, or choose another folder'
    """
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        what = "no space left on device" if error.errno == errno.ENOSPC else "disk quota exceeded"
        return UserError(what, str(path), "free space or choose another folder")
    reason = (error.strerror or str(error) or type(error).__name__).lower()
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return UserError(f"cannot write: {reason}", str(path), "choose a folder you can write to")
    return UserError(f"cannot write: {reason}", str(path), "check the disk and the folder, or choose another folder")


def _reported(error: BaseException, folder: str | None) -> UserError | None:
    """The error to report: a :class:`UserError`, also one that a failed write interrupted (its context).

    A failed write whose error names no file is placed in ``folder`` (the command's output folder).
    """
    if isinstance(error, UserError):
        return error
    if isinstance(error, OSError) and error.errno in WRITE_ERRNOS:
        cause: BaseException | None = error.__context__
        while cause is not None:  # e.g. a logger's write on a full disk while the run stopped for an earlier error
            if isinstance(cause, UserError):
                return cause
            cause = cause.__context__
        return write_failed(error, error.filename or folder or "a file being written")
    return None


def _output_folder(args: tuple[Any, ...]) -> str | None:
    """The output folder of a command's config (its ``output_dir`` or ``out``), if it has one."""
    for arg in args:
        for key in ("output_dir", "out"):
            try:
                value = arg.get(key) if hasattr(arg, "get") else None
            except Exception:  # noqa: BLE001 (a config value that cannot be resolved: no folder)
                value = None
            if isinstance(value, str):
                return value
    return None


def reports_user_errors(function: F) -> F:
    """Wrap a command's body: a :class:`UserError` becomes one line on stderr and exit status 2.

    So does an ``OSError`` that only a write gives (:data:`WRITE_ERRNOS`: a full disk, ...),
    wherever it was raised: ``error: no space left on device (PATH): free space or choose another
    folder``. With ``HYDRA_FULL_ERROR=1`` in the environment the error propagates with its traceback.
    """

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except (UserError, OSError) as error:
            reported = _reported(error, _output_folder(args))
            if reported is None or os.environ.get("HYDRA_FULL_ERROR", "0") not in ("", "0"):
                raise
            print(reported.report(), file=sys.stderr, flush=True)
            raise SystemExit(EXIT_STATUS) from None

    return wrapper  # type: ignore[return-value]
