"""Add a scoring function by subclassing the model: HolE (Nickel et al., AAAI 2016).

HolE scores a triple by the circular correlation of its entities against the relation,
``f(h, r, t) = Σ_k r_k Σ_i h_i t_(i+k mod d)``. A model states how a query is formed from
``(h, r, ?)`` and ``(?, r, t)`` and how it scores candidates; everything else (sampling,
training, filtered evaluation, prediction, checkpoints) is the library's. HolE is bilinear:

- tail query ``q = r ∗ h`` (circular convolution), ``f = <q, t>``;
- head query ``q' = r ⋆ t`` (circular correlation), ``f = <q', h>``;

both computed with the FFT, and scored by the inner product of :class:`BilinearModel`. The class is
in ``examples/hole.py``: checkpoints record a model's import path, so it must not live in the script
being run (``__main__``); a checkpoint naming ``hole.HolE`` loads where ``hole`` is trusted.

    python examples/custom_model.py --steps 600
"""

from __future__ import annotations

import argparse
import functools

import lightning as L
import torch

from hole import HolE  # beside this script: a model class lives in an importable module, not in __main__
from lightning_kge.datamodule import KGEDataModule
from lightning_kge.module import KGEModule
from lightning_kge.sampling import SelfAdversarialSampler


def brute_force(model: HolE, h: int, r: int, t: int) -> float:
    """The definition, term by term."""
    e, w, d = model.entity.weight, model.relation.weight, model.dim
    return sum(float(w[r, k] * e[h, i] * e[t, (i + k) % d]) for k in range(d) for i in range(d))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args()

    L.seed_everything(0)
    sampler = SelfAdversarialSampler(num_negatives=64)
    datamodule = KGEDataModule(sampler.corruption(), name="nations", batch_size=256)
    datamodule.setup()
    model = HolE(datamodule.num_entities, datamodule.num_relations, dim=64)
    with torch.no_grad():  # both queries agree with the definition
        for h, r, t in datamodule.triples["train"][:3].tolist():
            expected = brute_force(model, h, r, t)
            for got in (model.score_t(torch.tensor([h]), torch.tensor([r]), torch.tensor([t])),
                        model.score_h(torch.tensor([r]), torch.tensor([t]), torch.tensor([h]))):
                assert abs(float(got) - expected) < 1e-4 * max(1.0, abs(expected)), (float(got), expected)
    module = KGEModule(model=model, selection=sampler.selection(), graph=datamodule.info,
                       optimizer=functools.partial(torch.optim.Adam, lr=0.01), regularization=1e-5)
    trainer = L.Trainer(max_steps=args.steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, check_val_every_n_epoch=1000)
    trainer.fit(module, datamodule=datamodule)
    [results] = trainer.test(module, datamodule=datamodule, verbose=False)
    print(f"HolE on nations: filtered test MRR {results['test/mrr']:.3f}, Hits@10 {results['test/hits@10']:.3f}")
    trainer.save_checkpoint("hole.ckpt")
    loaded = KGEModule.load_from_checkpoint("hole.ckpt", trust=["hole"])  # hole.HolE is not lightning_kge's
    h, r, t = datamodule.triples["test"].unbind(1)
    with torch.no_grad():
        assert torch.equal(loaded.score_hrt(h, r, t), module.score_hrt(h, r, t))
    print(f"hole.ckpt reloaded as {type(loaded.model).__module__}.{type(loaded.model).__name__} (trust=['hole'])")


if __name__ == "__main__":
    main()
