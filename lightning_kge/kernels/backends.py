"""The backends of the RotatE distance, and the one rule that picks one.

``backend`` is a plain string, chosen by the caller (the config key ``model.distance_backend``):

* ``"reference"``: the eager maths of :mod:`~lightning_kge.kernels.rotate_reference`, chunked;
  any device; the oracle of the tests and the fallback;
* ``"native"``: the C++ kernels of :mod:`~lightning_kge.kernels.rotate_native`; CPU tensors;
* ``"triton"``: the Triton kernels of :mod:`~lightning_kge.kernels.rotate_triton`; CUDA tensors
  (or CPU tensors under ``TRITON_INTERPRET=1``, for the tests);
* ``"auto"``: ``"triton"`` for CUDA tensors when triton imports, ``"native"`` for CPU tensors
  when the C++ kernels build, else ``"reference"`` (after one warning saying why).

The choice depends on the device and on what is installed, never on sizes or on what ran
before. A backend asked for by name that cannot run raises :class:`BackendUnavailableError`.
"""

from __future__ import annotations

import functools
import warnings

import torch
from torch import Tensor

from lightning_kge.errors import UserError
from lightning_kge.kernels import rotate_native, rotate_reference, rotate_triton

BACKENDS = ("auto", "reference", "native", "triton")
"""The values of ``backend``."""


class BackendUnavailableError(UserError, RuntimeError):
    """A distance backend asked for by name cannot run here; the message says why and what to do."""


@functools.cache
def _warn_once(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def _unavailable(backend: str, why: str, fix: str) -> BackendUnavailableError:
    return BackendUnavailableError(f"the {backend!r} distance backend cannot run: {why}",
                                   f"argument backend={backend!r}", fix)


def resolve(backend: str, device: torch.device) -> str:
    """The backend that runs for tensors on ``device``: ``"reference"``, ``"native"`` or ``"triton"``.

    Raises:
        BackendUnavailableError: ``backend`` names a backend that cannot run for ``device``.

    Example:
        >>> resolve("reference", torch.device("cpu"))
        'reference'
    """
    if backend == "auto":
        if device.type == "cuda":
            if rotate_triton.unavailable() is None:
                return "triton"
            _warn_once(f"rotate_distance: triton does not import ({rotate_triton.unavailable()}); CUDA tensors use "
                       "the reference backend. pip install 'lightning-kge[gpu]' for the Triton kernels.")
        elif device.type == "cpu" and rotate_native.unavailable() is None:  # warns once if it is not
            return "native"
        return "reference"
    if backend == "native":
        if device.type != "cpu":
            raise _unavailable(backend, f"it takes CPU tensors, got {device.type} tensors",
                               "use backend='triton' or 'auto' for CUDA tensors")
        reason = rotate_native.unavailable()
        if reason is not None:
            raise _unavailable(backend, f"the C++ kernels did not build ({reason})",
                               "install a C++ compiler and ninja (pip install ninja), or use backend='auto' "
                               "(falls back to 'reference')")
    elif backend == "triton":
        reason = rotate_triton.unavailable()
        if reason is not None:
            raise _unavailable(backend, f"triton does not import ({reason})",
                               "pip install 'lightning-kge[gpu]', or use backend='auto'")
        if device.type != "cuda" and not (device.type == "cpu" and rotate_triton.interpreting()):
            raise _unavailable(backend, f"it takes CUDA tensors, got {device.type} tensors",
                               "use backend='auto' (native on CPU), or set TRITON_INTERPRET=1 before triton is "
                               "imported to run the kernels on CPU tensors in Triton's interpreter")
    elif backend != "reference":
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def _ids(table: Tensor, index: Tensor | None) -> Tensor:
    """The ids of the fused kernels: ``index``, or ``arange(E)`` shared for ``None``."""
    return torch.arange(table.shape[0], device=table.device) if index is None else index


def _check_ids(table: Tensor, index: Tensor | None) -> None:
    """Range check of the ids on CPU (on CUDA it would synchronise; the kernels mask them instead)."""
    if index is None or index.device.type != "cpu" or index.numel() == 0:
        return
    low, high = int(index.min()), int(index.max())
    if low < 0 or high >= table.shape[0]:
        bad = low if low < 0 else high
        raise IndexError(f"rotate_distance: candidate id {bad} lies outside [0, {table.shape[0]}): "
                         "ids must index rows of the table")


def forward(query: Tensor, table: Tensor, index: Tensor | None, backend: str) -> Tensor:
    """``(B, C)`` distances by ``backend`` (resolved here); inputs as the op receives them."""
    backend = resolve(backend, query.device)
    _check_ids(table, index)
    with torch.autocast(query.device.type, enabled=False):
        if backend == "native":
            return rotate_native.forward(query, table, _ids(table, index))
        if backend == "triton":
            return rotate_triton.forward(query, table, _ids(table, index))
        return rotate_reference.forward(query, table, index)


def backward(grad: Tensor, query: Tensor, table: Tensor, index: Tensor | None, backend: str, need_query: bool,
             need_table: bool) -> tuple[Tensor, Tensor]:
    """``(∂L/∂query, ∂L/∂table)`` by ``backend``; an unneeded gradient is an empty tensor."""
    backend = resolve(backend, query.device)  # the ids were checked by the forward
    grad = grad.to(query.dtype).contiguous()
    with torch.autocast(query.device.type, enabled=False):
        if backend == "native":
            return rotate_native.backward(grad, query, table, _ids(table, index), need_query, need_table)
        if backend == "triton":
            return rotate_triton.backward(grad, query, table, _ids(table, index), need_query, need_table)
        return rotate_reference.backward(grad, query, table, index, need_query, need_table)
