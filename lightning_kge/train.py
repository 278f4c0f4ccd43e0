"""Hydra entry point: ``python -m lightning_kge.train model=rotate sampler=self_adversarial``.

Only the entry points touch Hydra: :func:`train` builds the plain objects from a composed config
(:func:`build`, :func:`build_trainer`) and runs Lightning; tests call it directly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig

from hydra_plugins.lightning_kge_optuna import optuna_sweeper
from lightning_kge import atomic, run_dir
from lightning_kge.checkpoints import check_resumable, read_checkpoint, require_file
from lightning_kge.configs import build_trainer, checked_optimizer, config_dir, instantiate_node, test
from lightning_kge.datamodule import KGEDataModule
from lightning_kge.errors import WRITE_ERRNOS, ArgumentError, UserError, reports_user_errors, write_failed
from lightning_kge.module import KGEModule

optuna_sweeper.register()  # hydra/sweeper=lightning_kge_optuna, also after an editable install

TEST_WEIGHTS = ("last", "best")
"""Values of ``test_weights``: the final weights (``last.ckpt``, the paper's protocol) or ``best.ckpt``."""


def build(cfg: DictConfig) -> tuple[KGEModule, KGEDataModule]:
    """Instantiate the datamodule and the module from a composed config.

    The ``sampler`` option gives the datamodule its ``Corruption`` (drawing negatives) and the
    module its ``Selection`` (choosing and weighing them); the datamodule's ``GraphInfo`` goes
    to the module, which keeps it in its checkpoints.
    """
    sampler = instantiate_node(cfg.sampler, "sampler")
    datamodule = instantiate_node(cfg.data, "data", corruption=sampler.corruption())
    datamodule.prepare_data()
    datamodule.setup()
    model = instantiate_node(
        cfg.model, "model", num_entities=datamodule.num_entities, num_relations=datamodule.num_relations
    )
    module = instantiate_node(
        cfg.module,
        "module",
        model=model,
        selection=sampler.selection(),
        graph=datamodule.info,
        optimizer=checked_optimizer(instantiate_node(cfg.optimizer, "optimizer"), "optimizer"),
    )
    return module, datamodule


def train(cfg: DictConfig) -> dict[str, float]:
    """Train, then test; returns the metrics of the last validation (``val/…``) and the test metrics.

    With ``cfg.ckpt_path`` the run continues from that checkpoint (global step, optimizer and
    schedule, the datamodule's position in its batch stream, the checkpoint callback's best
    score), in the checkpoint's run directory, appending to its CSV log. Before anything is
    trained, the output directory is refused if it holds another run or cannot be written to.
    The final test uses the final weights (``test_weights=last``, also in ``checkpoints/last.ckpt``)
    or ``checkpoints/best.ckpt`` (``test_weights=best``); ``test_weights.json`` says which. The
    trainer's :class:`~lightning_kge.callbacks.report.TestReport` callback prints the table and
    writes ``metrics.json`` to ``cfg.output_dir`` on global rank zero.
    """
    L.seed_everything(cfg.seed, workers=True)
    weights = cfg.get("test_weights", "last")
    if weights not in TEST_WEIGHTS:
        raise ArgumentError("test_weights", weights, " or ".join(TEST_WEIGHTS), key="test_weights")
    resume = resume_path(cfg)
    trainer = build_trainer(cfg)
    refuse_relaunch_in_multirun(trainer)
    callback = run_dir.checkpoint_callback(trainer)
    if weights == "best" and (callback is None or not callback.monitor):
        raise UserError("test_weights=best needs best.ckpt, which the checkpoint callback writes when it has a monitor",
                        "config key test_weights",
                        "set test_weights=last, or keep callbacks.checkpoint with its monitor")
    with run_dir.claimed(trainer, Path(cfg.output_dir), resume):
        module, datamodule = build(cfg)
        fit(trainer, module, datamodule, resume, cfg.seed)
        validated = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        return {**validated, **final_test(trainer, module, datamodule, weights, Path(cfg.output_dir))}


def objective(metrics: dict[str, float], name: str | None) -> Any:
    """What :func:`main` returns: the metric ``name`` (a sweeper optimises it), or all metrics.

    Example:
        >>> objective({"val/mrr": 0.5, "test/mrr": 0.4}, "val/mrr")
        0.5
    """
    if name is None:
        return metrics
    if name not in metrics:
        raise UserError(
            f"the run logged no {name} (it logged {', '.join(sorted(metrics)) or 'nothing'})",
            "config key optimized_metric",
            "name a logged metric, e.g. val/mrr, and validate at the end of training (trainer.val_check_interval)",
        )
    return metrics[name]


def fit(trainer: L.Trainer, module: KGEModule, datamodule: KGEDataModule, resume: Path | None, seed: int) -> None:
    """``trainer.fit``, continuing from the checkpoint ``resume`` (checked first) if given.

    A write that fails during training with an error only writes give (a full disk, ...)
    becomes one :class:`~lightning_kge.errors.UserError` naming the file, or the run folder
    where Lightning's error names none.
    """
    if resume is not None:
        checkpoint = read_checkpoint(resume, key="ckpt_path", mmap=True)  # the settings only, not the tensors
        check_resumable(checkpoint, module, datamodule, str(resume), seed=seed)
        if trainer.is_global_zero:
            run_dir.continue_csv_logs(trainer, int(checkpoint.get("global_step", 0)))
        del checkpoint
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=None if resume is None else str(resume), weights_only=True)
    except OSError as error:
        # A write that failed inside Lightning (a logger's file on a full disk): one line. Our own
        # writes (checkpoints, reports) already raise UserErrors naming their file.
        if error.errno not in WRITE_ERRNOS:
            raise
        raise write_failed(error, error.filename or trainer.default_root_dir) from None


def final_test(trainer: L.Trainer, module: KGEModule, datamodule: KGEDataModule, weights: str,
               output_dir: Path) -> dict[str, float]:
    """Test the final weights (``weights="last"``) or ``best.ckpt``; write which to ``test_weights.json``.

    ``test_weights.json`` is written whole or not at all (:mod:`lightning_kge.atomic`).
    """
    callback = run_dir.checkpoint_callback(trainer)
    if weights == "best":
        assert callback is not None
        if not callback.best_model_path:
            raise UserError(
                f"test_weights=best, but no validation improved {callback.monitor}, so there is no best.ckpt",
                "config key test_weights",
                "validate during training (trainer.check_val_every_n_epoch, trainer.val_check_interval) or set "
                "test_weights=last; checkpoints/last.ckpt holds the final weights",
            )
        metrics = test(trainer, module, datamodule, ckpt_path=callback.best_model_path)
        tested: str | None = callback.best_model_path
    else:
        metrics = test(trainer, module, datamodule)
        last = None if callback is None else callback.dirpath / "last.ckpt"
        tested = str(last) if last is not None and last.exists() else None  # a file, or a sharded folder
    if trainer.is_global_zero:
        record = {"test_weights": weights, "checkpoint": tested}
        atomic.write_text(output_dir / "test_weights.json", json.dumps(record, indent=2) + "\n")
    return metrics


def resume_path(cfg: DictConfig) -> Path | None:
    """The checkpoint to resume from (``cfg.ckpt_path``), checked to exist; may move ``cfg.output_dir``.

    When the checkpoint lies in ``<run>/checkpoints/`` and the configured output directory holds
    nothing yet (a fresh Hydra run directory), the run continues in ``<run>``: ``cfg.output_dir``
    is set to it, so the checkpoints, the CSV log and ``metrics.json`` go on in one folder.
    """
    value = cfg.get("ckpt_path")
    if value is None:
        return None
    path = require_file(Path(str(value)).expanduser(), key="ckpt_path")  # read (and checked) in fit()
    run = run_dir.checkpoint_run_dir(path)
    output = Path(cfg.output_dir)
    if run is not None and run.resolve() != output.resolve() and run_dir.holds_nothing_yet(output):
        cfg.output_dir = str(run.resolve())
        rank_zero_info(f"continuing the run in {cfg.output_dir}")
    return path


def refuse_relaunch_in_multirun(trainer: L.Trainer) -> None:
    """Stop a Hydra multirun whose strategy starts its ranks by re-running the command line.

    ``strategy=ddp`` (and Lightning's automatic choice for several devices) starts the other
    ranks by running the same command again; inside a sweep (``-m``) each rank would start the
    whole sweep again. ``strategy=ddp_spawn`` starts its ranks from the running job instead.
    """
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    if multirun and isinstance(trainer.strategy.launcher, _SubprocessScriptLauncher):
        raise UserError(
            f"strategy {type(trainer.strategy).__name__} re-runs the command once per rank, which "
            "cannot work inside a Hydra multirun (-m)",
            "config key trainer.strategy",
            "use strategy=ddp_spawn for a sweep, or run one job per command without -m",
        )


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
@reports_user_errors
def main(cfg: DictConfig) -> Any:
    """Command-line entry point (Hydra): the metrics, or the one named by ``optimized_metric``."""
    return objective(train(cfg), cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
