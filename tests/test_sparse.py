"""Sparse row gradients and the optimizers that take them (``optimizer=sparse_adam``, ``optimizer=adagrad``).

Lazy Adam and Adagrad change only the rows of the batch, equal torch's optimizers where they should,
and train through everything else: checkpoints and resume, the divergence guard, learning-rate
schedules, gradient clipping, DDP over gloo; what cannot work (a compiled step, the L3 penalty,
NCCL) is refused with one line.
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import OmegaConf

from lightning_kge.callbacks.divergence import Diverged
from lightning_kge.configs import config_dir
from lightning_kge.batches import NegativeBatch
from lightning_kge.errors import ArgumentError, UserError
from lightning_kge.kernels import rotate_native
from lightning_kge.models import KGEModel, RotatE, pRotatE
from lightning_kge.module import KGEModule
from lightning_kge.optim import Adagrad, SparseAdam, clip_gradients, takes_sparse_gradients
from lightning_kge.train import train
from runs import REPO, SMALL, config, entry, one_line_error

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*LeafSpec.*is deprecated", "ignore:.*does not have many workers", "ignore:.*smaller than the logging interval",
)

E, R, DIM = 40, 3, 4


def model_of(cls: type[KGEModel] = RotatE, seed: int = 0) -> KGEModel:
    torch.manual_seed(seed)
    arguments = {"distance_backend": "reference"} if cls is RotatE else {}
    return cls(num_entities=E, num_relations=R, dim=DIM, **arguments).double()


def batch(seed: int) -> tuple[torch.Tensor, ...]:
    """Ids of a batch touching a few of the ``E`` entities: ``(h, r, t, candidates)``."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(E, (4,), generator=g), torch.randint(R, (4,), generator=g), torch.randint(E, (4,), generator=g),
            torch.randint(E, (4, 3), generator=g))


def loss_of(model: KGEModel, ids: tuple[torch.Tensor, ...]) -> torch.Tensor:
    h, r, t, candidates = ids
    return -(torch.nn.functional.logsigmoid(model.score_hrt(h, r, t)).sum()
             + torch.nn.functional.logsigmoid(-model.score_t(h, r, candidates)).sum())


def touched(ids: tuple[torch.Tensor, ...]) -> torch.Tensor:
    h, _, t, candidates = ids
    return torch.unique(torch.cat([h, t, candidates.flatten()]))


def step(model: KGEModel, optimizer: torch.optim.Optimizer, ids: tuple[torch.Tensor, ...]) -> None:
    optimizer.zero_grad()
    loss_of(model, ids).backward()
    optimizer.step()


# --- the optimizers against torch's ---------------------------------------------------------------


@pytest.fixture(params=["native", "torch"])
def row_updates(request, monkeypatch) -> str:
    """The row updates of the sparse optimizers: the native C++ kernels, or torch ops (as on CUDA)."""
    if request.param == "native" and rotate_native.unavailable() is not None:
        pytest.skip(f"the native kernels did not build: {rotate_native.unavailable()}")
    if request.param == "torch":
        monkeypatch.setattr(rotate_native, "unavailable", lambda: "switched off by the test")
    return request.param



def test_sparse_adam_changes_only_the_rows_of_the_batch_and_equals_dense_adam_on_them_at_the_first_step(row_updates: str) -> None:
    model = model_of()
    dense = copy.deepcopy(model)
    model.use_sparse_gradients()
    eps, beta2 = 1e-8, 0.999
    ours = SparseAdam(model.parameter_groups(), lr=0.05, eps=eps)
    # At step t lazy Adam is Adam with ε/√(1 − β₂ᵗ) on the touched rows (where ε is added differs)
    adam = torch.optim.Adam(dense.parameters(), lr=0.05, eps=eps / (1 - beta2) ** 0.5)
    first, second = batch(1), batch(2)
    before = model.entity.weight.detach().clone()
    step(model, ours, first)
    step(dense, adam, first)
    rows = touched(first)
    outside = torch.ones(E, dtype=torch.bool)
    outside[rows] = False
    assert outside.any() and torch.equal(model.entity.weight[outside], before[outside])
    assert (model.entity.weight[rows] != before[rows]).any(dim=1).all()
    torch.testing.assert_close(model.entity.weight[rows], dense.entity.weight[rows], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model.relation.weight, dense.relation.weight, rtol=1e-12, atol=1e-12)

    # second step: rows of the first batch only keep θ, m and v under lazy Adam; dense Adam's momentum moves them
    only_first = torch.zeros(E, dtype=torch.bool)
    only_first[rows] = True
    only_first[touched(second)] = False
    assert only_first.any()
    state = ours.state[model.entity.weight]
    kept = [t.detach()[only_first].clone() for t in (model.entity.weight, state["exp_avg"], state["exp_avg_sq"])]
    moved = dense.entity.weight.detach()[only_first].clone()
    step(model, ours, second)
    step(dense, adam, second)
    assert all(torch.equal(t.detach()[only_first], k)
               for t, k in zip((model.entity.weight, state["exp_avg"], state["exp_avg_sq"]), kept))
    assert not torch.equal(dense.entity.weight.detach()[only_first], moved)


def test_sparse_adam_equals_torch_sparse_adam_on_the_tables_and_adam_on_dense_parameters(row_updates: str) -> None:
    model = model_of(pRotatE)  # tables and a dense modulus
    reference = copy.deepcopy(model)
    for m in (model, reference):
        m.use_sparse_gradients()
    settings = {"lr": 0.03, "betas": (0.8, 0.99), "eps": 1e-6}
    ours = SparseAdam(model.parameter_groups(), **settings)
    tables = torch.optim.SparseAdam([reference.entity.weight, reference.relation.weight], **settings)
    modulus = torch.optim.Adam([reference.modulus], **settings)
    for seed in range(3):
        for o in (tables, modulus):
            o.zero_grad()
        ours.zero_grad()
        loss_of(model, batch(seed)).backward()
        loss_of(reference, batch(seed)).backward()
        assert model.entity.weight.grad.is_sparse and not model.modulus.grad.is_sparse
        ours.step()
        tables.step()
        modulus.step()
        for a, b in zip(model.parameters(), reference.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_adagrad_row_updates_equal_dense_adagrad(row_updates: str) -> None:
    model = model_of()
    dense = copy.deepcopy(model)
    model.use_sparse_gradients()
    settings = {"lr": 0.1, "lr_decay": 0.05, "initial_accumulator_value": 0.1, "eps": 1e-10}
    ours = Adagrad(model.parameter_groups(), **settings)
    adagrad = torch.optim.Adagrad(dense.parameters(), **settings)
    for seed in range(3):
        before = model.entity.weight.detach().clone()
        step(model, ours, batch(seed))
        step(dense, adagrad, batch(seed))
        outside = torch.ones(E, dtype=torch.bool)
        outside[touched(batch(seed))] = False
        assert torch.equal(model.entity.weight[outside], before[outside])
        for a, b in zip(model.parameters(), dense.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls", [SparseAdam, Adagrad])
def test_the_optimizers_read_the_groups_learning_rate_at_each_step(cls: type, row_updates: str) -> None:
    # what learning-rate schedulers rely on
    scheduled, direct = model_of(), model_of()
    for m in (scheduled, direct):
        m.use_sparse_gradients()
    optimizer = cls(scheduled.parameter_groups(), lr=0.2)
    torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.25)  # sets lr 0.05 in every group
    step(scheduled, optimizer, batch(0))
    step(direct, cls(direct.parameter_groups(), lr=0.05), batch(0))
    for a, b in zip(scheduled.parameters(), direct.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_clip_gradients_clips_sparse_gradients_as_torch_clips_the_equal_dense_ones(algorithm: str) -> None:
    model = model_of(pRotatE)
    dense = copy.deepcopy(model)
    model.use_sparse_gradients()
    for m in (model, dense):
        loss_of(m, batch(0)).backward()
    clip_gradients(model.parameters(), 0.01, algorithm)
    if algorithm == "norm":
        assert torch.nn.utils.clip_grad_norm_(dense.parameters(), 0.01) > 0.01  # it did clip
    else:
        torch.nn.utils.clip_grad_value_(dense.parameters(), 0.01)
    for a, b in zip(model.parameters(), dense.parameters()):
        got = a.grad.to_dense() if a.grad.is_sparse else a.grad
        torch.testing.assert_close(got, b.grad, rtol=1e-10, atol=1e-14)


def test_an_optimizer_class_opts_in_to_sparse_gradients_with_a_class_attribute() -> None:
    class RowSGD(torch.optim.SGD):
        sparse_gradients = True

    assert takes_sparse_gradients(RowSGD)
    assert takes_sparse_gradients(functools.partial(functools.partial(SparseAdam, lr=0.1), eps=1e-6))
    assert takes_sparse_gradients(functools.partial(Adagrad))
    assert not takes_sparse_gradients(functools.partial(torch.optim.Adam, lr=0.1))
    assert not takes_sparse_gradients(None)


@pytest.mark.parametrize(("cls", "arguments", "name"), [
    (SparseAdam, {"lr": 0.0}, "lr"), (SparseAdam, {"betas": (0.9, 1.0)}, "betas"), (SparseAdam, {"eps": -1.0}, "eps"),
    (Adagrad, {"lr": -0.1}, "lr"), (Adagrad, {"lr_decay": -1.0}, "lr_decay"),
    (Adagrad, {"initial_accumulator_value": -1.0}, "initial_accumulator_value"),
])
def test_an_argument_out_of_range_raises_naming_it(cls: type, arguments: dict, name: str) -> None:
    with pytest.raises(ArgumentError) as error:
        cls([torch.nn.Parameter(torch.zeros(2))], **arguments)
    assert error.value.name == name


@pytest.mark.parametrize("option", ["sparse_adam", "adagrad"])
def test_each_optimizer_yaml_builds_its_class_with_the_class_defaults(option: str) -> None:
    node = OmegaConf.to_container(OmegaConf.load(config_dir() / "optimizer" / f"{option}.yaml"))
    cls = {"sparse_adam": SparseAdam, "adagrad": Adagrad}[option]
    assert node.pop("_target_") == f"lightning_kge.optim.{cls.__name__}" and node.pop("_partial_") is True
    defaults = {n: p.default for n, p in inspect.signature(cls).parameters.items() if n != "params"}
    assert node == {k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items()}


# --- the module ---------------------------------------------------------------------------------------


def module_of(optimizer, cls: type[KGEModel] = pRotatE, **arguments) -> KGEModule:
    torch.manual_seed(0)
    return KGEModule(cls(num_entities=E, num_relations=R, dim=DIM), optimizer=optimizer, **arguments)


def test_a_pickled_model_leaves_out_its_row_positions_scratch_buffer() -> None:
    import pickle

    model = model_of()
    model.use_sparse_gradients()
    with model.reading_rows(torch.tensor([3, 1, 3])):
        model.score_t(torch.tensor([1]), torch.tensor([0]), torch.tensor([[3]])).sum().backward()
    assert model._row_positions is not None and model._row_positions.shape == (E,)
    assert pickle.loads(pickle.dumps(model))._row_positions is None


def test_the_module_switches_lookups_before_fitting_by_its_optimizer_and_names_its_groups() -> None:
    module = module_of(functools.partial(SparseAdam, lr=0.01))
    module.setup("test")  # evaluation only: nothing to switch
    assert not module.model.sparse_gradients
    module.setup("fit")
    assert module.model.sparse_gradients and module.model.entity.sparse and module.model.relation.sparse
    optimizer = module.configure_optimizers()
    assert [(g["name"], len(g["params"])) for g in optimizer.param_groups] == [("tables", 2), ("dense", 1)]
    module.optimizer_factory = functools.partial(torch.optim.Adam, lr=0.01)
    module.setup("fit")
    assert not module.model.sparse_gradients and not module.model.entity.sparse
    assert [g["name"] for g in module.configure_optimizers().param_groups] == ["tables", "dense"]


def test_a_training_step_reads_each_entity_row_once_and_gets_the_dense_gradient() -> None:
    sparse, dense = (module_of(functools.partial(o, lr=0.01), RotatE) for o in (SparseAdam, torch.optim.Adam))
    for module in (sparse, dense):
        module.setup("fit")
    g = torch.Generator().manual_seed(0)
    positives = torch.stack([torch.randint(E, (6,), generator=g), torch.randint(R, (6,), generator=g),
                             torch.randint(E, (6,), generator=g)], dim=1)
    batch = NegativeBatch(positives, torch.randint(E, (6, 5), generator=g), torch.arange(6) % 2 == 0, None,
                          torch.ones(6))
    for module in (sparse, dense):
        module.training_loss(batch).backward()
    grad = sparse.model.entity.weight.grad
    step = torch.unique(torch.cat([positives[:, 0], positives[:, 2], batch.negatives.flatten()]))
    assert grad.is_sparse and torch.equal(grad._indices()[0], step)  # one tensor, each touched row once
    torch.testing.assert_close(grad.to_dense(), dense.model.entity.weight.grad)
    torch.testing.assert_close(sparse.model.relation.weight.grad.to_dense(), dense.model.relation.weight.grad)


@pytest.mark.parametrize(("arguments", "match"), [
    ({"compile_step": "default"}, r"a compiled step cannot use sparse row gradients .* \(config key module.compile_step\)"),
    ({"regularization": 0.1}, r"the L3 regularization reads whole tables.*\(config key module.regularization\)"),
    ({"strategy": "nccl"}, r"cannot be all-reduced over NCCL.*\(strategy process_group_backend=nccl\)"),
])
def test_what_cannot_train_with_sparse_gradients_is_refused_with_one_line(arguments: dict, match: str) -> None:
    backend = arguments.pop("strategy", None)
    module = module_of(functools.partial(SparseAdam), **arguments)
    if backend is not None:  # the backend is read from the strategy: no GPU is needed to see it
        module.trainer = L.Trainer(strategy=DDPStrategy(process_group_backend=backend), accelerator="cpu", devices=1,
                                   logger=False)
    with pytest.raises(UserError, match=match) as error:
        module.setup("fit")
    assert "\n" not in str(error.value) and "optimizer=adam" in str(error.value)
    module_of(functools.partial(torch.optim.Adam), **arguments).setup("fit")  # dense: no objection


def test_the_entry_point_prints_a_refusal_as_one_line(tmp_path: Path) -> None:
    result = entry("train", *SMALL, "optimizer=sparse_adam", "module.regularization=0.01", "trainer.max_steps=2",
                   f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    line = one_line_error(result)
    assert line.startswith("error: the L3 regularization reads whole tables"), line


# --- training through everything else --------------------------------------------------------------


@pytest.mark.parametrize("option", ["sparse_adam", "adagrad"])
def test_a_run_with_a_sparse_optimizer_clips_schedules_and_checkpoints_its_state(tmp_path: Path, option: str) -> None:
    out = tmp_path / "run"
    schedule = "module.lr_scheduler={_target_:lightning_kge.schedules.GeometricStepDecay,_partial_:true,max_steps:6}"
    metrics = train(config(out, f"optimizer={option}", "optimizer.lr=0.01", "trainer.max_steps=6",
                           "trainer.gradient_clip_val=0.5", schedule))
    assert metrics["test/mrr"] > 0
    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
    [state] = checkpoint["optimizer_states"]
    assert [g["name"] for g in state["param_groups"]] == ["tables"]
    assert state["param_groups"][0]["lr"] == pytest.approx(0.001)  # decayed by 10 after half the steps
    entity = checkpoint["state_dict"]["model.entity.weight"]
    moments = state["state"][0]
    key = "exp_avg" if option == "sparse_adam" else "sum"
    assert moments["step"] == 6 and moments[key].shape == entity.shape and (moments[key] != 0).any()
    loaded = KGEModule.load_from_checkpoint(out / "checkpoints" / "last.ckpt")  # as evaluate/predict/export load it
    assert takes_sparse_gradients(loaded.optimizer_factory) and not loaded.model.sparse_gradients
    assert torch.equal(loaded.model.entity.weight, entity)


def test_a_sparse_adam_run_continued_from_its_checkpoint_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    # 4 batches per epoch, validation every second epoch (step 8): the first run stops at step 6, mid-epoch
    settings = ["optimizer=sparse_adam", "optimizer.lr=0.01", "trainer.check_val_every_n_epoch=2"]
    longer = train(config(tmp_path / "longer", *settings, "trainer.max_steps=10"))
    out = tmp_path / "run"
    train(config(out, *settings, "trainer.max_steps=6"))
    continued = train(config(out, *settings, "trainer.max_steps=10", f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}"))
    assert continued == pytest.approx(longer, abs=1e-6)
    a, b = (torch.load(d / "checkpoints" / "last.ckpt", weights_only=False) for d in (tmp_path / "longer", out))
    assert all(torch.allclose(a["state_dict"][k], b["state_dict"][k], atol=1e-6) for k in a["state_dict"])
    for x, y in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        assert x["step"] == y["step"] == 10 and torch.allclose(x["exp_avg_sq"], y["exp_avg_sq"], atol=1e-9)


def test_a_huge_learning_rate_with_sparse_adam_stops_with_the_divergence_error(tmp_path: Path) -> None:
    with pytest.raises(Diverged, match="the training loss was not finite"):
        train(config(tmp_path / "run", "optimizer=sparse_adam", "optimizer.lr=1e38", "trainer.max_steps=6"))
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_two_processes_over_gloo_all_reduce_the_sparse_row_gradients_to_their_mean(tmp_path: Path) -> None:
    """One DDP run (2 CPU processes): the sparse gradient DDP leaves on each table is the mean of the ranks'
    own gradients, and the ranks end with equal weights."""
    result = subprocess.run([sys.executable, str(Path(__file__).with_name("sparse_ddp_probe.py")), str(tmp_path)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    probe = torch.load(tmp_path / "result.pt")
    assert probe["steps"] == 4 and len(probe["differences"]) == 8  # 4 steps x (entity, relation)
    assert all(probe["sparse"]) and all(probe["ranks_differ"])
    assert max(probe["differences"]) < 1e-6
    assert probe["weights_equal"]


def test_the_sparse_step_benchmark_prints_a_row_per_size(tmp_path: Path) -> None:
    command = [sys.executable, str(REPO / "benchmarks" / "sparse_step.py"), "--entities", "2000", "4000",
               "--optimizers", "sparse_adam", "--dim", "8", "--batch", "32", "--negatives", "8",
               "--steps", "2", "--repeats", "1", "--json", str(tmp_path / "steps.json")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads((tmp_path / "steps.json").read_text())["rows"]
    assert [(r["entities"], r["optimizer"]) for r in rows] == [(2000, "sparse_adam"), (4000, "sparse_adam")]
    assert all(r["step_ms"] > 0 and r["table_and_state_gib"] > 0 and r["rows_touched"] > 0 for r in rows)
    assert [line.split("|")[1].strip() for line in result.stdout.splitlines() if "| sparse_adam |" in line] == [
        "2,000", "4,000"]
