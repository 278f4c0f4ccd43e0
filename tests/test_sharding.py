"""strategy=torchrec: entity tables sharded across processes (TorchRec + FBGEMM), checked against one process.

The 2-process checks run in few launches (each costs mostly imports): ``tests/sharding_probe.py`` once (every
model and sampler, two fused optimizers against a brute-force reference, a schedule, the shard of a large
table), and the entry points: one run, one run killed by SIGTERM and resumed, a resume on one process and a
1-process ``evaluate``. Tests needing TorchRec skip, naming the install command, where it is absent
(``.ci/run`` installs it).
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_kge.batches import NegativeBatch
from lightning_kge.errors import UserError
from lightning_kge.metrics.ranking import TIES, filtered_ranks
from lightning_kge.sharding import folders
from lightning_kge.sharding.checkpoint import METADATA, REST, read_metadata
from lightning_kge.sharding.packages import PACKAGE_SETS, install_command
from lightning_kge.sharding.ranking import own_counts, ranks_from_counts
from runs import REPO, entry, one_line_error

try:
    import fbgemm_gpu  # noqa: F401
    import torchrec  # noqa: F401

    MISSING = None
except (ImportError, OSError):
    MISSING = f"TorchRec/FBGEMM are not installed: {install_command()}"
needs_torchrec = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated", "ignore:.*does not have many workers",
                                        "ignore:.*smaller than the logging interval")

TRAIN = ["data=nations", "trainer=ddp_cpu", "trainer.devices=2", "strategy=torchrec", "model.dim=32",
         "model.distance_backend=reference", "sampler.num_negatives=16", "data.batch_size=256", "trainer.max_steps=48",
         "trainer.check_val_every_n_epoch=2", "trainer.log_every_n_steps=1", "callbacks.checkpoint.every_n_steps=16",
         "callbacks.checkpoint.keep=null", "trainer.strategy.table_lr=0.3", "optimizer.lr=0.05",
         "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
"""Nations on 2 processes: 796 positives per process, 4 batches per epoch, validation every 8 steps."""
MRR_FLOOR = 0.48
"""Test MRR the 48-step run must reach: it reached 0.516; after one step the model scores 0.425 (nations has
14 entities, so even a poor ranking scores high); 2-process DDP with Adam reaches 0.57 in 96 steps."""


# --- without TorchRec -------------------------------------------------------------------------------------
def test_strategy_torchrec_without_the_packages_is_one_line_naming_the_install_command(tmp_path: Path) -> None:
    hidden = tmp_path / "hide"
    for name in ("torchrec", "fbgemm_gpu"):  # shadow the installed packages: importing them fails as if absent
        (hidden / name).mkdir(parents=True)
        message = f"No module named {name!r}"
        (hidden / name / "__init__.py").write_text(f"raise ModuleNotFoundError({message!r})\n")
    line = one_line_error(entry("train", *TRAIN, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, path=(hidden,)))
    assert "strategy=torchrec needs the package fbgemm_gpu, which is not installed" in line
    assert "bash scripts/install-torchrec.sh" in line and "--no-deps" in line


def test_the_install_script_installs_the_sets_of_the_python_table() -> None:
    script = (REPO / "scripts" / "install-torchrec.sh").read_text()
    found = {}
    for minor, build, fbgemm, torchrec_pin in re.findall(
            r'^\s*(\d+\.\d+)/(cpu|\*)\)\s+FBGEMM="([^"]+)";\s+TORCHREC="([^"]+)"', script, flags=re.M):
        found[(minor, "cpu" if build == "cpu" else "cuda")] = (fbgemm, torchrec_pin)
    assert found == PACKAGE_SETS
    assert "--no-deps" in script and "tensordict tqdm pyre-extensions" in script


def test_ranks_summed_over_row_blocks_equal_filtered_ranks_on_the_whole_table() -> None:
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (40, 23), generator=generator).float()  # many ties
    scores[3, :] = float("nan")  # a NaN target row
    scores[7, 4] = float("nan")
    targets = torch.randint(0, 23, (40,), generator=generator)
    targets[3] = 4
    rows = torch.randint(0, 40, (60,), generator=generator)
    cols = torch.randint(0, 23, (60,), generator=generator)
    rows, cols = torch.cat([rows, torch.arange(5)]), torch.cat([cols, targets[:5]])  # the target in its own filter
    target_scores = scores[torch.arange(40), targets]
    for ties in TIES:
        for filtered in (True, False):
            counts = torch.zeros(40, 2, dtype=torch.float64)
            for start, stop in ((0, 9), (9, 10), (10, 10), (10, 23)):  # uneven blocks, one empty
                keep = (cols >= start) & (cols < stop) & (cols != targets[rows]) if filtered else None
                counts += own_counts(scores[:, start:stop], target_scores, rows[keep] if filtered else None,
                                     cols[keep] - start if filtered else None)
            ranks = ranks_from_counts(counts, target_scores.isnan(), ties)
            expected = filtered_ranks(scores, targets, rows if filtered else None, cols if filtered else None, ties)
            assert torch.equal(ranks, expected), (ties, filtered)


def test_a_folder_is_published_by_a_link_renamed_over_the_old_one_and_unnamed_folders_are_collected(
        tmp_path: Path) -> None:
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    for step in (1, 2):
        scratch = checkpoints / ".last.ckpt.tmp"
        scratch.mkdir()
        (scratch / REST).write_text(f"step {step}")
        folders.publish(scratch, checkpoints / "step{}.ckpt".format(step))
        folders.link(checkpoints / f"step{step}.ckpt", checkpoints / "last.ckpt")
        if step == 1:
            folders.link(checkpoints / "last.ckpt", checkpoints / "best.ckpt")
    assert (checkpoints / "last.ckpt" / REST).read_text() == "step 2"
    assert (checkpoints / "best.ckpt" / REST).read_text() == "step 1"
    assert all((checkpoints / n).is_symlink() for n in ("last.ckpt", "best.ckpt", "step1.ckpt", "step2.ckpt"))
    (checkpoints / "step1.ckpt").unlink()
    (checkpoints / "best.ckpt").unlink()
    folders.collect(checkpoints)
    assert len(list((checkpoints / folders.STORE).iterdir())) == 1  # only step 2's folder is named
    assert not (checkpoints / ".last.ckpt.tmp").exists() and not list(checkpoints.glob(".*.link"))


def sharded_folder_with_metadata(folder: Path, payload: bytes) -> Path:
    folder.mkdir()
    torch.save({"state_dict": {}, "global_step": 0}, folder / REST)
    (folder / METADATA).write_bytes(payload)
    return folder


class SystemCall:
    """A pickle that would run a shell command when loaded."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (self.command,))


def test_a_sharded_checkpoint_whose_metadata_would_run_code_is_refused_without_running_it(tmp_path: Path) -> None:
    from lightning_kge.loading import read_checkpoint

    marker = tmp_path / "ran"
    folder = sharded_folder_with_metadata(tmp_path / "last.ckpt", pickle.dumps(SystemCall(f"touch {marker}")))
    with pytest.raises(UserError) as error:
        read_checkpoint(folder)
    assert not marker.exists()
    assert "system" in str(error.value) and "refused without running anything" in str(error.value)
    assert "\n" not in str(error.value)
    result = entry("evaluate", f"ckpt={folder}", cwd=tmp_path)  # the entry point: one line, nothing run
    assert "refused without running anything" in one_line_error(result) and not marker.exists()


@needs_torchrec
def test_sharded_metadata_pointing_outside_its_folder_is_refused(tmp_path: Path) -> None:
    from torch.distributed.checkpoint.filesystem import _StorageInfo
    from torch.distributed.checkpoint.metadata import Metadata, MetadataIndex

    metadata = Metadata(state_dict_metadata={}, storage_data={MetadataIndex("x"): _StorageInfo("../../secret", 0, 8)})
    folder = sharded_folder_with_metadata(tmp_path / "last.ckpt", pickle.dumps(metadata))
    with pytest.raises(UserError, match="points outside its folder"):
        read_metadata(folder)


@needs_torchrec
def test_adam_on_cpu_and_a_table_width_fbgemm_cannot_take_are_refused_with_one_line(tmp_path: Path) -> None:
    from lightning_kge.sharding.optimizers import fused_params

    with pytest.raises(UserError, match="runs on CUDA only") as error:
        fused_params("adam", 0.01, 1e-8, (0.9, 0.999), "cpu")
    assert "exact_rowwise_adagrad" in str(error.value)
    line = one_line_error(entry("train", *TRAIN, "model.dim=3", "trainer.devices=1", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path))
    assert "multiple of 4 reals" in line and "model.dim to a multiple of 2" in line


@needs_torchrec
@pytest.mark.parametrize(("setting", "key"), [
    ({"gradient_clip_val": 1.0}, "trainer.gradient_clip_val"),
    ({"accumulate_grad_batches": 2}, "trainer.accumulate_grad_batches"),
    ({"regularization": 0.1}, "module.regularization"),
    ({"compile_step": "default"}, "module.compile_step"),
    ({"optimizer": "sparse"}, "optimizer"),
    ({"selection": "cached"}, "sampler"),
])
def test_what_a_fused_sharded_table_cannot_follow_is_refused_with_one_line(setting: dict, key: str) -> None:
    from types import SimpleNamespace

    from lightning.pytorch.trainer.states import TrainerFn

    from lightning_kge.models import RotatE
    from lightning_kge.module import KGEModule
    from lightning_kge.sampling.options import CachedSampler
    from lightning_kge.sharding.strategy import TorchRecStrategy

    class SparseOptimizer(torch.optim.SGD):
        sparse_gradients = True

    arguments = {k: v for k, v in setting.items() if k in ("regularization", "compile_step")}
    if "optimizer" in setting:
        arguments["optimizer"] = functools.partial(SparseOptimizer, lr=0.1)
    if "selection" in setting:
        arguments["selection"] = CachedSampler(num_negatives=2).selection()
    module = KGEModule(RotatE(num_entities=5, num_relations=2, dim=2), **arguments)
    trainer = SimpleNamespace(gradient_clip_val=setting.get("gradient_clip_val"),
                              accumulate_grad_batches=setting.get("accumulate_grad_batches", 1),
                              state=SimpleNamespace(fn=TrainerFn.FITTING))
    strategy = TorchRecStrategy()
    strategy._lightning_module = module
    with pytest.raises(UserError) as error:
        strategy.refuse_unsupported(trainer)
    assert f"config key {key}" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(UserError, match="predict from the checkpoint on one process"):
        strategy.predict_step(None, 0)


def test_the_strategy_yaml_values_are_the_class_defaults() -> None:
    import inspect

    from omegaconf import OmegaConf

    from lightning_kge.configs import config_dir
    from lightning_kge.sharding.strategy import TorchRecStrategy

    node = OmegaConf.to_container(OmegaConf.load(config_dir() / "strategy" / "torchrec.yaml"))["strategy"]
    parameters = inspect.signature(TorchRecStrategy.__init__).parameters
    assert set(node) - {"_target_"} == set(parameters) - {"self"}
    for key, value in node.items():
        if key != "_target_":
            default = parameters[key].default
            assert value == (list(default) if isinstance(default, tuple) else default), key


# --- 2 processes: the probe -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> Path:
    if MISSING:
        pytest.skip(MISSING)
    out = tmp_path_factory.mktemp("sharding_probe")
    result = subprocess.run([sys.executable, str(Path(__file__).with_name("sharding_probe.py")), str(out)],
                            cwd=out, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-6000:]
    return out


def records(probe: Path, case: str) -> list[dict]:
    return [torch.load(probe / case / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


def whole(parts: list[tuple[int, torch.Tensor]]) -> torch.Tensor:
    return torch.cat([rows for _, rows in sorted(parts, key=lambda p: p[0])])


@pytest.mark.parametrize("case", ["sgd", "rowwise_adagrad"])
def test_two_processes_train_as_one_process_averaging_their_gradients(probe: Path, case: str) -> None:
    """The sharded table's rows, the relations (DDP, Adam), the losses: a brute-force single-process reference
    with the gradient of the mean of the two processes' losses, the same fused update (``sgd``: with the
    configured schedule scaling the table's learning rate too)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from sharding_probe import ADAM_LR, CASES, STEPS

    from lightning_kge.module import KGEModule

    spec, ranks = CASES[case], records(probe, case)
    assert [r["before"][1].shape[0] for r in ranks] == [7, 7]  # nations' 14 entities, 7 rows each
    model = spec["model"](num_entities=14, num_relations=55)
    module = KGEModule(model=model, selection=spec["sampler"].selection())
    with torch.no_grad():
        model.entity.weight.copy_(whole([r["before"] for r in ranks]))
        for name, value in ranks[0]["params_before"].items():
            module.get_parameter(name).copy_(value)
    dense = [p for n, p in module.named_parameters() if n != "model.entity.weight"]
    adam = torch.optim.Adam(dense, lr=ADAM_LR)
    schedule = spec["schedule"](adam) if spec["schedule"] else None
    accumulator = torch.zeros(14, 1)
    for step in range(STEPS):
        table_lr = spec["table_lr"] * adam.param_groups[0]["lr"] / ADAM_LR
        losses = [module.batch_loss(NegativeBatch(**r["batches"][step])) for r in ranks]
        for loss, r in zip(losses, ranks):
            assert loss.item() == pytest.approx(r["losses"][step], abs=1e-6)
        adam.zero_grad()
        model.entity.weight.grad = None
        (sum(losses) / len(losses)).backward()
        grad = model.entity.weight.grad
        with torch.no_grad():
            if spec["table_optimizer"] == "exact_sgd":
                model.entity.weight -= table_lr * grad
            else:
                accumulator += grad.square().mean(dim=1, keepdim=True)
                model.entity.weight -= table_lr * grad / (accumulator.sqrt() + 1e-8)
        adam.step()
        if schedule is not None:
            schedule.step()
    if schedule is not None:
        assert adam.param_groups[0]["lr"] < ADAM_LR  # the schedule did change the rates
    torch.testing.assert_close(whole([r["after"] for r in ranks]), model.entity.weight.detach(), atol=1e-6, rtol=0)
    for name, value in ranks[0]["params_after"].items():
        torch.testing.assert_close(value, module.get_parameter(name).detach(), atol=1e-6, rtol=0)
        torch.testing.assert_close(ranks[1]["params_after"][name], value, atol=0, rtol=0)  # DDP kept them equal


@pytest.mark.parametrize("case", ["sgd", "rowwise_adagrad", "transe", "distmult", "complex", "protate"])
def test_every_table_model_trains_sharded_and_its_two_process_test_equals_one_process(probe: Path, case: str) -> None:
    """Every model, each with another sampler; the 2-process test ranked each process's own rows; the sharded
    checkpoint (written by 2 processes) read on one process holds their rows and gives the same metrics."""
    import lightning as L

    from lightning_kge.checkpoints import load_datamodule, load_module
    from lightning_kge.loading import read_checkpoint

    ranks = records(probe, case)
    assert all(len(r["losses"]) == 4 and all(map(torch.isfinite, map(torch.tensor, r["losses"]))) for r in ranks)
    assert not torch.equal(whole([r["before"] for r in ranks]), whole([r["after"] for r in ranks]))
    checkpoint = probe / case / "final.ckpt"
    assert torch.equal(read_checkpoint(checkpoint)["state_dict"]["model.entity.weight"],
                       whole([r["after"] for r in ranks]))
    module = load_module(checkpoint)
    datamodule = load_datamodule(checkpoint, module)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    [single] = trainer.test(module, datamodule=datamodule, verbose=False)
    assert ranks[0]["test"] == ranks[1]["test"]
    assert single.keys() == ranks[0]["test"].keys()
    for key, value in single.items():
        assert value == pytest.approx(ranks[0]["test"][key], abs=1e-6), key


@pytest.mark.parametrize("case", ["sgd", "protate"])
def test_export_and_predict_of_a_sharded_checkpoint_on_one_process_give_its_rows_and_answers(
        probe: Path, case: str, tmp_path: Path) -> None:
    import numpy as np
    from omegaconf import OmegaConf

    from lightning_kge.checkpoints import load_module
    from lightning_kge.export import export
    from lightning_kge.predict import predict

    ranks = records(probe, case)
    checkpoint = str(probe / case / "final.ckpt")
    export(OmegaConf.create({"ckpt": checkpoint, "trust": [], "out": str(tmp_path / "export"), "projector": False,
                             "overwrite": False}))
    assert np.array_equal(np.load(tmp_path / "export" / "entity.npy"), whole([r["after"] for r in ranks]).numpy())
    module = load_module(checkpoint)
    head, relation = module.graph.entities[0], module.graph.relations[0]
    rows = predict(OmegaConf.create({"ckpt": checkpoint, "trust": [], "device": "cpu", "data": None, "head": head,
                                     "relation": relation, "tail": None, "triples": None, "k": 14, "filter": "none"}))
    scores = module.model.score_t(torch.tensor([0]), torch.tensor([0]))[0]
    assert [row["tail"] for row in rows] == [module.graph.entities[i] for i in scores.argsort(descending=True)]


def test_the_divergence_guard_stops_every_process_of_a_sharded_run(probe: Path) -> None:
    outcomes = [torch.load(probe / "divergence" / f"rank{r}.pt") for r in (0, 1)]
    for outcome in outcomes:
        assert outcome["outcome"].startswith("training diverged: the training loss was not finite"), outcome
    assert outcomes[0]["step"] == outcomes[1]["step"] < 4


def test_each_process_holds_only_its_rows_and_the_memory_they_take(probe: Path) -> None:
    memory = [torch.load(probe / "memory" / f"rank{r}.pt") for r in (0, 1)]
    assert [(m["offset"], m["shape"]) for m in memory] == [(0, (200_000, 64)), (200_000, (200_000, 64))]
    for m in memory:  # its half (48.8 MiB) and the optimizer's per-row state; a replica alone would be 97.7 MiB
        assert m["growth"] < 0.75 * m["table_bytes"], m


# --- 2 processes: the entry points -------------------------------------------------------------------------
def metrics(folder: Path) -> dict[str, float]:
    return json.loads((folder / "metrics.json").read_text())


def assert_same_metrics(a: dict[str, float], b: dict[str, float]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=1e-6), key


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The uninterrupted 2-process run (24 steps, checkpoints every 8)."""
    if MISSING:
        pytest.skip(MISSING)
    out = tmp_path_factory.mktemp("torchrec") / "run"
    result = entry("train", *TRAIN, f"hydra.run.dir={out}", cwd=out.parent)
    assert result.returncode == 0, result.stderr[-6000:]
    return out


def test_two_process_run_trains_nations_writes_one_report_and_evaluates_identically_on_one_process(
        trained: Path, tmp_path: Path) -> None:
    assert sorted(p.name for p in trained.parent.iterdir()) == ["run"], "a rank made its own run dir"
    found = metrics(trained)
    assert found["test/mrr"] > MRR_FLOOR
    last = trained / "checkpoints" / "last.ckpt"
    assert last.is_symlink() and (last / REST).is_file() and (last / METADATA).is_file()
    assert sorted(p.name for p in (last).glob("__*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert json.loads((trained / "test_weights.json").read_text())["checkpoint"] == str(last)
    single = tmp_path / "evaluate"
    result = entry("evaluate", f"ckpt={last}", f"hydra.run.dir={single}", "trainer.enable_progress_bar=false",
                   cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert_same_metrics(found, metrics(single))


def test_a_killed_run_resumed_from_its_sharded_checkpoint_ends_as_the_uninterrupted_run(
        trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    killed = entry("train", *TRAIN, "+callbacks.fault._target_=faults.SignalAt", "+callbacks.fault.step=24",
                   "+callbacks.fault.signal=SIGTERM", f"hydra.run.dir={out}", cwd=tmp_path, faults=True)
    assert killed.returncode == 143, killed.stderr[-4000:]
    last = out / "checkpoints" / "last.ckpt"
    assert torch.load(last / REST, weights_only=True)["global_step"] == 24 and not (out / "metrics.json").exists()
    resumed = entry("train", *TRAIN, f"ckpt_path={last}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert_same_metrics(metrics(trained), metrics(out))
    from lightning_kge.loading import read_checkpoint

    a, b = (read_checkpoint(d / "checkpoints" / "last.ckpt")["state_dict"] for d in (trained, out))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_a_two_process_checkpoint_resumes_on_one_process_and_tests_its_best_weights(trained: Path, tmp_path: Path) -> None:
    """Another number of processes: the finished 2-process run resumed by 1 process (nothing left to train)
    loads its rows into one shard; with test_weights=best it tests best.ckpt (a folder) through the sharded
    strategy, with the metrics of a plain 1-process evaluation of that checkpoint."""
    import lightning as L

    from lightning_kge.checkpoints import load_datamodule, load_module

    run = tmp_path / "run"
    shutil.copytree(trained, run, symlinks=True)
    (run / "metrics.json").unlink()
    result = entry("train", *TRAIN, "trainer.devices=1", "test_weights=best",
                   f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    best = run / "checkpoints" / "best.ckpt"
    assert json.loads((run / "test_weights.json").read_text())["checkpoint"] == str(best)
    module = load_module(best)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    [single] = trainer.test(module, datamodule=load_datamodule(best, module), verbose=False)
    assert_same_metrics(single, metrics(run))
