"""A checkpoint is data, never code: pickles are refused, specs resolve against an allow-list, other classes
load only where trusted, and every loader rebuilds the class that saved the module (issues 20 and 21)."""

from __future__ import annotations

import functools
import json
import os
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch

from lightning_kge.checkpoints import load_datamodule, saved_graph
from lightning_kge.data.info import GraphInfo
from lightning_kge.errors import UserError
from lightning_kge.models import RotatE
from lightning_kge.module import KGEModule
from lightning_kge.serialization import UnresolvableError, UntrustedError, from_spec, resolve, trusting
from runs import entry, one_line_error
from tiny_run import tiny_run

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated", "ignore:.*does not have many workers")

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(tmp_path_factory.getbasetemp())


class Payload:
    """Unpickling it runs a shell command that leaves a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def payload_checkpoints(run: Path, folder: Path) -> dict[str, tuple[Path, Path]]:
    """Checkpoints that would run code if loaded as pickles or built from their specs: name -> (file, marker)."""
    folder.mkdir(parents=True, exist_ok=True)
    source = run / "checkpoints" / "last.ckpt"
    made = {}
    pickled = torch.load(source, weights_only=True)
    marker = folder / "pickle-ran"
    pickled["callbacks"]["payload"] = Payload(marker)
    torch.save(pickled, folder / "pickle.ckpt")
    made["pickle"] = (folder / "pickle.ckpt", marker)
    for key, spec_of in (("target", lambda m: {"_target_": "subprocess.getoutput", "cmd": f"touch {m}"}),
                         ("class_path", lambda m: {"class_path": "subprocess.getoutput", "init_args": {"cmd": f"touch {m}"}})):
        checkpoint = torch.load(source, weights_only=True)
        marker = folder / f"{key}-ran"
        checkpoint["hyper_parameters"]["lr_scheduler"] = spec_of(marker)
        torch.save(checkpoint, folder / f"{key}.ckpt")
        made[key] = (folder / f"{key}.ckpt", marker)
    return made


def test_payload_checkpoints_never_run_in_any_entry_point_and_stop_with_one_line(run: Path, tmp_path: Path) -> None:
    made = payload_checkpoints(run, tmp_path / "evil")
    graph = tmp_path / "graph"
    shutil.copytree(TESTS / "data" / "tiny_kg", graph)
    commands = {
        "evaluate": ["trainer=cpu", f"hydra.run.dir={tmp_path / 'eval'}"],
        "predict": ["head=ada", "relation=knows"],
        "export": [f"out={tmp_path / 'export'}"],
        "plot": [f"out={tmp_path / 'plots'}"],
    }
    for name in ("pickle", "target"):  # the class_path form is refused the same way (load_from_checkpoint test)
        path, marker = made[name]
        for command, args in commands.items():
            line = one_line_error(entry(command, f"ckpt={path}", *args, cwd=tmp_path))
            assert not marker.exists(), (name, command)
            assert str(path) in line, line
            assert ("pickled objects" in line) if name == "pickle" else ("subprocess.getoutput" in line and "trust=" in line)
    # Resuming training reads the file too: refused before anything is built.
    path, marker = made["pickle"]
    result = entry("train", "data=tsv", f"data.path={graph}", "trainer=cpu", f"ckpt_path={path}",
                   f"hydra.run.dir={tmp_path / 'resume'}", cwd=tmp_path)
    assert "pickled objects" in one_line_error(result) and not marker.exists()


def test_payload_checkpoints_are_refused_by_load_from_checkpoint(run: Path, tmp_path: Path) -> None:
    for name, (path, marker) in payload_checkpoints(run, tmp_path).items():
        with pytest.raises(UserError) as error:
            KGEModule.load_from_checkpoint(path)
        assert "\n" not in str(error.value) and not marker.exists(), name


def test_a_lightning_instantiator_other_than_lightnings_own_is_refused(run: Path, tmp_path: Path) -> None:
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["model"] = {"class_path": "builtins.eval", "init_args": {}}
    torch.save(checkpoint, tmp_path / "x.ckpt")
    with pytest.raises(UntrustedError, match="builtins.eval"):
        KGEModule.load_from_checkpoint(tmp_path / "x.ckpt")


def test_the_allow_list_takes_package_classes_and_torch_optimizers_only() -> None:
    assert resolve("lightning_kge.models.rotate.RotatE") is RotatE
    assert resolve("torch.optim.adam.Adam") is torch.optim.Adam
    assert resolve("torch.optim.lr_scheduler.StepLR") is torch.optim.lr_scheduler.StepLR
    for refused in ("os.system", "torch.load", "torch.optim.adam.adam",  # a function, not a class
                    "lightning_kge.data.download.fetch_dataset", "lightning_kge.models.base.math"):
        with pytest.raises(UntrustedError):
            resolve(refused)
    with pytest.raises(UnresolvableError, match="lightning_kge.models.nowhere.Model"):
        resolve("lightning_kge.models.nowhere.Model")
    with trusting(["client_models"]):
        assert from_spec({"_target_": "client_models.halve", "_partial_": True, "lr": 0.2}).keywords == {"lr": 0.2}


def client_checkpoint(tmp_path: Path, module_class: str = "Margin", steps: int = 2,
                      **extra) -> tuple[Path, KGEModule, L.LightningDataModule]:
    """A checkpoint of a client subclass trained for ``steps`` steps on the tiny graph."""
    import client_models
    from lightning_kge.datamodule import KGEDataModule
    from lightning_kge.sampling import SelfAdversarialSampler

    sampler = SelfAdversarialSampler(num_negatives=4)
    datamodule = KGEDataModule(sampler.corruption(), path=str(TESTS / "data" / "tiny_kg"), batch_size=25)
    datamodule.setup()
    model = extra.pop("model", None) or RotatE(datamodule.num_entities, datamodule.num_relations, dim=8)
    module = getattr(client_models, module_class)(model=model, selection=sampler.selection(), graph=datamodule.info,
                                                  optimizer=functools.partial(torch.optim.Adam, lr=0.05), **extra)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, datamodule=datamodule)
    path = tmp_path / f"{module_class}.ckpt"
    trainer.save_checkpoint(path)
    return path, module, datamodule


def test_a_subclass_checkpoint_loads_as_its_class_only_where_its_module_is_trusted(tmp_path: Path) -> None:
    from client_models import Margin, ScaledTransE

    model = ScaledTransE(10, 3, dim=4, scale=3.0)
    path, module, _ = client_checkpoint(tmp_path, "Margin", margin=2.5, model=model)
    with pytest.raises(UntrustedError) as error:
        KGEModule.load_from_checkpoint(path)
    assert "client_models.Margin" in str(error.value) and "trust=[client_models]" in str(error.value)
    loaded = KGEModule.load_from_checkpoint(path, trust=["client_models"])
    assert type(loaded) is Margin and loaded.margin == 2.5 and type(loaded.model) is ScaledTransE
    assert loaded.model.scale == 3.0 and loaded.graph == module.graph
    # Naming the subclass yourself trusts it, not the other classes the checkpoint names.
    with pytest.raises(UntrustedError, match="client_models.ScaledTransE"):
        Margin.load_from_checkpoint(path)


def test_evaluate_rebuilds_a_subclass_and_uses_its_override(tmp_path: Path) -> None:
    path, module, datamodule = client_checkpoint(tmp_path, "WorstFirst", steps=20)
    refused = entry("evaluate", f"ckpt={path}", "trainer=cpu", f"hydra.run.dir={tmp_path / 'no'}", cwd=tmp_path,
                    path=(TESTS,))
    assert "client_models.WorstFirst" in one_line_error(refused)
    result = entry("evaluate", f"ckpt={path}", "trainer=cpu", "trust=[client_models]",
                   f"hydra.run.dir={tmp_path / 'eval'}", cwd=tmp_path, path=(TESTS,))
    assert result.returncode == 0, result.stderr[-3000:]
    reported = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    [worst] = trainer.test(module, datamodule=datamodule, verbose=False)
    plain = KGEModule(model=module.model, graph=module.graph)
    [best] = trainer.test(plain, datamodule=datamodule, verbose=False)
    assert reported["test/mrr"] == pytest.approx(worst["test/mrr"], abs=1e-6)
    assert abs(worst["test/mrr"] - best["test/mrr"]) > 1e-3  # what evaluate reported is the override's ranking


def test_a_class_defined_in_main_is_refused_when_saving_with_one_line(tmp_path: Path) -> None:
    class Script(RotatE):
        pass

    Script.__module__, Script.__qualname__ = "__main__", "Script"
    module = KGEModule(model=Script(10, 3, dim=4))
    with pytest.raises(UserError) as error:
        module.on_save_checkpoint({})
    message = str(error.value)
    assert "__main__.Script" in message and "importable module" in message and "\n" not in message


def test_a_checkpoint_naming_a_class_that_cannot_be_imported_gives_one_line(run: Path, tmp_path: Path) -> None:
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["model"]["_target_"] = "gone_project.models.Gone"
    torch.save(checkpoint, tmp_path / "gone.ckpt")
    line = one_line_error(entry("predict", f"ckpt={tmp_path / 'gone.ckpt'}", "trust=[gone_project]", "head=ada",
                                "relation=knows", cwd=tmp_path))
    assert "cannot import gone_project.models.Gone" in line
    checkpoint["lightning_kge"]["module_class"] = "__main__.Mine"
    torch.save(checkpoint, tmp_path / "main.ckpt")
    line = one_line_error(entry("predict", f"ckpt={tmp_path / 'main.ckpt'}", "trust=[__main__]", "head=ada",
                                "relation=knows", cwd=tmp_path))
    assert "__main__.Mine" in line and "importable module" in line


def test_a_checkpoint_trained_on_a_relative_path_evaluates_from_another_folder(tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(TESTS / "data" / "tiny_kg", project / "data" / "tiny")
    result = entry("train", "data=tsv", "data.path=data/tiny", "trainer=cpu", "trainer.max_steps=4",
                   "model.dim=8", "sampler.num_negatives=4", "trainer.enable_progress_bar=false",
                   f"hydra.run.dir={project / 'run'}", cwd=project)
    assert result.returncode == 0, result.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = entry("evaluate", f"ckpt={project / 'run' / 'checkpoints' / 'last.ckpt'}", "trainer=cpu",
                   f"hydra.run.dir={elsewhere / 'eval'}", cwd=elsewhere)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((elsewhere / "eval" / "metrics.json").read_text()) == pytest.approx(
        json.loads((project / "run" / "metrics.json").read_text()), abs=1e-6)


def test_a_checkpoint_of_100k_labels_keeps_them_once_out_of_the_hyperparameters(tmp_path: Path) -> None:
    labels = tuple(f"Q{i}${{x}}" for i in range(100_000))
    info = GraphInfo(labels, ("P31", "${oc.env:HOME}"), (0, 3), fingerprint="f" * 64, source="big")
    module = KGEModule(model=RotatE(len(labels), 2, dim=2), graph=info)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, max_steps=0)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "big.ckpt")
    checkpoint = torch.load(tmp_path / "big.ckpt", weights_only=True)
    assert "Q7${x}" not in json.dumps(checkpoint["hyper_parameters"], default=str)
    assert saved_graph(checkpoint) == info
    assert KGEModule.load_from_checkpoint(tmp_path / "big.ckpt").graph == info
    assert "Q7${x}" not in json.dumps(module.loggable_hparams(), default=str)


LABELS = {"usa": "${oc.env:HOME}", "uk": "???", "china": "a${b", "cuba": "#x", "india": "NULL",
          "embassy": "\\${x}", "treaties": "${nope}"}
"""nations labels renamed to text that OmegaConf would interpolate or Hydra's grammar reads specially."""


def test_labels_that_look_like_interpolations_train_and_come_back_identical(tmp_path: Path) -> None:
    from lightning_kge.data.datasets import resolve_dataset
    from lightning_kge.export import export_embeddings

    folder = tmp_path / "graph"
    folder.mkdir()
    for split in ("train", "valid", "test"):
        lines = (resolve_dataset("nations") / f"{split}.txt").read_text(encoding="utf-8").splitlines()
        text = "\n".join("\t".join(LABELS.get(c, c) for c in line.split("\t")) for line in lines) + "\n"
        (folder / f"{split}.txt").write_text(text, encoding="utf-8")
    result = entry("train", "data=tsv", f"data.path={folder}", "trainer=cpu", "trainer.max_steps=4", "model.dim=8",
                   "sampler.num_negatives=4", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1",
                   f"hydra.run.dir={tmp_path / 'run'}",
                   cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    module = KGEModule.load_from_checkpoint(ckpt)
    for label in LABELS.values():
        assert label in module.graph.entities or label in module.graph.relations, label
    datamodule = load_datamodule(ckpt, module)
    assert datamodule.info.entities == module.graph.entities
    answers = module.predict_tails("${oc.env:HOME}", "\\${x}", k=3)
    assert len(answers) == 3 and all(a.label in module.graph.entities for a in answers)
    written = export_embeddings(module, tmp_path / "export")
    rows = (tmp_path / "export" / "entities.tsv").read_text(encoding="utf-8").splitlines()
    assert [row.split("\t", 1)[1] for row in rows] == list(module.graph.entities) and written
    result = entry("plot", f"ckpt={ckpt}", f"out={tmp_path / 'plots'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "${oc.env:HOME}" not in (tmp_path / "run" / "csv" / "hparams.yaml").read_text(encoding="utf-8")
