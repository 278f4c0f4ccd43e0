"""Tensor maths that several models share: complex products, inner products, differences.

Complex vectors of dimension ``d`` are stored as real rows of width ``2d``, real parts in the
first half and imaginary parts in the second (the layout of the RotatE paper's code).
"""

from __future__ import annotations

import torch
from torch import Tensor


def complex_halves(x: Tensor) -> tuple[Tensor, Tensor]:
    """Split ``(..., 2d)`` into its real and imaginary parts, each ``(..., d)``.

    Example:
        >>> complex_halves(torch.tensor([1.0, 2.0, 3.0, 4.0]))
        (tensor([1., 2.]), tensor([3., 4.]))
    """
    return x.chunk(2, dim=-1)


def complex_product(x: tuple[Tensor, Tensor], y: tuple[Tensor, Tensor], conjugate: bool = False) -> Tensor:
    r"""The element-wise product ``x ∘ y`` (or ``x ∘ \bar y``) in the real/imaginary halves layout.

    ``(a + ib)(c + id) = (ac − bd) + i(ad + bc)`` and ``(a + ib)(c − id) = (ac + bd) + i(bc − ad)``.

    Args:
        x: ``(re, im)`` of the left factor, each ``(..., d)``.
        y: ``(re, im)`` of the right factor, broadcastable with ``x``.
        conjugate: multiply by the conjugate ``\bar y`` instead of ``y``.

    Returns:
        ``(..., 2d)``: the real parts of the product, then its imaginary parts.

    Example:
        >>> one_plus_2i = (torch.tensor([1.0]), torch.tensor([2.0]))
        >>> three_plus_4i = (torch.tensor([3.0]), torch.tensor([4.0]))
        >>> complex_product(one_plus_2i, three_plus_4i)  # (1 + 2i)(3 + 4i) = −5 + 10i
        tensor([-5., 10.])
        >>> complex_product(one_plus_2i, three_plus_4i, conjugate=True)  # (1 + 2i)(3 − 4i) = 11 + 2i
        tensor([11.,  2.])
    """
    (re_x, im_x), (re_y, im_y) = x, y
    if conjugate:
        return torch.cat([re_y * re_x + im_y * im_x, re_y * im_x - im_y * re_x], dim=-1)
    return torch.cat([re_x * re_y - im_x * im_y, re_x * im_y + im_x * re_y], dim=-1)


def inner_scores(query: Tensor, candidates: Tensor) -> Tensor:
    """``<q_b, c>`` for ``query (B, w)`` and candidates ``(C, w)`` (one matmul) or ``(B, C, w)``.

    Example:
        >>> inner_scores(torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0], [0.0, 1.0]]))
        tensor([[11.,  2.]])
    """
    if candidates.dim() == 2:
        return query @ candidates.T
    return torch.bmm(candidates, query.unsqueeze(-1)).squeeze(-1)


def differences(query: Tensor, candidates: Tensor) -> Tensor:
    """``q_b − c`` for ``query (B, w)`` and candidates ``(C, w)`` or ``(B, C, w)``; ``(B, C, w)``.

    Example:
        >>> differences(torch.tensor([[1.0], [2.0]]), torch.tensor([[1.0], [5.0], [0.0]])).squeeze(-1)
        tensor([[ 0., -4.,  1.],
                [ 1., -3.,  2.]])
    """
    if candidates.dim() == 2:
        return query[:, None, :] - candidates[None, :, :]
    return query[:, None, :] - candidates
