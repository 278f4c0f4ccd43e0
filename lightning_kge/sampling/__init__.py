"""Negative sampling: ``sampler=`` options, the datamodule's ``Corruption`` and the module's ``Selection``."""

from lightning_kge.sampling.cached import CacheSelection
from lightning_kge.sampling.corruption import Corruption
from lightning_kge.sampling.options import (
    BernoulliSampler,
    CachedSampler,
    Sampler,
    SelfAdversarialSampledSampler,
    SelfAdversarialSampler,
    UniformSampler,
)
from lightning_kge.sampling.sampled import SampledSelection, gumbel_top_k
from lightning_kge.sampling.selection import Selection, Weighting

__all__ = [
    "Corruption", "Selection", "Weighting", "SampledSelection", "CacheSelection", "gumbel_top_k",
    "Sampler", "UniformSampler", "SelfAdversarialSampler", "BernoulliSampler", "SelfAdversarialSampledSampler", "CachedSampler",
]
