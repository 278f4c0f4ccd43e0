"""Hyperparameter search with current Optuna as a Hydra sweeper: ``hydra/sweeper=lightning_kge_optuna``.

Hydra's own Optuna sweeper plugin pins ``optuna<3``; this one is a small equivalent for current
Optuna. Each trial is one job of the multirun, launched by Hydra's launcher with the trial's
overrides; the job's return value (``lightning_kge.train.main`` returns the metric named by
``optimized_metric``) is told to the study. The search space is written in Hydra's sweep
syntax under ``hydra.sweeper.params``:

- ``tag(log, interval(0.0003, 0.03))``: a float, log-uniform (``interval(a, b)``: uniform;
  integer bounds give an integer);
- ``choice(2.0, 6.0, 12.0)`` or ``range(1, 4)``: one of the values;
- a plain value: fixed for every trial.

The best trial goes to ``<sweep dir>/optimization_results.yaml`` and to the log. This module is
imported by every Hydra application (plugin discovery), so it imports neither Optuna nor torch
at the top, nor ``from __future__ import annotations``: Hydra's plugin scan runs the module
without entering it in ``sys.modules``, where a dataclass with string annotations fails.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Transformer
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

RESULTS = "optimization_results.yaml"


@dataclass
class OptunaSweeperConf:
    """``hydra.sweeper`` settings (the arguments of :class:`OptunaSweeper`)."""

    _target_: str = "hydra_plugins.lightning_kge_optuna.optuna_sweeper.OptunaSweeper"
    _recursive_: bool = False  # the sampler is built in sweep(), after checking that Optuna is installed
    direction: str = "maximize"
    n_trials: int = 20
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": 0})
    study_name: Optional[str] = None
    storage: Optional[str] = None
    params: Dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="lightning_kge_optuna", node=OptunaSweeperConf,
                             provider="lightning_kge")


class OptunaSweeper(Sweeper):
    """Ask Optuna for a trial, run it as a Hydra job, tell Optuna its return value; ``n_trials`` times.

    Args:
        direction: ``maximize`` or ``minimize`` the jobs' return value.
        n_trials: the number of trials (jobs).
        sampler: an Optuna sampler spec (``_target_``), e.g. ``optuna.samplers.TPESampler``.
        study_name: the study's name in ``storage`` (to resume or share a study), or ``None``.
        storage: an Optuna storage URL (e.g. ``sqlite:///search.db``), or ``None`` (in memory).
        params: parameter name -> search space in Hydra's sweep syntax (module docstring).
    """

    def __init__(self, direction: str, n_trials: int, sampler: Any, study_name: Any, storage: Any,
                 params: Any) -> None:
        self.direction, self.n_trials, self.sampler = direction, n_trials, sampler
        self.study_name, self.storage = study_name, storage
        self.params = dict(params or {})
        self.config: Optional[DictConfig] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: List[str]) -> Any:
        from lightning_kge.errors import UserError
        from lightning_kge.extras import require_package

        optuna = require_package(("optuna",), "search", "the Optuna sweeper", "config key hydra.sweeper")
        if self.direction not in ("maximize", "minimize"):
            raise UserError(f"direction={self.direction!r} is not allowed", "config key hydra.sweeper.direction",
                            "set it to maximize or minimize")
        space, fixed = search_space([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        sampler = instantiate(OmegaConf.create(OmegaConf.to_container(self.sampler))) if self.sampler else None
        study = optuna.create_study(direction=self.direction, sampler=sampler, study_name=self.study_name,
                                    storage=self.storage, load_if_exists=True)
        for number in range(self.n_trials):
            trial = study.ask()
            chosen = [f"{name}={Transformer.str(suggest(trial, name, value))}" for name, value in space.items()]
            [result] = self.launcher.launch([tuple(chosen + fixed)], initial_job_idx=number)
            if result.status == JobStatus.COMPLETED:
                study.tell(trial, float(result.return_value))
            else:
                log.warning("trial %d failed: %r", number, result._return_value)
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
        completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not completed:
            raise RuntimeError(f"all {self.n_trials} trials failed: see the log of each job")
        best = {"best_value": float(study.best_value), "best_params": dict(study.best_params),
                "best_trial": study.best_trial.number, "direction": self.direction, "trials": len(study.trials)}
        assert self.config is not None
        folder = Path(self.config.hydra.sweep.dir)
        folder.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(best), folder / RESULTS)
        log.info("best value %s with %s (written to %s)", best["best_value"], best["best_params"], folder / RESULTS)
        return best


def register() -> None:
    """Register the sweeper with Hydra by hand (``lightning_kge.train`` does, at import).

    Hydra finds plugins by listing the ``hydra_plugins`` namespace package, which works after a
    normal install but not after an editable one (``pip install -e``: setuptools' import hook
    cannot be listed); importing this module and registering the class works with both.
    """
    Plugins.instance().register(OptunaSweeper)


def search_space(overrides: List[str]) -> Tuple[Dict[str, Any], List[str]]:
    """Split overrides into a search space (name -> interval or list of choices) and fixed ones.

    A later override of the same key replaces an earlier one: a value given on the command line
    takes a parameter out of the configured search space.

    Example:
        >>> space, fixed = search_space(["a=tag(log, interval(0.001, 0.1))", "b=choice(1, 2)", "c=3", "b=5"])
        >>> space["a"].tags, list(space), fixed
        ({'log'}, ['a'], ['c=3', 'b=5'])
    """
    space: Dict[str, Any] = {}
    fixed: Dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(overrides):
        name = override.get_key_element()
        space.pop(name, None)
        fixed.pop(name, None)
        if not override.is_sweep_override():
            fixed[name] = f"{name}={override.get_value_element_as_str()}"
        elif override.is_interval_sweep():
            space[name] = override.value()
        else:  # choice(...) or range(...): one of its values
            space[name] = list(override.sweep_iterator(transformer=Transformer.encode))
    return space, list(fixed.values())


def suggest(trial: Any, name: str, value: Union[IntervalSweep, List[Any]]) -> Any:
    """The trial's value of ``name``: from an interval (log-uniform with the ``log`` tag) or choices."""
    if isinstance(value, list):
        return trial.suggest_categorical(name, value)
    log_scale = "log" in value.tags
    if isinstance(value.start, int) and isinstance(value.end, int):
        return trial.suggest_int(name, value.start, value.end, log=log_scale)
    return trial.suggest_float(name, float(value.start), float(value.end), log=log_scale)


__all__ = ["OptunaSweeper", "OptunaSweeperConf", "register", "search_space", "suggest"]
