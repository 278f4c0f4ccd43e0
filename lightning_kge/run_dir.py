"""The run directory: one run per folder (also at the same time), writable from the start, its CSV log
continued on resume."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no lock, the other checks still apply
    fcntl = None  # type: ignore[assignment]

import lightning as L
from lightning.pytorch.loggers import CSVLogger

from lightning_kge import atomic
from lightning_kge.callbacks.checkpoint import Checkpoints
from lightning_kge.errors import UserError

LOCK = ".lock"
"""The file in a run directory that the running process holds locked."""

HYDRA_FILES = (".hydra",)
"""What Hydra itself puts in a run directory (besides ``<job>.log`` files) before the job starts."""


def holds_nothing_yet(folder: Path) -> bool:
    """Whether ``folder`` is missing, empty, or holds only what Hydra writes at start."""
    if not folder.is_dir():
        return True
    return all(p.name in HYDRA_FILES or (p.is_file() and p.suffix == ".log") for p in folder.iterdir())


def checkpoint_run_dir(ckpt: Path) -> Path | None:
    """The run directory of a checkpoint in ``<run>/checkpoints/``, else ``None``."""
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else None


def checkpoint_callback(trainer: L.Trainer) -> Checkpoints | None:
    """The trainer's :class:`Checkpoints` callback, if any."""
    return next((c for c in trainer.callbacks if isinstance(c, Checkpoints)), None)


def csv_files(trainer: L.Trainer) -> list[Path]:
    """The ``metrics.csv`` files of the trainer's CSV loggers."""
    return [Path(logger.log_dir) / "metrics.csv" for logger in trainer.loggers if isinstance(logger, CSVLogger)]


def run_files(trainer: L.Trainer, output_dir: Path) -> list[Path]:
    """The files of a run already in ``output_dir``: ``metrics.json``, checkpoints, CSV logs."""
    found = [output_dir / "metrics.json"] + csv_files(trainer)
    callback = checkpoint_callback(trainer)
    if callback is not None and callback.dirpath.is_dir():
        found += sorted(callback.dirpath.glob("*.ckpt"))
    return [p for p in found if p.exists()]  # checkpoints are files, or folders (strategy=torchrec)


def inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` lies in ``folder`` (after resolving both)."""
    return path.resolve().is_relative_to(folder.resolve())


@contextlib.contextmanager
def claimed(trainer: L.Trainer, output_dir: Path, resume: Path | None) -> Iterator[None]:
    """Own ``output_dir`` for the ``with`` body: checked writable, unused (:func:`check_run_dir`), locked.

    On global rank zero an exclusive lock on ``output_dir/.lock`` is held (``flock``: released when
    the process ends, however it ends), so a second run started into the same folder while this
    one runs is refused. Other ranks do nothing.
    """
    if not trainer.is_global_zero:
        yield
        return
    check_writable(output_dir, "hydra.run.dir (output_dir)")
    with open(output_dir / LOCK, "a") as handle:
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError("another run is writing to this folder now", str(output_dir),
                                "wait until it ends, or choose another hydra.run.dir") from None
        check_run_dir(trainer, output_dir, resume)
        yield


def check_run_dir(trainer: L.Trainer, output_dir: Path, resume: Path | None) -> None:
    """Refuse an output directory that holds another run, or that cannot be written to.

    A directory that holds a run (``metrics.json``, a checkpoint or a CSV log) is accepted only
    when ``resume`` (``ckpt_path``) lies inside it: that run is being continued. The output and
    checkpoint folders are created and a file is written and removed in each, so a folder that
    cannot be written to is found now rather than at the first save.
    """
    found = run_files(trainer, output_dir)
    if found and not (resume is not None and inside(resume, output_dir)):
        listed = ", ".join(p.relative_to(output_dir).as_posix() if inside(p, output_dir) else str(p) for p in found[:3])
        raise UserError(
            f"the output directory already holds a run ({listed})",
            str(output_dir),
            "choose a new hydra.run.dir, or continue that run with "
            f"ckpt_path={output_dir / 'checkpoints' / 'last.ckpt'}",
        )
    check_writable(output_dir, "hydra.run.dir (output_dir)")
    callback = checkpoint_callback(trainer)
    if callback is not None:
        check_writable(callback.dirpath, "callbacks.checkpoint.dirpath")


def check_writable(folder: Path, key: str) -> None:
    """Create ``folder`` if needed and write a file in it, or raise a :class:`UserError` naming ``key``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        raise UserError(
            f"cannot write to {folder} ({error.strerror or type(error).__name__})",
            f"config key {key}",
            "choose a folder you can write to, or make this one writable",
        ) from None


def continue_csv_logs(trainer: L.Trainer, step: int) -> None:
    """Make the trainer's CSV loggers append to the run's ``metrics.csv`` instead of replacing it.

    Lightning's CSV logger deletes an existing ``metrics.csv`` when it starts. Here the rows the
    resumed run will log again are dropped: those of steps ``≥ step``, every test row (the
    resumed run tests at its end; a test row from before, say of a final test that was killed,
    would be a second one) and an incomplete last row (of a process killed while writing). The
    other rows are written back under the old header (whole or not at all), and the logger is
    told that header, so its next rows are appended. Call on global rank zero before ``fit``.
    """
    for logger in trainer.loggers:
        if not isinstance(logger, CSVLogger):
            continue
        path = Path(logger.log_dir) / "metrics.csv"
        if not path.is_file():
            continue
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            rows = [row for row in reader if kept(row, step)]
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
        atomic.write_text(path, buffer.getvalue())
        with warnings.catch_warnings():  # "previous log files ... will be deleted": not so here
            warnings.simplefilter("ignore")
            experiment = _experiment_keeping(logger, path)
        experiment.metrics_keys = header


def kept(row: dict[str | None, str | None], step: int) -> bool:
    """Whether a row of a CSV log stays when a run resumes at ``step``: complete, before it, not a test row.

    Example:
        >>> kept({"step": "3", "train/loss": "0.5", "test/mrr": ""}, 4), kept({"step": "4", "train/loss": "0.5"}, 4)
        (True, False)
        >>> kept({"step": "3", "test/mrr": "0.4"}, 4), kept({"step": "3", "train/loss": None}, 4)
        (False, False)
    """
    if None in row or any(value is None for value in row.values()):
        return False  # too many or too few fields: a line cut short
    if any(key.startswith("test/") and value for key, value in row.items() if key is not None):
        return False
    return _step(row) < step


def _experiment_keeping(logger: CSVLogger, path: Path) -> object:
    """The logger's writer, created without deleting ``path`` (Lightning's deletes an existing log)."""
    kept_aside = path.with_name(f".{path.name}.resume")
    os.replace(path, kept_aside)
    try:
        return logger.experiment
    finally:
        os.replace(kept_aside, path)


def _step(row: dict[str, str]) -> float:
    try:
        return float(row.get("step") or 0)
    except ValueError:
        return 0.0
