"""The tiny graph of ``tests/data/tiny_kg`` with labels that readers, Hydra and matplotlib read specially,
and a run trained on it once per test session (export, predict, plot and report tests share it)."""

from __future__ import annotations

import re
from pathlib import Path

from tiny_run import TINY_KG, compose_train

from lightning_kge.train import train

ENTITIES = {"ada": "#x", "ben": "NULL", "cai": '"quoted"', "dora": "a\u2028b", "eli": "back\\slash",
            "fay": "New York", "gus": "café", "hana": "1.50"}
"""Entity labels: a comment sign, a null word, quotes, a line separator, a backslash, a space, non-ASCII, a number."""

RELATIONS = {"knows": "$\\frac{$", "likes": "true", "mentors": "a=b"}
"""Relation labels: mathtext that does not parse, a bool word, an ``=``."""


def renamed(text: str) -> str:
    """``tiny_kg`` triple lines with the labels of :data:`ENTITIES` and :data:`RELATIONS`."""
    names = {**ENTITIES, **RELATIONS}
    return "".join("\t".join(names.get(cell, cell) for cell in line.split("\t")) + "\n"
                   for line in text.splitlines())


def odd_graph(root: Path) -> Path:
    """The renamed copy of ``tiny_kg`` under ``root`` (``train.txt``, ``valid.txt``, ``test.txt``)."""
    folder = root / "odd_graph"
    if not folder.is_dir():
        folder.mkdir(parents=True)
        for split in ("train", "valid", "test"):
            text = (TINY_KG / f"{split}.txt").read_text(encoding="utf-8")
            (folder / f"{split}.txt").write_text(renamed(text), encoding="utf-8")
    return folder


def odd_run(root: Path) -> Path:
    """A short RotatE run on :func:`odd_graph` (``checkpoints/last.ckpt``, ``per_relation.tsv``, CSV log)."""
    out = root / "odd_run"
    if not (out / "checkpoints" / "last.ckpt").is_file():
        graph = odd_graph(root)
        train(compose_train(f"data.path={graph}", "trainer.max_steps=60", "trainer.check_val_every_n_epoch=30",
                            f"output_dir={out}"))
    return out


assert not any(re.search(r"\$\{", label) for label in [*ENTITIES.values(), *RELATIONS.values()])  # not OmegaConf's
