"""Train briefly with 2 CPU processes (DDP, gloo) and save what each rank trained on.

Run by ``tests/test_distributed.py`` as ``python tests/ddp_probe.py OUT SEED``; Lightning's DDP
re-runs this script for rank 1. Each rank writes ``OUT/rank{r}.pt``: a list of
``(epoch, positives (B, 3), negatives (B, k), corrupt_head (B,))`` per training batch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch

from lightning_kge.datamodule import KGEDataModule
from lightning_kge.models import RotatE
from lightning_kge.module import KGEModule
from lightning_kge.sampling import SelfAdversarialSampler


class BatchRecorder(L.Callback):
    """Keeps every corrupted training batch this process sees; saves them when training ends."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.batches: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        self.batches.append((trainer.current_epoch, batch.positives.clone(), batch.negatives.clone(),
                             batch.corrupt_head.clone()))

    def on_train_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        torch.save(self.batches, self.out / f"rank{trainer.global_rank}.pt")


def main(out: Path, seed: int) -> None:
    L.seed_everything(seed, verbose=False)
    sampler = SelfAdversarialSampler(num_negatives=4, temperature=1.0)
    datamodule = KGEDataModule(sampler.corruption(), name="nations", batch_size=200, subsampling=False)
    datamodule.setup()
    model = RotatE(datamodule.num_entities, datamodule.num_relations, dim=4, gamma=6.0)
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, limit_val_batches=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[BatchRecorder(out)],
    )
    trainer.fit(KGEModule(model=model, selection=sampler.selection(), graph=datamodule.info), datamodule=datamodule)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
