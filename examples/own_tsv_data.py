"""Train on your own graph: a folder with ``train.txt``, ``valid.txt`` and ``test.txt``.

Each file holds one ``head<TAB>relation<TAB>tail`` triple per line (UTF-8, no header). Without
``--folder`` the script first writes a small family graph to ``family/``: ``child_of`` is
given for everyone, ``parent_of`` (its inverse) only for most, and the held-out ``parent_of``
triples are the validation and test sets, so RotatE must infer them from the inversion.

    python examples/own_tsv_data.py                      # the family graph
    python examples/own_tsv_data.py --folder my_graph    # your graph

The same from the command line: ``python -m lightning_kge.train data=tsv data.path=my_graph``.
"""

from __future__ import annotations

import argparse
import functools
import random
from pathlib import Path

import lightning as L
import torch

from lightning_kge.datamodule import KGEDataModule
from lightning_kge.models import RotatE
from lightning_kge.module import KGEModule
from lightning_kge.sampling import SelfAdversarialSampler


def write_family_graph(folder: Path, people: int = 60, seed: int = 0) -> Path:
    """A binary family tree: person i is the parent of 2i+1 and 2i+2."""
    children = [(f"person{(c - 1) // 2}", f"person{c}") for c in range(1, people)]
    child_of = [(child, "child_of", parent) for parent, child in children]
    parent_of = [(parent, "parent_of", child) for parent, child in children]
    random.Random(seed).shuffle(parent_of)
    held_out = len(parent_of) // 5
    splits = {"train": child_of + parent_of[2 * held_out :], "valid": parent_of[:held_out],
              "test": parent_of[held_out : 2 * held_out]}
    folder.mkdir(parents=True, exist_ok=True)
    for split, triples in splits.items():
        (folder / f"{split}.txt").write_text("".join("\t".join(t) + "\n" for t in triples), encoding="utf-8")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, help="a folder with train.txt, valid.txt, test.txt")
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args()
    folder = args.folder or write_family_graph(Path("family"))

    L.seed_everything(0)
    sampler = SelfAdversarialSampler(num_negatives=16)
    datamodule = KGEDataModule(sampler.corruption(), path=str(folder), batch_size=64)
    datamodule.setup()  # reads and checks the files: a bad line is reported as FILE:LINE
    print(f"{folder}: {datamodule.num_entities} entities, {datamodule.num_relations} relations, "
          + ", ".join(f"{len(t)} {split}" for split, t in datamodule.triples.items()))
    model = RotatE(datamodule.num_entities, datamodule.num_relations, dim=32, gamma=6.0)
    module = KGEModule(model=model, selection=sampler.selection(), graph=datamodule.info,
                       optimizer=functools.partial(torch.optim.Adam, lr=0.02))
    trainer = L.Trainer(max_steps=args.steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, check_val_every_n_epoch=1000)
    trainer.fit(module, datamodule=datamodule)
    [results] = trainer.test(module, datamodule=datamodule, verbose=False)
    print(f"filtered test MRR {results['test/mrr']:.3f}, Hits@1 {results['test/hits@1']:.3f}")
    trainer.save_checkpoint(folder / "model.ckpt")  # python -m lightning_kge.predict ckpt=... works on it
    print(f"checkpoint written to {folder / 'model.ckpt'}")


if __name__ == "__main__":
    main()
