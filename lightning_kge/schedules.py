"""Learning-rate schedules that configs select with ``module.lr_scheduler`` (``_partial_: true``)."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class GeometricStepDecay(LRScheduler):
    """The step schedule of the RotatE authors' code (``codes/run.py``, its training loop).

    The rate drops by ``decay`` after update ``W``, then after update ``growth·W``, then
    ``growth²·W``, and so on, where the first threshold ``W = ⌊max_steps · warm_up_fraction⌋``
    (the code's ``warm_up_steps``, by default ``max_steps // 2``). Counting updates from 0, update
    ``k`` uses ``lr · decay^n(k)`` with ``n(k) = #{j ≥ 0 : W·growthʲ < k}``; with ``W = 0`` every
    update after the first decays, as the code's loop does.

    The rate is a closed form of the step count, so a resumed run continues the same schedule.
    One difference from the code: it builds a fresh Adam at each decay (its moment estimates
    restart); here only the rate changes. Step it once per optimizer step (the module does).

    Args:
        optimizer: the wrapped optimizer; its initial rates are the base rates.
        max_steps: the run's length in updates; interpolate it (``${trainer.max_steps}``).
        warm_up_fraction: ``W / max_steps`` (rounded down); the code's default is ``0.5``.
        decay: factor applied at each threshold (the code divides by 10).
        growth: factor between successive thresholds (the code multiplies by 3).
        last_epoch: index of the last update, for resuming (``-1``: start).

    Example:
        >>> import torch
        >>> optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        >>> schedule = GeometricStepDecay(optimizer, max_steps=10, warm_up_fraction=0.2)
        >>> rates = []
        >>> for _ in range(10):
        ...     rates.append(round(optimizer.param_groups[0]["lr"], 6))
        ...     optimizer.step()
        ...     schedule.step()
        >>> rates  # W = 2: drops after updates 2 and 6
        [1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01]
    """

    def __init__(
        self,
        optimizer: Optimizer,
        max_steps: int,
        warm_up_fraction: float = 0.5,
        decay: float = 0.1,
        growth: int = 3,
        last_epoch: int = -1,
    ) -> None:
        if max_steps < 0:
            raise ValueError(f"max_steps must be non-negative, got {max_steps}")
        if warm_up_fraction < 0:
            raise ValueError(f"warm_up_fraction must be non-negative, got {warm_up_fraction}")
        if growth < 2:
            raise ValueError(f"growth must be at least 2, got {growth}")
        self.max_steps = max_steps
        self.warm_up_fraction = warm_up_fraction
        self.decay = decay
        self.growth = growth
        self.warm_up_steps = int(max_steps * warm_up_fraction)
        super().__init__(optimizer, last_epoch)

    def decays_before(self, step: int) -> int:
        """``n(step)``: how many thresholds lie before update ``step`` (counted from 0)."""
        if self.warm_up_steps == 0:
            return max(step, 0)
        count, threshold = 0, self.warm_up_steps
        while threshold < step:
            count += 1
            threshold *= self.growth
        return count

    def get_lr(self) -> list[float]:
        factor = self.decay ** self.decays_before(self.last_epoch)
        return [base * factor for base in self.base_lrs]

    def _get_closed_form_lr(self) -> list[float]:
        return self.get_lr()
