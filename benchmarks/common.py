"""Shared pieces of the benchmarks: data location, timing, peak memory, machine floor, tables."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

FORWARD_FLOPS = 7
"""Flops per (pair, complex dimension) of the distance forward: 2 sub, 2 mul, add, sqrt, sum."""

BACKWARD_FLOPS = 13
"""Flops per (pair, complex dimension) of its backward with recomputation: 2 sub, 2 mul, add,
sqrt (recompute), 1 div (g / m), 2 mul (u, v by the factor), 2 adds into ∂q, 2 adds into ∂t."""


def data_folder(name: str, data: str | None) -> Path:
    """The folder of dataset ``name``: ``--data PATH`` or ``../shared/data/<name>`` from the repo."""
    folder = Path(data) if data is not None else SHARED_DATA / name
    if not (folder / "train.txt").is_file():
        sys.exit(
            f"benchmark: no {name} data at {folder} (expected train.txt, valid.txt, test.txt); "
            f"pass --data PATH to a folder holding them"
        )
    return folder


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` timed calls of ``fn``, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


class PeakRSS:
    """Peak resident memory of this process inside a ``with`` block (Linux ``VmHWM``).

    The kernel's high-water mark is reset on entry (``/proc/self/clear_refs``), so ``peak`` is the
    largest RSS reached in the block and ``extra`` that peak minus the RSS on entry (tables,
    optimizer states and data made before the block are not counted in ``extra``).
    """

    def __enter__(self) -> PeakRSS:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
        self.start = _status_kib("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak = _status_kib("VmHWM")
        self.extra = max(0, self.peak - self.start)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def gib(kib: int) -> str:
    return f"{kib / 2**20:.2f}"


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Measured float32 matmul throughput (GFLOP/s): the machine's arithmetic peak as torch sees it."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    seconds = best_time(lambda: a @ b, repeats)
    return 2 * size**3 / seconds / 1e9


def vector_gflops(repeats: int = 20) -> float:
    """Measured throughput (GFLOP/s, 7 flops per element) of the distance's own operation mix.

    ``Σ sqrt((a − b)² + (c − e)²)`` over rows that stay in cache, compiled like our kernels, with
    no gather: an upper bound for what a CPU kernel of this maths can reach here.
    """
    rows, d = 128, 512

    def mix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        u, v = a[:, None, :d] - b[None, :, :d], a[:, None, d:] - b[None, :, d:]
        return torch.sqrt(u * u + v * v).sum(-1)

    compiled = torch.compile(mix, fullgraph=True)
    a, b = torch.randn(rows, 2 * d), torch.randn(rows, 2 * d)
    compiled(a, b)
    seconds = best_time(lambda: compiled(a, b), repeats)
    return FORWARD_FLOPS * rows * rows * d / seconds / 1e9


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
