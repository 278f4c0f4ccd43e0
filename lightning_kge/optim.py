"""Optimizers that take sparse row gradients, so a step costs what the batch touches, not the table.

Dense Adam reads and writes every row of every table, its gradient and its two moment tables at
each step, whatever the batch touched. With sparse row gradients (the model's lookups switched by
:meth:`~lightning_kge.models.base.KGEModel.use_sparse_gradients`) a table's gradient holds only
the rows the batch read, and these optimizers update only those rows and their state:

* :class:`SparseAdam` (``optimizer=sparse_adam``): lazy Adam, the maths of
  ``torch.optim.SparseAdam`` for sparse gradients (tables) and of ``torch.optim.Adam`` for dense
  ones (pRotatE's modulus, any parameter outside a table);
* :class:`Adagrad` (``optimizer=adagrad``): ``torch.optim.Adagrad``'s maths, row by row for
  sparse gradients; its update of a row does not depend on the steps that skipped it, so it
  equals dense Adagrad exactly.

Both take the module's named parameter groups (``tables``, ``dense``;
:meth:`~lightning_kge.models.base.KGEModel.parameter_groups`), keep their state in
``state_dict()`` like any torch optimizer (checkpoints, resume) and read ``group["lr"]`` at each
step (learning-rate schedulers). An optimizer class opts in to sparse gradients with a true
class attribute ``sparse_gradients`` (:func:`takes_sparse_gradients`); the module reads it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from lightning_kge.errors import require
from lightning_kge.kernels import rotate_native
from lightning_kge.serialization import partial_target

__all__ = ["Adagrad", "RowSparseOptimizer", "SparseAdam", "clip_gradients", "native_entries",
           "takes_sparse_gradients"]


def takes_sparse_gradients(factory: Any) -> bool:
    """Whether ``factory`` (a class, or a ``functools.partial`` of one) builds an optimizer that
    takes sparse row gradients: the class has a true attribute ``sparse_gradients``.

    Example:
        >>> takes_sparse_gradients(functools.partial(SparseAdam, lr=0.01)), takes_sparse_gradients(torch.optim.Adam)
        (True, False)
    """
    while isinstance(factory, functools.partial):
        factory = partial_target(factory)
    return bool(getattr(factory, "sparse_gradients", False))


class RowSparseOptimizer(torch.optim.Optimizer):
    """Base of optimizers whose update of a parameter follows its gradient's layout.

    A sparse gradient (a ``torch.sparse_coo`` tensor of table rows, possibly holding a row more
    than once) updates only its rows and their state, each row with the sum of its entries
    (:meth:`update_rows`); a dense gradient updates the whole parameter (:meth:`update_dense`).
    Parameters without a gradient are skipped. For float CPU tables the row updates run in the
    native C++ kernels (:mod:`~lightning_kge.kernels.rotate_native`: one pass per row, no
    temporary table-sized or batch-sized tensors), elsewhere in torch ops on the coalesced
    gradient; the two agree up to rounding. A subclass gives the initial state and the updates.
    """

    sparse_gradients: ClassVar[bool] = True
    """Read by the module (:func:`takes_sparse_gradients`): lookups give sparse row gradients."""

    def init_state(self, param: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        """Fill the empty ``state`` of ``param`` before its first update."""
        raise NotImplementedError

    def update_rows(self, param: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        """Update the rows of ``param`` that its sparse gradient ``grad`` holds, and their state."""
        raise NotImplementedError

    def update_dense(self, param: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        """Update all of ``param`` given its dense gradient."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    self.init_state(param, state, group)
                if param.grad.is_sparse:
                    self.update_rows(param, param.grad, state, group)
                else:
                    self.update_dense(param, param.grad, state, group)
        return loss


def native_entries(param: Tensor, grad: Tensor, state: list[Tensor]) -> tuple[Tensor, Tensor, Tensor] | None:
    """The entries of a sparse gradient for the native row updates, or ``None`` where those cannot run.

    Returns ``(ids, order, values)``: the entries' row ids sorted (a stable sort, so a row's entries
    are summed in their order), ``order`` into the rows of ``values`` (empty when the ids are
    sorted already: a coalesced gradient, or the step's rows read once), and ``values`` ``(n, w)``.
    The native kernels take float32 or float64 contiguous CPU tables whose state is alike.
    """
    values = grad._values()
    usable = (param.device.type == "cpu" and param.dtype in (torch.float32, torch.float64) and param.dim() == 2
              and grad.sparse_dim() == 1 and values.dtype == param.dtype and param.is_contiguous()
              and all(t.is_contiguous() for t in state) and rotate_native.unavailable() is None)
    if not usable:
        return None
    indices = grad._indices()[0].contiguous()
    if grad.is_coalesced() or bool((indices[1:] >= indices[:-1]).all()):  # sorted already: no sort
        return indices, indices.new_empty(0), values.contiguous()
    ids, order = torch.sort(indices, stable=True)
    return ids, order, values.contiguous()


class SparseAdam(RowSparseOptimizer):
    r"""Lazy Adam: only the rows a batch touched, and their moments, change.

    For a sparse gradient ``g`` with rows ``U`` at the parameter's step ``t`` (counted per
    parameter, as ``torch.optim.SparseAdam`` does), for each row ``i ∈ U``:

        m_i ← β₁ m_i + (1 − β₁) g_i,    v_i ← β₂ v_i + (1 − β₂) g_i²
        θ_i ← θ_i − lr · √(1 − β₂ᵗ) / (1 − β₁ᵗ) · m_i / (√v_i + ε)

    and rows outside ``U`` keep ``θ``, ``m`` and ``v``. A dense gradient (a parameter outside the
    tables) gets ``torch.optim.Adam``'s update,
    ``θ ← θ − lr / (1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)``.
    At the first step the two agree on the touched rows up to where ``ε`` is added.

    Args:
        params: parameters or parameter groups (the module gives ``tables`` and ``dense``).
        lr: learning rate ``> 0``.
        betas: ``(β₁, β₂)``, each in ``[0, 1)``.
        eps: ``ε > 0``.

    Example:
        >>> table = torch.nn.Embedding(5, 2, sparse=True)
        >>> before = table.weight.detach().clone()
        >>> optimizer = SparseAdam(table.parameters(), lr=0.1)
        >>> table(torch.tensor([1, 3, 1])).sum().backward()
        >>> optimizer.step()
        >>> (table.weight != before).any(dim=1).tolist()  # only the rows of the batch moved
        [False, True, False, True, False]
    """

    def __init__(self, params: Iterable[Any], lr: float = 0.001, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        require(_positive(lr), "lr", lr, "a number > 0")
        require(len(betas) == 2 and all(_number(b) and 0 <= b < 1 for b in betas), "betas", betas,
                "two numbers in [0, 1)")
        require(_positive(eps), "eps", eps, "a number > 0")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps})

    def init_state(self, param: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        state["step"] = 0
        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)

    def _step_count(self, state: dict[str, Any], group: dict[str, Any]) -> tuple[float, float, float]:
        state["step"] += 1
        beta1, beta2 = group["betas"]
        return float(group["lr"]), 1 - beta1 ** state["step"], 1 - beta2 ** state["step"]

    def update_rows(self, param: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        lr, correction1, correction2 = self._step_count(state, group)
        beta1, beta2 = group["betas"]
        step_size = lr * math.sqrt(correction2) / correction1
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        entries = native_entries(param, grad, [exp_avg, exp_avg_sq])
        if entries is not None:
            torch.ops.lightning_kge_native.adam_rows(param, exp_avg, exp_avg_sq, *entries, beta1, beta2,
                                                     group["eps"], step_size)
            return
        grad = grad.coalesce()
        rows, values = grad.indices()[0], grad.values()
        if rows.numel() == 0:
            return
        m = exp_avg.index_select(0, rows).lerp_(values, 1 - beta1)
        v = exp_avg_sq.index_select(0, rows).mul_(beta2).addcmul_(values, values, value=1 - beta2)
        exp_avg.index_copy_(0, rows, m)
        exp_avg_sq.index_copy_(0, rows, v)
        param.index_add_(0, rows, m.div_(v.sqrt_().add_(group["eps"])), alpha=-step_size)

    def update_dense(self, param: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        lr, correction1, correction2 = self._step_count(state, group)
        beta1, beta2 = group["betas"]
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (exp_avg_sq.sqrt() / math.sqrt(correction2)).add_(group["eps"])
        param.addcdiv_(exp_avg, denom, value=-lr / correction1)


class Adagrad(RowSparseOptimizer):
    r"""Adagrad with row updates for sparse gradients (``torch.optim.Adagrad``'s maths).

    At the parameter's step ``t``, with ``lr_t = lr / (1 + (t − 1) · lr_decay)``, each row ``i``
    of a sparse gradient (every entry of a dense one) is updated as

        s_i ← s_i + g_i²,    θ_i ← θ_i − lr_t · g_i / (√s_i + ε)

    A row with a zero gradient would not move under dense Adagrad either, so row updates equal
    dense Adagrad's.

    Args:
        params: parameters or parameter groups (the module gives ``tables`` and ``dense``).
        lr: learning rate ``> 0``.
        lr_decay: ``≥ 0``, as above.
        initial_accumulator_value: ``s`` at the start, ``≥ 0``.
        eps: ``ε > 0``.
    """

    def __init__(self, params: Iterable[Any], lr: float = 0.01, lr_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10) -> None:
        require(_positive(lr), "lr", lr, "a number > 0")
        require(_number(lr_decay) and lr_decay >= 0, "lr_decay", lr_decay, "a number ≥ 0")
        require(_number(initial_accumulator_value) and initial_accumulator_value >= 0, "initial_accumulator_value",
                initial_accumulator_value, "a number ≥ 0")
        require(_positive(eps), "eps", eps, "a number > 0")
        defaults = {"lr": lr, "lr_decay": lr_decay, "initial_accumulator_value": initial_accumulator_value, "eps": eps}
        super().__init__(params, defaults)

    def init_state(self, param: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        state["step"] = 0
        state["sum"] = torch.full_like(param, group["initial_accumulator_value"], memory_format=torch.preserve_format)

    def _rate(self, state: dict[str, Any], group: dict[str, Any]) -> float:
        state["step"] += 1
        return float(group["lr"]) / (1 + (state["step"] - 1) * group["lr_decay"])

    def update_rows(self, param: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        lr = self._rate(state, group)
        entries = native_entries(param, grad, [state["sum"]])
        if entries is not None:
            torch.ops.lightning_kge_native.adagrad_rows(param, state["sum"], *entries, lr, group["eps"])
            return
        grad = grad.coalesce()
        rows, values = grad.indices()[0], grad.values()
        if rows.numel() == 0:
            return
        total = state["sum"].index_select(0, rows).addcmul_(values, values)
        state["sum"].index_copy_(0, rows, total)
        param.index_add_(0, rows, values / total.sqrt_().add_(group["eps"]), alpha=-lr)

    def update_dense(self, param: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        lr = self._rate(state, group)
        state["sum"].addcmul_(grad, grad)
        param.addcdiv_(grad, state["sum"].sqrt().add_(group["eps"]), value=-lr)


def clip_gradients(parameters: Iterable[Tensor], value: float, algorithm: str = "norm") -> None:
    """Clip gradients, sparse or dense, in place, as ``torch.nn.utils.clip_grad_norm_`` /
    ``clip_grad_value_`` clip the equal dense gradients (those refuse sparse tensors).

    A sparse gradient is coalesced first (duplicate rows summed), so its 2-norm and its entries
    are those of the dense gradient. ``norm``: every gradient is scaled by
    ``min(1, value / (‖g‖₂ + 1e-6))`` with ``‖g‖₂`` over all of them; ``value``: entries are clamped
    to ``[−value, value]``.
    """
    tensors = []
    for param in parameters:
        if param.grad is None:
            continue
        if param.grad.is_sparse:
            param.grad = param.grad.coalesce()
            tensors.append(param.grad._values())  # the coalesced tensor's own storage: scaled in place
        else:
            tensors.append(param.grad)
    if not tensors:
        return
    if algorithm == "value":
        for grad in tensors:
            grad.clamp_(-value, value)
        return
    norms = [torch.linalg.vector_norm(g) for g in tensors]
    dtype = functools.reduce(torch.promote_types, [n.dtype for n in norms])
    total = torch.linalg.vector_norm(torch.stack([n.to(dtype) for n in norms]))
    scale = torch.clamp(value / (total + 1e-6), max=1.0)
    for grad in tensors:
        grad.mul_(scale.to(grad.dtype))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value: Any) -> bool:
    return _number(value) and value > 0
