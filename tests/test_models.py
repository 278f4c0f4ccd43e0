"""One contract suite for every model, plus each model's formula against a direct implementation."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_kge.models import ComplEx, DistMult, KGEModel, RotatE, TransE, pRotatE

E, R, DIM = 11, 4, 6
MODELS = [RotatE, TransE, DistMult, ComplEx, pRotatE]
TOL = {"rtol": 1e-5, "atol": 1e-5}


def build(cls: type[KGEModel], seed: int = 0, gamma: float = 6.0) -> KGEModel:
    torch.manual_seed(seed)
    return cls(num_entities=E, num_relations=R, dim=DIM, gamma=gamma)


def queries(seed: int = 0, B: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(E, (B,), generator=g), torch.randint(R, (B,), generator=g), torch.randint(E, (B,), generator=g)


@pytest.fixture(params=MODELS, ids=lambda c: c.__name__)
def model(request) -> KGEModel:
    return build(request.param)


# --- the contract ----------------------------------------------------------------------------------


def test_score_t_agrees_with_score_hrt_for_candidate_matrix(model: KGEModel) -> None:
    h, r, _ = queries()
    cands = torch.randint(E, (5, 7), generator=torch.Generator().manual_seed(1))
    got = model.score_t(h, r, cands)
    assert got.shape == (5, 7)
    torch.testing.assert_close(got, model.score_hrt(h[:, None], r[:, None], cands), **TOL)


def test_score_h_agrees_with_score_hrt_for_candidate_matrix(model: KGEModel) -> None:
    _, r, t = queries()
    cands = torch.randint(E, (5, 7), generator=torch.Generator().manual_seed(1))
    got = model.score_h(r, t, cands)
    assert got.shape == (5, 7)
    torch.testing.assert_close(got, model.score_hrt(cands, r[:, None], t[:, None]), **TOL)


def test_shared_candidates_agree_with_score_hrt(model: KGEModel) -> None:
    h, r, t = queries()
    cands = torch.tensor([3, 0, 10, 3, 7])
    tails, heads = model.score_t(h, r, cands), model.score_h(r, t, cands)
    assert tails.shape == heads.shape == (5, 5)
    torch.testing.assert_close(tails, model.score_hrt(h[:, None], r[:, None], cands[None, :]), **TOL)
    torch.testing.assert_close(heads, model.score_hrt(cands[None, :], r[:, None], t[:, None]), **TOL)


def test_all_entities_agree_with_score_hrt(model: KGEModel) -> None:
    h, r, t = queries()
    every = torch.arange(E)
    tails, heads = model.score_t(h, r), model.score_h(r, t)
    assert tails.shape == heads.shape == (5, E)
    torch.testing.assert_close(tails, model.score_hrt(h[:, None], r[:, None], every[None, :]), **TOL)
    torch.testing.assert_close(heads, model.score_hrt(every[None, :], r[:, None], t[:, None]), **TOL)


def test_score_hrt_broadcasts_like_a_loop_over_triples(model: KGEModel) -> None:
    h, r, _ = queries()
    t = torch.arange(E)
    got = model.score_hrt(h[:, None], r[:, None], t[None, :])
    assert got.shape == (5, E)
    for b in range(5):
        for c in range(E):
            single = model.score_hrt(h[b : b + 1], r[b : b + 1], t[c : c + 1])
            assert single.shape == (1,)
            assert got[b, c].item() == pytest.approx(single.item(), rel=1e-5, abs=1e-5)
    # a scalar relation broadcasts too
    torch.testing.assert_close(model.score_hrt(h, torch.tensor(2), h), model.score_hrt(h, torch.full((5,), 2), h))


def test_gradients_flow_to_every_parameter(model: KGEModel) -> None:
    h, r, t = queries()
    cands = torch.randint(E, (5, 3), generator=torch.Generator().manual_seed(2))
    loss = model.score_hrt(h, r, t).sum() + model.score_t(h, r, cands).sum() + model.score_h(r, t, cands).sum()
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name
    touched = set(h.tolist()) | set(t.tolist()) | set(cands.flatten().tolist())
    untouched = [e for e in range(E) if e not in touched]
    if untouched:
        assert (model.entity.weight.grad[untouched] == 0).all()


def test_state_dict_round_trip_gives_identical_scores(model: KGEModel) -> None:
    clone = build(type(model), seed=123)
    h, r, t = queries()
    assert not torch.equal(clone.score_t(h, r), model.score_t(h, r))
    clone.load_state_dict(model.state_dict())
    assert torch.equal(clone.score_t(h, r), model.score_t(h, r))
    assert torch.equal(clone.score_h(r, t), model.score_h(r, t))


def test_initial_tables_lie_in_plus_minus_gamma_plus_two_over_dim(model: KGEModel) -> None:
    bound = (model.gamma + 2.0) / model.dim
    for table in (model.entity.weight, model.relation.weight):
        assert table.abs().max() <= bound
        assert table.abs().max() > 0.8 * bound  # uniform over the whole range, not a smaller one


def test_penalty_is_the_sum_of_cubed_l3_norms(model: KGEModel) -> None:
    expected = sum(float((w.detach().double().abs() ** 3).sum()) for w in (model.entity.weight, model.relation.weight))
    assert model.penalty().item() == pytest.approx(expected, rel=1e-5)


# --- direct formulas -------------------------------------------------------------------------------


def complex_entities(model: KGEModel) -> torch.Tensor:
    re, im = model.entity.weight.detach().double().chunk(2, dim=-1)
    return torch.complex(re, im)


def phases(model: KGEModel, table: torch.Tensor) -> torch.Tensor:
    return table.detach().double() / (model.embedding_range / math.pi)


def all_triples() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    grid = torch.cartesian_prod(torch.arange(E), torch.arange(R), torch.arange(E))
    return grid.unbind(1)


def assert_formula(model: KGEModel, direct) -> None:
    h, r, t = all_triples()
    torch.testing.assert_close(model.score_hrt(h, r, t).double(), direct(h, r, t), **TOL)
    # and head/tail prediction against the same formula
    hq, rq, tq = queries(3)
    every = torch.arange(E)
    torch.testing.assert_close(model.score_t(hq, rq).double(), direct(hq[:, None], rq[:, None], every[None, :]), **TOL)
    torch.testing.assert_close(model.score_h(rq, tq).double(), direct(every[None, :], rq[:, None], tq[:, None]), **TOL)


def test_rotate_score_equals_complex_number_implementation() -> None:
    model = build(RotatE)
    ent = complex_entities(model)
    rel = torch.polar(torch.ones(R, DIM, dtype=torch.float64), phases(model, model.relation.weight))

    def direct(h, r, t):
        return model.gamma - (ent[h] * rel[r] - ent[t]).abs().sum(-1)

    assert_formula(model, direct)


def test_rotate_relations_have_unit_modulus_and_preserve_entity_modulus() -> None:
    model = build(RotatE)
    with torch.no_grad():
        model.relation.weight.mul_(37.0)  # phases far outside ±π still rotate
    cos, sin = model.relation_rotation(torch.arange(R))
    torch.testing.assert_close(cos**2 + sin**2, torch.ones(R, DIM))
    h, r, _ = queries()
    query = torch.complex(*model.tail_query(h, r).chunk(2, dim=-1))
    entity = torch.complex(*model.entity(h).chunk(2, dim=-1))
    torch.testing.assert_close(query.abs(), entity.abs())


def test_rotate_gradient_is_finite_where_the_distance_is_zero() -> None:
    model = build(RotatE)
    with torch.no_grad():
        model.relation.weight.zero_()  # r = 1, so f(h, r, h) = γ exactly
    h = torch.tensor([0, 1, 2])
    score = model.score_hrt(h, torch.zeros(3, dtype=torch.long), h)
    torch.testing.assert_close(score, torch.full((3,), model.gamma))
    score.sum().backward()
    assert torch.isfinite(model.entity.weight.grad).all()
    assert torch.isfinite(model.relation.weight.grad).all()


def test_transe_score_equals_gamma_minus_l1_distance() -> None:
    model = build(TransE, gamma=12.0)
    ent, rel = model.entity.weight.detach().double(), model.relation.weight.detach().double()

    def direct(h, r, t):
        return model.gamma - (ent[h] + rel[r] - ent[t]).abs().sum(-1)

    assert_formula(model, direct)


def test_distmult_score_equals_trilinear_product() -> None:
    model = build(DistMult)
    ent, rel = model.entity.weight.detach().double(), model.relation.weight.detach().double()

    def direct(h, r, t):
        return (ent[h] * rel[r] * ent[t]).sum(-1)

    assert_formula(model, direct)
    h, r, t = all_triples()
    torch.testing.assert_close(model.score_hrt(h, r, t), model.score_hrt(t, r, h))  # symmetric


def test_complex_score_equals_real_part_of_hermitian_product() -> None:
    model = build(ComplEx)
    ent = complex_entities(model)
    re, im = model.relation.weight.detach().double().chunk(2, dim=-1)
    rel = torch.complex(re, im)

    def direct(h, r, t):
        return (ent[h] * rel[r] * ent[t].conj()).sum(-1).real

    assert_formula(model, direct)


def test_protate_score_equals_gamma_minus_modulus_times_sine_distance() -> None:
    model = build(pRotatE)
    with torch.no_grad():
        model.modulus.fill_(0.37)
    ent, rel = phases(model, model.entity.weight), phases(model, model.relation.weight)
    m = 0.37

    def direct(h, r, t):
        return model.gamma - m * torch.sin(ent[h] + rel[r] - ent[t]).abs().sum(-1)

    assert_formula(model, direct)


def test_protate_modulus_starts_at_half_the_embedding_range() -> None:
    model = build(pRotatE, gamma=8.0)
    assert model.modulus.item() == pytest.approx(0.5 * (8.0 + 2.0) / DIM)


# --- RotatE's switches: compile, mixed precision; training through a Trainer ---------------------


def test_rotate_compile_argument_round_trips_through_its_spec_and_leaves_module_compile() -> None:
    import inspect

    from lightning_kge.spec import from_spec, to_spec

    model = RotatE(num_entities=E, num_relations=R, dim=DIM, gamma=6.0, compile=False)
    spec = to_spec(model)
    assert spec["compile"] is False
    assert from_spec(spec)._compile is False
    assert inspect.ismethod(model.compile)  # nn.Module.compile is not shadowed


class RecordingKernels:
    """Stands in for the torch backend's ``Kernels`` and records which flavour each call chose."""

    chosen: list[str] = []

    def __new__(cls, compiled: bool):
        from lightning_kge.kernels.rotate_chunks import Kernels

        cls.chosen.append("torch.compile" if compiled else "eager")
        return Kernels(compiled)


@pytest.fixture
def record_kernels(monkeypatch):
    """Compile on any size (thresholds 0) and record the kernels of each distance call:
    ``"native"``, ``"torch.compile"`` or ``"eager"``."""
    from lightning_kge.kernels import rotate_distance, rotate_native, rotate_torch

    monkeypatch.delenv("LIGHTNING_KGE_NO_COMPILE", raising=False)
    monkeypatch.setattr(rotate_distance, "COMPILE_MIN_WORK", 0)
    monkeypatch.setattr(rotate_distance, "WARM_MIN_WORK", 0)
    monkeypatch.setattr(rotate_torch, "Kernels", RecordingKernels)
    native = rotate_native.NativeBackend

    def recording_native(lib):
        RecordingKernels.chosen.append("native")
        return native(lib)

    monkeypatch.setattr(rotate_native, "NativeBackend", recording_native)
    RecordingKernels.chosen = []
    return RecordingKernels.chosen


def test_rotate_compile_false_never_uses_compiled_kernels(record_kernels) -> None:
    eager = build(RotatE)
    eager._compile = False
    h, r, t = queries()
    eager.score_t(h, r, torch.randint(E, (5, 4))).sum().backward()
    eager.score_h(r, t)
    assert record_kernels and set(record_kernels) == {"eager"}


def training_run(tmp_path, compile: bool, precision: str | None, steps: int = 12):
    """Fit RotatE on nations for ``steps`` full-batch steps; returns module, losses, checkpoint."""
    import functools

    import lightning as L

    from lightning_kge.datamodule import KGEDataModule
    from lightning_kge.module import KGEModule
    from lightning_kge.sampling import SelfAdversarialSampler

    class Losses(L.Callback):
        def __init__(self) -> None:
            self.values: list[float] = []

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            self.values.append(float(outputs["loss"]))

    L.seed_everything(0, verbose=False)
    sampler = SelfAdversarialSampler(num_negatives=16, temperature=0.5)
    data = KGEDataModule(sampler=sampler, name="nations", batch_size=2048, eval_batch_size=64)
    model = RotatE(num_entities=14, num_relations=55, dim=16, gamma=6.0, compile=compile)
    module = KGEModule(model, sampler, optimizer=functools.partial(torch.optim.Adam, lr=0.05))
    losses = Losses()
    trainer = L.Trainer(
        max_steps=steps, precision=precision, accelerator="cpu", devices=1, logger=False, callbacks=[losses],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )
    trainer.fit(module, datamodule=data)
    path = tmp_path / "rotate.ckpt"
    trainer.save_checkpoint(path)
    return module, losses.values, path


def assert_trained(losses: list[float], steps: int = 12) -> None:
    assert len(losses) == steps
    assert all(math.isfinite(x) for x in losses)
    # head- and tail-batches alternate: compare pairs of steps
    assert sum(losses[-2:]) < 0.9 * sum(losses[:2]), losses


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_rotate_trains_with_bf16_mixed_precision_on_cpu(tmp_path) -> None:
    module, losses, _ = training_run(tmp_path, compile=False, precision="bf16-mixed")
    assert_trained(losses)
    assert module.model.entity.weight.dtype == torch.float32


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("kernels", ["native", "torch.compile"])
def test_rotate_trains_through_compiled_kernels_and_its_checkpoint_round_trips(
    tmp_path, record_kernels, monkeypatch, kernels: str
) -> None:
    from lightning_kge.kernels import rotate_native
    from lightning_kge.module import KGEModule

    if kernels == "torch.compile":  # as where no C compiler builds the native kernels
        monkeypatch.setattr(rotate_native, "library", lambda: None)
    module, losses, path = training_run(tmp_path, compile=True, precision=None)
    assert_trained(losses)
    assert record_kernels and set(record_kernels) == {kernels}
    loaded = KGEModule.load_from_checkpoint(path)
    assert loaded.model._compile is True
    h, r, t = queries()
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.score_t(h, r), module.model.score_t(h, r))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_rotate_with_compile_false_trains_and_its_checkpoint_keeps_the_switch(tmp_path) -> None:
    from lightning_kge.module import KGEModule

    module, losses, path = training_run(tmp_path, compile=False, precision=None)
    assert_trained(losses)
    loaded = KGEModule.load_from_checkpoint(path)
    assert loaded.model._compile is False
    assert loaded.hparams["model"]["compile"] is False
    h, r, t = queries()
    with torch.no_grad():
        assert torch.equal(loaded.model.score_h(r, t), module.model.score_h(r, t))
