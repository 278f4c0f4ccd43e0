"""The one cache-directory setting: downloaded datasets and built kernels live under it."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "LIGHTNING_KGE_CACHE"
"""Environment variable naming the cache root (default: the user cache dir for lightning_kge)."""


def cache_dir(*parts: str) -> Path:
    """``$LIGHTNING_KGE_CACHE/<parts…>``, or the same under the user cache directory.

    Datasets go to ``cache_dir("datasets")``, built kernels to ``cache_dir("kernels")``. The
    folder is not created here.

    Example:
        >>> os.environ[CACHE_ENV] = "/tmp/kge-cache"
        >>> cache_dir("datasets", "wn18rr").as_posix()
        '/tmp/kge-cache/datasets/wn18rr'
        >>> del os.environ[CACHE_ENV]
    """
    root = os.environ.get(CACHE_ENV)
    if root:
        base = Path(root).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "lightning_kge"
    return base.joinpath(*parts)
