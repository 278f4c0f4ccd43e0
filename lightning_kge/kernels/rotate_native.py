"""The native CPU backend of the RotatE distance: C++ kernels on torch's own thread pool.

``rotate_native.cpp`` is compiled on first use with ``torch.utils.cpp_extension.load`` (the C++
compiler torch uses for extensions, and ``ninja``; about a minute on two cores, announced by one line
on stderr) and cached under
``lightning_kge.cache.cache_dir("kernels")``, keyed on the source, the flags and the torch
version; a later process loads the cached library (``torch.ops.load_library``). It
registers two operators, ``torch.ops.lightning_kge_native.rotate_forward`` and
``rotate_backward``, which the custom op of :mod:`~lightning_kge.kernels.rotate_distance` calls
for CPU tensors. They group the pairs of a call by entity (each pass reads every used table row
once) and compute both gradients from one evaluation of ``|q_i − t_i|`` per pair; see the C++
source for the maths. The same library holds ``adam_rows`` and ``adagrad_rows``, the row updates of
the sparse optimizers (:mod:`lightning_kge.optim`): each touched row of a table and its state
updated in one pass, with no temporary beyond one row.

Where the build fails (no compiler, no ``ninja``), :func:`unavailable` returns why, after one
warning; ``backend="auto"`` then uses the reference backend and ``backend="native"`` raises.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import sys
import warnings
from pathlib import Path

import torch
from torch import Tensor

from lightning_kge.cache import cache_dir

SOURCE = Path(__file__).with_name("rotate_native.cpp")

ISA_FLAGS = {
    "AVX512": ["-mavx512f", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma"],
    "AVX2": ["-mavx2", "-mfma"],
}
"""Vector flags per ``torch.backends.cpu.get_cpu_capability()`` (the ISA torch itself uses here)."""

FLAGS = ["-O3", "-fno-math-errno", "-fopenmp"]
"""``-fno-math-errno`` lets ``sqrt`` vectorise; ``-fopenmp`` makes ``at::parallel_for`` parallel
(its loop is inline in torch's headers, and links the ``libgomp`` torch already loaded) and
enables ``omp simd``. No ``-ffast-math``: no approximate arithmetic."""


def _find_ninja() -> None:
    """Put the ``ninja`` of the ``ninja`` package on ``PATH`` if none is there.

    ``cpp_extension`` runs ``ninja`` from ``PATH``; a virtual environment used without being
    activated has the package's executable, but not on ``PATH``.
    """
    if shutil.which("ninja") is not None:
        return
    try:
        import ninja
    except ImportError:
        return
    os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, os.environ.get("PATH", "")])


def _flags() -> list[str]:
    return FLAGS + ISA_FLAGS.get(torch.backends.cpu.get_cpu_capability(), [])


def _name() -> str:
    """Library name keyed on what the binary depends on: source, flags and torch version."""
    key = hashlib.sha256("\0".join([SOURCE.read_text(), " ".join(_flags()), torch.__version__]).encode())
    return f"lightning_kge_rotate_native_{key.hexdigest()[:12]}"


@functools.cache
def unavailable() -> str | None:
    """``None`` once the kernels are loaded, else why they cannot be (warned about once).

    A library built before for the same source, flags and torch version is loaded directly;
    otherwise ``cpp_extension.load`` builds it (under its lock, so concurrent processes build
    it once) in ``cache_dir("kernels", <name>)``.
    """
    try:
        name = _name()
        folder = cache_dir("kernels", name)
        built = folder / f"{name}.so"
        if built.is_file() and not (folder / "lock").exists():
            torch.ops.load_library(str(built))
            return None
        from torch.utils import cpp_extension

        _find_ninja()
        folder.mkdir(parents=True, exist_ok=True)
        print(f"lightning_kge: building the native CPU kernels of rotate_distance into {folder} (once per source and "
              "torch version; about a minute)", file=sys.stderr, flush=True)
        cpp_extension.load(
            name=name,
            sources=[str(SOURCE)],
            extra_cflags=_flags(),
            extra_ldflags=["-fopenmp"],
            build_directory=str(folder),
            is_python_module=False,
            verbose=os.environ.get("LIGHTNING_KGE_VERBOSE_BUILD", "0") not in ("", "0"),
        )
    except Exception as error:  # noqa: BLE001 - any build or load failure means: not available
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:400]
        warnings.warn(
            f"rotate_distance: the native CPU kernels are unavailable ({reason}); backend='auto' uses "
            "the reference backend. Install a C++ compiler and ninja (pip install ninja) for them.",
            RuntimeWarning,
            stacklevel=2,
        )
        return reason
    return None


def forward(query: Tensor, table: Tensor, ids: Tensor) -> Tensor:
    """``(B, C)`` distances; ``ids`` is ``(B, C)`` or ``(C,)``; float32/float64 contiguous CPU tensors."""
    return torch.ops.lightning_kge_native.rotate_forward(query, table, ids)


def backward(
    grad: Tensor, query: Tensor, table: Tensor, ids: Tensor, need_query: bool, need_table: bool
) -> tuple[Tensor, Tensor]:
    """``(∂L/∂query, ∂L/∂table)`` given ``grad = ∂L/∂D``; an unneeded one is empty."""
    return torch.ops.lightning_kge_native.rotate_backward(grad, query, table, ids, need_query, need_table)
