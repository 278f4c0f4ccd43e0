"""A Lightning citizen: LightningCLI and KGECLI round trips, a client's own Trainer resuming exactly, a
rank-based metric hook, hits_at followed everywhere, thin entry points and the public API (issue 21)."""

from __future__ import annotations

import csv
import functools
import json
import subprocess
import sys
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from torchmetrics import MeanMetric

from lightning_kge.datamodule import KGEDataModule
from lightning_kge.metrics.ranking import Ranks
from lightning_kge.models import RotatE
from lightning_kge.module import KGEModule
from lightning_kge.sampling import SelfAdversarialSampler
from runs import entry

pytest.importorskip("jsonargparse", reason="LightningCLI needs jsonargparse (extra 'cli')")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "lightning_cli"

PLAIN_CLI_CONFIG = {
    "seed_everything": 0,
    "trainer": {"accelerator": "cpu", "max_steps": 8, "enable_progress_bar": False, "enable_model_summary": False,
                "logger": False, "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                                "init_args": {"save_last": True}}]},
    "model": {
        "model": {"class_path": "lightning_kge.models.RotatE",
                  "init_args": {"num_entities": 14, "num_relations": 55, "dim": 8}},
        "selection": {"class_path": "lightning_kge.sampling.selection.Weighting", "init_args": {"temperature": 1.0}},
        "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.01}},
    },
    "data": {"name": "nations", "corruption": {"class_path": "lightning_kge.sampling.corruption.Corruption",
                                                "init_args": {"num_negatives": 8}}},
}
"""What a Lightning user writes for ``LightningCLI(KGEModule, KGEDataModule)``: no lightning_kge wiring."""


def test_plain_lightning_cli_fits_with_a_class_path_optimizer_and_tests_its_checkpoint_alike(tmp_path: Path) -> None:
    from lightning.pytorch.cli import LightningCLI

    config = tmp_path / "user" / "config.yaml"
    config.parent.mkdir()
    config.write_text(yaml.safe_dump({**PLAIN_CLI_CONFIG, "trainer": {**PLAIN_CLI_CONFIG["trainer"],
                                                                      "default_root_dir": str(tmp_path / "fit")}}))
    fitted = LightningCLI(KGEModule, KGEDataModule, args=["fit", "--config", str(config)])
    [own] = fitted.trainer.test(fitted.model, datamodule=fitted.datamodule, verbose=False)
    [last] = list(tmp_path.rglob("last.ckpt"))
    tested = LightningCLI(KGEModule, KGEDataModule, args=["test", "--config", str(config), "--ckpt_path", str(last),
                                                           "--trainer.default_root_dir", str(tmp_path / "test")])
    again = {k: float(v) for k, v in tested.trainer.callback_metrics.items()}
    assert own.keys() <= again.keys() and "test/mrr" in own
    for key in own:
        assert again[key] == pytest.approx(own[key], abs=1e-6), key
    saved = torch.load(last, weights_only=True)["hyper_parameters"]
    assert saved["optimizer"]["class_path"] == "torch.optim.adam.Adam" and saved["optimizer"]["init_args"]["lr"] == 0.01
    validated = LightningCLI(KGEModule, KGEDataModule, args=["validate", "--config", str(config), "--ckpt_path",
                                                              str(last), "--trainer.default_root_dir",
                                                              str(tmp_path / "validate")])
    assert "val/mrr" in validated.trainer.callback_metrics
    resumed = LightningCLI(KGEModule, KGEDataModule, args=["fit", "--config", str(config), "--ckpt_path", str(last),
                                                           "--trainer.max_steps", "12", "--trainer.default_root_dir",
                                                           str(tmp_path / "resume")])
    assert resumed.trainer.global_step == 12


def metrics_of(log_dir: Path) -> dict[str, float]:
    """The last value of each metric in a CSV logger's file."""
    values: dict[str, float] = {}
    with (log_dir / "metrics.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            values.update({k: float(v) for k, v in row.items() if v not in ("", None) and k not in ("epoch", "step")})
    return values


def test_kgecli_example_fits_tests_and_predicts_with_no_counts_in_its_config(tmp_path: Path) -> None:
    config = yaml.safe_load((EXAMPLE / "config.yaml").read_text())
    assert "num_entities" not in json.dumps(config) and "num_relations" not in json.dumps(config)

    def cli(*args: str) -> subprocess.CompletedProcess:
        common = ["--config", str(EXAMPLE / "config.yaml"), "--trainer.max_steps", "12",
                  "--trainer.check_val_every_n_epoch", "1", "--trainer.enable_progress_bar", "false",
                  "--trainer.default_root_dir", str(tmp_path / "runs"),
                  "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir",
                  str(tmp_path / "logs")]
        result = subprocess.run([sys.executable, str(EXAMPLE / "cli.py"), args[0], *common, *args[1:]], cwd=tmp_path,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    cli("fit")
    [last] = list((tmp_path / "logs").rglob("last.ckpt"))
    cli("test", "--ckpt_path", str(last))
    cli("predict", "--ckpt_path", str(last))
    versions = sorted((tmp_path / "logs" / "lightning_logs").iterdir())
    tested = metrics_of(versions[1])
    evaluated = entry("evaluate", f"ckpt={last}", "trainer=cpu", "trainer.enable_progress_bar=false",
                      f"hydra.run.dir={tmp_path / 'eval'}", cwd=tmp_path)  # the checkpoint is a lightning_kge one
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    reported = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert tested["test/mrr"] == pytest.approx(reported["test/mrr"], abs=1e-6)
    rows = (versions[2] / "predictions.tsv").read_text(encoding="utf-8").splitlines()
    header, *answers = [row.split("\t") for row in rows]
    assert header == ["query", "relation", "side", "rank", "answer", "score"]
    entities = set(KGEModule.load_from_checkpoint(last).graph.entities)
    assert answers and all(a[0] in entities and a[4] in entities and a[2] == "tail" for a in answers)
    assert {a[3] for a in answers} == {"1", "2", "3", "4", "5"}  # k: 5 in the example's queries


def module_and_data(seed: int = 0) -> tuple[KGEModule, KGEDataModule]:
    L.seed_everything(seed)
    sampler = SelfAdversarialSampler(num_negatives=8)
    datamodule = KGEDataModule(sampler.corruption(), name="nations", batch_size=512)
    datamodule.setup()
    model = RotatE(datamodule.num_entities, datamodule.num_relations, dim=8)
    module = KGEModule(model=model, selection=sampler.selection(), graph=datamodule.info,
                       optimizer=functools.partial(torch.optim.Adam, lr=0.01))
    return module, datamodule


def client_trainer(root: Path, max_steps: int, **kwargs) -> L.Trainer:
    return L.Trainer(default_root_dir=root, max_steps=max_steps, accelerator="cpu", logger=False,
                     enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, **kwargs)


def test_a_client_trainer_resumes_mid_epoch_exactly_and_without_lightnings_warning(tmp_path: Path) -> None:
    module, datamodule = module_and_data()
    client_trainer(tmp_path / "whole", 6).fit(module, datamodule=datamodule)
    interrupted, datamodule2 = module_and_data()
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1, filename="s{step}")
    client_trainer(tmp_path / "part", 3, callbacks=[saver]).fit(interrupted, datamodule=datamodule2)  # 4 batches/epoch
    [middle] = list((tmp_path / "ckpt").glob("*.ckpt"))
    resumed, datamodule3 = module_and_data()  # the same seed (it chooses batches and negatives), other weights:
    with torch.no_grad():                     # the checkpoint must restore them
        for parameter in resumed.parameters():
            parameter.uniform_(-1, 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client_trainer(tmp_path / "rest", 6).fit(resumed, datamodule=datamodule3, ckpt_path=middle, weights_only=True)
    assert not [w for w in caught if "not resumable" in str(w.message)]
    for (name, a), b in zip(module.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name


class HitsOfOneRelation(KGEModule):
    """A rank-based metric through the hook: Hits@5 of relation 0's tail queries."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.hits5_r0 = MeanMetric()
        self.seen: list[Ranks] = []

    def update_metrics(self, stage: str, ranks: Ranks) -> None:
        super().update_metrics(stage, ranks)
        self.seen.append(ranks)
        chosen = (ranks.relations == 0) & torch.tensor(ranks.side == "tail")
        if chosen.any():
            self.hits5_r0.update((ranks.ranks[chosen] <= 5).float())
        self.log(f"{stage}/r0_tail_hits@5", self.hits5_r0, on_epoch=True, batch_size=int(chosen.sum()) or 1)


def test_a_subclass_adds_a_rank_based_metric_through_one_hook() -> None:
    module, datamodule = module_and_data()
    client = HitsOfOneRelation(model=module.model, graph=module.graph)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    [results] = trainer.test(client, datamodule=datamodule, verbose=False)
    tail_r0 = torch.cat([r.ranks[(r.relations == 0)] for r in client.seen if r.side == "tail"])
    assert len(client.seen) == 2 * len(trainer.test_dataloaders)  # once per side of every batch
    assert results["test/r0_tail_hits@5"] == pytest.approx(float((tail_r0 <= 5).float().mean()), abs=1e-6)
    assert results["test/mrr"] == pytest.approx(float(torch.cat([1 / r.ranks for r in client.seen]).mean()), abs=1e-6)


def test_hits_at_chosen_by_the_user_reach_the_table_and_metrics_json_in_train_and_evaluate(tmp_path: Path) -> None:
    common = ["trainer=cpu", "data=nations", "trainer.max_steps=4", "model.dim=8", "sampler.num_negatives=4",
              "trainer.enable_progress_bar=false", "module.hits_at=[1,5]"]
    result = entry("train", *common, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| side | mrr | mr | hits@1 | hits@5 |" in result.stdout
    reported = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"test/hits@1", "test/hits@5", "test/head/hits@5"} <= reported.keys() and "test/hits@10" not in reported
    header = (tmp_path / "run" / "per_relation.tsv").read_text().splitlines()[0].split("\t")
    assert "head_hits@5" in header and "tail_hits@5" in header
    result = entry("evaluate", f"ckpt={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}", "trainer=cpu",
                   f"hydra.run.dir={tmp_path / 'eval'}", cwd=tmp_path)
    assert result.returncode == 0 and "hits@5 |" in result.stdout, result.stderr[-3000:]
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["test/hits@5"] == pytest.approx(
        reported["test/hits@5"], abs=1e-6)


def test_importing_an_entry_point_runs_no_other_entry_points_set_up() -> None:
    code = ("import sys, lightning_kge.evaluate, lightning_kge.predict, lightning_kge.export, lightning_kge.plot, "
            "lightning_kge.checkpoints; print(sorted(m for m in sys.modules if m == 'lightning_kge.train' "
            "or 'optuna' in m))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_the_public_api_is_importable_from_the_top_level() -> None:
    import lightning_kge
    from lightning_kge import KGECLI, KGEDataModule, KGEModule, RotatE, SelfAdversarialSampler, __version__

    assert KGEModule.__module__ == "lightning_kge.module" and issubclass(KGECLI, L.pytorch.cli.LightningCLI)
    assert RotatE and SelfAdversarialSampler and KGEDataModule and __version__[0].isdigit()
    assert set(lightning_kge.__all__) <= set(dir(lightning_kge))
    for name in lightning_kge.__all__:
        assert getattr(lightning_kge, name) is not None, name


def test_kgecli_checks_a_checkpoints_classes_before_lightningcli_builds_from_them(tmp_path: Path, capsys) -> None:
    from lightning_kge import KGECLI
    from tiny_run import tiny_run

    checkpoint = torch.load(tiny_run(tmp_path) / "checkpoints" / "last.ckpt", weights_only=True)
    marker = tmp_path / "payload-ran"
    checkpoint["hyper_parameters"]["lr_scheduler"] = {"class_path": "subprocess.getoutput",
                                                      "init_args": {"cmd": f"touch {marker}"}}
    torch.save(checkpoint, tmp_path / "evil.ckpt")
    with pytest.raises(SystemExit) as stopped:
        KGECLI(args=["test", "--config", str(EXAMPLE / "config.yaml"), "--ckpt_path", str(tmp_path / "evil.ckpt"),
                     "--trainer.default_root_dir", str(tmp_path / "runs")])
    [line] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert stopped.value.code == 2 and "subprocess.getoutput is not allowed" in line and not marker.exists()
