"""Plots of a trained model: ``python -m lightning_kge.plot ckpt=PATH out=DIR``.

Writes PNGs to ``DIR``:

- ``relation_phases.png``: the histogram of the phases ``θ_r`` (radians) of one relation's
  rotation, as in the RotatE paper's figures (RotatE and pRotatE only);
- ``inverse_phases.png``: a relation ``r1``, a relation ``r2``, and ``θ_r1 + θ_r2``: if ``r2``
  is the inverse of ``r1`` (``(t, r2, h)`` whenever ``(h, r1, t)``), RotatE learns
  ``r2 = r̄1``, so the sum concentrates at 0;
- ``symmetric_phases.png``: a symmetric relation's phases, which concentrate at 0 and ``±π``
  (``r ∘ r = 1``);
- ``training_curves.png``: ``train/loss`` and ``val/mrr`` against the step, from the run's
  CSV log (``csv/metrics.csv`` beside the ``checkpoints/`` folder).

Relations left ``null`` are chosen from the training triples, so the defaults work on any graph:
the relation with the most triples; the pair ``(r1, r2)`` with the most ``(h, t)`` such that
``(h, r1, t)`` and ``(t, r2, h)`` are both training triples; the relation with the largest
share of triples whose reverse is also one. The titles give these counts, and the labels as they
are (no TeX, no mathtext: ``$\\frac{$`` is text). Labels are given as typed, quoted for Hydra where
its grammar reads them specially (``relation="'#rel'"``, :mod:`lightning_kge.overrides`). Each PNG is
written whole or not at all (:mod:`lightning_kge.atomic`).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from lightning_kge import atomic
from lightning_kge.checkpoints import load_datamodule, load_module
from lightning_kge.errors import UserError, reports_user_errors, write_failed
from lightning_kge.extras import require_package
from lightning_kge.models import RotatE, pRotatE
from lightning_kge.module import KGEModule
from lightning_kge.overrides import checked_command_line, label_value
from lightning_kge.prediction import relation_id
from lightning_kge.configs import config_dir

VERBATIM = {"usetex": False, "parse_math": False}
"""Text properties that show a label as it is: no TeX, no mathtext (``$…$``)."""


def reverse_overlap(triples: Tensor, num_entities: int, num_relations: int) -> Tensor:
    """``(R, R)`` counts: ``[a, b]`` = #distinct ``(h, t)`` with ``(h, a, t)`` and ``(t, b, h)`` known.

    The diagonal counts the symmetric pairs of each relation.

    Example:
        >>> reverse_overlap(torch.tensor([[0, 0, 1], [1, 1, 0], [2, 0, 3], [3, 0, 2]]), 4, 2).tolist()
        [[2, 1], [1, 0]]
    """
    triples = torch.unique(triples.long(), dim=0)
    h, r, t = triples.unbind(1)
    forward = h * num_entities + t
    order = torch.argsort(forward)
    keys, relations = forward[order], r[order]
    backward = t * num_entities + h
    low = torch.searchsorted(keys, backward)
    count = torch.searchsorted(keys, backward, right=True) - low
    rows = torch.repeat_interleave(torch.arange(len(triples)), count)
    offsets = torch.arange(int(count.sum())) - torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
    partners = relations[low[rows] + offsets]
    pairs = torch.bincount(r[rows] * num_relations + partners, minlength=num_relations**2)
    return pairs.reshape(num_relations, num_relations)


def choose_relations(triples: Tensor, num_entities: int, num_relations: int) -> dict[str, Any]:
    """The default relations: most frequent, most inverse pair, most symmetric (with their counts)."""
    sizes = torch.bincount(triples[:, 1], minlength=num_relations)
    overlap = reverse_overlap(triples, num_entities, num_relations)
    off_diagonal = overlap.clone().fill_diagonal_(-1) if num_relations > 1 else overlap
    pair = divmod(int(torch.argmax(off_diagonal)), num_relations)
    share = overlap.diagonal() / sizes.clamp(min=1)
    return {
        "relation": int(torch.argmax(sizes)),
        "inverse": pair,
        "symmetric": max(range(num_relations), key=lambda i: (float(share[i]), int(sizes[i]))),
        "sizes": sizes,
        "overlap": overlap,
    }


def wrapped(phases: Tensor) -> Tensor:
    """Phases in ``[−π, π)``.

    Example:
        >>> [round(x, 4) for x in wrapped(torch.tensor([0.0, 4.0, -4.0, math.pi])).tolist()]
        [0.0, -2.2832, 2.2832, -3.1416]
    """
    return torch.remainder(phases + math.pi, 2 * math.pi) - math.pi


def relation_phases(module: KGEModule) -> Tensor:
    """``(R, d)`` relation phases in radians; RotatE and pRotatE only."""
    model = module.model
    if not isinstance(model, (RotatE, pRotatE)):
        raise UserError(f"{type(model).__name__} has no relation phases", "the checkpoint's model",
                        "phase plots are for RotatE and pRotatE; the training curves are plotted for every model")
    return wrapped(model.phase(model.relation.weight.detach().cpu().float()))


def histograms(path: Path, panels: list[tuple[str, Tensor]], bins: int) -> Path:
    """A row of phase histograms over ``[−π, π)``, saved as a PNG."""
    plt = pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (title, values) in zip(axes[0], panels):
        ax.hist(values.flatten().numpy(), bins=bins, range=(-math.pi, math.pi), color="#4c72b0")
        ax.set_title(title, fontsize=9, **VERBATIM)  # titles hold labels: "$\\frac{$" is text, not maths
        ax.set_xlim(-math.pi, math.pi)
        ax.set_xticks([-math.pi, -math.pi / 2, 0, math.pi / 2, math.pi], ["−π", "−π/2", "0", "π/2", "π"])
        ax.set_xlabel("phase θ (radians)")
    axes[0][0].set_ylabel("dimensions")
    return save(figure, path)


def training_curves(log: Path, path: Path) -> Path:
    """``train/loss`` and ``val/mrr`` against the step, from a Lightning CSV log."""
    with open(log, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    series = {}
    for key in ("train/loss", "val/mrr"):
        points = [(int(row["step"]), float(row[key])) for row in rows if row.get(key)]
        if points:
            series[key] = points
    if not series:
        raise UserError("the log holds neither train/loss nor val/mrr", str(log), "give log=PATH of a run's csv/metrics.csv")
    plt = pyplot()
    figure, axes = plt.subplots(1, len(series), figsize=(4.8 * len(series), 3.4), squeeze=False)
    for ax, (key, points) in zip(axes[0], series.items()):
        steps, values = zip(*points)
        ax.plot(steps, values, marker="o" if key == "val/mrr" else None, markersize=3, color="#dd8452")
        ax.set_title(key)
        ax.set_xlabel("step")
        if key == "train/loss":
            ax.set_yscale("log")
    return save(figure, path)


def pyplot() -> Any:
    """``matplotlib.pyplot`` with a file-only backend, or a one-line error naming the ``plot`` extra."""
    matplotlib = require_package(("matplotlib",), "plot", "lightning_kge.plot", "command lightning_kge.plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(figure: Any, path: Path) -> Path:
    """Save ``figure`` as the PNG ``path``, whole or not at all (:mod:`lightning_kge.atomic`)."""
    figure.tight_layout()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_failed(error, path.parent) from None
    image = io.BytesIO()
    figure.savefig(image, dpi=110, format="png")
    pyplot().close(figure)
    atomic.write_bytes(path, image.getvalue())
    return path


def plot(cfg: DictConfig) -> list[Path]:
    """Write the PNGs of the module docstring for the checkpoint ``cfg.ckpt`` to ``cfg.out``."""
    out = Path(cfg.out)
    module = load_module(cfg.ckpt, cfg.get("trust"))
    written = []
    if isinstance(module.model, (RotatE, pRotatE)):
        written += phase_plots(cfg, module, out)
    else:
        print(f"no phase plots: {type(module.model).__name__} has no relation phases (RotatE, pRotatE)")
    log = Path(cfg.log) if cfg.log is not None else Path(cfg.ckpt).resolve().parent.parent / "csv" / "metrics.csv"
    if log.is_file():
        written.append(training_curves(log, out / "training_curves.png"))
    elif cfg.log is not None:
        raise UserError("no such CSV log", str(log), "give log=PATH of a run's csv/metrics.csv")
    else:
        print(f"no training curves: no CSV log at {log} (give log=PATH)")
    for path in written:
        print(f"wrote {path}")
    return written


def phase_plots(cfg: DictConfig, module: KGEModule, out: Path) -> list[Path]:
    """The three phase histograms; relations not given are chosen from the training triples."""
    phases = relation_phases(module)
    labels = module.graph.relations if module.graph is not None else tuple(map(str, range(len(phases))))
    datamodule = load_datamodule(cfg.ckpt, module, cfg.get("data"), cfg.get("trust"))
    chosen = choose_relations(datamodule.triples["train"], datamodule.num_entities, datamodule.num_relations)
    sizes, overlap = chosen["sizes"], chosen["overlap"]

    def pick(key: str, value: Any) -> int | None:
        return relation_id(module.graph, str(value), len(labels), f"config key {key}") if value is not None else None

    r = pick("relation", label_value(cfg, "relation"))  # labels as typed: never interpolated by OmegaConf
    r = chosen["relation"] if r is None else r
    inverse = OmegaConf.to_container(cfg, resolve=False).get("inverse")
    if inverse is not None:
        if not isinstance(inverse, list) or len(inverse) != 2:
            raise UserError(f"inverse={inverse!r} is not a pair", "config key inverse", "give inverse=[R1,R2]")
        r1, r2 = (pick("inverse", label) for label in inverse)
    else:
        r1, r2 = chosen["inverse"]
    s = pick("symmetric", label_value(cfg, "symmetric"))
    s = chosen["symmetric"] if s is None else s
    share = int(overlap[s, s]) / max(int(sizes[s]), 1)
    return [
        histograms(out / "relation_phases.png", [(f"{labels[r]} ({int(sizes[r])} triples)", phases[r])], cfg.bins),
        histograms(out / "inverse_phases.png", [
            (f"r1 = {labels[r1]}", phases[r1]),
            (f"r2 = {labels[r2]}", phases[r2]),
            (f"θ(r1) + θ(r2): {int(overlap[r1, r2])} of {int(sizes[r1])} r1 triples reversed in r2",
             wrapped(phases[r1] + phases[r2])),
        ], cfg.bins),
        histograms(out / "symmetric_phases.png",
                   [(f"{labels[s]}: {share:.0%} of {int(sizes[s])} triples also reversed", phases[s])], cfg.bins),
    ]


@checked_command_line(("relation", "symmetric"))
@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="plot")
@reports_user_errors
def main(cfg: DictConfig) -> Any:
    """Command-line entry point (Hydra); labels Hydra cannot read are refused first, in one line."""
    return plot(cfg)


if __name__ == "__main__":
    main()
