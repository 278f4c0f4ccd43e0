"""The ``sampler=`` options: each is one class that gives the datamodule a ``Corruption`` and the
module a ``Selection``.

Three axes compose by the keys of the options: the **side** (``side``: ``alternate`` head and tail
batches, or ``bernoulli`` per relation), the **draw** (uniform ``k``; ``k`` of a pool of
``pool_size`` sampled from ``softmax(α f)``; or ``k`` from a per-query cache) and the
**weighting** (``temperature``: 0 for ``1/k``, ``α > 0`` for ``softmax(α f)``).

| option | class | side | draw | weighting |
|---|---|---|---|---|
| ``uniform`` | :class:`UniformSampler` | alternate | uniform | uniform (``temperature: 0``) |
| ``self_adversarial`` | :class:`SelfAdversarialSampler` | alternate | uniform | self-adversarial (``temperature: 1``) |
| ``bernoulli`` | :class:`BernoulliSampler` | Bernoulli | uniform | uniform, or self-adversarial with ``temperature > 0`` |
| ``self_adversarial_sampled`` | :class:`SelfAdversarialSampledSampler` | alternate | ``k`` of ``pool_size`` from ``softmax(α f)`` | uniform (the draw follows ``p``) |
| ``cached`` | :class:`CachedSampler` | alternate | uniform from a per-query cache | uniform, or self-adversarial with ``temperature > 0`` |

Every option takes ``side``, ``temperature``, ``filtered`` and ``shared``, so the axes compose by
keys: ``sampler=bernoulli sampler.temperature=0.5`` is Bernoulli corruption with self-adversarial
weights, the same as ``sampler=self_adversarial sampler.side=bernoulli sampler.temperature=0.5``.
Refused, with the key named: ``pool_size < num_negatives`` (a draw without replacement),
``self_adversarial_sampled`` with ``temperature: 0`` (that is ``uniform``), and ``cached`` with
``shared: true`` (a cache is per query, shared candidates are per batch).
"""

from __future__ import annotations

import abc

from lightning_kge.errors import require
from lightning_kge.sampling.cached import CacheSelection
from lightning_kge.sampling.corruption import Corruption, Side
from lightning_kge.sampling.sampled import SampledSelection
from lightning_kge.sampling.selection import Selection, Weighting


class Sampler(abc.ABC):
    """A ``sampler=`` option: the datamodule's :class:`Corruption` and the module's :class:`Selection`, made together.

    The typed contract between the two halves of negative sampling: ``KGECLI`` takes one sampler
    and hands :meth:`corruption` to the datamodule and :meth:`selection` to the module, as
    ``train.build`` does for ``sampler=``.
    """

    @abc.abstractmethod
    def corruption(self) -> Corruption:
        """The datamodule's part: which side to replace and the candidate entities."""

    @abc.abstractmethod
    def selection(self) -> Selection:
        """The module's part: choosing among the candidates and weighing them."""


class UniformSampler(Sampler):
    """Uniform negatives with uniform weights ``w_i = 1/k`` (with ``temperature`` > 0: self-adversarial).

    Args:
        num_negatives: ``k`` negatives per positive.
        side: ``alternate`` (head and tail batches alternate, the paper's code) or ``bernoulli``
            (per positive, by its relation's ``tph / (tph + hpt)``).
        temperature: ``α`` of the self-adversarial weights ``softmax(α f)``; 0 gives ``1/k``.
        filtered: draw only negatives that form no known training triple.
        shared: one set of ``k`` negatives for the whole batch (a different estimator).
    """

    def __init__(self, num_negatives: int = 128, side: Side = "alternate", temperature: float = 0.0,
                 filtered: bool = True, shared: bool = False) -> None:
        self.num_negatives = num_negatives
        self.side = side
        self.temperature = temperature
        self.filtered = filtered
        self.shared = shared
        self.corruption(), self.selection()  # validates the arguments (ArgumentError names the key)

    def corruption(self) -> Corruption:
        """The datamodule's part: side and candidates."""
        return Corruption(self.num_negatives, self.side, self.filtered, self.shared)

    def selection(self) -> Selection:
        """The module's part: the weights of the negatives."""
        return Weighting(self.temperature)


class SelfAdversarialSampler(UniformSampler):
    """Self-adversarial negative sampling (Sun et al., ICLR 2019): uniform draws weighed by
    ``w_i = softmax_i(α · f(h'_i, r, t'_i))``, computed without gradient.

    Args:
        num_negatives: ``k``.
        side: ``alternate`` or ``bernoulli``.
        temperature: ``α``.
        filtered: draw only negatives that form no known training triple.
        shared: one set of negatives for the whole batch.
    """

    def __init__(self, num_negatives: int = 128, side: Side = "alternate", temperature: float = 1.0,
                 filtered: bool = True, shared: bool = False) -> None:
        super().__init__(num_negatives, side, temperature, filtered, shared)


class BernoulliSampler(UniformSampler):
    """Bernoulli corruption (Wang et al., AAAI 2014, TransH): the head of a positive is replaced
    with probability ``tph / (tph + hpt)`` of its relation, else the tail; uniform weights unless
    ``temperature`` > 0.

    Args:
        num_negatives: ``k``.
        side: ``bernoulli`` (``alternate`` turns this into ``uniform``).
        temperature: ``α`` of self-adversarial weights; 0 gives ``1/k``.
        filtered: draw only negatives that form no known training triple.
        shared: one set of negatives for the whole batch.
    """

    def __init__(self, num_negatives: int = 128, side: Side = "bernoulli", temperature: float = 0.0,
                 filtered: bool = True, shared: bool = False) -> None:
        super().__init__(num_negatives, side, temperature, filtered, shared)


class SelfAdversarialSampledSampler(Sampler):
    """The self-adversarial distribution sampled for real: a pool of ``pool_size`` uniform
    candidates per positive is scored without gradient, ``num_negatives`` of them are drawn
    without replacement with probabilities ``softmax(α f)`` (Gumbel top-k), and weighed uniformly.

    The RotatE paper (Sun et al., ICLR 2019) names this sampling its ideal and approximates it by
    weighing uniform draws (``self_adversarial``). The extra cost is one forward pass over the pool.

    Args:
        num_negatives: ``k`` negatives per positive, at most ``pool_size``.
        pool_size: ``m`` uniform candidates per positive to draw from.
        side: ``alternate`` or ``bernoulli``.
        temperature: ``α > 0`` of the draw's ``softmax(α f)``.
        filtered: candidates form no known training triple.
        shared: one pool for the whole batch (each positive still draws its own ``k`` from it).
    """

    def __init__(self, num_negatives: int = 128, pool_size: int = 256, side: Side = "alternate",
                 temperature: float = 1.0, filtered: bool = True, shared: bool = False) -> None:
        self.num_negatives = num_negatives
        self.pool_size = pool_size
        self.side = side
        self.temperature = temperature
        self.filtered = filtered
        self.shared = shared
        self.selection()
        require(isinstance(pool_size, int) and pool_size >= num_negatives, "pool_size", pool_size,
                f"an integer ≥ num_negatives ({num_negatives}): the negatives are drawn from the pool without replacement")
        self.corruption()

    def corruption(self) -> Corruption:
        """The datamodule's part: a pool of ``pool_size`` uniform candidates."""
        return Corruption(self.pool_size, self.side, self.filtered, self.shared)

    def selection(self) -> Selection:
        """The module's part: the draw from ``softmax(α f)`` over the pool, uniform weights."""
        return SampledSelection(self.num_negatives, self.temperature)


class CachedSampler(Sampler):
    """Hard negatives from a per-query cache (NSCaching: Zhang et al., ICDE 2019).

    Each training query ``(h, r, ?)`` and ``(?, r, t)`` keeps the ``cache_size`` highest-scoring
    entities seen among its uniform candidates (``candidates`` fresh ones per positive, merged
    every ``refresh_every`` steps); the ``num_negatives`` negatives are drawn uniformly from the
    cache. The cache is part of the module's state, so checkpoints carry it and a resumed run continues it.

    Args:
        num_negatives: ``k`` negatives per positive drawn from its cache.
        cache_size: ``N`` entities kept per query.
        candidates: fresh uniform candidates per positive merged at a refresh.
        refresh_every: refresh the caches of a batch's queries every this many steps.
        side: ``alternate`` or ``bernoulli``.
        temperature: ``α`` of self-adversarial weights; 0 gives ``1/k``.
        filtered: candidates form no known training triple.
        shared: must stay ``false``: a cache is per query.
    """

    def __init__(self, num_negatives: int = 128, cache_size: int = 50, candidates: int = 50, refresh_every: int = 1,
                 side: Side = "alternate", temperature: float = 0.0, filtered: bool = True,
                 shared: bool = False) -> None:
        self.num_negatives = num_negatives
        self.cache_size = cache_size
        self.candidates = candidates
        self.refresh_every = refresh_every
        self.side = side
        self.temperature = temperature
        self.filtered = filtered
        self.shared = shared
        require(not shared, "shared", shared,
                "false: a cache holds negatives per query, shared candidates serve a whole batch")
        require(isinstance(candidates, int) and candidates >= 1, "candidates", candidates, "an integer ≥ 1")
        self.corruption(), self.selection()

    def corruption(self) -> Corruption:
        """The datamodule's part: fresh uniform candidates and each row's query id."""
        return Corruption(self.candidates, self.side, self.filtered, shared=False, queries=True)

    def selection(self) -> Selection:
        """The module's part: the cache, its refresh and the draws from it."""
        return CacheSelection(self.num_negatives, self.cache_size, self.refresh_every, self.temperature)
