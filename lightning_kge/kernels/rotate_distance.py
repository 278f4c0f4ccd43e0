"""The fused RotatE distance: one custom op, ``lightning_kge::rotate_distance``, three backends.

RotatE (Sun et al., 2019, "RotatE: Knowledge Graph Embedding by Relational Rotation in Complex
Space") scores a triple by the distance between the rotated head ``q = h ∘ r`` and the tail ``t``:

    D(q, t) = Σ_i |q_i − t_i| = Σ_i sqrt((q_re,i − t_re,i)² + (q_im,i − t_im,i)²)

Complex vectors of dimension ``d`` are stored as real rows of width ``2d``: the first ``d``
columns hold the real parts, the last ``d`` the imaginary parts (the layout of the paper's code).

Scoring ``B`` queries against ``C`` candidates the plain way gathers a ``(B, C, 2d)`` block and
keeps several tensors of that size for autograd (several GB at the paper's wn18rr setting). The
op saves only its inputs and recomputes in its backward, itself the op
``lightning_kge::rotate_distance_backward``. Both are ``torch.library.custom_op``s with fake
implementations, so ``torch.compile(fullgraph=True)`` traces through them without a graph break.
The backends behind them are in :mod:`~lightning_kge.kernels.backends`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_kge.errors import ArgumentError
from lightning_kge.kernels import backends
from lightning_kge.kernels.backends import BACKENDS, BackendUnavailableError

__all__ = ["BACKENDS", "BackendUnavailableError", "rotate_distance"]


@torch.library.custom_op("lightning_kge::rotate_distance", mutates_args=())
def rotate_distance_op(query: Tensor, table: Tensor, index: Tensor | None, backend: str) -> Tensor:
    """``(B, C)`` distances; ``query`` ``(B, 2d)`` and ``table`` ``(E, 2d)`` contiguous, of one float
    dtype (float32 or float64), ``index`` int64 ``(B, C)``, ``(C,)`` or ``None`` (all entities)."""
    return backends.forward(query, table, index, backend)


@rotate_distance_op.register_fake
def _(query: Tensor, table: Tensor, index: Tensor | None, backend: str) -> Tensor:
    cols = table.shape[0] if index is None else index.shape[-1]
    return query.new_empty(query.shape[0], cols)


@torch.library.custom_op("lightning_kge::rotate_distance_backward", mutates_args=())
def rotate_distance_backward_op(grad: Tensor, query: Tensor, table: Tensor, index: Tensor | None, backend: str,
                                need_query: bool, need_table: bool) -> tuple[Tensor, Tensor]:
    """``(∂L/∂query, ∂L/∂table)`` given ``grad = ∂L/∂D`` ``(B, C)``, recomputing the distances;
    an unneeded gradient (``need_* = False``) is an empty tensor."""
    return backends.backward(grad, query, table, index, backend, need_query, need_table)


@rotate_distance_backward_op.register_fake
def _(grad: Tensor, query: Tensor, table: Tensor, index: Tensor | None, backend: str, need_query: bool,
      need_table: bool) -> tuple[Tensor, Tensor]:
    grad_query = torch.empty_like(query) if need_query else query.new_empty(0)
    grad_table = torch.empty_like(table) if need_table else table.new_empty(0)
    return grad_query, grad_table


def _setup_context(ctx, inputs: tuple, output: Tensor) -> None:  # noqa: ANN001
    query, table, index, backend = inputs
    ctx.save_for_backward(query, table, index)
    ctx.backend = backend


def _backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:  # noqa: ANN001
    query, table, index = ctx.saved_tensors
    need_query, need_table = ctx.needs_input_grad[:2]
    grad_query, grad_table = rotate_distance_backward_op(grad, query, table, index, ctx.backend, need_query,
                                                         need_table)
    return (grad_query if need_query else None), (grad_table if need_table else None), None, None


rotate_distance_op.register_autograd(_backward, setup_context=_setup_context)


def _check(query: Tensor, table: Tensor, index: Tensor | None, backend: str) -> None:
    """Shapes, dtypes and devices: metadata only, so no host-device synchronisation."""
    if backend not in BACKENDS:
        raise ArgumentError("backend", backend, "one of " + ", ".join(map(repr, BACKENDS)))
    if query.dim() != 2 or table.dim() != 2 or query.shape[1] != table.shape[1] or query.shape[1] % 2:
        raise ValueError(f"rotate_distance: query (B, 2d) and table (E, 2d) must share an even width 2d, got "
                         f"shapes {tuple(query.shape)} and {tuple(table.shape)}")
    if not (query.is_floating_point() and table.is_floating_point()):
        raise ValueError(
            f"rotate_distance: query and table must be floating point, got {query.dtype} and {table.dtype}")
    if query.device != table.device:
        raise ValueError(f"rotate_distance: query and table must share a device, got {query.device} and {table.device}")
    if index is None:
        return
    if index.dim() not in (1, 2) or (index.dim() == 2 and index.shape[0] != query.shape[0]):
        raise ValueError(f"rotate_distance: index must be (B, C) or (C,) with B = {query.shape[0]}, got shape "
                         f"{tuple(index.shape)}")
    if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:
        raise ValueError(f"rotate_distance: index must hold integer ids, got {index.dtype}")
    if index.device != query.device:
        raise ValueError(f"rotate_distance: index must be on the device of query ({query.device}), got {index.device}")


def rotate_distance(query: Tensor, table: Tensor, index: Tensor | None = None, *, backend: str = "auto") -> Tensor:
    """RotatE distances between rotated heads and candidate entities, fused and memory-light.

    For query ``b`` and candidate ``c`` with entity ``e``, in the real-pair layout
    ``[re_1 … re_d, im_1 … im_d]``:

        D[b, c] = Σ_i sqrt((q_re[b, i] − t_re[e, i])² + (q_im[b, i] − t_im[e, i])²)

    i.e. ``Σ_i |q_i − t_i|`` of Sun et al. (2019); the RotatE score is ``γ − D``. The result
    equals ``stack([re, im]).norm(dim=0).sum(-1)`` of the gathered difference but never holds a
    ``(B, C, d)`` tensor: the op ``torch.ops.lightning_kge.rotate_distance`` saves its inputs and
    recomputes in backward. Gradients flow to ``query`` and to ``table`` (dense, zero for unused
    rows); where ``q_i = t_i`` the subgradient 0 is used, so gradients stay finite. Not
    differentiable twice.

    Half-precision inputs (float16, bfloat16) are computed in float32 and the result is cast
    back to the inputs' promoted dtype; autocast is off inside (the sums over ``d`` need
    float32), so under ``bf16-mixed`` the distances of float32 parameters stay float32.

    Ids are range-checked for CPU tensors. For CUDA tensors that check would make the host wait
    for the device, so it is not made: ids outside ``[0, E)`` give NaN distances and no gradient
    (both CUDA backends), so the loss shows them.

    Args:
        query: (B, 2d) rotated heads ``h ∘ r``, real parts then imaginary parts.
        table: (E, 2d) entity embeddings, same layout and device as ``query``.
        index: candidate entity ids in ``[0, E)``, on the device of ``query``: (B, C) per query,
            (C,) shared by all queries, or ``None`` for all ``E`` entities.
        backend: ``"auto"``, ``"reference"``, ``"native"`` or ``"triton"``
            (see :mod:`~lightning_kge.kernels.backends`). ``"auto"`` is Triton for CUDA tensors
            when triton imports, the native C++ kernels for CPU tensors when they build, else the
            reference. It changes speed and memory, not results beyond rounding.

    Returns:
        (B, C) distances, ``C = E`` when ``index`` is ``None``.

    Raises:
        ArgumentError: ``backend`` is not one of :data:`BACKENDS`.
        ValueError: on inconsistent shapes, dtypes or devices.
        IndexError: on candidate ids outside ``[0, E)`` (CPU tensors).
        BackendUnavailableError: the backend asked for cannot run here (says why and what to do).

    Example:
        >>> query = torch.tensor([[0.0, 0.0], [3.0, 4.0]])  # d = 1: 0 and 3 + 4i
        >>> table = torch.tensor([[0.0, 0.0], [3.0, 0.0]])  # 0 and 3
        >>> rotate_distance(query, table, backend="reference")
        tensor([[0., 3.],
                [5., 4.]])
        >>> rotate_distance(query, table, torch.tensor([[1], [0]]), backend="reference")
        tensor([[3.],
                [5.]])
    """
    _check(query, table, index, backend)
    dtype = torch.promote_types(query.dtype, table.dtype)
    compute = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    query, table = query.to(compute).contiguous(), table.to(compute).contiguous()
    if index is not None:
        index = index.to(torch.long).contiguous()
    return rotate_distance_op(query, table, index, backend).to(dtype)
