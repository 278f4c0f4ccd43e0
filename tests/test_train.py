"""The real Hydra entry point, run as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
KEYS = {"test/mrr", "test/mr", "test/hits@1", "test/hits@3", "test/hits@10"}


def run_module(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_fast_dev_run_of_the_entry_point_writes_metrics_json(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_module(
        ["-m", "lightning_kge.train", "model=rotate", "sampler=self_adversarial", "trainer=cpu",
         "trainer.fast_dev_run=true", f"hydra.run.dir={out}"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert KEYS <= set(metrics)
    assert "| both |" in result.stdout
    assert not (tmp_path / "outputs").exists()


def test_short_run_writes_a_checkpoint_and_beats_the_untrained_model(tmp_path: Path) -> None:
    common = ["-m", "lightning_kge.train", "data=nations", "model.dim=32", "optimizer.lr=0.01", "trainer=cpu",
              "trainer.check_val_every_n_epoch=100", "trainer.enable_progress_bar=false"]
    mrr = {}
    for steps in (0, 100):
        out = tmp_path / f"steps{steps}"
        result = run_module([*common, f"trainer.max_steps={steps}", f"hydra.run.dir={out}"], cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        mrr[steps] = json.loads((out / "metrics.json").read_text())["test/mrr"]
    assert (tmp_path / "steps100" / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "steps100" / "per_relation.tsv").is_file()
    assert mrr[100] > mrr[0] + 0.15, mrr


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package installed non-editable (a wheel built from a copy of the source) into a folder of its own."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"  # build from a copy: setuptools writes build/ into the tree
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "lightning_kge", "conf", "hydra_plugins"):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif (REPO / name).is_file():
            shutil.copy2(REPO / name, source / name)
    target = root / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    assert "would be ignored" not in install.stderr and "deprecat" not in install.stderr.lower(), install.stderr[-3000:]
    assert (target / "lightning_kge" / "conf" / "config.yaml").is_file()
    assert (target / "lightning_kge" / "conf" / "model" / "rotate.yaml").is_file()
    assert (target / "lightning_kge" / "data" / "bundled" / "umls" / "train.txt").is_file()
    return target


def test_entry_point_works_after_a_non_editable_install(installed: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(installed)}
    where = run_module(["-c", "import lightning_kge; print(lightning_kge.__file__)"], tmp_path, env)
    assert where.stdout.strip().startswith(str(installed)), where.stdout + where.stderr
    out = tmp_path / "run"
    result = run_module(
        ["-m", "lightning_kge.train", "trainer=cpu", "trainer.fast_dev_run=true", f"hydra.run.dir={out}"],
        cwd=tmp_path, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "metrics.json").is_file()


def test_a_client_hydra_app_composes_the_package_configs_without_a_warning(installed: Path, tmp_path: Path) -> None:
    app = tmp_path / "app"
    shutil.copytree(REPO / "examples" / "hydra_app", app)
    env = {**os.environ, "PYTHONPATH": str(installed)}
    out = tmp_path / "run"
    result = run_module([str(app / "app.py"), "trainer.fast_dev_run=true", "model=transe", f"hydra.run.dir={out}"],
                        cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "not available" not in result.stderr and "Warning" not in result.stderr, result.stderr[-3000:]
    assert "test MRR" in result.stdout and (out / "metrics.json").is_file()
    composed = (out / ".hydra" / "config.yaml").read_text()
    assert "lightning_kge.models.transe.TransE" in composed and "name: nations" in composed and "dim: 32" in composed


def user_folder(root: Path, test_text: str | None = None) -> Path:
    """A user's own graph: the bundled nations files copied to a folder of their own."""
    from lightning_kge.data.datasets import resolve_dataset

    root.mkdir()
    for split in ("train", "valid", "test"):
        shutil.copy2(resolve_dataset("nations") / f"{split}.txt", root / f"{split}.txt")
    if test_text is not None:
        (root / "test.txt").write_text(test_text, encoding="utf-8")
    return root


def test_a_users_own_folder_trains_with_data_tsv(tmp_path: Path) -> None:
    folder = user_folder(tmp_path / "graph")
    out = tmp_path / "run"
    result = run_module(["-m", "lightning_kge.train", "data=tsv", f"data.path={folder}", "trainer=cpu",
                         "trainer.fast_dev_run=true", f"hydra.run.dir={out}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert KEYS <= set(json.loads((out / "metrics.json").read_text()))


def test_bad_input_stops_the_entry_point_naming_file_line_and_problem(tmp_path: Path) -> None:
    folder = user_folder(tmp_path / "graph", test_text="brazil\tintergovorgs\tusa\nbrazil\tusa\n")
    result = run_module(["-m", "lightning_kge.train", "data=tsv", f"data.path={folder}", "trainer=cpu",
                         "trainer.fast_dev_run=true", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: expected 3 tab-separated columns, found 2 ") and f"({folder / 'test.txt'}:2):" in last
    assert "Traceback" not in result.stderr


def test_config_dir_adds_a_users_own_option_to_a_group(tmp_path: Path) -> None:
    """The README's ``--config-dir my_conf model=my_model``: a group option of the user's own folder."""
    (tmp_path / "my_conf" / "model").mkdir(parents=True)
    (tmp_path / "my_conf" / "model" / "my_model.yaml").write_text(
        "_target_: lightning_kge.models.transe.TransE\ndim: 12\ngamma: 6.0\n")
    out = tmp_path / "run"
    result = run_module(["-m", "lightning_kge.train", "--config-dir", str(tmp_path / "my_conf"), "model=my_model",
                         "trainer=cpu", "trainer.fast_dev_run=true", f"hydra.run.dir={out}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    composed = (out / ".hydra" / "config.yaml").read_text()
    assert "lightning_kge.models.transe.TransE" in composed and "dim: 12" in composed
    assert (out / "metrics.json").is_file()
