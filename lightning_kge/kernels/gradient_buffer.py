"""Reuse the memory of a dense table gradient from one training step to the next.

A table gradient is as large as the table (164 MB for RotatE on WN18RR at dim 500). Allocated
afresh each step, its pages are mapped and zeroed by the kernel on first touch (tens of ms on a
CPU), and unmapped again when the optimizer's ``zero_grad`` drops it. :func:`gradient_buffer`
instead keeps the last buffer it handed out and hands out the same memory again once nothing else
holds it, i.e. once ``param.grad`` was set to ``None``. While the previous gradient is still held
(``zero_grad(set_to_none=False)``, gradient accumulation, a user's reference), a new buffer is
allocated, so a gradient in use is never overwritten.
"""

from __future__ import annotations

import torch
from torch import Tensor

_storage_use_count = getattr(torch._C, "_storage_Use_Count", None)  # absent: no reuse, still correct
_last: Tensor | None = None


def _unused(buffer: Tensor) -> bool:
    # References to the storage: ``buffer`` and the Python storage object made for this call.
    return _storage_use_count is not None and _storage_use_count(buffer.untyped_storage()._cdata) == 2


def gradient_buffer(table: Tensor) -> Tensor:
    """An uninitialised tensor shaped like ``table``, in memory that no other tensor uses.

    The result is a fresh view, so autograd can adopt it as ``table.grad`` without copying; the
    caller must write every element. One buffer is kept (the last one made), not one per table.
    """
    global _last
    buffer = _last
    if (buffer is None or buffer.shape != table.shape or buffer.dtype != table.dtype
            or buffer.device != table.device or not _unused(buffer)):
        buffer = torch.empty_like(table, memory_format=torch.contiguous_format)
        _last = buffer
    return buffer.view(buffer.shape)
