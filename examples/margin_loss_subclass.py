"""Use lightning_kge inside your own Lightning script, changing one hook by subclassing.

``KGEModule`` trains with the negative-sampling loss of the RotatE paper. Here a user swaps in
the margin ranking loss of TransE (Bordes et al., 2013), ``max(0, m − f(pos) + f(neg))``
weighted by the selection's weights, by overriding :meth:`KGEModule.compute_loss` only: sampling,
scoring, filtered evaluation, logging and checkpoints stay the library's.

    python examples/margin_loss_subclass.py --steps 300
"""

from __future__ import annotations

import argparse
import functools

import lightning as L
import torch
from torch import Tensor

from lightning_kge.datamodule import KGEDataModule
from lightning_kge.models import TransE
from lightning_kge.module import KGEModule
from lightning_kge.batches import NegativeBatch
from lightning_kge.sampling import UniformSampler


class MarginRankingKGE(KGEModule):
    """A ``KGEModule`` whose loss is the margin ranking loss ``Σ_i w_i max(0, m − f(pos) + f(neg_i))``.

    Args:
        margin: the margin ``m``.
        **kwargs: everything :class:`KGEModule` takes.
    """

    def __init__(self, margin: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)  # its save_hyperparameters() records ``margin`` too
        self.margin = margin

    def compute_loss(self, positive: Tensor, negative: Tensor, batch: NegativeBatch) -> Tensor:
        weights = self.selection.weights(negative, batch.mask)  # uniform 1/k over valid negatives
        hinge = torch.relu(self.margin - positive[:, None] + negative)
        return (weights * hinge).sum(dim=1).mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    L.seed_everything(args.seed)
    sampler = UniformSampler(num_negatives=32)
    datamodule = KGEDataModule(sampler.corruption(), name="nations", batch_size=128)  # bundled: no download
    datamodule.setup()
    model = TransE(datamodule.num_entities, datamodule.num_relations, dim=50, gamma=6.0)
    module = MarginRankingKGE(
        margin=2.0,
        model=model,
        selection=sampler.selection(),
        graph=datamodule.info,
        optimizer=functools.partial(torch.optim.Adam, lr=0.01),  # a partial: checkpoints rebuild it
    )
    trainer = L.Trainer(
        max_steps=args.steps, check_val_every_n_epoch=10, accelerator="cpu", devices=1,
        logger=False, enable_checkpointing=False,
    )
    trainer.fit(module, datamodule=datamodule)
    [results] = trainer.test(module, datamodule=datamodule)
    print(f"filtered test MRR {results['test/mrr']:.3f}, Hits@10 {results['test/hits@10']:.3f}")


if __name__ == "__main__":
    main()
