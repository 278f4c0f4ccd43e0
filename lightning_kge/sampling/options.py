"""The ``sampler=`` options: each is one class that gives the datamodule a ``Corruption`` and the
module a ``Selection``.

| option | class | side | draw | weighting |
|---|---|---|---|---|
| ``uniform`` | :class:`UniformSampler` | alternate | uniform | uniform (``temperature: 0``) |
| ``self_adversarial`` | :class:`SelfAdversarialSampler` | alternate | uniform | self-adversarial (``temperature: 1``) |
| ``bernoulli`` | :class:`BernoulliSampler` | Bernoulli | uniform | uniform, or self-adversarial with ``temperature > 0`` |

Every option takes ``side`` and ``temperature``, so the axes compose by keys:
``sampler=bernoulli sampler.temperature=0.5`` is Bernoulli corruption with self-adversarial
weights, the same as ``sampler=self_adversarial sampler.side=bernoulli sampler.temperature=0.5``.
"""

from __future__ import annotations

from lightning_kge.sampling.corruption import Corruption, Side
from lightning_kge.sampling.selection import Selection, Weighting


class UniformSampler:
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
