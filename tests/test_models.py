"""One contract suite for every model, plus each model's formula against a direct implementation."""

from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

import lightning_kge.models
from lightning_kge.errors import ArgumentError
from lightning_kge.models import ComplEx, DistMult, KGEModel, RotatE, TransE, pRotatE
from lightning_kge.models.functional import complex_halves, differences

E, R, DIM = 11, 4, 6
MODELS = [getattr(lightning_kge.models, name) for name in lightning_kge.models.__all__ if name != "KGEModel"]
TOL = {"rtol": 1e-5, "atol": 1e-5}
MODEL_CONFIGS = Path(__file__).resolve().parents[1] / "conf" / "model"


class ComplexTransE(KGEModel):
    """``f(h, r, t) = γ − Σ_i |h_i + r_i − t_i|`` over complex vectors: a new model is its widths
    and its scoring maths, nothing else (the base class validates, builds and initialises)."""

    entity_multiple = relation_multiple = 2

    def tail_query(self, h: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return self.entity(h) + self.relation(r)

    def head_query(self, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.entity(t) - self.relation(r)

    def score_candidates(self, query: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        re, im = complex_halves(differences(query, self.entities(index)))
        return self.gamma - torch.sqrt(re**2 + im**2).sum(dim=-1)


def build(cls: type[KGEModel], seed: int = 0, gamma: float = 6.0) -> KGEModel:
    torch.manual_seed(seed)
    return cls(num_entities=E, num_relations=R, dim=DIM, gamma=gamma)


def queries(seed: int = 0, B: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(E, (B,), generator=g), torch.randint(R, (B,), generator=g), torch.randint(E, (B,), generator=g)


@pytest.fixture(params=[*MODELS, ComplexTransE], ids=lambda c: c.__name__)
def model(request) -> KGEModel:
    return build(request.param)


# --- which models there are ------------------------------------------------------------------------


def test_every_model_defined_in_the_package_is_listed_in_models_all() -> None:
    defined = set()
    for info in pkgutil.iter_modules(lightning_kge.models.__path__):
        module = importlib.import_module(f"lightning_kge.models.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, KGEModel) and cls.__module__ == module.__name__ and not inspect.isabstract(cls):
                defined.add(cls)
    assert {RotatE, TransE, DistMult, ComplEx, pRotatE} <= defined
    assert defined == set(MODELS)


def test_a_model_written_in_a_few_lines_gets_validated_tables_of_its_widths() -> None:
    assert "__init__" not in vars(ComplexTransE)
    model = build(ComplexTransE)
    assert model.entity.weight.shape == (E, 2 * DIM)
    assert model.relation.weight.shape == (R, 2 * DIM)
    with pytest.raises(ArgumentError):
        ComplexTransE(num_entities=E, num_relations=R, dim=0)
    # and it joins every contract test below through the `model` fixture


def test_a_model_without_its_scoring_maths_cannot_be_built() -> None:
    class NoScore(KGEModel):
        def tail_query(self, h: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
            return self.entity(h)

    with pytest.raises(TypeError, match="abstract"):
        NoScore(num_entities=E, num_relations=R)


# --- construction: draw order, defaults, validation ------------------------------------------------

OLD_WIDTHS = {"RotatE": (2, 1), "TransE": (1, 1), "DistMult": (1, 1), "ComplEx": (2, 2), "pRotatE": (1, 1)}
"""Entity and relation row widths, in multiples of dim, that each model's own ``__init__`` used."""


@pytest.mark.parametrize("name", sorted(OLD_WIDTHS))
def test_seeded_tables_equal_the_ones_the_old_constructors_drew(name: str) -> None:
    gamma, bound = 5.0, (5.0 + 2.0) / DIM
    torch.manual_seed(7)  # as each model's __init__ did: the entity table, then the relation table
    entity = nn.Embedding(E, OLD_WIDTHS[name][0] * DIM)
    nn.init.uniform_(entity.weight, -bound, bound)
    relation = nn.Embedding(R, OLD_WIDTHS[name][1] * DIM)
    nn.init.uniform_(relation.weight, -bound, bound)
    state_after = torch.get_rng_state()

    model = build(getattr(lightning_kge.models, name), seed=7, gamma=gamma)
    assert torch.equal(model.entity.weight, entity.weight)
    assert torch.equal(model.relation.weight, relation.weight)
    assert torch.equal(torch.get_rng_state(), state_after)  # no other draw: later draws repeat too


def model_configs() -> list[Path]:
    return sorted(MODEL_CONFIGS.glob("*.yaml"))


@pytest.mark.parametrize("path", model_configs(), ids=lambda p: p.stem)
def test_model_yaml_sets_every_default_argument_to_its_class_default(path: Path) -> None:
    node = OmegaConf.to_container(OmegaConf.load(path))
    cls = getattr(importlib.import_module(node["_target_"].rpartition(".")[0]), node["_target_"].rpartition(".")[2])
    defaults = {n: p.default for n, p in inspect.signature(cls).parameters.items() if p.default is not p.empty}
    values = {k: v for k, v in node.items() if k != "_target_"}
    assert set(values) == set(defaults), f"{path.name} keys differ from the defaulted arguments of {cls.__name__}"
    for key, value in values.items():
        assert (value, type(value)) == (defaults[key], type(defaults[key])), f"{path.name}: {key}"
    for line in path.read_text().splitlines():
        if re.match(r"^\w+:", line) and not line.startswith("_target_:"):
            assert "#" in line, f"{path.name}: key without a comment: {line!r}"


def test_every_model_has_one_yaml() -> None:
    targets = [OmegaConf.load(p)["_target_"] for p in model_configs()]
    assert sorted(targets) == sorted(f"{cls.__module__}.{cls.__qualname__}" for cls in MODELS)


BAD_ARGUMENTS = [
    ("num_entities", 0), ("num_entities", -3), ("num_entities", 4.0),
    ("num_relations", 0), ("num_relations", -1),
    ("dim", 0), ("dim", -5), ("dim", 2.5), ("dim", True), ("dim", "8"),
    ("gamma", 0.0), ("gamma", -1.0), ("gamma", float("nan")), ("gamma", float("inf")), ("gamma", "6"),
]


@pytest.mark.parametrize("cls", [*MODELS, ComplexTransE], ids=lambda c: c.__name__)
@pytest.mark.parametrize(("name", "value"), BAD_ARGUMENTS, ids=lambda x: repr(x))
def test_an_argument_out_of_range_raises_an_argument_error_naming_it(cls: type[KGEModel], name: str, value) -> None:
    arguments = {"num_entities": E, "num_relations": R, "dim": DIM, "gamma": 6.0, name: value}
    with pytest.raises(ArgumentError) as raised:
        cls(**arguments)
    assert raised.value.name == name
    assert f"(argument {name})" in str(raised.value)
    assert "\n" not in str(raised.value)
    assert str(raised.value.at("model")).startswith(f"model.{name}=")


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_the_smallest_valid_arguments_build_a_model_that_scores(cls: type[KGEModel]) -> None:
    model = cls(num_entities=1, num_relations=1, dim=1, gamma=1e-3)
    zero = torch.zeros(1, dtype=torch.long)
    assert model.score_t(zero, zero).shape == (1, 1)
    assert torch.isfinite(model.score_hrt(zero, zero, zero)).all()


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


def test_sparse_lookups_give_the_dense_gradients_as_touched_rows(model: KGEModel) -> None:
    # Any model, ComplexTransE included (written with no thought of sparse gradients), gets row gradients.
    import copy

    dense = copy.deepcopy(model)
    model.use_sparse_gradients()
    h, r, t = queries()
    cands = torch.randint(E, (5, 3), generator=torch.Generator().manual_seed(2))
    shared = torch.tensor([4, 0, 4])

    def loss(m: KGEModel) -> torch.Tensor:
        return (m.score_hrt(h, r, t).sum() + m.score_t(h, r, cands).pow(2).sum() + m.score_h(r, t, cands).sum()
                + m.score_t(h, r, shared).sum())

    loss(model).backward()
    loss(dense).backward()
    touched = {"entity": sorted(set(h.tolist()) | set(t.tolist()) | set(cands.flatten().tolist()) | {0, 4}),
               "relation": sorted(set(r.tolist()))}
    for (name, parameter), (_, expected) in zip(model.named_parameters(), dense.named_parameters()):
        table = name.split(".")[0]
        if table in touched:
            assert parameter.grad.is_sparse, name
            grad = parameter.grad.coalesce()
            assert grad.indices()[0].tolist() == touched[table], name
            torch.testing.assert_close(grad.to_dense(), expected.grad, **TOL)
        else:  # pRotatE's modulus: a dense parameter keeps its dense gradient
            assert not parameter.grad.is_sparse
            torch.testing.assert_close(parameter.grad, expected.grad, **TOL)
    model.use_sparse_gradients(False)
    model.zero_grad()
    loss(model).backward()
    assert not any(p.grad.is_sparse for p in model.parameters())


def test_reading_a_steps_rows_once_gives_the_dense_gradients_as_one_tensor_of_distinct_rows(model: KGEModel) -> None:
    import copy

    dense = copy.deepcopy(model)
    model.use_sparse_gradients()
    h, r, t = queries()
    cands = torch.randint(E, (5, 3), generator=torch.Generator().manual_seed(2))
    step = torch.cat([h, t, cands.flatten()])

    def loss(m: KGEModel) -> torch.Tensor:
        return m.score_hrt(h, r, t).sum() + m.score_t(h, r, cands).pow(2).sum() + m.score_h(r, t, cands).sum()

    with model.reading_rows(step):
        loss(model).backward()
    loss(dense).backward()
    grad = model.entity.weight.grad
    assert grad.is_sparse and grad._indices()[0].tolist() == torch.unique(step).tolist()  # each row once, sorted
    torch.testing.assert_close(grad.to_dense(), dense.entity.weight.grad, **TOL)
    for a, b in zip(model.parameters(), dense.parameters()):
        torch.testing.assert_close(a.grad.to_dense() if a.grad.is_sparse else a.grad, b.grad, **TOL)
    with model.reading_rows(h), pytest.raises(IndexError, match="was not read for this step"):
        model.score_t(h, r, cands)  # a candidate outside the step's entities


def test_parameter_groups_name_the_tables_apart_from_the_dense_parameters(model: KGEModel) -> None:
    groups = {g["name"]: g["params"] for g in model.parameter_groups()}
    assert groups["tables"] == [model.entity.weight, model.relation.weight]
    assert groups.get("dense", []) == ([model.modulus] if isinstance(model, pRotatE) else [])
    assert sum(len(p) for p in groups.values()) == len(list(model.parameters()))


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


def test_rotate_distance_backend_round_trips_through_its_spec() -> None:
    from lightning_kge.serialization import from_spec, to_spec

    model = RotatE(num_entities=E, num_relations=R, dim=DIM, gamma=6.0, distance_backend="reference")
    spec = to_spec(model)
    assert spec["distance_backend"] == "reference"
    assert from_spec(spec).distance_backend == "reference"


@pytest.fixture
def record_backends(monkeypatch):
    """Records the backend that each distance call (forward and backward) actually ran."""
    from lightning_kge.kernels import backends

    chosen: list[str] = []
    forward, backward = backends.forward, backends.backward

    def recording_forward(query, table, index, backend):
        chosen.append(backends.resolve(backend, query.device))
        return forward(query, table, index, backend)

    def recording_backward(grad, query, table, index, backend, *args):
        chosen.append(backends.resolve(backend, query.device))
        return backward(grad, query, table, index, backend, *args)

    monkeypatch.setattr(backends, "forward", recording_forward)
    monkeypatch.setattr(backends, "backward", recording_backward)
    return chosen


@pytest.mark.parametrize("backend", ["reference", "native"])
def test_rotate_runs_the_distance_backend_it_is_given(record_backends, backend: str) -> None:
    model = RotatE(num_entities=E, num_relations=R, dim=DIM, gamma=6.0, distance_backend=backend)
    h, r, t = queries()
    model.score_t(h, r, torch.randint(E, (5, 4))).sum().backward()
    model.score_h(r, t)
    assert len(record_backends) == 3 and set(record_backends) == {backend}


@pytest.fixture
def record_tables(monkeypatch):
    """Records the table and ids each distance forward receives."""
    from lightning_kge.kernels import backends

    seen: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    forward = backends.forward

    def recording_forward(query, table, index, backend):
        seen.append((table, index))
        return forward(query, table, index, backend)

    monkeypatch.setattr(backends, "forward", recording_forward)
    return seen


def test_rotate_scores_the_whole_table_with_dense_gradients_and_the_unique_rows_with_sparse_ones(record_tables) -> None:
    model = build(RotatE)
    h, r, _ = queries()
    cands = torch.tensor([[3, 7, 3], [7, 7, 1], [1, 3, 3], [3, 3, 3], [7, 1, 1]])
    dense_scores = model.score_t(h, r, cands)
    [(table, ids)] = record_tables
    assert table.shape == (E, 2 * DIM) and torch.equal(ids, cands)  # the dense path: the table and ids as given
    model.use_sparse_gradients()
    with torch.no_grad():  # no gradient: the dense path (no unique, no host sync on CUDA)
        model.score_t(h, r, cands)
    assert record_tables[-1][0].shape == (E, 2 * DIM)
    sparse_scores = model.score_t(h, r, cands)
    table, ids = record_tables[-1]
    assert table.shape == (3, 2 * DIM) and torch.equal(table[ids], model.entity.weight[cands])  # entities 1, 3, 7
    torch.testing.assert_close(sparse_scores, dense_scores)
    model.score_t(h, r)  # all entities (evaluation): the whole table
    assert record_tables[-1][0].shape == (E, 2 * DIM) and record_tables[-1][1] is None


def test_rotate_refuses_an_unknown_distance_backend() -> None:
    with pytest.raises(ArgumentError, match="distance_backend"):
        RotatE(num_entities=E, num_relations=R, dim=DIM, gamma=6.0, distance_backend="fast")


def training_run(tmp_path, backend: str, precision: str | None, steps: int = 12):
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
    data = KGEDataModule(sampler.corruption(), name="nations", batch_size=2048, eval_batch_size=64)
    data.setup()
    model = RotatE(num_entities=14, num_relations=55, dim=16, gamma=6.0, distance_backend=backend)
    module = KGEModule(model, sampler.selection(), data.info, optimizer=functools.partial(torch.optim.Adam, lr=0.05))
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
    module, losses, _ = training_run(tmp_path, backend="auto", precision="bf16-mixed")
    assert_trained(losses)
    assert module.model.entity.weight.dtype == torch.float32


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("backend", ["native", "reference"])
def test_rotate_trains_through_each_cpu_backend_and_its_checkpoint_keeps_it(
    tmp_path, record_backends, backend: str
) -> None:
    from lightning_kge.module import KGEModule

    module, losses, path = training_run(tmp_path, backend=backend, precision=None)
    assert_trained(losses)
    assert record_backends and set(record_backends) == {backend}
    loaded = KGEModule.load_from_checkpoint(path)
    assert loaded.model.distance_backend == backend and loaded.hparams["model"]["distance_backend"] == backend
    h, r, t = queries()
    with torch.no_grad():
        assert torch.equal(loaded.model.score_t(h, r), module.model.score_t(h, r))
