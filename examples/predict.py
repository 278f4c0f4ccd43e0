"""Ask a trained model questions by label: the best tails or heads of a query, and triple scores.

    python examples/predict.py --ckpt outputs/<date>/<time>/checkpoints/last.ckpt --head usa --relation embassy
    python examples/predict.py            # trains a small RotatE on nations first (a minute on a CPU)

The same from the command line:
``python -m lightning_kge.predict ckpt=PATH head=usa relation=embassy k=5``.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import lightning as L
import torch

from lightning_kge.checkpoints import load_datamodule, load_module
from lightning_kge.datamodule import KGEDataModule
from lightning_kge.models import RotatE
from lightning_kge.module import KGEModule
from lightning_kge.sampling import SelfAdversarialSampler


def quick_checkpoint(path: Path, steps: int) -> Path:
    """Train a small RotatE on the bundled nations graph and save it as the CLI would."""
    L.seed_everything(0)
    sampler = SelfAdversarialSampler(num_negatives=64)
    datamodule = KGEDataModule(sampler.corruption(), name="nations", batch_size=256)
    datamodule.setup()
    module = KGEModule(model=RotatE(datamodule.num_entities, datamodule.num_relations, dim=50, gamma=4.0),
                       selection=sampler.selection(), graph=datamodule.info,
                       optimizer=functools.partial(torch.optim.Adam, lr=0.01))
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, check_val_every_n_epoch=1000)
    trainer.fit(module, datamodule=datamodule)
    trainer.save_checkpoint(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, help="a checkpoint written by lightning_kge.train")
    parser.add_argument("--head", default="usa")
    parser.add_argument("--relation", default="embassy")
    parser.add_argument("--steps", type=int, default=500, help="training steps without --ckpt")
    args = parser.parse_args()
    ckpt = args.ckpt or quick_checkpoint(Path("nations_rotate.ckpt"), args.steps)

    module = load_module(ckpt)                      # the model, with its labels (module.graph)
    datamodule = load_datamodule(ckpt, module)      # the data it was trained on, checked against them
    print(f"best tails of ({args.head}, {args.relation}, ?), training triples left out:")
    for candidate in module.predict_tails(args.head, args.relation, k=5, exclude=datamodule.train_index):
        print(f"  {candidate.label:<12} {candidate.score:8.3f}")
    print(f"best heads of (?, {args.relation}, {args.head}), nothing left out:")
    for candidate in module.predict_heads(args.relation, args.head, k=5):
        print(f"  {candidate.label:<12} {candidate.score:8.3f}")

    graph = module.graph
    some = [tuple(label for label in (graph.entities[h], graph.relations[r], graph.entities[t]))
            for h, r, t in datamodule.triples["test"][:3].tolist()]
    for triple, score in zip(some, module.score_triples(some).tolist()):
        print(f"score{triple} = {score:.3f}")

    # Batches of queries with Trainer.predict: every tail query of the test split.
    datamodule.predict_on("test", side="tail", exclude="train", k=3)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    answers = trainer.predict(module, datamodule=datamodule)
    first = answers[0]
    for h, r, ids in list(zip(first.entity.tolist(), first.relation.tolist(), first.ids.tolist()))[:3]:
        print(f"({graph.entities[h]}, {graph.relations[r]}, ?) -> {[graph.entities[i] for i in ids]}")
    print(f"answered {sum(len(a.entity) for a in answers)} test queries with Trainer.predict")


if __name__ == "__main__":
    main()
