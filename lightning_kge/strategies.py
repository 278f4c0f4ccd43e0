"""DDP with a timeout in seconds, and one line naming the rank that stopped answering.

Lightning's ``DDPStrategy`` waits 30 minutes (``timedelta``) for a rank that does not take part in
a collective operation, and a rank that is frozen (``SIGSTOP``, a debugger, a swapped-out or
hung process) leaves the others blocked that long. :class:`DDPStrategy` takes ``timeout`` in
seconds (600 by default) and, when a collective fails, finds out which rank is missing and ends
the run with one line, exit status 2:

    error: rank 1 of 2 did not respond within trainer.strategy.timeout=20 s at step 5: its process
    is stopped (last good checkpoint: …/last.ckpt): find out why that process stopped …, then
    continue the run with the same overrides and ckpt_path=…/last.ckpt

How: the ranks share a second, CPU (gloo) process group made at start. After a collective times
out or loses a peer, rank zero asks every rank to answer on it
(``torch.distributed.monitored_barrier``, which names the ranks that do not), and the launching
process looks at the ranks it started (ended, or stopped). A rank that ends (killed, out of
memory) is seen by the launching process at once, without waiting for the timeout. Either way
the launching process ends the ranks it started, so none is left behind, stopped or waiting.

The one-line report is for ``start_method=popen`` (``strategy=ddp``, the DDP of
``trainer=ddp_cpu|multi_gpu|multi_node``) on gloo, the CPU backend. On GPUs (NCCL) the timeout
still applies, but NCCL's watchdog ends a process whose collective timed out by itself.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch.distributed as dist
from lightning.fabric.utilities.distributed import _distributed_is_initialized, _set_num_threads_if_needed
from lightning.pytorch.strategies import DDPStrategy as LightningDDPStrategy
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher

from lightning_kge.callbacks.checkpoint import Checkpoints
from lightning_kge.errors import EXIT_STATUS, UserError, require

LOST_PEER = re.compile(r"timed out|timeout|connection (closed|reset)|broken pipe|peer|socket", re.IGNORECASE)
"""What a collective's error says when another rank did not take part (gloo's and torch's wording)."""

MISSING = re.compile(r"Ranks? ([\d, ]+) failed to pass monitoredBarrier")


class DDPStrategy(LightningDDPStrategy):
    """Lightning's ``DDPStrategy`` with ``timeout`` in seconds and a one-line report of a missing rank.

    Args:
        timeout: seconds a rank waits for the others in a collective operation (gradients,
            metrics, barriers) before the run ends naming the rank that did not respond. Longer
            than any step, validation, checkpoint save or first download (the other ranks wait
            meanwhile).
        process_group_backend: ``gloo``, ``nccl``, or ``None`` (nccl on GPUs, gloo on CPUs).
        start_method: ``popen`` (the command is run again for each rank: ``strategy=ddp``) or
            ``spawn`` (ranks started from the running job: ``strategy=ddp_spawn``).
    """

    def __init__(self, timeout: float = 600.0, process_group_backend: str | None = None,
                 start_method: Literal["popen", "spawn", "fork", "forkserver"] = "popen") -> None:
        number = isinstance(timeout, (int, float)) and not isinstance(timeout, bool)
        require(number and math.isfinite(timeout) and timeout > 0, "strategy.timeout", timeout,
                "a number of seconds > 0, e.g. 600")
        super().__init__(process_group_backend=process_group_backend, start_method=start_method,
                         timeout=timedelta(seconds=timeout))
        self.timeout = float(timeout)
        self.trainer: L.Trainer | None = None
        """The trainer being run (set by the launcher), for the step and the last checkpoint in messages."""
        self._side: Any = None
        self._ending = threading.Lock()
        self._ended = False

    def __getstate__(self) -> dict[str, Any]:  # ddp_spawn pickles the strategy to its workers
        state = self.__dict__.copy()
        state.update(_ending=None, _side=None, trainer=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._ending = threading.Lock()

    # --- set-up -----------------------------------------------------------------------------------
    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if isinstance(self._launcher, _SubprocessScriptLauncher):
            assert self.cluster_environment is not None
            self._launcher = WatchedLauncher(self.cluster_environment, self.num_processes, self.num_nodes, self)

    def setup_distributed(self) -> None:
        super().setup_distributed()
        if _distributed_is_initialized() and dist.get_world_size() > 1:
            self._side = dist.new_group(backend="gloo")  # asked who is missing after a failed collective

    # --- failures ---------------------------------------------------------------------------------
    def on_exception(self, exception: BaseException) -> None:
        """End the ranks this process started; after a failed collective, raise one error naming the missing rank."""
        super().on_exception(exception)
        with self._ending:
            first = not self._ended
            self._ended = True
            failure = self.missing_rank_error() if first and is_lost_peer(exception) else None
            end_ranks(self.launcher)
        if failure is not None:
            raise failure from exception

    def missing_rank_error(self) -> UserError | None:
        """The error naming the rank that did not take part in the collective that failed.

        ``None`` if every rank answers now (the collective failed for another reason).
        """
        local = self.local_ranks()
        ended = [(rank, state) for rank, state in local if state.startswith("ended")]
        if ended:
            return self.failure(*ended[0])
        missing = self.unresponsive_ranks()
        if missing is None:
            return None
        if not missing:
            return self.failure(None, "")
        return self.failure(missing[0], dict(local).get(missing[0], ""))

    def unresponsive_ranks(self) -> list[int] | None:
        """The ranks that do not answer a monitored barrier on the side group; ``None`` if all answer.

        Rank zero hears from every rank and names those missing; another rank hears only from
        rank zero, and waits longer, so that rank zero, which can end the ranks it started,
        reports first. ``[]``: some rank is missing, which is not known.
        """
        if self._side is None:
            return None
        wait = min(30.0, max(2.0, self.timeout / 4))
        if self.global_rank != 0:
            wait = 2 * wait + 5
        try:
            with quiet_stderr():  # torch logs each failure itself; the one line of the error says it
                dist.monitored_barrier(group=self._side, timeout=timedelta(seconds=wait), wait_all_ranks=True)
        except RuntimeError as error:
            found = MISSING.search(str(error))
            if found:
                return sorted(int(r) for r in re.findall(r"\d+", found[1]))
            return [0] if self.global_rank != 0 else []
        return None

    def local_ranks(self) -> list[tuple[int, str]]:
        """``(global rank, state)`` of the ranks this process started: ``ended …``, ``stopped`` or ``running``."""
        launcher = self.launcher
        if not isinstance(launcher, _SubprocessScriptLauncher):
            return []
        base = self.node_rank * self.num_processes
        return [(base + i + 1, process_state(proc)) for i, proc in enumerate(launcher.procs)]

    def failure(self, rank: int | None, state: str) -> UserError:
        """The one-line error of a rank that did not respond (``rank`` ``None``: not known)."""
        trainer = self.trainer or getattr(self.lightning_module, "_trainer", None)
        step = f" at step {trainer.global_step}" if trainer is not None else ""
        who = f"rank {rank} of {self.world_size}" if rank is not None else f"a rank of {self.world_size}"
        if state.startswith("ended"):
            what = f"{who} was lost{step}: its process {state}"
            why = "find out what ended that process (out of memory, a scheduler, a lost machine)"
        else:
            what = f"{who} did not respond within trainer.strategy.timeout={self.timeout:g} s{step}"
            if state:
                what += f": its process is {state}"
            why = "find out why that process stopped (SIGSTOP, a debugger, swapping, a hang, a lost machine)"
        last = last_checkpoint(trainer)
        if last is None:
            return UserError(what, "no checkpoint was saved", f"{why}, then train again")
        return UserError(what, f"last good checkpoint: {last}",
                         f"{why}, then continue the run with the same overrides and ckpt_path={last}")

    def rank_ended(self, rank: int, state: str, returncode: int) -> None:
        """Called by the launcher's watcher when a rank it started ends first: one line, exit status 2."""
        with self._ending:
            if self._ended:
                return
            self._ended = True
            if returncode != EXIT_STATUS:  # that rank printed its own one-line error
                print(self.failure(rank, state).report(), file=sys.stderr, flush=True)
            end_ranks(self.launcher)
            os._exit(EXIT_STATUS)


class WatchedLauncher(_SubprocessScriptLauncher):
    """Lightning's launcher of ``strategy=ddp`` (the command run again per rank), whose watcher
    reports a rank that ends first through :meth:`DDPStrategy.rank_ended` (Lightning's kills
    every process without a word)."""

    def __init__(self, cluster_environment: Any, num_processes: int, num_nodes: int, strategy: DDPStrategy) -> None:
        super().__init__(cluster_environment, num_processes, num_nodes)
        self.strategy = strategy

    def launch(self, function: Any, *args: Any, trainer: L.Trainer | None = None, **kwargs: Any) -> Any:
        self.strategy.trainer = trainer
        self.cluster_environment.validate_settings(num_devices=self.num_processes, num_nodes=self.num_nodes)
        if not self.cluster_environment.creates_processes_externally:
            self._call_children_scripts()
            threading.Thread(target=self.watch, daemon=True, name="rank-watcher").start()
        _set_num_threads_if_needed(num_processes=self.num_processes)
        return function(*args, **kwargs)

    def watch(self, period: float = 0.5) -> None:
        """Until every rank started here ended well: report the first that ends with another status."""
        base = self.cluster_environment.node_rank() * self.num_processes
        while True:
            time.sleep(period)
            codes = [proc.poll() for proc in self.procs]
            if all(code == 0 for code in codes):
                return
            for i, code in enumerate(codes):
                if code:
                    self.strategy.rank_ended(base + i + 1, process_state(self.procs[i]), code)
                    return


def process_state(proc: Any) -> str:
    """How a started process is: ``ended: killed by SIGKILL``, ``ended with exit status 1``, ``stopped``, ``running``."""
    code = proc.poll()
    if code is not None:
        if code < 0:
            return f"ended: killed by {signal.Signals(-code).name}"
        return f"ended with exit status {code}"
    try:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return "running"
    return {"T": "stopped", "t": "stopped", "D": "waiting on the disk", "Z": "ending"}.get(fields[0], "running")


def end_ranks(launcher: Any) -> None:
    """Kill the ranks this process started (stopped ones too), so that none is left behind."""
    if isinstance(launcher, _SubprocessScriptLauncher):
        for proc in launcher.procs:
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    proc.send_signal(signal.SIGKILL)


def is_lost_peer(error: BaseException) -> bool:
    """Whether ``error`` may be a collective that failed because a rank did not take part.

    Example:
        >>> is_lost_peer(RuntimeError("[gloo/unbound_buffer.cc:78] Timed out waiting 20000ms for recv operation"))
        True
        >>> is_lost_peer(ValueError("timed out")), is_lost_peer(RuntimeError("shape mismatch"))
        (False, False)
    """
    return isinstance(error, RuntimeError) and bool(LOST_PEER.search(str(error)))


def last_checkpoint(trainer: L.Trainer | None) -> str | None:
    """The path of the run's newest checkpoint (``Checkpoints.last_model_path``), if one was saved."""
    if trainer is None:
        return None
    callback = next((c for c in trainer.callbacks if isinstance(c, Checkpoints)), None)
    return callback.last_model_path or None if callback is not None else None


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Send what C++ code writes to the stderr file descriptor to /dev/null meanwhile."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
