"""The RotatE distance at the wn18rr paper shapes: each backend against torch.compile of the maths.

Run from the repository root (CPU; heavy, so under the shared lock):

    flock /tmp/kge-cpu.lock python benchmarks/kernel_speed.py
    python benchmarks/kernel_speed.py --quick            # tiny shapes: checks that it runs
    python benchmarks/kernel_speed.py --device cuda      # on a GPU: reference, compile, triton

Shapes (wn18rr, the paper's setting): a table of E = 40,943 entities of complex dimension
d = 500 (rows of 1,000 floats), float32, and

* ``per-query``: B = 512 queries, each with its own k = 1,024 candidates (training);
* ``shared``: B = 512 queries, k = 1,024 candidates shared by all (``sampler.shared=true``);
* ``all entities``: B = 8 queries against every entity, forward only (evaluation).

Variants:

* ``reference``: the eager reference backend (the plain maths, chunked);
* ``compile``: ``torch.compile`` (inductor) of the plain maths, the whole ``(B, C)`` formula, its
  backward made by autograd;
* ``compile-chunks``: the reference backend with its two chunk functions compiled;
* ``native`` (CPU): the C++ kernels; ``triton`` (CUDA): the Triton kernels.

Each time is the best of ``--repeats`` calls after one untimed call (compilation, autotuning);
``first call`` is that untimed call. ``fwd+bwd`` is the forward and the backward of both
gradients; GFLOP/s counts 7 flops per pair and dimension forward and 13 backward
(``common.FORWARD_FLOPS``, ``BACKWARD_FLOPS``). ``peak GiB`` is the peak RSS during the variant
minus the RSS before it (CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from common import BACKWARD_FLOPS, FORWARD_FLOPS, PeakRSS, best_time, gib, markdown
from lightning_kge.kernels import rotate_reference
from lightning_kge.kernels.rotate_distance import rotate_distance

PAPER = {"entities": 40943, "dim": 500, "batch": 512, "candidates": 1024, "eval_batch": 8}
QUICK = {"entities": 300, "dim": 16, "batch": 16, "candidates": 32, "eval_batch": 4}
VARIANTS = ["reference", "compile", "compile-chunks", "native", "triton"]


def plain(query: Tensor, table: Tensor, index: Tensor | None) -> Tensor:
    """The maths in one broadcast formula (what ``compile`` compiles)."""
    candidates = table if index is None else table[index]
    return rotate_reference.chunk_distance(query, candidates)


@contextlib.contextmanager
def compiled_chunks() -> Iterator[None]:
    """The reference backend with ``torch.compile``d chunk functions, for the ``with`` block."""
    saved = rotate_reference.chunk_distance, rotate_reference.chunk_gradients
    rotate_reference.chunk_distance = torch.compile(saved[0], dynamic=False)
    rotate_reference.chunk_gradients = torch.compile(saved[1], dynamic=False)
    try:
        yield
    finally:
        rotate_reference.chunk_distance, rotate_reference.chunk_gradients = saved


def distance_fn(variant: str) -> Callable[[Tensor, Tensor, Tensor | None], Tensor]:
    if variant == "compile":
        return torch.compile(plain, dynamic=False)
    backend = {"compile-chunks": "reference"}.get(variant, variant)
    return lambda q, t, i: rotate_distance(q, t, i, backend=backend)


def measure(variant: str, case: str, sizes: dict[str, int], device: str, repeats: int, seed: int) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    entities, width = sizes["entities"], 2 * sizes["dim"]
    table = torch.randn(entities, width, generator=g).to(device).requires_grad_()
    rows = sizes["eval_batch"] if case == "all entities" else sizes["batch"]
    query = torch.randn(rows, width, generator=g).to(device).requires_grad_()
    if case == "per-query":
        index = torch.randint(entities, (rows, sizes["candidates"]), generator=g).to(device)
    elif case == "shared":
        index = torch.randint(entities, (sizes["candidates"],), generator=g).to(device)
    else:
        index = None
    cols = entities if index is None else index.shape[-1]
    upstream = torch.randn(rows, cols, generator=g).to(device)
    fn = distance_fn(variant)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def forward() -> None:
        with torch.no_grad():
            fn(query, table, index)
        sync()

    def forward_backward() -> None:
        grads = torch.autograd.grad(fn(query, table, index), (query, table), upstream)
        del grads
        sync()

    backward = case != "all entities"
    with contextlib.ExitStack() as stack:
        if variant == "compile-chunks":
            stack.enter_context(compiled_chunks())
        with PeakRSS() as memory:
            start = time.perf_counter()
            forward_backward() if backward else forward()
            first = time.perf_counter() - start
            if backward:
                forward()  # untimed: compiled variants compile again without autograd
            fwd = best_time(forward, repeats)
            both = best_time(forward_backward, repeats) if backward else float("nan")
    pairs_dims = rows * cols * sizes["dim"]
    flops = pairs_dims * (FORWARD_FLOPS + BACKWARD_FLOPS) / both if backward else pairs_dims * FORWARD_FLOPS / fwd
    return [case, variant, f"{first:.2f}", f"{1e3 * fwd:.1f}", f"{1e3 * both:.1f}" if backward else "–",
            f"{flops / 1e9:.1f}", gib(memory.extra) if device == "cpu" else "–"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, help="default: all that run on the device")
    parser.add_argument("--cases", nargs="+", default=["per-query", "shared", "all entities"],
                        choices=["per-query", "shared", "all entities"])
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per variant (the best is kept)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, one repeat: checks that it runs")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's, one per core)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("kernel_speed: --device cuda needs a CUDA device; none is present")
    sizes = QUICK if args.quick else PAPER
    repeats = 1 if args.quick else args.repeats
    on_device = [v for v in VARIANTS if v != ("triton" if args.device == "cpu" else "native")]
    variants = args.variants or on_device
    rows = [measure(v, case, sizes, args.device, repeats, args.seed) for case in args.cases for v in variants]
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"RotatE distance, E = {sizes['entities']:,}, d = {sizes['dim']}, B = {sizes['batch']}, "
          f"k = {sizes['candidates']}, evaluation B = {sizes['eval_batch']}; {where}; torch {torch.__version__}; "
          f"best of {repeats}\n")
    header = ["case", "variant", "first call s", "forward ms", "fwd+bwd ms", "GFLOP/s", "peak GiB"]
    print(markdown(header, rows))


if __name__ == "__main__":
    main()
