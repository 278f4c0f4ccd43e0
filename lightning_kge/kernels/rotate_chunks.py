"""Chunk kernels of the RotatE distance on CPU (and any torch device): eager and compiled.

Rows are real pairs ``[re_1 … re_d, im_1 … im_d]``; the distance of rows ``x`` and ``y`` is
``Σ_i sqrt((x_re,i − y_re,i)² + (x_im,i − y_im,i)²)``. Each kernel reads the rows of ``y`` by
id, so no gathered copy of the candidates is made:

* ``dist(x, y, ids)``: ``(n, k)`` distances of ``x[a]`` to ``y[ids[a, j]]`` (per-row ids);
* ``grad(x, y, ids, g)``: ``(n, 2d)`` rows ``Σ_j g[a, j] · ∂dist(x[a], y[ids[a, j]]) / ∂x[a]``,
  with the subgradient 0 where a complex difference is 0;
* ``block(x, y, ids)``: ``(n, k)`` distances of every ``x[a]`` to every ``y[ids[j]]`` (ids
  shared by all rows, the dense case of evaluation and shared negatives).

The eager versions hold ``(n, k, 2d)`` temporaries, so callers keep chunks small. The compiled
versions (``torch.compile``, inductor's C++ backend) are written so that the fused loops hold no
such temporary: ``dist`` and ``grad`` treat candidates in groups of :data:`GROUP` (one reduction
per member, so four table rows stream at once), and ``block`` computes tiles of
``TILE_ROWS × TILE_COLS`` pairs, whose rows stay in cache while they are reused.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn.functional import pad

GROUP = 4
"""Candidates handled together by the compiled kernels (below inductor's unroll threshold of 8)."""

TILE_ROWS = 32
"""Query rows of a tile of the compiled ``block`` kernel (fewer when there are fewer rows)."""

TILE_COLS = 32
"""Candidate rows of a tile of the compiled ``block`` kernel (a multiple of :data:`GROUP`)."""


# --- eager --------------------------------------------------------------------------------------


def eager_dist(x: Tensor, y: Tensor, ids: Tensor) -> Tensor:
    h = x.shape[1] // 2
    diff = x[:, None, :] - y[ids]
    diff.mul_(diff)
    return diff[..., :h].add_(diff[..., h:]).sqrt_().sum(-1)


def eager_grad(x: Tensor, y: Tensor, ids: Tensor, g: Tensor) -> Tensor:
    n, k = ids.shape
    h = x.shape[1] // 2
    diff = (x[:, None, :] - y[ids]).view(n, k, 2, h)
    modulus = diff.square().sum(2).sqrt_()
    factor = g[..., None] / modulus
    factor.masked_fill_(modulus == 0, 0.0)
    return diff.mul_(factor[:, :, None, :]).sum(1).view(n, 2 * h)


def eager_block(x: Tensor, y: Tensor, ids: Tensor) -> Tensor:
    return eager_dist(x, y, ids.expand(x.shape[0], -1))


# --- written for inductor -------------------------------------------------------------------------


def grouped_dist(x: Tensor, y: Tensor, ids: Tensor) -> Tensor:
    # ``k`` must be a multiple of GROUP.
    n, k = ids.shape
    h = x.shape[1] // 2
    groups = ids.reshape(n, k // GROUP, GROUP)
    columns = []
    for j in range(GROUP):
        diff = x[:, None, :] - y[groups[:, :, j]]
        re, im = diff[..., :h], diff[..., h:]
        columns.append(torch.sqrt(re * re + im * im).sum(-1))
    return torch.stack(columns, -1).reshape(n, k)


def grouped_grad(x: Tensor, y: Tensor, ids: Tensor, g: Tensor) -> Tensor:
    # The group axis is summed inside the fused loop; only (n, k / GROUP, 2d) partial sums
    # are written. ``k`` must be a multiple of GROUP.
    n, k = ids.shape
    h = x.shape[1] // 2
    diff = x[:, None, None, :] - y[ids].reshape(n, k // GROUP, GROUP, 2 * h)
    re, im = diff[..., :h], diff[..., h:]
    modulus = torch.sqrt(re * re + im * im)
    factor = torch.where(modulus > 0, g.reshape(n, k // GROUP, GROUP, 1) / modulus, 0.0)
    return torch.cat([(factor * re).sum(2), (factor * im).sum(2)], -1).sum(1)


def tiled_block(x: Tensor, y: Tensor, ids: Tensor) -> Tensor:
    # x (nb, tn, 2d) row tiles, ids (kb, tk) candidate tiles -> (nb, kb, tn, tk); ``tk`` must be
    # a multiple of GROUP. Each (row tile, candidate tile) pair is one block of the loop nest.
    nb, tn, width = x.shape
    kb, tk = ids.shape
    h = width // 2
    groups = ids.reshape(kb, tk // GROUP, GROUP)
    columns = []
    for j in range(GROUP):
        diff = x[:, None, :, None, :] - y[groups[:, :, j]][None, :, None, :, :]
        re, im = diff[..., :h], diff[..., h:]
        columns.append(torch.sqrt(re * re + im * im).sum(-1))
    return torch.stack(columns, -1).reshape(nb, kb, tn, tk)


class CompiledKernel:
    """``torch.compile`` of a kernel, compiled lazily, with a permanent eager fallback.

    Args:
        kernel: the function to compile.
        fallback: the eager function with the same arguments and result, used after a
            compiler failure (with a warning).
    """

    def __init__(self, kernel: Callable[..., Tensor], fallback: Callable[..., Tensor]) -> None:
        self.kernel, self.fallback = kernel, fallback
        self.compiled: Callable[..., Tensor] | None = None
        self.failed = False

    def __call__(self, *args: Tensor) -> Tensor:
        if not self.failed:
            try:
                if self.compiled is None:
                    # Inductor would store the moduli of a chunk before the candidate sum
                    # because they are read several times; recomputing them is cheaper.
                    self.compiled = torch.compile(
                        self.kernel, dynamic=True, fullgraph=True, options={"realize_reads_threshold": 64}
                    )
                result = self.compiled(*args)
                WARM.add(args[0].dtype)
                return result
            except Exception as error:  # noqa: BLE001 - any compiler failure means: go eager
                self.failed = True
                warnings.warn(
                    f"rotate_distance: torch.compile failed ({type(error).__name__}: "
                    f"{str(error)[:200]}); using the eager chunked path from now on.",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return self.fallback(*args)


def _fallback_block(x: Tensor, y: Tensor, ids: Tensor) -> Tensor:
    nb, tn, width = x.shape
    kb, tk = ids.shape
    flat = eager_block(x.reshape(nb * tn, width), y, ids.reshape(-1))
    return flat.view(nb, tn, kb, tk).permute(0, 2, 1, 3)


COMPILED_DIST = CompiledKernel(grouped_dist, eager_dist)
COMPILED_GRAD = CompiledKernel(grouped_grad, eager_grad)
COMPILED_BLOCK = CompiledKernel(tiled_block, _fallback_block)
WARM: set[torch.dtype] = set()
"""Dtypes for which a compiled kernel has run in this process (compilation already paid)."""


def compile_failed() -> bool:
    return COMPILED_DIST.failed or COMPILED_GRAD.failed or COMPILED_BLOCK.failed


class Kernels:
    """The chunk kernels of one call (compiled or eager), padding inputs to their shapes.

    Compiled kernels need column counts that are multiples of :data:`GROUP` and at least two
    rows (a size-1 dimension makes ``torch.compile`` specialise and recompile); padded pairs
    use id 0 and weight 0 and are cut from the results.
    """

    def __init__(self, compiled: bool) -> None:
        self.compiled = compiled

    def distances(self, x: Tensor, y: Tensor, ids: Tensor) -> Tensor:
        """(n, k) distances ``|x[a] − y[ids[a, j]]|``."""
        if not self.compiled:
            return eager_dist(x, y, ids)
        n, k = ids.shape
        x, ids, _ = self._pad(x, ids)
        return COMPILED_DIST(x, y, ids)[:n, :k]

    def gradient(self, x: Tensor, y: Tensor, ids: Tensor, g: Tensor) -> Tensor:
        """(n, 2d) rows ``Σ_j g[a, j] · ∂|x[a] − y[ids[a, j]]| / ∂x[a]``."""
        if not self.compiled:
            return eager_grad(x, y, ids, g)
        n = x.shape[0]
        x, ids, g = self._pad(x, ids, g.contiguous())
        return COMPILED_GRAD(x, y, ids, g)[:n]

    def block(self, x: Tensor, y: Tensor, ids: Tensor) -> Tensor:
        """(n, k) distances ``|x[a] − y[ids[j]]|`` for ids ``(k,)`` shared by all rows."""
        if not self.compiled:
            return eager_block(x, y, ids)
        (n, width), k = x.shape, ids.shape[0]
        # At least two tiles of at least two rows, and two candidate tiles: no size-1 dims.
        tn = min(TILE_ROWS, (max(n, 4) + 1) // 2)
        x = pad(x, (0, 0, 0, max(2 * tn, n + -n % tn) - n))
        ids = pad(ids, (0, max(2 * TILE_COLS, k + -k % TILE_COLS) - k))
        tiles = COMPILED_BLOCK(x.view(-1, tn, width), y, ids.view(-1, TILE_COLS))
        return tiles.permute(0, 2, 1, 3).reshape(x.shape[0], ids.shape[0])[:n, :k]

    @staticmethod
    def _pad(x: Tensor, ids: Tensor, g: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        extra_rows = max(0, 2 - x.shape[0])
        extra_cols = -ids.shape[1] % GROUP
        if extra_rows or extra_cols:
            x = pad(x, (0, 0, 0, extra_rows))
            ids = pad(ids, (0, extra_cols, 0, extra_rows))
            if g is not None:
                g = pad(g, (0, extra_cols, 0, extra_rows))
        return x, ids.contiguous(), g
