"""Training speed of RotatE with self-adversarial negatives: ours against plain PyTorch and PyKEEN.

Run from the repository root (on CPU heavy, so under the shared lock; on CUDA by default where
a GPU is present, ``--device cpu`` for the CPU):

    flock /tmp/kge-cpu.lock python benchmarks/train_speed.py            # both paper settings
    flock /tmp/kge-cpu.lock python benchmarks/train_speed.py --quick    # a small smoke run
    flock /tmp/kge-cpu.lock python benchmarks/train_speed.py --quality  # + MRR shared vs per-positive
    flock /tmp/kge-cpu.lock python benchmarks/train_speed.py --samplers --plain-steps 0  # + every sampler= option
    python benchmarks/train_speed.py --device cuda --steps 200 --warmup 20 --plain-steps 20   # one GPU

Variants, all with Adam and the paper's γ, α, batch and negatives:

* ``plain``: the paper code's step written here in eager PyTorch: gather ``(B, k, 2d)``
  negatives, rotate, ``norm``, sum, self-adversarial loss, backward, Adam. Uniform negatives.
* ``ours per-positive``: ``KGEDataModule.corrupt`` (filtered negatives, head/tail alternating) +
  ``KGEModule.training_step`` + backward + the project's Adam (``conf/optimizer/adam.yaml``: fused), i.e. the real training path without a Trainer.
* ``ours shared``: the same with ``shared=True`` (one set of ``k`` negatives per batch).
* ``sampler=…`` (with ``--samplers``): the per-positive step with each ``sampler=`` option at the
  same ``k`` (``self_adversarial_sampled`` with pools of ``m = 2k`` and ``4k``, ``cached`` with its
  defaults), and its time relative to ``self_adversarial``'s.
* ``pykeen``: PyKEEN's RotatE, ``NSSALoss`` and ``BasicNegativeSampler`` in one hand-written step
  (score positives, score the flattened negatives, loss, backward, Adam), when pykeen imports.

Every variant runs on ``--device`` (its tables, batches and negatives there). ``ms/step`` is
wall time with the device's queued work waited for. ``GPU busy`` (CUDA only) is the share of that
time in which the GPU runs a kernel or copy: ``torch.profiler`` over a second window of up to 20
steps gives the kernel time per step (overlaps counted once), divided by the unprofiled time per
step; the rest is the GPU waiting for the host. Peak memory is, on CPU, the process's peak RSS
during the timed steps minus its RSS before them, and on CUDA the peak of the allocator's
allocated bytes minus those allocated before. The floor is the flops of the distance forward +
backward of one step over the measured matmul throughput (and over the measured throughput of the
distance's own operation mix) on the device; it leaves out sampling and Adam, which our step
includes.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import math
import time
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hydra.utils import instantiate
from omegaconf import OmegaConf

from common import (
    REPO,
    BACKWARD_FLOPS,
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
from lightning_kge.models import RotatE
from lightning_kge.module import KGEModule
from lightning_kge.sampling import (
    BernoulliSampler,
    CachedSampler,
    SelfAdversarialSampledSampler,
    SelfAdversarialSampler,
    UniformSampler,
)


@dataclass
class Setting:
    name: str
    batch: int
    negatives: int
    dim: int
    gamma: float
    alpha: float
    lr: float = 5e-5
    device: str = "cpu"


PAPER = {
    "wn18rr": Setting("wn18rr", 512, 1024, 500, 6.0, 0.5),
    "fb15k237": Setting("fb15k237", 1024, 256, 1000, 9.0, 1.0),
}


# --- plain eager PyTorch, as the paper's code computes a step ---------------------------------------


class PlainRotatE(nn.Module):
    def __init__(self, num_entities: int, num_relations: int, dim: int, gamma: float) -> None:
        super().__init__()
        self.gamma, self.range = gamma, (gamma + 2.0) / dim
        self.entity = nn.Parameter(torch.empty(num_entities, 2 * dim).uniform_(-self.range, self.range))
        self.relation = nn.Parameter(torch.empty(num_relations, dim).uniform_(-self.range, self.range))

    def score(self, head: Tensor, relation: Tensor, tail: Tensor) -> Tensor:
        """``head``/``tail`` ``(B, n, 2d)`` rows (n = 1 or k), ``relation`` ``(B, 1, d)`` phases."""
        re_h, im_h = head.chunk(2, dim=-1)
        re_t, im_t = tail.chunk(2, dim=-1)
        phase = relation / (self.range / math.pi)
        re_r, im_r = torch.cos(phase), torch.sin(phase)
        re = re_h * re_r - im_h * im_r - re_t
        im = re_h * im_r + im_h * re_r - im_t
        return self.gamma - torch.stack([re, im], dim=0).norm(dim=0).sum(dim=-1)


def plain_step(model: PlainRotatE, optimizer: torch.optim.Optimizer, positives: Tensor, negatives: Tensor,
               alpha: float) -> None:
    h, r, t = positives.unbind(1)
    head, relation = model.entity[h][:, None], model.relation[r][:, None]
    positive = model.score(head, relation, model.entity[t][:, None]).squeeze(1)
    negative = model.score(head, relation, model.entity[negatives])  # tail-batch: (B, k, 2d) rows
    weights = torch.softmax(alpha * negative, dim=1).detach()
    loss = -(F.logsigmoid(positive).mean() + (weights * F.logsigmoid(-negative)).sum(1).mean()) / 2
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


# --- the variants -----------------------------------------------------------------------------------


def time_steps(step, warmup: int, steps: int, device: str = "cpu") -> tuple[float, PeakMemory]:
    """Seconds per step over ``steps`` steps after ``warmup``, and the memory and GPU use (on
    CUDA: ``memory.kernel``, GPU seconds per step, from a profiled window of up to 20 more steps)."""
    for _ in range(warmup):
        step()
    synchronize(device)
    with PeakMemory(device) as memory:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(device)
        seconds = (time.perf_counter() - start) / steps
    memory.kernel = kernel_seconds(step, min(steps, 20), device)
    return seconds, memory


def run_plain(setting: Setting, data: KGEDataModule, steps: int) -> tuple[float, PeakMemory]:
    torch.manual_seed(0)
    device = setting.device
    model = PlainRotatE(data.num_entities, data.num_relations, setting.dim, setting.gamma).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=setting.lr)
    train = data.triples["train"].to(device)

    def step() -> None:
        positives = train[torch.randint(len(train), (setting.batch,), device=device)]
        negatives = torch.randint(data.num_entities, (setting.batch, setting.negatives), device=device)
        plain_step(model, optimizer, positives, negatives, setting.alpha)

    return time_steps(step, 1 if device != "cpu" else 0, steps, device)  # on CUDA: one step to warm up


def project_adam(lr: float) -> functools.partial:
    """The optimizer of ``conf/optimizer/adam.yaml`` (what a user's run gets), at rate ``lr``."""
    return instantiate(OmegaConf.load(REPO / "conf" / "optimizer" / "adam.yaml"), lr=lr)


def sampler_options(setting: Setting) -> dict[str, object]:
    """Each ``sampler=`` option at the setting's ``k`` and ``α`` (``--samplers``), by row label."""
    k, alpha = setting.negatives, setting.alpha
    return {
        "sampler=uniform": UniformSampler(k),
        "sampler=bernoulli": BernoulliSampler(k),
        "sampler=self_adversarial_sampled m=2k": SelfAdversarialSampledSampler(k, 2 * k, temperature=alpha),
        "sampler=self_adversarial_sampled m=4k": SelfAdversarialSampledSampler(k, 4 * k, temperature=alpha),
        "sampler=cached": CachedSampler(k),
    }


def run_ours(setting: Setting, data: KGEDataModule, sampler: object, warmup: int, steps: int) -> tuple[float, PeakMemory]:
    """The per-positive (or shared) training step of ``sampler`` (a ``sampler=`` option object)."""
    torch.manual_seed(0)
    data.corruption = sampler.corruption()
    data.train_batches_done = 0
    model = RotatE(data.num_entities, data.num_relations, setting.dim, setting.gamma)
    module = KGEModule(model, sampler.selection(), optimizer=project_adam(setting.lr)).to(setting.device)
    optimizer = module.configure_optimizers()
    batches = itertools.chain.from_iterable(itertools.repeat(data.train_dataloader()))  # epoch after epoch

    def step() -> None:
        rows = next(batches).to(setting.device, non_blocking=True)
        loss = module.training_step(data.training_batch(rows), 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return time_steps(step, warmup, steps, setting.device)


def run_pykeen(setting: Setting, data: KGEDataModule, steps: int) -> tuple[float, PeakMemory] | None:
    try:
        from pykeen.losses import NSSALoss
        from pykeen.models import RotatE as PyKEENRotatE
        from pykeen.sampling import BasicNegativeSampler
        from pykeen.triples import CoreTriplesFactory
    except ImportError:
        return None
    torch.manual_seed(0)
    train = data.triples["train"]
    factory = CoreTriplesFactory(train, num_entities=data.num_entities, num_relations=data.num_relations)
    loss = NSSALoss(margin=setting.gamma, adversarial_temperature=setting.alpha)
    model = PyKEENRotatE(triples_factory=factory, embedding_dim=setting.dim, loss=loss, random_seed=0)
    model = model.to(setting.device)
    train = train.to(setting.device)
    sampler = BasicNegativeSampler(mapped_triples=train, num_negs_per_pos=setting.negatives)
    optimizer = torch.optim.Adam(model.parameters(), lr=setting.lr)

    def step() -> None:
        positives = train[torch.randint(len(train), (setting.batch,), device=setting.device)]
        negatives, _ = sampler.sample(positives)
        positive = model.score_hrt(positives)
        negative = model.score_hrt(negatives.view(-1, 3)).view(setting.batch, setting.negatives)
        value = model.loss.process_slcwa_scores(positive, negative)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()

    return time_steps(step, 0, steps, setting.device)


# --- report -----------------------------------------------------------------------------------------


def speed_table(args: argparse.Namespace) -> None:
    matmul, vector = matmul_gflops(device=args.device), vector_gflops(device=args.device)
    print(f"{machine(args.device)}\nfloat32 matmul {matmul:.1f} GFLOP/s; distance op mix (compiled, in cache) "
          f"{vector:.1f} GFLOP/s")
    header = ["setting", "variant", "ms/step", "vs self_adversarial", "positives/s", "speed-up vs plain", "x matmul floor",
              "x op-mix floor", "GPU busy", "peak memory extra (GiB)", "timed steps"]
    rows = []
    for name in args.settings:
        setting = dataclasses.replace(PAPER[name], device=args.device)
        if args.quick:
            setting = Setting(name, 64, 256, setting.dim, setting.gamma, setting.alpha, device=args.device)
        data = KGEDataModule(
            SelfAdversarialSampler(setting.negatives).corruption(), path=str(data_folder(name, args.data)), unseen="keep",
            batch_size=setting.batch, subsampling=True,
        )
        data.setup()
        flops = setting.batch * (setting.negatives + 1) * setting.dim * (FORWARD_FLOPS + BACKWARD_FLOPS)
        floors = (flops / matmul / 1e9, flops / vector / 1e9)
        print(f"{name}: B={setting.batch} k={setting.negatives} d={setting.dim} γ={setting.gamma} "
              f"α={setting.alpha}; distance fwd+bwd {flops / 1e9:.2f} GFLOP/step; floor {floors[0]:.3f} s "
              f"(matmul rate), {floors[1]:.3f} s (op-mix rate)", flush=True)
        results: dict[str, tuple[float, PeakMemory, int]] = {}
        if args.plain_steps:
            results["plain eager PyTorch"] = (*run_plain(setting, data, args.plain_steps), args.plain_steps)
        variants = {"ours per-positive": SelfAdversarialSampler(setting.negatives, temperature=setting.alpha),
                    "ours shared": SelfAdversarialSampler(setting.negatives, temperature=setting.alpha, shared=True)}
        if args.samplers:
            variants.update(sampler_options(setting))
        for label, sampler in variants.items():
            results[label] = (*run_ours(setting, data, sampler, args.warmup, args.steps), args.steps)
            print(f"  {label}: {results[label][0] * 1e3:.1f} ms/step", flush=True)
        if args.plain_steps and not args.no_pykeen:
            measured = run_pykeen(setting, data, args.plain_steps)
            if measured is None:
                print("  pykeen: not importable, skipped")
            else:
                results["PyKEEN RotatE + NSSALoss"] = (*measured, args.plain_steps)
        plain = results.get("plain eager PyTorch", (None,))[0]
        baseline = results["ours per-positive"][0]  # sampler=self_adversarial
        for label, (seconds, memory, count) in results.items():
            rows.append([
                name, label, f"{seconds * 1e3:.1f}", f"{seconds / baseline:.2f}x", f"{setting.batch / seconds:,.0f}",
                "-" if plain is None else f"{plain / seconds:.1f}x",
                f"{seconds / floors[0]:.1f}", f"{seconds / floors[1]:.1f}", busy_share(memory.kernel, seconds),
                gib(memory.extra), str(count),
            ])
        print(markdown(header, rows[-len(results):]), flush=True)
    print()
    print(markdown(header, rows))


def quality_table(args: argparse.Namespace) -> None:
    import lightning as L

    header = ["data", "negatives", "test MRR", "test Hits@10", "train s"]
    rows = []
    for name in ("kinships", "umls"):
        for shared in (False, True):
            L.seed_everything(args.seed, verbose=False)
            sampler = SelfAdversarialSampler(128, temperature=1.0, shared=shared)
            data = KGEDataModule(sampler.corruption(), path=str(data_folder(name, args.data)), batch_size=512,
                                 eval_batch_size=256)
            data.setup()
            model = RotatE(data.num_entities, data.num_relations, dim=200, gamma=6.0)
            module = KGEModule(model, sampler.selection(), data.info, optimizer=project_adam(1e-3))
            trainer = L.Trainer(
                max_steps=args.quality_steps, accelerator="cpu", devices=1, logger=False, limit_val_batches=0,
                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            )
            start = time.perf_counter()
            trainer.fit(module, datamodule=data)
            seconds = time.perf_counter() - start
            [result] = trainer.test(module, datamodule=data, verbose=False)
            label = "shared (one set per batch)" if shared else "per-positive"
            rows.append([name, label, f"{result['test/mrr']:.4f}", f"{result['test/hits@10']:.4f}", f"{seconds:.1f}"])
            print(f"  {name} {label}: MRR {result['test/mrr']:.4f}", flush=True)
    print(f"\nRotatE dim 200, γ 6, α 1, k 128, batch 512, Adam 1e-3, {args.quality_steps} steps, seed {args.seed}:")
    print(markdown(header, rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=list(PAPER), choices=list(PAPER))
    parser.add_argument("--data", help="folder holding <dataset>/train.txt … (default: ../shared/data)")
    parser.add_argument("--device", default=default_device(), help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps of our variants")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation)")
    parser.add_argument("--plain-steps", type=int, default=1, help="timed steps of plain and PyKEEN (0: skip)")
    parser.add_argument("--no-pykeen", action="store_true")
    parser.add_argument("--quick", action="store_true", help="wn18rr only, batch 64, 256 negatives, 2 steps")
    parser.add_argument("--quality", action="store_true", help="also compare MRR of shared and per-positive")
    parser.add_argument("--samplers", action="store_true", help="also time every sampler= option (per-positive)")
    parser.add_argument("--quality-steps", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.settings, args.steps, args.warmup, args.no_pykeen = ["wn18rr"], 2, 2, True
    warnings.filterwarnings("ignore", message=".*self.log.*")
    speed_table(args)
    if args.quality:
        quality_table(args)


if __name__ == "__main__":
    main()
