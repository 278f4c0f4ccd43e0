"""Shared pieces of the benchmarks: data location, devices, timing, GPU kernel time, peak memory,
machine floor, tables."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.autograd import DeviceType

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


def default_device() -> str:
    """``cuda`` where a CUDA device is present, else ``cpu``: the default of ``--device``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def synchronize(device: str | torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on CPU. Timings end with it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def machine(device: str | torch.device) -> str:
    """One line on where a benchmark ran: the device, CPU threads and the load average."""
    where = torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else "CPU"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"device: {where}; torch {torch.__version__}, {torch.get_num_threads()} threads on "
            f"{os.cpu_count()} cores; load average (1, 5, 15 min) {load}")


def step_time(step: Callable[[], object], steps: int, repeats: int, device: str | torch.device) -> tuple[float, float]:
    """Seconds per call of ``step``: the best of ``repeats`` windows of ``steps`` calls, wall and CPU.

    Each window ends with :func:`synchronize`, so queued GPU work is counted. CPU time is this
    process's (all threads), a steadier figure than wall time on a shared machine.
    """
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        synchronize(device)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step()
        synchronize(device)
        best_wall = min(best_wall, (time.perf_counter() - wall) / steps)
        best_cpu = min(best_cpu, (time.process_time() - cpu) / steps)
    return best_wall, best_cpu


def kernel_seconds(step: Callable[[], object], steps: int, device: str | torch.device) -> float | None:
    """GPU time per call of ``step`` in which at least one kernel (or copy) runs; ``None`` off CUDA.

    Measured with ``torch.profiler`` over ``steps`` calls: the union of the device intervals of
    every kernel and memory operation (overlaps counted once), over ``steps``. Divided by the
    unprofiled time per step it gives the share of wall time the GPU is busy.
    """
    if torch.device(device).type != "cuda":
        return None
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    synchronize(device)
    with torch.profiler.profile(activities=activities) as profile:
        for _ in range(steps):
            step()
        synchronize(device)
    intervals = [(event.time_range.start, event.time_range.end) for event in profile.events()
                 if event.device_type == DeviceType.CUDA and not event.is_user_annotation]
    return union_length(intervals) / 1e6 / steps


def union_length(intervals: list[tuple[float, float]]) -> float:
    """Total length covered by ``(start, end)`` intervals, overlaps counted once.

    Example:
        >>> union_length([(0, 2), (1, 3), (5, 6), (5.5, 5.7)])
        4.0
    """
    busy, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop > end:
            busy += stop - max(start, end)
            end = stop
    return busy


def busy_share(kernel: float | None, seconds: float) -> str:
    """``kernel / seconds`` as a percentage, or ``-`` where there is no GPU time (CPU runs)."""
    return "-" if kernel is None else f"{100 * kernel / seconds:.0f}%"


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


class PeakMemory:
    """Peak memory growth inside a ``with`` block on ``device``, in KiB (``extra``), and GPU use.

    On CPU it is :class:`PeakRSS`'s ``extra``; on CUDA the peak of the caching allocator's
    allocated bytes minus those allocated on entry. ``kernel`` (GPU seconds per step, or
    ``None``) is for the caller to fill from :func:`kernel_seconds`.
    """

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.kernel: float | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            self.rss = PeakRSS().__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.extra = max(0, torch.cuda.max_memory_allocated(self.device) - self.start) // 1024
        else:
            self.rss.__exit__(*exc)
            self.extra = self.rss.extra


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def gib(kib: int) -> str:
    return f"{kib / 2**20:.2f}"


def matmul_gflops(size: int = 2048, repeats: int = 5, device: str | torch.device = "cpu") -> float:
    """Measured float32 matmul throughput (GFLOP/s) on ``device``: its arithmetic peak as torch sees it."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    a @ b
    seconds = best_time(lambda: (a @ b, synchronize(device)), repeats)
    return 2 * size**3 / seconds / 1e9


def vector_gflops(repeats: int = 20, device: str | torch.device = "cpu") -> float:
    """Measured throughput (GFLOP/s, 7 flops per element) of the distance's own operation mix.

    ``Σ sqrt((a − b)² + (c − e)²)`` over rows that stay in cache, compiled like our kernels, with
    no gather: an upper bound for what a kernel of this maths can reach on ``device`` (on CUDA,
    with 2,048 rows a side, enough to fill the GPU).
    """
    rows, d = (2048 if torch.device(device).type == "cuda" else 128), 512

    def mix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        u, v = a[:, None, :d] - b[None, :, :d], a[:, None, d:] - b[None, :, d:]
        return torch.sqrt(u * u + v * v).sum(-1)

    compiled = torch.compile(mix, fullgraph=True)
    a, b = torch.randn(rows, 2 * d, device=device), torch.randn(rows, 2 * d, device=device)
    compiled(a, b)
    seconds = best_time(lambda: (compiled(a, b), synchronize(device)), repeats)
    return FORWARD_FLOPS * rows * rows * d / seconds / 1e9


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
