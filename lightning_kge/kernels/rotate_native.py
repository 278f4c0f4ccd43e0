"""The native CPU backend of :func:`~lightning_kge.kernels.rotate_distance.rotate_distance`.

Two C kernels (``rotate_native.c``, float32 and float64), built on first use with the system C
compiler (``$CC``, else ``cc``, ``gcc`` or ``clang``; the same toolchain ``torch.compile`` needs
on CPU) with OpenMP, and cached per source, compiler and instruction set under
``$LIGHTNING_KGE_CACHE`` (default ``~/.cache/lightning_kge``). If the build fails, a warning
is issued once and :func:`library` returns ``None``; callers then use the torch backend.

The (query, candidate) pairs of a call are grouped by candidate entity (one sort of the ids), so
each pass reads every used table row once instead of once per pair, and the backward computes the
query and the table gradients from one evaluation of ``m = |q_i − t_i|`` and ``G / m`` per pair
and dimension (see the C source). The grouping is computed in the forward and kept on the backend
object of the call for its backward.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor

from lightning_kge.kernels.gradient_buffer import gradient_buffer

SOURCE = Path(__file__).with_name("rotate_native.c")
CACHE_ENV = "LIGHTNING_KGE_CACHE"
"""Folder for the built library (default ``$XDG_CACHE_HOME/lightning_kge`` or ``~/.cache/lightning_kge``)."""

ISA_FLAGS = {
    "AVX512": ["-mavx512f", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma"],
    "AVX2": ["-mavx2", "-mfma"],
}
"""Vector flags per ``torch.backends.cpu.get_cpu_capability()`` (what torch itself dispatches to)."""

FLAGS = ["-O3", "-std=gnu11", "-fno-math-errno", "-fopenmp", "-shared", "-fPIC"]
"""``-fno-math-errno`` lets ``sqrt`` vectorise; no flag that reorders or approximates arithmetic."""

_P, _I = ctypes.c_void_p, ctypes.c_int64
_SIGNATURES = {
    "rotate_forward": [_P, _P, _I, _I, _I, ctypes.c_int, _I, _P, _P, _P, _P, ctypes.c_int],
    "rotate_backward": [_P, _P, _I, _I, _I, ctypes.c_int, _I, _P, _P, _P, _P, _I, _P, _P, _P, ctypes.c_int],
}
_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lightning_kge"


@functools.cache
def library() -> ctypes.CDLL | None:
    """The built kernels, or ``None`` (after one warning) when they cannot be built or loaded."""
    try:
        compiler = _compiler()
        if compiler is None:
            raise RuntimeError("no C compiler found (set CC)")
        flags = FLAGS + ISA_FLAGS.get(torch.backends.cpu.get_cpu_capability(), [])
        source = SOURCE.read_bytes()
        key = hashlib.sha256(b"\0".join([source, compiler.encode(), " ".join(flags).encode(),
                                         platform.machine().encode()])).hexdigest()[:16]
        path = _cache_dir() / f"rotate_native_{key}.so"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
            os.close(handle)
            try:
                subprocess.run([compiler, *flags, str(SOURCE), "-o", tmp, "-lm"], check=True, capture_output=True,
                               text=True, timeout=300)
                os.replace(tmp, path)  # atomic: processes building at once each load a whole file
            finally:
                Path(tmp).unlink(missing_ok=True)
        lib = ctypes.CDLL(str(path))
        for name, argtypes in _SIGNATURES.items():
            for suffix in _SUFFIX.values():
                getattr(lib, f"{name}_{suffix}").argtypes = argtypes
        return lib
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", None) or str(error)
        warnings.warn(f"rotate_distance: native CPU kernels unavailable ({detail.strip()[:300]}); "
                      "using the torch backend", RuntimeWarning, stacklevel=2)
        return None


def _ptr(t: Tensor | None) -> ctypes.c_void_p:
    return ctypes.c_void_p(None if t is None else t.data_ptr())


class NativeBackend:
    """The native kernels behind the backend interface of :mod:`~lightning_kge.kernels.rotate_torch`.

    One instance serves one call: the grouping of its ids by entity, made in the forward, is kept
    for the backward.

    Args:
        lib: the loaded library (:func:`library`).
    """

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        self.groups: tuple[Tensor, Tensor, Tensor] | None = None

    def _group(self, ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(start, entity, entry)``: entries (flat positions or columns) sorted by entity."""
        if self.groups is None:
            sorted_ids, entry = torch.sort(ids.reshape(-1), stable=True)
            entity, counts = torch.unique_consecutive(sorted_ids, return_counts=True)
            start = counts.new_zeros(entity.numel() + 1)
            torch.cumsum(counts, 0, out=start[1:])
            self.groups = start, entity, entry
        return self.groups

    def _forward(self, q: Tensor, table: Tensor, ids: Tensor, shared: bool) -> Tensor:
        rows, cols = q.shape[0], ids.shape[-1]
        out = q.new_empty(rows, cols)
        start, entity, entry = self._group(ids)
        kernel = getattr(self.lib, f"rotate_forward_{_SUFFIX[q.dtype]}")
        kernel(_ptr(table), _ptr(q), q.shape[1] // 2, rows, cols, int(shared), entity.numel(), _ptr(start),
               _ptr(entity), _ptr(entry), _ptr(out), torch.get_num_threads())
        return out

    def _backward(self, q: Tensor, table: Tensor, ids: Tensor, grad: Tensor, need_q: bool, need_table: bool,
                  shared: bool) -> tuple[Tensor | None, Tensor | None]:
        rows, cols = q.shape[0], ids.shape[-1]
        start, entity, entry = self._group(ids)
        if entity.numel() == 0:  # no pairs
            return (torch.zeros_like(q) if need_q else None), (torch.zeros_like(table) if need_table else None)
        threads = torch.get_num_threads()
        parts = q.new_zeros(threads, *q.shape) if need_q else None
        grad_table = gradient_buffer(table) if need_table else None  # every row is written
        scratch = q.new_empty(threads, 2, q.shape[1])
        kernel = getattr(self.lib, f"rotate_backward_{_SUFFIX[q.dtype]}")
        kernel(_ptr(table), _ptr(q), q.shape[1] // 2, rows, cols, int(shared), entity.numel(), _ptr(start),
               _ptr(entity), _ptr(entry), _ptr(grad), table.shape[0], _ptr(grad_table), _ptr(parts), _ptr(scratch),
               threads)
        grad_q = None if parts is None else parts[0] if threads == 1 else parts.sum(0)
        return grad_q, grad_table

    def shared_forward(self, q: Tensor, table: Tensor, ids: Tensor) -> Tensor:
        return self._forward(q, table, ids, shared=True)

    def shared_backward(self, q: Tensor, table: Tensor, ids: Tensor, grad: Tensor, need_q: bool,
                        need_table: bool) -> tuple[Tensor | None, Tensor | None]:
        return self._backward(q, table, ids, grad, need_q, need_table, shared=True)

    def per_query_forward(self, q: Tensor, table: Tensor, index: Tensor) -> Tensor:
        return self._forward(q, table, index, shared=False)

    def per_query_backward(self, q: Tensor, table: Tensor, index: Tensor, grad: Tensor, need_q: bool,
                           need_table: bool) -> tuple[Tensor | None, Tensor | None]:
        return self._backward(q, table, index, grad, need_q, need_table, shared=False)
