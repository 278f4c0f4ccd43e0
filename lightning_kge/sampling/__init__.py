"""Negative sampling: ``sampler=`` options, the datamodule's ``Corruption`` and the module's ``Selection``."""

from lightning_kge.sampling.corruption import Corruption
from lightning_kge.sampling.options import BernoulliSampler, SelfAdversarialSampler, UniformSampler
from lightning_kge.sampling.selection import Selection, Weighting

__all__ = ["Corruption", "Selection", "Weighting", "UniformSampler", "SelfAdversarialSampler", "BernoulliSampler"]
