"""Experiment configs compose and instantiate; the paper's learning-rate rule; a short countries run."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lightning_kge.module import KGEModule
from lightning_kge.schedules import GeometricStepDecay
from lightning_kge.configs import build_trainer
from test_config import assert_only_arguments, compose_with, declared_keys, options

EXPERIMENTS = options("experiment")
PAPER_EXPERIMENTS = [e for e in EXPERIMENTS if e.split("_", 1)[1] in ("fb15k237", "wn18rr") or "countries" in e]
REPO = Path(__file__).resolve().parents[1]


def paper_learning_rates(lr: float, max_steps: int, warm_up_steps: int) -> list[float]:
    """The rate each update uses in the RotatE code's training loop (codes/run.py), by hand."""
    rates = []
    for step in range(max_steps):
        rates.append(lr)  # this update runs with the current rate
        if step >= warm_up_steps:
            lr = lr / 10
            warm_up_steps = warm_up_steps * 3
    return rates


def scheduled_rates(scheduler_factory, lr: float, max_steps: int) -> list[float]:
    """The rate each of ``max_steps`` updates uses under a scheduler stepped once per update."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = scheduler_factory(optimizer)
    rates = []
    for _ in range(max_steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def offline_environment() -> dict[str, str]:
    """Environment of a subprocess in which any download fails at once (nothing answers the mirror)."""
    env = {k: v for k, v in os.environ.items() if k != "LIGHTNING_KGE_DATA"}
    return {**env, "LIGHTNING_KGE_MIRROR": "http://127.0.0.1:9"}


def on_fixture(folder: Path) -> list[str]:
    """Overrides that run a countries experiment on a fixture folder, on one CPU process."""
    return ["data.name=null", f"data.path={folder}", "trainer=cpu"]


def test_experiment_group_has_every_published_setting() -> None:
    expected = {f"{model}_{data}" for model in ("rotate", "transe", "complex")
                for data in ("fb15k237", "wn18rr", "countries_s1", "countries_s2", "countries_s3")}
    expected |= {"rotate_nations", "rotate_kinships", "rotate_umls"}
    assert expected <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_names_only_arguments_of_its_targets(experiment: str) -> None:
    cfg = compose_with(f"experiment={experiment}")
    assert set(cfg) == set(compose_with()), "an experiment may only set keys the default config has"
    container = OmegaConf.to_container(cfg, resolve=True)
    for group in ("model", "sampler", "data", "optimizer", "module", "trainer"):
        assert_only_arguments(container[group], f"experiment={experiment}: {group}")
    scheduler = container["module"]["lr_scheduler"]
    if scheduler is not None:
        assert_only_arguments(scheduler, f"experiment={experiment}: module.lr_scheduler")
    assert declared_keys(container["trainer"]) == declared_keys(compose_with().trainer)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_instantiates_its_objects(experiment: str) -> None:
    cfg = compose_with(f"experiment={experiment}")
    sampler = instantiate(cfg.sampler, _convert_="all")
    datamodule = instantiate(cfg.data, corruption=sampler.corruption(), _convert_="all")  # nothing downloaded yet
    model = instantiate(cfg.model, num_entities=5, num_relations=2, _convert_="all")
    module = instantiate(
        cfg.module, model=model, selection=sampler.selection(), optimizer=instantiate(cfg.optimizer), _convert_="all"
    )
    trainer = build_trainer(cfg)
    assert isinstance(module, KGEModule) and isinstance(trainer, L.Trainer)
    assert datamodule.batch_size == cfg.data.batch_size
    configured = module.configure_optimizers()
    if cfg.module.lr_scheduler is None:
        assert isinstance(configured, torch.optim.Optimizer)
        return
    scheduler = configured["lr_scheduler"]["scheduler"]
    assert configured["lr_scheduler"]["interval"] == "step"
    assert isinstance(scheduler, GeometricStepDecay)
    assert scheduler.warm_up_steps == cfg.trainer.max_steps // 2
    assert scheduler.get_last_lr() == [cfg.optimizer.lr]


@pytest.mark.parametrize("experiment", PAPER_EXPERIMENTS)
def test_paper_experiment_overrides_the_default_config(experiment: str) -> None:
    """The experiment comes after config.yaml's own keys, so its schedule and steps win."""
    cfg = compose_with(f"experiment={experiment}")
    assert cfg.module.lr_scheduler is not None
    assert cfg.trainer.max_steps != compose_with().trainer.max_steps
    assert cfg.data.name == experiment.split("_", 1)[1]


def test_shortening_a_run_moves_the_decay_with_it() -> None:
    cfg = compose_with("experiment=rotate_wn18rr", "trainer.max_steps=3000")
    assert cfg.module.lr_scheduler.max_steps == 3000
    factory = instantiate(cfg.module.lr_scheduler)
    rates = scheduled_rates(factory, cfg.optimizer.lr, 3000)
    assert rates == pytest.approx(paper_learning_rates(cfg.optimizer.lr, 3000, 1500), rel=1e-12)
    assert rates[1500] == cfg.optimizer.lr and rates[1501] == pytest.approx(cfg.optimizer.lr / 10)


@pytest.mark.parametrize("max_steps", [0, 1, 2, 3, 7, 10, 41, 200])
def test_schedule_matches_the_paper_loop_with_the_default_warm_up(max_steps: int) -> None:
    def factory(optimizer):
        return GeometricStepDecay(optimizer, max_steps=max_steps)

    expected = paper_learning_rates(0.5, max_steps, max_steps // 2)
    assert scheduled_rates(factory, 0.5, max_steps) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("max_steps", "fraction", "warm_up"), [(100, 0.1, 10), (90, 0.0, 0), (64, 0.25, 16)])
def test_schedule_matches_the_paper_loop_with_several_decays(max_steps: int, fraction: float, warm_up: int) -> None:
    def factory(optimizer):
        return GeometricStepDecay(optimizer, max_steps=max_steps, warm_up_fraction=fraction)

    expected = paper_learning_rates(1e-3, max_steps, warm_up)
    assert len(set(expected)) >= 3  # the thresholds W, 3W (and 9W) all fall inside the run
    assert scheduled_rates(factory, 1e-3, max_steps) == pytest.approx(expected, rel=1e-12)


def test_schedule_resumes_from_its_state_dict() -> None:
    weight = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([weight], lr=1.0)
    scheduler = GeometricStepDecay(optimizer, max_steps=12)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()
    resumed_optimizer = torch.optim.SGD([weight], lr=1.0)
    resumed = GeometricStepDecay(resumed_optimizer, max_steps=12)
    resumed.load_state_dict(state)
    resumed.step()
    scheduler.step()
    assert resumed_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    assert resumed.get_last_lr() == pytest.approx([paper_learning_rates(1.0, 12, 6)[6]])


def test_schedule_rejects_a_negative_warm_up_fraction() -> None:
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    with pytest.raises(ValueError, match="warm_up_fraction"):
        GeometricStepDecay(optimizer, max_steps=10, warm_up_fraction=-0.5)


def test_short_countries_run_through_the_entry_point_reports_auc_pr(countries_tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "lightning_kge.train", "experiment=rotate_countries_s1", *on_fixture(countries_tiny),
         "trainer.max_steps=20", "model.dim=8", "trainer.enable_progress_bar=false", f"hydra.run.dir={out}"],
        cwd=tmp_path, env=offline_environment(), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(metrics["test/auc_pr"]) and 0.0 < metrics["test/auc_pr"] <= 1.0
    ran = OmegaConf.load(out / ".hydra" / "config.yaml")
    assert ran.module.lr_scheduler.max_steps == 20 and ran.sampler.num_negatives == 64
    assert ran.data.regions == "regions.list" and ran.trainer.accelerator == "cpu"


def test_reproduce_runs_a_shortened_prefix_and_tables_it_against_the_paper(
    countries_tiny: Path, tmp_path: Path
) -> None:
    table = tmp_path / "reproduce.md"
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "reproduce.py"), "rotate_countries_s1", "--steps", "20",
         "--out", str(tmp_path / "runs"), "--records", str(tmp_path / "records"), "--table", str(table),
         "model.dim=8", *on_fixture(countries_tiny)],
        cwd=tmp_path, env=offline_environment(), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    folder = tmp_path / "runs" / "rotate_countries_s1"
    ran = OmegaConf.load(folder / ".hydra" / "config.yaml")
    assert ran.trainer.max_steps == 20 and ran.module.lr_scheduler.max_steps == 40000  # a prefix
    assert ran.data.path == str(countries_tiny) and ran.trainer.accelerator == "cpu"  # overrides passed on
    auc_pr = json.loads((folder / "metrics.json").read_text())["test/auc_pr"]
    rows = {line.split("|")[2].strip(): line for line in table.read_text().splitlines()
            if line.startswith("| rotate_countries_s1 |") or line.startswith("| | paper |")}
    assert f"| {auc_pr:.3f} | 20 of 40,000 (shortened) |" in rows["ours"]
    assert "| 1.000 | 40,000 |" in rows["paper"]
    assert table.read_text() in result.stdout


def test_reproduce_report_rebuilds_the_table_from_records_alone(countries_tiny: Path, tmp_path: Path) -> None:
    env = offline_environment()
    script = str(REPO / "benchmarks" / "reproduce.py")
    records, first, second = tmp_path / "records", tmp_path / "first.md", tmp_path / "second.md"
    common = ["--records", str(records), "--out", str(tmp_path / "runs")]
    ran = subprocess.run(
        [sys.executable, script, "rotate_countries_s2", "--steps", "10", *common, "--table", str(first),
         "model.dim=8", "trainer.val_check_interval=5", *on_fixture(countries_tiny)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    record = json.loads((records / "rotate_countries_s2.json").read_text())
    assert str(REPO) not in " ".join(record["command"])  # no machine's paths in a committed record
    assert [row["step"] for row in record["curve"]] == [5.0, 10.0]
    shutil.rmtree(tmp_path / "runs")  # the run folder is gone: the record alone rebuilds the table
    report = subprocess.run(
        [sys.executable, script, "--report", *common, "--table", str(second)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    assert second.read_text() == first.read_text()
    assert "| rotate_countries_s2 | ours |" in second.read_text()
