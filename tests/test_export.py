"""Embedding export: the files round-trip to the checkpoint's tensors, the projector files parse."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from lightning_kge.checkpoints import read_checkpoint, saved_graph
from lightning_kge.errors import UserError
from lightning_kge.export import export
from lightning_kge.configs import config_dir
from tiny_run import tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(tmp_path_factory.getbasetemp())


def export_config(*overrides: str):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="export", overrides=list(overrides))


def labels(path: Path) -> list[str]:
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]
    assert [int(i) for i, _ in rows] == list(range(len(rows)))
    return [label for _, label in rows]


def test_export_round_trips_to_the_checkpoint_tensors(run: Path, tmp_path: Path) -> None:
    ckpt = run / "checkpoints" / "last.ckpt"
    export(export_config(f"ckpt={ckpt}", f"out={tmp_path}"))
    checkpoint = read_checkpoint(ckpt)
    state = checkpoint["state_dict"]
    graph = saved_graph(checkpoint).to_dict()
    entity, relation = state["model.entity.weight"].numpy(), state["model.relation.weight"].numpy()
    np.testing.assert_array_equal(np.load(tmp_path / "entity.npy"), entity)
    np.testing.assert_array_equal(np.load(tmp_path / "relation.npy"), relation)
    dim = checkpoint["hyper_parameters"]["model"]["dim"]
    real, imag = np.load(tmp_path / "entity_real.npy"), np.load(tmp_path / "entity_imag.npy")
    np.testing.assert_array_equal(np.concatenate([real, imag], axis=1), entity)
    assert real.shape == (len(graph["entities"]), dim)
    gamma = checkpoint["hyper_parameters"]["model"]["gamma"]
    phase = np.load(tmp_path / "relation_phase.npy")  # stored as θ · range / π, range = (γ + 2) / dim
    np.testing.assert_allclose(phase * ((gamma + 2) / dim) / math.pi, relation, rtol=1e-6)
    assert labels(tmp_path / "entities.tsv") == graph["entities"]
    assert labels(tmp_path / "relations.tsv") == graph["relations"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["files"]["entity_real.npy"]["shape"] == list(real.shape)
    assert manifest["graph"]["fingerprint"] == graph["fingerprint"]
    with pytest.raises(UserError, match="exist already"):
        export(export_config(f"ckpt={ckpt}", f"out={tmp_path}"))


def test_projector_files_parse_and_hold_the_entity_table(run: Path, tmp_path: Path) -> None:
    projector_pb2 = pytest.importorskip("tensorboard.plugins.projector.projector_config_pb2",
                                        reason="tensorboard (extra 'tensorboard') parses the projector config")
    from google.protobuf import text_format

    ckpt = run / "checkpoints" / "last.ckpt"
    export(export_config(f"ckpt={ckpt}", f"out={tmp_path}", "projector=true"))
    folder = tmp_path / "projector"
    config = text_format.Parse((folder / "projector_config.pbtxt").read_text(), projector_pb2.ProjectorConfig())
    [embedding] = config.embeddings
    vectors = np.loadtxt(folder / embedding.tensor_path, delimiter="\t", dtype=np.float32)
    entity = read_checkpoint(ckpt)["state_dict"]["model.entity.weight"]
    assert torch.equal(torch.from_numpy(vectors), entity)
    metadata = (folder / embedding.metadata_path).read_text(encoding="utf-8").splitlines()
    assert metadata == list(saved_graph(read_checkpoint(ckpt)).entities)
