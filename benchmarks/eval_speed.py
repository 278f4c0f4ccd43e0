"""Full filtered evaluation of wn18rr with a dim-500 RotatE: ours against plain PyTorch and PyKEEN.

Run from the repository root (on CPU heavy, so under the shared lock; on CUDA by default where a
GPU is present, ``--device cpu`` for the CPU):

    flock /tmp/kge-cpu.lock python benchmarks/eval_speed.py
    flock /tmp/kge-cpu.lock python benchmarks/eval_speed.py --quick   # 200 test triples
    python benchmarks/eval_speed.py --device cuda --plain-queries 400  # one GPU

All test triples (3,134), both directions, ranked against all 40,943 entities, filtered by train,
valid and test; the model is randomly initialised (this is about speed).

* ``ours``: ``Trainer.test`` of a ``KGEModule`` on the ``KGEDataModule``: the real test loop
  (filter collation, ``score_all_candidates`` in chunks of ``eval_chunk_size``, filtered ranks,
  metrics), after one untimed batch that compiles the kernels.
* ``plain``: the same queries in plain PyTorch: broadcast each query against a chunk of
  entities, ``norm`` of the complex difference, sum, mask the other true answers, rank. It is
  timed on the first ``--plain-queries`` test triples and extrapolated (stated in the table).
* ``pykeen``: ``RankBasedEvaluator`` on PyKEEN's RotatE with the same dimension, on the first
  ``--pykeen-queries`` test triples, extrapolated, when pykeen imports.

Every variant runs on ``--device``. The floor is the flops of the distance over all
query-candidate pairs (7 per complex dimension) over the measured matmul throughput, and over the
measured throughput of the distance's own operation mix, on the device. ``GPU busy`` (CUDA only)
is the share of a variant's time in which the GPU runs a kernel or copy, from a second, profiled
run (``torch.profiler``; overlaps counted once) over the unprofiled time. Peak memory is, on CPU,
the peak RSS during a variant minus the RSS before it; on CUDA, the allocator's peak allocated
bytes minus those allocated before.
"""

from __future__ import annotations

import argparse
import time
import warnings

import lightning as L
import torch
from torch import Tensor

from common import (
    FORWARD_FLOPS,
    PeakMemory,
    busy_share,
    data_folder,
    default_device,
    gib,
    kernel_seconds,
    machine,
    markdown,
    matmul_gflops,
    synchronize,
    vector_gflops,
)
from lightning_kge.datamodule import KGEDataModule
from lightning_kge.metrics.ranking import filtered_ranks
from lightning_kge.models import RotatE
from lightning_kge.module import KGEModule


def plain_scores(model: RotatE, triples: Tensor, side: str, chunk: int) -> Tensor:
    """``(B, E)`` RotatE scores by broadcasting the query against chunks of entity rows."""
    h, r, t = triples.unbind(1)
    query = model.tail_query(h, r) if side == "tail" else model.head_query(r, t)
    re_q, im_q = query[:, None, :].chunk(2, dim=-1)
    parts = []
    for rows in model.entity.weight.split(chunk):
        re_c, im_c = rows[None].chunk(2, dim=-1)
        parts.append(model.gamma - torch.stack([re_q - re_c, im_q - im_c], dim=0).norm(dim=0).sum(dim=-1))
    return torch.cat(parts, dim=1)


def plain_ranks(model: RotatE, data: KGEDataModule, queries: int, batch: int, chunk: int) -> Tensor:
    """Filtered ranks (head ranks then tail ranks per batch) of the first ``queries`` test triples,
    on the model's device."""
    device = model.entity.weight.device
    known = torch.cat([data.triples[s] for s in ("train", "valid", "test")]).to(device)
    test = data.triples["test"][:queries].to(device)
    ranks = []
    for triples in test.split(batch):
        for side in ("head", "tail"):
            scores = plain_scores(model, triples, side, chunk)
            target = triples[:, 0] if side == "head" else triples[:, 2]
            same = (known[None, :, 1] == triples[:, None, 1]) & (
                known[None, :, 2] == triples[:, None, 2] if side == "head" else known[None, :, 0] == triples[:, None, 0]
            )
            rows, pos = same.nonzero(as_tuple=True)
            cols = known[pos, 0] if side == "head" else known[pos, 2]
            keep = cols != target[rows]
            scores[rows[keep], cols[keep]] = float("-inf")
            ranks.append(filtered_ranks(scores, target))
    return torch.cat(ranks)


def our_ranks(module: KGEModule, data: KGEDataModule, queries: int) -> Tensor:
    """The same ranks through the module's scoring and the datamodule's filter batches."""
    ranks = []
    loader = data.test_dataloader()
    done = 0
    device = module.model.entity.weight.device
    for batch in loader:
        if done >= queries:
            break
        triples = batch.triples.to(device)
        for side in ("head", "tail"):
            rows, cols = (x.to(device) for x in batch.filter(side))
            target = triples[:, 0 if side == "head" else 2]
            ranks.append(filtered_ranks(module.score_all_candidates(triples, side), target, rows, cols))
        done += len(triples)
    return torch.cat(ranks)


def run_pykeen(data: KGEDataModule, dim: int, queries: int, batch: int, device: str) -> tuple[float, PeakMemory] | None:
    try:
        from pykeen.evaluation import RankBasedEvaluator
        from pykeen.models import RotatE as PyKEENRotatE
        from pykeen.triples import CoreTriplesFactory
    except ImportError:
        return None
    factory = CoreTriplesFactory(data.triples["train"], num_entities=data.num_entities, num_relations=data.num_relations)
    model = PyKEENRotatE(triples_factory=factory, embedding_dim=dim, random_seed=0).to(device)
    evaluator = RankBasedEvaluator()
    others = [data.triples["train"], data.triples["valid"]]
    with torch.inference_mode(), PeakMemory(device) as memory:
        start = time.perf_counter()
        evaluator.evaluate(model, data.triples["test"][:queries], batch_size=batch, use_tqdm=False,
                           additional_filter_triples=others, device=torch.device(device))
        synchronize(device)
        seconds = time.perf_counter() - start
    return seconds, memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="folder holding wn18rr/train.txt … (default: ../shared/data)")
    parser.add_argument("--device", default=default_device(), help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--dim", type=int, default=500)
    parser.add_argument("--eval-batch-size", type=int, default=8, help="queries per batch (conf/data/wn18rr: 8)")
    parser.add_argument("--eval-chunk-size", type=int, default=4096, help="entities per chunk (conf: 4096)")
    parser.add_argument("--plain-queries", type=int, default=200, help="test triples the plain version ranks")
    parser.add_argument("--pykeen-queries", type=int, default=200, help="test triples PyKEEN ranks (0: skip)")
    parser.add_argument("--quick", action="store_true", help="only the first 200 test triples for ours too")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", ".*does not have many workers.*")

    device = args.device
    matmul, vector = matmul_gflops(device=device), vector_gflops(device=device)
    torch.manual_seed(0)
    data = KGEDataModule(path=str(data_folder("wn18rr", args.data)), unseen="keep",
                         eval_batch_size=args.eval_batch_size)
    data.setup()
    num_test, num_entities = len(data.triples["test"]), data.num_entities
    if args.quick:
        data.graph.triples["test"] = data.triples["test"][:200]
    queries = len(data.triples["test"])
    model = RotatE(num_entities, data.num_relations, dim=args.dim, gamma=6.0)
    module = KGEModule(model, eval_chunk_size=args.eval_chunk_size).to(device)
    module.eval()

    pairs = 2 * queries * num_entities
    flops = pairs * args.dim * FORWARD_FLOPS
    floors = (flops / matmul / 1e9, flops / vector / 1e9)
    print(f"{machine(device)}\nfloat32 matmul {matmul:.1f} GFLOP/s; distance op mix (compiled, in cache) "
          f"{vector:.1f} GFLOP/s")
    print(f"wn18rr test: {queries} of {num_test} triples x 2 directions x {num_entities} entities = {pairs / 1e6:.0f}M "
          f"pairs, d={args.dim}: {flops / 1e9:.0f} GFLOP; floor {floors[0]:.1f} s (matmul rate), "
          f"{floors[1]:.1f} s (op-mix rate)", flush=True)

    with torch.inference_mode():  # untimed: compile the kernels on one batch
        module.score_all_candidates(data.triples["test"][: args.eval_batch_size].to(device), "tail")
    trainer = L.Trainer(accelerator="gpu" if torch.device(device).type == "cuda" else "cpu", devices=1, logger=False,
                        enable_progress_bar=False, enable_model_summary=False)
    synchronize(device)
    with PeakMemory(device) as ours_memory:
        start = time.perf_counter()
        [metrics] = trainer.test(module, datamodule=data, verbose=False)
        synchronize(device)
        ours = time.perf_counter() - start
    ours_memory.kernel = kernel_seconds(lambda: trainer.test(module, datamodule=data, verbose=False), 1, device)
    print(f"ours: {ours:.2f} s, test/mrr {metrics['test/mrr']:.5f}", flush=True)

    # Whole test batches, so our ranks (read batch by batch) cover the same triples.
    subset = min(-(-args.plain_queries // args.eval_batch_size) * args.eval_batch_size, queries)
    module.to(device)  # Trainer.test leaves the module on the CPU
    with torch.inference_mode(), PeakMemory(device) as plain_memory:
        start = time.perf_counter()
        expected = plain_ranks(model, data, subset, args.eval_batch_size, args.eval_chunk_size)
        synchronize(device)
        plain_seconds = time.perf_counter() - start
        plain = plain_seconds * queries / subset
        plain_kernel = kernel_seconds(lambda: plain_ranks(model, data, subset, args.eval_batch_size,
                                                          args.eval_chunk_size), 1, device)
    plain_memory.kernel = None if plain_kernel is None else plain_kernel * queries / subset
    with torch.inference_mode():
        got = our_ranks(module, data, subset)
    agree = f"{float((got == expected).double().mean()):.2%} equal, max |diff| {float((got - expected).abs().max()):g}"
    print(f"plain: {plain:.1f} s extrapolated from {subset} triples; ranks vs ours: {agree}", flush=True)

    rows = [
        ["ours (Trainer.test)", f"{ours:.2f}", "measured", "1.0x", f"{ours / floors[0]:.1f}",
         f"{ours / floors[1]:.1f}", busy_share(ours_memory.kernel, ours), gib(ours_memory.extra)],
        ["plain PyTorch", f"{plain:.2f}", f"extrapolated from {subset}", f"{plain / ours:.1f}x",
         f"{plain / floors[0]:.1f}", f"{plain / floors[1]:.1f}", busy_share(plain_memory.kernel, plain),
         gib(plain_memory.extra)],
    ]
    if args.pykeen_queries:
        count = min(args.pykeen_queries, queries)
        measured = run_pykeen(data, args.dim, count, args.eval_batch_size, device)
        if measured is None:
            print("pykeen: not importable, skipped")
        else:
            seconds = measured[0] * queries / count
            rows.append(["PyKEEN RankBasedEvaluator", f"{seconds:.2f}", f"extrapolated from {count}",
                         f"{seconds / ours:.1f}x", f"{seconds / floors[0]:.1f}", f"{seconds / floors[1]:.1f}", "-",
                         gib(measured[1].extra)])
    header = ["variant", f"s for {queries} triples", "how", "time vs ours", "x matmul floor", "x op-mix floor",
              "GPU busy", "peak memory extra (GiB)"]
    print(f"\neval batch {args.eval_batch_size}, entity chunk {args.eval_chunk_size}, ranks on the plain "
          f"subset, ours vs plain: {agree}")
    print(markdown(header, rows))


if __name__ == "__main__":
    main()
