"""Inner-product scoring shared by the bilinear models."""

from __future__ import annotations

import torch
from torch import Tensor


def inner_scores(query: Tensor, candidates: Tensor) -> Tensor:
    """``<q_b, c>`` for ``query (B, w)`` and candidates ``(C, w)`` (one matmul) or ``(B, C, w)``."""
    if candidates.dim() == 2:
        return query @ candidates.T
    return torch.bmm(candidates, query.unsqueeze(-1)).squeeze(-1)
