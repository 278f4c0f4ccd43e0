"""Outputs are whole or absent: a write that fails (a full disk) leaves the previous file, no empty or partial
one, and stops with one line. Simulated by making writes fail, and on a real full tmpfs where root can mount one."""

from __future__ import annotations

import errno
import importlib.util
import io
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lightning_kge import atomic
from lightning_kge.checkpoints import load_module
from lightning_kge.configs import config_dir
from lightning_kge.data.info import GraphInfo
from lightning_kge.errors import UserError, reports_user_errors
from lightning_kge.export import export_embeddings
from lightning_kge.models import RotatE
from lightning_kge.module import KGEModule
from lightning_kge.plot import plot
from lightning_kge.train import train
from runs import config, step_of

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*LeafSpec.*is deprecated", "ignore:.*does not have many workers", "ignore:.*smaller than the logging interval",
)

NO_SPACE = "no space left on device ({}): free space or choose another folder"


class FullDisk(io.FileIO):
    """A file on a full disk: each write stores half of the bytes, then fails with ENOSPC."""

    def write(self, data) -> int:  # type: ignore[override]
        super().write(bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")


def full_disk_for(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Make :mod:`lightning_kge.atomic` writes of files named ``names`` hit a full disk."""
    real = atomic.open_scratch

    def open_scratch(path: Path):
        if any(path.name.startswith(f".{name}.") for name in names):
            return FullDisk(path, "xb")
        return real(path)

    monkeypatch.setattr(atomic, "open_scratch", open_scratch)


def entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_failed_write_leaves_the_previous_file_whole_and_nothing_else(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "metrics.json"
    atomic.write_text(target, "previous\n")
    full_disk_for(monkeypatch, "metrics.json", "new.json")
    with pytest.raises(UserError) as raised:
        atomic.write_text(target, "a longer new text\n" * 100)
    assert str(raised.value) == NO_SPACE.format(target)
    assert target.read_text() == "previous\n" and entries(tmp_path) == ["metrics.json"]
    with pytest.raises(UserError):
        atomic.write_text(tmp_path / "new.json", "{}")
    assert entries(tmp_path) == ["metrics.json"]  # no empty or partial new.json


def test_other_write_errors_give_one_line_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def read_only(path: Path):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(atomic, "open_scratch", read_only)
    with pytest.raises(UserError, match=r"^cannot write: read-only file system \(.*a\.json\): choose a folder you can"):
        atomic.write_text(tmp_path / "a.json", "{}")


def test_the_entry_points_report_a_failed_write_in_one_line_also_from_inside_lightning(capsys) -> None:
    @reports_user_errors
    def report_then_log(cfg) -> None:
        try:
            raise UserError("no space left on device", "out/metrics.json", "free space or choose another folder")
        finally:  # Lightning flushes its loggers while it stops: on a full disk that fails too
            raise OSError(errno.ENOSPC, "No space left on device")

    @reports_user_errors
    def logger_write(cfg) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")  # a write error naming no file

    with pytest.raises(SystemExit) as stopped:
        report_then_log(OmegaConf.create({"output_dir": "out"}))
    assert stopped.value.code == 2
    assert capsys.readouterr().err == "error: " + NO_SPACE.format("out/metrics.json") + "\n"
    with pytest.raises(SystemExit):
        logger_write(OmegaConf.create({"output_dir": "runs/1"}))
    assert capsys.readouterr().err == "error: " + NO_SPACE.format("runs/1") + "\n"


@pytest.fixture
def small_module() -> KGEModule:
    graph = GraphInfo(("a", "b", "c"), ("r",), (0,))
    return KGEModule(RotatE(num_entities=3, num_relations=1, dim=4), graph=graph)


def test_an_export_that_fails_leaves_no_folder_and_an_earlier_export_whole(
    small_module: KGEModule, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    save = np.save
    calls = []

    def full_at_third(path, array) -> None:
        calls.append(path)
        if len(calls) == 3:
            Path(path).write_bytes(b"\x93NUMPY")  # a partial file, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        save(path, array)

    monkeypatch.setattr(np, "save", full_at_third)
    with pytest.raises(UserError, match=r"^no space left on device \(.*out\): free space"):
        export_embeddings(small_module, out)
    assert entries(tmp_path) == []  # no folder, no hidden build folder

    monkeypatch.setattr(np, "save", save)
    export_embeddings(small_module, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with torch.no_grad():
        small_module.model.entity.weight.add_(1.0)
    calls.clear()
    monkeypatch.setattr(np, "save", full_at_third)
    with pytest.raises(UserError, match="no space left on device"):
        export_embeddings(small_module, out, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before and entries(tmp_path) == ["out"]
    monkeypatch.setattr(np, "save", save)
    export_embeddings(small_module, out, overwrite=True)
    assert np.array_equal(np.load(out / "entity.npy"), small_module.model.entity.weight.detach().numpy())
    assert entries(tmp_path) == ["out"]


def test_export_refuses_a_folder_with_other_files_and_an_earlier_export_without_overwrite(
    small_module: KGEModule, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"the folder holds files that no export writes \(notes\.txt\)"):
        export_embeddings(small_module, tmp_path)
    assert entries(tmp_path) == ["notes.txt"]
    export_embeddings(small_module, tmp_path / "out")
    with pytest.raises(UserError, match="exist already"):
        export_embeddings(small_module, tmp_path / "out")
    (tmp_path / "empty").mkdir()
    export_embeddings(small_module, tmp_path / "empty")
    assert "entities.tsv" in entries(tmp_path / "empty")


def test_a_checkpoint_save_on_a_full_disk_stops_with_one_line_and_keeps_the_previous_last_ckpt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save = TorchCheckpointIO.save_checkpoint
    saves = []

    def full_after_first(self, checkpoint, path, storage_options=None) -> None:
        saves.append(path)
        if len(saves) > 1:
            Path(path).write_bytes(b"PK\x03\x04")  # partly written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        save(self, checkpoint, path, storage_options)

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", full_after_first)
    out = tmp_path / "run"
    with pytest.raises(UserError) as raised:  # 4 steps per epoch: saves after the validations of steps 4 and 8
        train(config(out, "trainer.max_steps=8"))
    folder = out / "checkpoints"
    assert str(raised.value) == NO_SPACE.format(folder / "last.ckpt")
    assert step_of(folder / "last.ckpt") == 4 and entries(folder) == ["best.ckpt", "last.ckpt"]
    assert not (out / "metrics.json").exists()


def test_a_full_disk_at_the_report_leaves_no_metrics_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full_disk_for(monkeypatch, "metrics.json")
    out = tmp_path / "run"
    with pytest.raises(UserError) as raised:
        train(config(out, "trainer.max_steps=2"))
    assert str(raised.value) == NO_SPACE.format(out / "metrics.json")
    assert not (out / "metrics.json").exists() and not (out / "test_weights.json").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".metrics.json")]


def test_a_write_lightning_makes_on_a_full_disk_stops_training_with_one_line_naming_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(self) -> None:  # the CSV logger's file, whose error names no file
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(CSVLogger, "save", full)
    out = tmp_path / "run"
    with pytest.raises(UserError) as raised:
        train(config(out, "trainer.max_steps=2"))
    assert str(raised.value) == NO_SPACE.format(out)


# --- a real full file system --------------------------------------------------------------------------

@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 64 KiB tmpfs at ``tmp_path/disk``; skips where this process cannot mount one (not root, no tmpfs)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def fill(disk: Path, keep: int) -> None:
    """Fill ``disk`` but for about ``keep`` bytes."""
    stat = os.statvfs(disk)
    filler = disk / f"filler{len(list(disk.glob('filler*')))}"
    filler.write_bytes(b"\0" * max(0, stat.f_bavail * stat.f_frsize - keep))


def test_on_a_real_full_disk_training_export_and_plot_stop_with_one_line_and_leave_no_partial_file(
    tiny_disk: Path, tmp_path: Path
) -> None:
    out = tiny_disk / "run"
    fill(tiny_disk, 12 * 1024)  # room for the CSV log, not for a checkpoint (about 16 KiB)
    with pytest.raises(UserError) as raised:
        train(config(out, "trainer.max_steps=4"))
    assert str(raised.value) == NO_SPACE.format(out / "checkpoints" / "last.ckpt")
    assert entries(out / "checkpoints") == [] and not (out / "metrics.json").exists()

    trained = tmp_path / "trained"
    train(config(trained, "trainer.max_steps=4"))
    ckpt = trained / "checkpoints" / "last.ckpt"
    fill(tiny_disk, 4 * 1024)
    with pytest.raises(UserError, match=r"^no space left on device \(.*\): free space or choose another folder$"):
        export_embeddings(load_module(ckpt), tiny_disk / "emb")
    assert not (tiny_disk / "emb").exists()
    assert not [p for p in tiny_disk.iterdir() if p.name.startswith(".")]  # no hidden partial folder
    if importlib.util.find_spec("matplotlib") is not None:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(config_name="plot", overrides=[f"ckpt={ckpt}", f"out={tiny_disk / 'plots'}"])
        with pytest.raises(UserError, match=r"^no space left on device \(.*plots/relation_phases\.png\)"):
            plot(cfg)
        assert entries(tiny_disk / "plots") == []
