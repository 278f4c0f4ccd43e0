"""Speed features, proven by behaviour (never by time): fixed-shape batches, batches gathered on
their device, one scoring call per step, the compiled step, ``train/loss`` handed to Lightning
only on the steps its loggers write, no host-device synchronisation in a training step (CUDA),
and the step-overhead benchmark's table."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import Logger

from lightning_kge.batches import NegativeBatch
from lightning_kge.data.batches import TrainSampler
from lightning_kge.datamodule import KGEDataModule
from lightning_kge.errors import ArgumentError, UserError
from lightning_kge.models import ComplEx, DistMult, RotatE, TransE
from lightning_kge.module import KGEModule
from lightning_kge.sampling import SelfAdversarialSampler, UniformSampler, Weighting

REPO = Path(__file__).resolve().parents[1]
HAS_CUDA = torch.cuda.is_available()
CUDA = [pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device; none is present here")]

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*does not have many workers",
    "ignore:.*smaller than the logging interval",
    "ignore:.*LeafSpec.*is deprecated",
)


# --- fixed shapes: the last batch of an epoch ----------------------------------------------------------------


@pytest.mark.parametrize(("size", "batch", "world"), [(10, 4, 1), (11, 4, 2), (8, 4, 1), (3, 5, 1), (13, 4, 3)])
def test_fill_completes_the_last_batch_from_the_start_of_the_epochs_order(size: int, batch: int, world: int) -> None:
    for rank in range(world):
        kept = TrainSampler(size, batch, seed=3, rank=rank, world_size=world)
        filled = TrainSampler(size, batch, seed=3, rank=rank, world_size=world, last_batch="fill")
        for epoch in range(2):
            order = kept.epoch_order(epoch).tolist()
            got = [b.tolist() for b in filled]  # one epoch
            assert len(got) == len(list(kept)) == math.ceil(len(order) / batch) == len(filled)
            assert [p for b in got for p in b] == [order[i % len(order)] for i in range(len(got) * batch)]


@pytest.mark.parametrize(("size", "batch", "world"), [(10, 4, 1), (11, 4, 2), (8, 4, 1), (13, 4, 3)])
def test_drop_leaves_out_the_last_partial_batch_of_each_epoch(size: int, batch: int, world: int) -> None:
    for rank in range(world):
        sampler = TrainSampler(size, batch, seed=3, rank=rank, world_size=world, last_batch="drop")
        for epoch in range(2):
            order = sampler.epoch_order(epoch).tolist()
            expected = [order[i * batch : (i + 1) * batch] for i in range(len(order) // batch)]
            assert [b.tolist() for b in sampler] == expected and len(sampler) == len(expected)


def test_a_filled_sampler_resumes_mid_epoch_where_it_stopped() -> None:
    whole = TrainSampler(11, 4, seed=5, last_batch="fill")
    stream = [b.tolist() for _ in range(3) for b in whole]
    resumed = TrainSampler(11, 4, seed=5, last_batch="fill")
    resumed.start = 4
    assert [b.tolist() for _ in range(3) for b in resumed][: len(stream) - 4] == stream[4:]


def test_drop_with_fewer_triples_than_a_batch_says_which_key_to_change(tiny_kg: Path) -> None:
    dm = KGEDataModule(UniformSampler(num_negatives=2).corruption(), path=str(tiny_kg), batch_size=64,
                       last_batch="drop")
    dm.setup()
    with pytest.raises(UserError, match=r"data\.last_batch.*data\.last_batch=fill"):
        dm.train_dataloader()


def test_unknown_last_batch_and_compile_step_values_name_their_key() -> None:
    with pytest.raises(ArgumentError, match="last_batch"):
        KGEDataModule(name="nations", last_batch="pad")
    with pytest.raises(ArgumentError, match="compile_step"):
        KGEModule(RotatE(5, 2, dim=2), compile_step="fast")


# --- batches gathered on their device -------------------------------------------------------------------------


def datamodule_on(tiny_kg: Path, **kwargs) -> KGEDataModule:
    dm = KGEDataModule(UniformSampler(num_negatives=4).corruption(), path=str(tiny_kg), batch_size=8, **kwargs)
    dm.setup()
    return dm


def test_the_training_loader_yields_row_ids_only(tiny_kg: Path) -> None:
    dm = datamodule_on(tiny_kg, last_batch="fill")
    batches = list(dm.train_dataloader())
    assert all(b.dtype == torch.long and b.shape == (8,) for b in batches)
    assert set(torch.cat(batches).tolist()) == set(range(len(dm.triples["train"])))


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=CUDA)])
def test_training_batches_are_gathered_on_the_device_of_their_rows(tiny_kg: Path, device: str) -> None:
    dm = datamodule_on(tiny_kg)
    rows = next(iter(dm.train_dataloader()))
    batch = dm.training_batch(rows.to(device))
    for tensor in (batch.positives, batch.weight, batch.negatives, batch.corrupt_head):
        assert tensor.device.type == device
    assert torch.equal(batch.positives.cpu(), dm.triples["train"][rows])
    assert torch.equal(batch.weight.cpu(), dm.train_weight[rows])


# --- one scoring call per step ----------------------------------------------------------------------------------

MODELS: dict[str, Callable[[], torch.nn.Module]] = {
    "rotate": lambda: RotatE(14, 55, dim=4),
    "transe": lambda: TransE(14, 55, dim=4),
    "distmult": lambda: DistMult(14, 55, dim=4),
    "complex": lambda: ComplEx(14, 55, dim=4),
}


def mixed_batch(nations, shared: bool = False, seed: int = 0) -> NegativeBatch:
    """16 nations positives, every third one head-corrupted, 8 candidates each (or 8 shared)."""
    g = torch.Generator().manual_seed(seed)
    positives = nations.triples["train"][16 * seed : 16 * (seed + 1)]
    negatives = torch.randint(14, (8,) if shared else (16, 8), generator=g)
    heads = torch.arange(16) % 3 == 0
    return NegativeBatch(positives, negatives, heads, None, torch.rand(16, generator=g) + 0.5)


@pytest.mark.parametrize("shared", [False, True], ids=["per_positive", "shared"])
@pytest.mark.parametrize("name", list(MODELS))
def test_score_batch_gives_score_hrt_of_every_positive_and_negative_in_one_call(nations, name: str,
                                                                                 shared: bool) -> None:
    torch.manual_seed(0)
    module = KGEModule(MODELS[name]())
    model = module.model
    calls = []
    original = model.score_candidates
    model.score_candidates = lambda query, index: calls.append(index.shape) or original(query, index)
    batch = mixed_batch(nations, shared)
    with torch.no_grad():
        positive, negative = module.score_batch(batch)
        assert len(calls) == (2 if shared else 1)  # shared negatives keep their (k,) call: k rows, not B·k
        for b, (h, r, t) in enumerate(batch.positives.tolist()):
            assert positive[b] == pytest.approx(float(model.score_hrt(*map(torch.tensor, (h, r, t)))), abs=1e-4)
            row = batch.negatives if shared else batch.negatives[b]
            for j, e in enumerate(row.tolist()):
                triple = (e, r, t) if batch.corrupt_head[b] else (h, r, e)
                assert negative[b, j] == pytest.approx(float(model.score_hrt(*map(torch.tensor, triple))), abs=1e-4)


# --- the compiled step --------------------------------------------------------------------------------------------


def loss_and_gradients(module: KGEModule, batch: NegativeBatch) -> tuple[torch.Tensor, list[torch.Tensor]]:
    module.zero_grad(set_to_none=True)
    loss = module.training_step(batch, 0)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in module.model.parameters()]


def test_the_compiled_step_gives_the_loss_and_gradients_of_the_eager_step(nations) -> None:
    modules = {}
    for mode in (None, "default"):
        torch.manual_seed(0)
        modules[mode] = KGEModule(RotatE(14, 55, dim=8), Weighting(1.0), compile_step=mode)
    for seed in (0, 1):  # the second batch reuses the compiled graph (same shapes)
        batch = mixed_batch(nations, seed=seed)
        eager_loss, eager_grads = loss_and_gradients(modules[None], batch)
        loss, grads = loss_and_gradients(modules["default"], batch)
        torch.testing.assert_close(loss, eager_loss, rtol=1e-5, atol=1e-6)
        for got, expected in zip(grads, eager_grads, strict=True):
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    assert modules["default"]._compiled_loss is not None and modules[None]._compiled_loss is None


@pytest.mark.parametrize("mode", [pytest.param("reduce-overhead", marks=CUDA)])
def test_cuda_graph_steps_train_like_eager_steps(nations, mode: str) -> None:
    losses = {}
    for compile_step in (None, mode):
        torch.manual_seed(0)
        module = KGEModule(RotatE(14, 55, dim=8), Weighting(1.0), compile_step=compile_step).cuda()
        optimizer = torch.optim.Adam(module.parameters(), lr=0.01)
        losses[compile_step] = []
        for seed in (0, 1, 2, 0, 1):
            batch = mixed_batch(nations, seed=seed)
            batch = NegativeBatch(*(x.cuda() for x in (batch.positives, batch.negatives, batch.corrupt_head)),
                                  None, batch.weight.cuda())
            optimizer.zero_grad(set_to_none=True)
            loss = module.training_step(batch, 0)
            loss.backward()
            optimizer.step()
            losses[compile_step].append(float(loss))
    assert losses[mode] == pytest.approx(losses[None], rel=1e-4)


# --- logging only on the steps the loggers write --------------------------------------------------------------------


class RecordingLogger(Logger):
    """Keeps every ``(step, metrics)`` the trainer writes."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[tuple[int, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.written.append((step, dict(metrics)))

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass


class SpiedModule(KGEModule):
    """Records the losses of its steps and the steps at which it calls ``self.log``."""

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self.losses: list[float] = []
        self.logged_at: list[int] = []

    def log(self, name: str, value, *args, **kwargs) -> None:
        self.logged_at.append(self.trainer.global_step)
        super().log(name, value, *args, **kwargs)

    def training_step(self, batch: NegativeBatch, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        self.losses.append(float(loss.detach()))
        return loss


def test_train_loss_reaches_lightning_only_on_the_steps_its_loggers_write(nations) -> None:
    sampler = SelfAdversarialSampler(num_negatives=4)
    dm = KGEDataModule(sampler.corruption(), name="nations", batch_size=256)
    dm.setup()
    torch.manual_seed(0)
    module = SpiedModule(RotatE(dm.num_entities, dm.num_relations, dim=4), sampler.selection())
    logger = RecordingLogger()
    trainer = L.Trainer(max_steps=8, log_every_n_steps=3, logger=logger, accelerator="cpu", devices=1,
                        limit_val_batches=0, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(module, datamodule=dm)
    written = [(step, metrics["train/loss"]) for step, metrics in logger.written if "train/loss" in metrics]
    assert module.logged_at == [2, 5] == [step for step, _ in written]  # steps 3 and 6 of 8
    assert [value for _, value in written] == pytest.approx([module.losses[2], module.losses[5]])


# --- no host-device synchronisation in a training step ----------------------------------------------------------------


class SyncGuard(L.Callback):
    """Turns ``torch.cuda.set_sync_debug_mode("error")`` on for the training steps after ``warmup``.

    The checked window of a step runs from the start of its ``training_step`` through the fetch
    and corruption of the next batch (which Lightning does before the next step starts). Left
    out: the warm-up steps (kernels build, Triton autotunes each new batch size once, tables move
    to the device once: let the warm-up cover a whole epoch, its last partial batch included);
    the moments the loggers read logged values back from the device, right after
    ``on_train_batch_end`` of a logging step (every ``log_every_n_steps``), so from there to the
    next step's start the mode is off; and everything after the last step.

    Args:
        warmup: training steps not checked.
        set_mode: sets the debug mode (``torch.cuda.set_sync_debug_mode``; a recorder in tests).
    """

    def __init__(self, warmup: int, set_mode: Callable[[str], None]) -> None:
        self.warmup, self.set_mode = warmup, set_mode
        self.checked: list[int] = []
        self.on = False

    def switch(self, on: bool) -> None:
        if on != self.on:
            self.set_mode("error" if on else "default")
            self.on = on

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step >= self.warmup:
            self.checked.append(trainer.global_step)
            self.switch(True)

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        writes = trainer._logger_connector.should_update_logs or trainer.fast_dev_run
        if writes or trainer.global_step >= trainer.max_steps:
            self.switch(False)

    def on_train_end(self, trainer: L.Trainer, *args: object) -> None:
        self.switch(False)

    def on_exception(self, trainer: L.Trainer, *args: object) -> None:
        self.switch(False)


STEPS, WARMUP = 16, 8
"""Nations at batch 256 has 7 batches an epoch (6 × 256 + 56): warm-up covers the first epoch, and
the checked steps 8 to 15 cross the second epoch's end."""


def guarded_fit(overrides: list[str], set_mode: Callable[[str], None], output: Path) -> SyncGuard:
    """Fit the composed config for ``STEPS`` steps under a :class:`SyncGuard` of ``WARMUP`` steps."""
    from hydra import compose, initialize_config_dir

    from lightning_kge.configs import build_trainer
    from lightning_kge.train import build

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[
            "data=nations", "model.dim=8", "sampler.num_negatives=16", "data.batch_size=256",
            f"trainer.max_steps={STEPS}", "trainer.log_every_n_steps=5", "trainer.limit_val_batches=0",
            "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false", f"output_dir={output}",
            *overrides,
        ])
    L.seed_everything(0, verbose=False)
    trainer = build_trainer(cfg)
    guard = SyncGuard(WARMUP, set_mode)
    trainer.callbacks.append(guard)
    module, datamodule = build(cfg)
    trainer.fit(module, datamodule=datamodule)
    return guard


def test_the_sync_guard_checks_every_step_after_warm_up_except_across_log_writes(tmp_path: Path) -> None:
    modes: list[str] = []
    guard = guarded_fit(["trainer=cpu"], modes.append, tmp_path)
    assert guard.checked == list(range(WARMUP, STEPS))
    # on from step 8; off after steps 10 and 15 (0-based 9 and 14: their logs are written) and after the last
    assert modes == ["error", "default"] * 3


CONFIGS = {
    "self_adversarial": [],
    "bernoulli": ["sampler=bernoulli"],
    "shared": ["sampler.shared=true"],
    "unfiltered": ["sampler.filtered=false"],
    "bf16": ["trainer.precision=bf16-mixed"],
    "paper_setting": ["experiment=rotate_nations"],  # its learning-rate schedule included
}


@pytest.mark.parametrize("overrides", list(CONFIGS.values()), ids=list(CONFIGS))
@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device (torch.cuda.set_sync_debug_mode); none is present here")
def test_cuda_training_steps_never_synchronise_with_the_host(tmp_path: Path, overrides: list[str]) -> None:
    torch.cuda.synchronize()
    try:
        guard = guarded_fit(["trainer=gpu", *overrides], torch.cuda.set_sync_debug_mode, tmp_path)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert guard.checked == list(range(WARMUP, STEPS))


# --- benchmarks ---------------------------------------------------------------------------------------------------


@pytest.fixture
def benchmarks(monkeypatch):
    """The ``benchmarks/`` folder on ``sys.path``, as when a benchmark runs as a script."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))


def test_gpu_busy_time_counts_overlapping_kernels_once(benchmarks) -> None:
    import common

    assert common.union_length([(5, 6), (0, 2), (1, 3), (5.5, 5.7)]) == 4.0
    assert common.union_length([]) == 0.0
    assert common.kernel_seconds(lambda: None, 2, "cpu") is None
    assert common.busy_share(None, 1.0) == "-" and common.busy_share(0.25, 1.0) == "25%"


def test_step_overhead_benchmark_prints_a_row_per_variant(benchmarks, countries_tiny: Path, capsys) -> None:
    import step_overhead

    variants = ["configured", "unfiltered", "bare", "plain"]
    table = step_overhead.main(["--data", str(countries_tiny), "--device", "cpu", "--steps", "2", "--repeats", "1",
                                "--warmup", "1", "--variants", *variants])
    header, _, *rows = table.splitlines()
    assert header == "| variant | ms/step | CPU ms/step | positives/step | x plain loop |"
    assert [row.split("|")[1].strip() for row in rows] == [step_overhead.VARIANTS[v][0] for v in variants]
    for row in rows:
        wall, cpu, positives, ratio = (float(x) for x in row.split("|")[2:6])
        assert wall > 0 and cpu > 0 and positives == 90  # countries_tiny: 90 training triples, one batch
    assert table in capsys.readouterr().out


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device; none is present here")
def test_step_overhead_benchmark_runs_on_cuda(benchmarks, countries_tiny: Path) -> None:
    import step_overhead

    variants = ["configured", "bare", "plain"]
    table = step_overhead.main(["--data", str(countries_tiny), "--device", "cuda", "--steps", "2", "--repeats", "1",
                                "--warmup", "2", "--variants", *variants])
    assert len(table.splitlines()) == 2 + len(variants)

