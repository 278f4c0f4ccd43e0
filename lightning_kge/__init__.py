"""lightning_kge: knowledge-graph embedding (RotatE with self-adversarial negative sampling) for PyTorch Lightning.

The public API, importable from the top level (loaded on first use, so ``import lightning_kge``
stays cheap)::

    from lightning_kge import KGEModule, KGEDataModule, KGECLI, RotatE, SelfAdversarialSampler
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("lightning-kge")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_EXPORTS = {
    "KGEModule": "lightning_kge.module",
    "KGEDataModule": "lightning_kge.datamodule",
    "KGECLI": "lightning_kge.cli",
    "GraphInfo": "lightning_kge.data.info",
    "KGEModel": "lightning_kge.models",
    "RotatE": "lightning_kge.models",
    "TransE": "lightning_kge.models",
    "DistMult": "lightning_kge.models",
    "ComplEx": "lightning_kge.models",
    "pRotatE": "lightning_kge.models",
    "Sampler": "lightning_kge.sampling",
    "UniformSampler": "lightning_kge.sampling",
    "SelfAdversarialSampler": "lightning_kge.sampling",
    "BernoulliSampler": "lightning_kge.sampling",
    "SelfAdversarialSampledSampler": "lightning_kge.sampling",
    "CachedSampler": "lightning_kge.sampling",
    "Corruption": "lightning_kge.sampling",
    "Selection": "lightning_kge.sampling",
    "Weighting": "lightning_kge.sampling",
    "RankingMetrics": "lightning_kge.metrics.ranking",
    "Ranks": "lightning_kge.metrics.ranking",
    "RankingSummary": "lightning_kge.metrics.ranking",
    "UserError": "lightning_kge.errors",
}
"""Public name -> the module that defines it."""

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lightning_kge' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
