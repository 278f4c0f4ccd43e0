"""Evaluate a checkpoint: ``python -m lightning_kge.evaluate ckpt=PATH [data=NAME]``.

Prints the same table and writes the same ``metrics.json`` as training does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from lightning_kge.datamodule import KGEDataModule
from lightning_kge.errors import UserError, reports_user_errors
from lightning_kge.module import KGEModule
from lightning_kge.train import build_trainer, config_dir, instantiate_node, test


def load_datamodule(ckpt: str | Path, module: KGEModule, data: DictConfig | None) -> KGEDataModule:
    """The datamodule of ``data``, or else the one the checkpoint was trained with (no sampler needed)."""
    if data is not None:
        datamodule = instantiate_node(data, "data")
    else:
        checkpoint = torch.load(ckpt, map_location="cpu", weights_only=False)
        saved = checkpoint.get(KGEDataModule.CHECKPOINT_HYPER_PARAMS_KEY)
        if saved is None:
            raise UserError("the checkpoint holds no datamodule settings", str(ckpt), "give data=NAME")
        datamodule = KGEDataModule(**{**dict(saved), "corruption": None})
    datamodule.prepare_data()
    datamodule.setup()
    model = module.model
    if (datamodule.num_entities, datamodule.num_relations) != (model.num_entities, model.num_relations):
        raise UserError(
            f"the model has {model.num_entities} entities and {model.num_relations} relations, "
            f"the dataset {datamodule.num_entities} and {datamodule.num_relations}",
            str(ckpt),
            "evaluate on the data the model was trained on",
        )
    return datamodule


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test the checkpoint ``cfg.ckpt``; the trainer's report callback writes ``metrics.json``."""
    module = KGEModule.load_from_checkpoint(cfg.ckpt, map_location="cpu")
    datamodule = load_datamodule(cfg.ckpt, module, cfg.get("data"))
    return test(build_trainer(cfg), module, datamodule)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="evaluate")
@reports_user_errors
def main(cfg: DictConfig) -> Any:
    """Command-line entry point (Hydra)."""
    return evaluate(cfg)


if __name__ == "__main__":
    main()
