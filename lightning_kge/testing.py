"""The model contract as a check anyone can run: ``check_model(MyModel)`` in a client project's tests.

Every model, ours and yours, must honour one scoring contract (see
:class:`~lightning_kge.models.base.KGEModel`): a query scored against candidates given per query,
shared by all queries, or all entities agrees with ``score_hrt`` of the same triples; gradients
reach every parameter and only the rows used; weights round-trip through ``state_dict`` and through
a checkpoint of a :class:`~lightning_kge.module.KGEModule` (the class rebuilt from its import path,
trusted). The project's own model tests run these same checks (``tests/test_models.py``)::

    from lightning_kge.testing import check_model

    def test_my_model_honours_the_contract():
        check_model(MyModel)             # builds MyModel(num_entities=11, num_relations=4, dim=6)

Each check is also a function of its own (:data:`CHECKS`), raising ``AssertionError`` with a
message saying what failed.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightning_kge.models.base import KGEModel

E, R, DIM = 11, 4, 6
"""Sizes of the models the checks build: small, with more entities than queries."""

TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}

ModelFactory = Callable[[int], KGEModel]
"""``seed -> model``: builds the model under test from a seed (other seeds give other weights)."""


def factory_of(cls: type[KGEModel], **kwargs: Any) -> ModelFactory:
    """A :data:`ModelFactory` for ``cls(num_entities=E, num_relations=R, dim=DIM, **kwargs)``."""

    def build(seed: int) -> KGEModel:
        torch.manual_seed(seed)
        return cls(**{"num_entities": E, "num_relations": R, "dim": DIM, **kwargs})

    return build


def queries(seed: int = 0, batch: int = 5) -> tuple[Tensor, Tensor, Tensor]:
    """``(h, r, t)`` id tensors of ``batch`` random triples."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.randint(E, (batch,), generator=generator), torch.randint(R, (batch,), generator=generator),
            torch.randint(E, (batch,), generator=generator))


def candidates(seed: int = 1, shape: tuple[int, ...] = (5, 7)) -> Tensor:
    """Random candidate entity ids of ``shape``."""
    return torch.randint(E, shape, generator=torch.Generator().manual_seed(seed))


def check_candidate_matrix(model: KGEModel) -> None:
    """``score_t`` and ``score_h`` with ``(B, C)`` candidates equal ``score_hrt`` of those triples."""
    h, r, t = queries()
    cands = candidates()
    tails, heads = model.score_t(h, r, cands), model.score_h(r, t, cands)
    assert tails.shape == heads.shape == (5, 7), f"(B, C) candidates gave shapes {tails.shape}, {heads.shape}"
    torch.testing.assert_close(tails, model.score_hrt(h[:, None], r[:, None], cands), **TOLERANCE,
                               msg=lambda m: f"score_t differs from score_hrt: {m}")
    torch.testing.assert_close(heads, model.score_hrt(cands, r[:, None], t[:, None]), **TOLERANCE,
                               msg=lambda m: f"score_h differs from score_hrt: {m}")


def check_shared_candidates(model: KGEModel) -> None:
    """``(C,)`` candidates shared by every query equal ``score_hrt`` of those triples."""
    h, r, t = queries()
    cands = torch.tensor([3, 0, 10, 3, 7]) % E
    tails, heads = model.score_t(h, r, cands), model.score_h(r, t, cands)
    assert tails.shape == heads.shape == (5, 5), f"shared candidates gave shapes {tails.shape}, {heads.shape}"
    torch.testing.assert_close(tails, model.score_hrt(h[:, None], r[:, None], cands[None, :]), **TOLERANCE)
    torch.testing.assert_close(heads, model.score_hrt(cands[None, :], r[:, None], t[:, None]), **TOLERANCE)


def check_all_entities(model: KGEModel) -> None:
    """``index=None`` scores every entity, in id order, as ``score_hrt`` does."""
    h, r, t = queries()
    every = torch.arange(model.num_entities)
    tails, heads = model.score_t(h, r), model.score_h(r, t)
    assert tails.shape == heads.shape == (5, model.num_entities), "all entities: wrong shape"
    torch.testing.assert_close(tails, model.score_hrt(h[:, None], r[:, None], every[None, :]), **TOLERANCE)
    torch.testing.assert_close(heads, model.score_hrt(every[None, :], r[:, None], t[:, None]), **TOLERANCE)


def check_broadcasting(model: KGEModel) -> None:
    """``score_hrt`` broadcasts its index tensors like a loop over single triples."""
    h, r, _ = queries()
    t = torch.arange(model.num_entities)
    got = model.score_hrt(h[:, None], r[:, None], t[None, :])
    assert got.shape == (5, model.num_entities), f"broadcast score_hrt gave shape {got.shape}"
    for b in range(5):
        for c in range(model.num_entities):
            single = model.score_hrt(h[b : b + 1], r[b : b + 1], t[c : c + 1])
            assert single.shape == (1,), f"one triple gave shape {single.shape}"
            torch.testing.assert_close(got[b, c], single[0], **TOLERANCE)
    torch.testing.assert_close(model.score_hrt(h, torch.tensor(2 % model.num_relations), h),
                               model.score_hrt(h, torch.full((5,), 2 % model.num_relations), h))


def check_gradients(model: KGEModel) -> None:
    """Gradients reach every parameter, are finite, and leave the entity rows no triple used at zero."""
    model.zero_grad(set_to_none=True)
    h, r, t = queries()
    cands = candidates(2, (5, 3))
    loss = model.score_hrt(h, r, t).sum() + model.score_t(h, r, cands).sum() + model.score_h(r, t, cands).sum()
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"no gradient reached {name}"
        grad = parameter.grad.to_dense() if parameter.grad.is_sparse else parameter.grad
        assert torch.isfinite(grad).all(), f"the gradient of {name} is not finite"
        assert grad.abs().sum() > 0, f"the gradient of {name} is zero"
    touched = set(h.tolist()) | set(t.tolist()) | set(cands.flatten().tolist())
    untouched = [e for e in range(model.num_entities) if e not in touched]
    grad = model.entity.weight.grad
    grad = grad.to_dense() if grad.is_sparse else grad
    if untouched:
        assert (grad[untouched] == 0).all(), "entity rows that no triple used got a gradient"
    model.zero_grad(set_to_none=True)


def check_state_dict(model: KGEModel, factory: ModelFactory) -> None:
    """A model of another seed that loads the ``state_dict`` scores identically."""
    clone = factory(123)
    h, r, t = queries()
    assert not torch.equal(clone.score_t(h, r), model.score_t(h, r)), "another seed gave the same weights"
    clone.load_state_dict(model.state_dict())
    assert torch.equal(clone.score_t(h, r), model.score_t(h, r)), "state_dict round trip changed tail scores"
    assert torch.equal(clone.score_h(r, t), model.score_h(r, t)), "state_dict round trip changed head scores"


def check_checkpoint(model: KGEModel) -> None:
    """A :class:`KGEModule` checkpoint rebuilds the model's class and arguments from its spec (its module
    trusted) and scores identically."""
    import lightning as L

    from lightning_kge.module import KGEModule

    module = KGEModule(model=model)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        max_steps=0)
    trainer.strategy.connect(module)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.ckpt"
        trainer.save_checkpoint(path)
        loaded = KGEModule.load_from_checkpoint(path, trust=[type(model).__module__])
    assert type(loaded.model) is type(model), f"the checkpoint rebuilt a {type(loaded.model).__name__}"
    h, r, t = queries()
    assert torch.equal(loaded.model.score_hrt(h, r, t), model.score_hrt(h, r, t)), "checkpoint changed the scores"


CHECKS: dict[str, Callable[..., None]] = {
    "candidate_matrix": check_candidate_matrix,
    "shared_candidates": check_shared_candidates,
    "all_entities": check_all_entities,
    "broadcasting": check_broadcasting,
    "gradients": check_gradients,
    "state_dict": check_state_dict,
    "checkpoint": check_checkpoint,
}
"""Every check of the contract by name; ``state_dict`` also takes the factory."""


def run_check(name: str, factory: ModelFactory) -> None:
    """Run the check ``name`` of :data:`CHECKS` on ``factory(0)``."""
    model = factory(0)
    check = CHECKS[name]
    if name == "state_dict":
        check(model, factory)
    else:
        check(model)


def check_model(model: type[KGEModel] | ModelFactory, **kwargs: Any) -> None:
    """Run every contract check on a model class (built with ``kwargs``) or a :data:`ModelFactory`.

    Raises:
        AssertionError: naming the first check that failed and why.
    """
    factory = factory_of(model, **kwargs) if isinstance(model, type) else model
    for name in CHECKS:
        try:
            run_check(name, factory)
        except AssertionError as error:
            raise AssertionError(f"the model breaks the contract ({name}): {error}") from None
