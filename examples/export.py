"""Export a model's embeddings and use them elsewhere: nearest neighbours from the .npy files.

    python examples/export.py --ckpt outputs/<date>/<time>/checkpoints/last.ckpt --out embeddings
    python examples/export.py            # trains a small RotatE on nations first

The same from the command line: ``python -m lightning_kge.export ckpt=PATH out=DIR projector=true``
(the layout of DIR is documented in ``lightning_kge/export.py``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lightning_kge.checkpoints import load_module
from lightning_kge.escaping import read_tsv
from lightning_kge.export import export_embeddings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, help="a checkpoint written by lightning_kge.train")
    parser.add_argument("--out", type=Path, default=Path("embeddings"))
    parser.add_argument("--entity", default="usa")
    parser.add_argument("--steps", type=int, default=500, help="training steps without --ckpt")
    args = parser.parse_args()
    if args.ckpt is None:  # the same small model as examples/predict.py
        from predict import quick_checkpoint

        args.ckpt = quick_checkpoint(Path("nations_rotate.ckpt"), args.steps)

    export_embeddings(load_module(args.ckpt), args.out, projector=True, overwrite=True)
    print(f"exported to {args.out}: {', '.join(sorted(p.name for p in args.out.iterdir()))}")

    # The tables read back with numpy alone; the labels are escaped TSV (lightning_kge/escaping.py).
    labels = [label for _, label in read_tsv(args.out / "entities.tsv")]
    real, imag = np.load(args.out / "entity_real.npy"), np.load(args.out / "entity_imag.npy")
    vectors = real + 1j * imag                                # (E, d) complex embeddings
    phases = np.load(args.out / "relation_phase.npy")         # (R, d) radians
    print(f"{len(labels)} entities of {vectors.shape[1]} complex dimensions; relation phases {phases.shape}")
    query = vectors[labels.index(args.entity)]
    distance = np.abs(vectors - query).sum(axis=1)            # RotatE's distance, without a relation
    for i in np.argsort(distance)[1:6]:
        print(f"  near {args.entity}: {labels[i]:<12} distance {distance[i]:.3f}")


if __name__ == "__main__":
    main()
