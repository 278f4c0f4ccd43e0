"""Evaluate a checkpoint: ``python -m lightning_kge.evaluate ckpt=PATH [data=NAME]``.

Prints the same table and writes the same ``metrics.json`` as training does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from lightning_kge.datamodule import KGEDataModule
from lightning_kge.module import KGEModule
from lightning_kge.train import config_dir, test


def load_datamodule(ckpt: str | Path, module: KGEModule, data: DictConfig | None) -> KGEDataModule:
    """The datamodule of ``data``, or else the one the checkpoint was trained with."""
    if data is not None:
        datamodule = instantiate(data, sampler=module.sampler, _convert_="all")
    else:
        checkpoint = torch.load(ckpt, map_location="cpu", weights_only=False)
        saved = checkpoint.get(KGEDataModule.CHECKPOINT_HYPER_PARAMS_KEY)
        if saved is None:
            raise ValueError(f"{ckpt}: no datamodule settings in the checkpoint; give data=NAME")
        datamodule = KGEDataModule(sampler=module.sampler, **dict(saved))
    datamodule.prepare_data()
    datamodule.setup()
    model = module.model
    if (datamodule.num_entities, datamodule.num_relations) != (model.num_entities, model.num_relations):
        raise ValueError(
            f"{ckpt}: the model has {model.num_entities} entities and {model.num_relations} "
            f"relations, the dataset {datamodule.num_entities} and {datamodule.num_relations}"
        )
    return datamodule


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test the checkpoint ``cfg.ckpt``; the trainer's report callback writes ``metrics.json``."""
    module = KGEModule.load_from_checkpoint(cfg.ckpt, map_location="cpu")
    datamodule = load_datamodule(cfg.ckpt, module, cfg.get("data"))
    trainer = instantiate(cfg.trainer, _convert_="all")
    return test(trainer, module, datamodule)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="evaluate")
def main(cfg: DictConfig) -> Any:
    """Command-line entry point (Hydra)."""
    return evaluate(cfg)


if __name__ == "__main__":
    main()
