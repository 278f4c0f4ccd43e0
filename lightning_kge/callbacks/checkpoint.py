"""Checkpoints: ``last.ckpt``, ``best.ckpt`` and ``step<N>.ckpt``, written atomically, saved on Ctrl-C.

Lightning's ``ModelCheckpoint(save_last=True)`` writes ``last.ckpt`` at the end of training only
if it never wrote it before, so with ``max_steps`` between two validations the final weights were
saved nowhere. This callback writes ``last.ckpt`` whenever it saves, and always at the last
training step, so after a finished run it holds the weights the final test used.
"""

from __future__ import annotations

import math
import re
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.trainer.states import TrainerFn

from lightning_kge.atomic import link_or_copy, replace_durably
from lightning_kge.callbacks.divergence import DivergenceGuard, is_check_step
from lightning_kge.errors import require, write_failed
from lightning_kge.sharding import folders

LAST = "last.ckpt"
BEST = "best.ckpt"
STEP = re.compile(r"step(\d+)\.ckpt")
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(SystemExit):
    """Training stopped by SIGINT (Ctrl-C) or SIGTERM after saving ``last.ckpt``.

    Exits with status ``128 + signal`` (130 for SIGINT, 143 for SIGTERM), as a shell reports a
    process killed by that signal; the entry point prints one line before.
    """


class Checkpoints(Checkpoint):
    """Save the run's checkpoints in ``dirpath``, keeping these files (the README's retention policy):

    - ``last.ckpt``: the newest weights. Rewritten at every save (each validation, every
      ``every_n_steps`` steps, the last training step, on SIGINT/SIGTERM; at the end of training
      if it ends otherwise), so after a finished run it holds the weights that the final test
      used and ``metrics.json`` reports.
    - ``best.ckpt``: the weights with the best ``monitor`` value so far (``val/mrr``, higher is
      better), rewritten after a validation that improves it; absent without validation.
    - ``step<N>.ckpt`` (with ``every_n_steps``): the weights after step ``N``, every
      ``every_n_steps`` training steps, whether or not validation runs then; only the newest
      ``keep`` of them are kept (all with ``keep=None``).

    Each file is written under a temporary name in ``dirpath`` and renamed into place
    (:mod:`lightning_kge.atomic`), so a process killed while saving leaves the previous file
    whole, and a save that fails (a full disk) stops the run with one line
    (``no space left on device (PATH): …``), the previous files whole too; files
    holding the same weights are hard links (copies where links are not possible). The first
    SIGINT or SIGTERM during training saves ``last.ckpt`` at the end of the current step and
    stops with :class:`Interrupted` (a second one acts at once, as usual). The best score is
    part of the callback's state, so a resumed run keeps comparing with it. Before every save
    the :class:`~lightning_kge.callbacks.divergence.DivergenceGuard` (if present) checks that the
    losses and the weights are finite, so no checkpoint of a diverged model is written.

    ``best_model_path`` and ``last_model_path`` are named as Lightning's ``ModelCheckpoint``
    names them, so ``trainer.test(ckpt_path="best")`` works.

    Args:
        dirpath: the folder of the checkpoints.
        monitor: the logged value that chooses ``best.ckpt``; ``None``: no ``best.ckpt``.
        mode: ``max`` (higher is better, as MRR and Hits@k) or ``min`` (as MR).
        every_n_steps: also save ``step<N>.ckpt`` (and ``last.ckpt``) every this many training
            steps; ``None``: only at validations and at the end.
        keep: how many ``step<N>.ckpt`` files to keep, the newest; ``None`` keeps all.
    """

    def __init__(
        self,
        dirpath: str,
        monitor: str | None = "val/mrr",
        mode: Literal["max", "min"] = "max",
        every_n_steps: int | None = None,
        keep: int | None = 3,
    ) -> None:
        require(mode in ("max", "min"), "mode", mode, "max or min")
        require(every_n_steps is None or (isinstance(every_n_steps, int) and every_n_steps >= 1), "every_n_steps",
                every_n_steps, "an integer ≥ 1, or null for no step checkpoints")
        require(keep is None or (isinstance(keep, int) and keep >= 1), "keep", keep,
                "an integer ≥ 1, or null to keep every step checkpoint")
        self.dirpath = Path(dirpath)
        self.monitor = monitor
        self.mode = mode
        self.every_n_steps = every_n_steps
        self.keep = keep
        self.best_score: float | None = None
        """The best ``monitor`` value seen so far (kept in checkpoints, so a resumed run continues it)."""
        self.best_step: int | None = None
        """The step whose weights ``best.ckpt`` holds."""
        self.best_model_path = ""
        self.last_model_path = ""
        self._saved_step: int | None = None
        self._trained = False
        self._signal: int | None = None
        self._handlers: dict[int, Any] = {}

    # --- state kept in checkpoints ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"monitor": self.monitor, "mode": self.mode, "best_score": self.best_score,
                "best_step": self.best_step, "seed": torch.initial_seed()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("monitor") != self.monitor or state_dict.get("mode") != self.mode:
            return  # another criterion: its best score means nothing here
        self.best_score = state_dict.get("best_score")
        self.best_step = state_dict.get("best_step")
        if self.best_score is not None and (self.dirpath / BEST).exists():
            self.best_model_path = str(self.dirpath / BEST)

    # --- when to save -----------------------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._trained = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._signal = None
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._handlers[signum] = signal.signal(signum, self._on_signal)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        self._trained = True
        periodic = bool(self.every_n_steps) and step % self.every_n_steps == 0
        # The final step is saved here, not at the end of training: by then Lightning counts the
        # interrupted epoch as completed, and a run resumed from that state would be an epoch off.
        final = trainer.max_steps is not None and trainer.max_steps >= 0 and step >= trainer.max_steps
        if (periodic or final) and step != self._saved_step and self.saving(trainer):
            self.save(trainer, pl_module, [f"step{step}.ckpt", LAST] if periodic else [LAST])
            if periodic:
                self.prune(trainer)
        if self.stop_requested(trainer):
            if step != self._saved_step and self.saving(trainer):
                self.save(trainer, pl_module, [LAST])
            self.interrupt(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING or not self.saving(trainer):
            return
        names = [LAST]
        score = trainer.callback_metrics.get(self.monitor) if self.monitor else None
        if score is not None and self.improves(float(score)):
            self.best_score, self.best_step = float(score), trainer.global_step
            names.append(BEST)
        self.save(trainer, pl_module, names)
        if BEST in names:
            self.best_model_path = str(self.dirpath / BEST)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.restore_handlers()
        resumed_idle = bool(trainer.ckpt_path) and not self._trained  # see on_fit_end
        if trainer.global_step != self._saved_step and self.saving(trainer) and not resumed_idle:
            self.save(trainer, pl_module, [LAST])
        if self._signal is not None:
            self.interrupt(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path and not self._trained and self.saving(trainer):
            # Resumed with no step left to train: the checkpoint resumed from holds the final state.
            # (Saving now would store Lightning's end-of-training loop state, an epoch off on a resume.)
            self.adopt(trainer, Path(trainer.ckpt_path))

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.restore_handlers()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.restore_handlers()

    def saving(self, trainer: L.Trainer) -> bool:
        """Whether this run writes checkpoints (not under ``fast_dev_run``, as in Lightning)."""
        return not trainer.fast_dev_run

    def improves(self, score: float) -> bool:
        """Whether ``score`` is finite and better than the best so far."""
        if not math.isfinite(score):
            return False
        if self.best_score is None:
            return True
        return score > self.best_score if self.mode == "max" else score < self.best_score

    # --- signals ----------------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signal = signum
        signal.signal(signum, self._handlers.get(signum, signal.SIG_DFL))  # a second one acts at once

    def restore_handlers(self) -> None:
        """Give SIGINT and SIGTERM back the handlers they had before training."""
        if threading.current_thread() is threading.main_thread():
            for signum, handler in self._handlers.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._handlers = {}

    def stop_requested(self, trainer: L.Trainer) -> bool:
        """Whether SIGINT or SIGTERM arrived (on any process: agreed every ``log_every_n_steps`` steps)."""
        if trainer.world_size == 1:
            return self._signal is not None
        if not is_check_step(trainer):
            return False
        stop = trainer.strategy.reduce_boolean_decision(self._signal is not None, all=False)
        if stop and self._signal is None:
            self._signal = signal.SIGTERM  # another process was signalled
        return stop

    def interrupt(self, trainer: L.Trainer) -> None:
        """Stop the run: one line on stderr (global rank zero), exit status ``128 + signal``."""
        signum = self._signal or signal.SIGTERM
        name = signal.Signals(signum).name
        if trainer.is_global_zero:
            saved = self.dirpath / LAST
            if self.last_model_path:
                message = (f"error: interrupted by {name} at step {trainer.global_step} (saved {saved}): "
                           f"continue with the same overrides and ckpt_path={saved}")
            else:
                message = f"error: interrupted by {name} at step {trainer.global_step} (nothing saved): train again"
            print(message, file=sys.stderr, flush=True)
        raise Interrupted(128 + signum)

    # --- writing ----------------------------------------------------------------------------------
    def save(self, trainer: L.Trainer, pl_module: L.LightningModule, names: list[str]) -> None:
        """Save the trainer's state as ``names[0]`` in :attr:`dirpath`, the other names linked to it.

        Called on every process (Lightning's ``save_checkpoint`` is collective); global rank zero
        writes. The losses and weights are checked first, and the loggers flushed, so that their
        files hold what the checkpoint knows.
        """
        guard = DivergenceGuard.find(trainer)
        if guard is not None:
            guard.check(trainer, pl_module)
        for logger in trainer.loggers:
            logger.save()
        target = self.dirpath / names[0]
        scratch = target.with_name(f".{target.name}.tmp")
        if trainer.is_global_zero:
            self.dirpath.mkdir(parents=True, exist_ok=True)
        try:
            trainer.save_checkpoint(scratch, weights_only=False)
            if trainer.is_global_zero:
                # a folder (a sharded checkpoint, strategy=torchrec) is published by a link renamed into place
                (folders.publish if scratch.is_dir() else replace_durably)(scratch, target)
                for name in names[1:]:
                    (folders.link if target.is_dir() else link_or_copy)(target, self.dirpath / name)
        except OSError as error:  # a full disk: one line; the previous files stay whole
            raise write_failed(error, target) from None
        finally:
            if trainer.is_global_zero:
                folders.remove(scratch)
        self._saved_step = trainer.global_step
        self.last_model_path = str(self.dirpath / LAST)
        if guard is not None:
            guard.last_good = f"{self.dirpath / names[0]} (step {trainer.global_step})"

    def adopt(self, trainer: L.Trainer, checkpoint: Path) -> None:
        """Make ``last.ckpt`` hold the file ``checkpoint`` (global rank zero), unless it is that file."""
        last = self.dirpath / LAST
        if trainer.is_global_zero and not (last.exists() and last.resolve() == checkpoint.resolve()):
            try:
                self.dirpath.mkdir(parents=True, exist_ok=True)
                (folders.link if checkpoint.is_dir() else link_or_copy)(checkpoint, last)
            except OSError as error:
                raise write_failed(error, last) from None
        self.last_model_path = str(last)

    def prune(self, trainer: L.Trainer) -> None:
        """Delete all but the newest :attr:`keep` ``step<N>.ckpt`` files (global rank zero)."""
        if self.keep is None or not trainer.is_global_zero:
            return
        for path in step_checkpoints(self.dirpath)[: -self.keep]:
            path.unlink(missing_ok=True)
        folders.collect(self.dirpath)


def step_checkpoints(folder: Path) -> list[Path]:
    """The ``step<N>.ckpt`` files in ``folder``, oldest (smallest ``N``) first."""
    found = [(int(m[1]), p) for p in folder.glob("step*.ckpt") if (m := STEP.fullmatch(p.name))]
    return [p for _, p in sorted(found)]
