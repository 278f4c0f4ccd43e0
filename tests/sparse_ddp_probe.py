"""Train briefly with 2 CPU processes (DDP, gloo) and sparse row gradients; check what DDP all-reduced.

Run by ``tests/test_sparse.py`` as ``python tests/sparse_ddp_probe.py OUT``; Lightning's DDP re-runs
this script for rank 1. Before each optimizer step a callback computes this rank's own gradient of
the batch's loss again (outside DDP), gathers every rank's, and records how far their mean is from
the gradient DDP left on each parameter (the sparse all-reduce over gloo, for the tables). At the
end the ranks' weights are gathered. Rank 0 writes ``OUT/result.pt``: ``differences`` (one float per
step and parameter), ``sparse`` (whether each parameter's gradient was sparse), ``ranks_differ``
(whether the ranks' own gradients differed, so the mean means something), ``weights_equal`` and
``steps``.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist

from lightning_kge.datamodule import KGEDataModule
from lightning_kge.models import RotatE
from lightning_kge.module import KGEModule
from lightning_kge.optim import SparseAdam
from lightning_kge.sampling import SelfAdversarialSampler


def dense(grad: torch.Tensor) -> torch.Tensor:
    return grad.coalesce().to_dense() if grad.is_sparse else grad


def gathered(tensor: torch.Tensor) -> list[torch.Tensor]:
    parts = [torch.zeros_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return parts


class GradientCheck(L.Callback):
    def __init__(self, out: Path) -> None:
        self.out = out
        self.batch = None
        self.differences: list[float] = []
        self.sparse: list[bool] = []
        self.ranks_differ: list[bool] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        self.batch = batch

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:  # noqa: ANN001
        params = [p for group in optimizer.param_groups for p in group["params"]]
        with torch.enable_grad():  # the same loss, differentiated without DDP's hooks
            own = torch.autograd.grad(pl_module.batch_loss(self.batch), params)
        for param, grad in zip(params, own):
            parts = gathered(dense(grad))
            self.ranks_differ.append(not torch.equal(parts[0], parts[1]))
            self.differences.append(float((torch.stack(parts).mean(0) - dense(param.grad)).abs().max()))
            self.sparse.append(param.grad.is_sparse)

    def on_train_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        weights = [gathered(p.detach()) for p in pl_module.parameters()]
        result = {"differences": self.differences, "sparse": self.sparse, "ranks_differ": self.ranks_differ,
                  "weights_equal": all(torch.equal(parts[0], parts[1]) for parts in weights),
                  "steps": trainer.global_step}
        if trainer.global_rank == 0:
            torch.save(result, self.out / "result.pt")


def main(out: Path) -> None:
    L.seed_everything(0, verbose=False)
    sampler = SelfAdversarialSampler(num_negatives=8, temperature=1.0)
    datamodule = KGEDataModule(sampler.corruption(), name="nations", batch_size=128, subsampling=True)
    datamodule.setup()
    model = RotatE(datamodule.num_entities, datamodule.num_relations, dim=4, gamma=6.0)
    module = KGEModule(model=model, selection=sampler.selection(), graph=datamodule.info,
                       optimizer=functools.partial(SparseAdam, lr=0.05))
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_steps=4, limit_val_batches=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[GradientCheck(out)],
    )
    trainer.fit(module, datamodule=datamodule)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
