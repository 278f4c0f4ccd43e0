"""Export the embeddings of a checkpoint: ``python -m lightning_kge.export ckpt=PATH out=DIR``.

Layout of ``DIR`` (every ``.npy`` is float32, row ``i`` belongs to id ``i``):

=========================  ======================================================================
``entities.tsv``           ``id<TAB>label`` per line, in id order (no header)
``relations.tsv``          ``id<TAB>label`` per line, in id order (no header)
``entity.npy``             ``(E, w)`` the entity table as the model stores it
``relation.npy``           ``(R, w)`` the relation table as the model stores it
``<name>.npy``             any other parameter of the model (e.g. pRotatE's ``modulus``)
``entity_real.npy``        RotatE, ComplEx: ``(E, d)`` real parts (the first half of ``entity.npy``)
``entity_imag.npy``        RotatE, ComplEx: ``(E, d)`` imaginary parts (the second half)
``relation_phase.npy``     RotatE, pRotatE: ``(R, d)`` phases ``θ`` in radians, ``r = cos θ + i sin θ``
``relation_real.npy``      ComplEx: ``(R, d)`` real parts; ``relation_imag.npy`` the imaginary ones
``entity_phase.npy``       pRotatE: ``(E, d)`` entity phases in radians
``manifest.json``          the model (its ``_target_`` spec), the graph (source, sizes, fingerprint)
                           and each file with its shape and meaning
=========================  ======================================================================

With ``projector=true``, ``DIR/projector/`` holds the TensorBoard projector's files:
``vectors.tsv`` (one entity per line, its stored row as tab-separated numbers),
``metadata.tsv`` (its label, same order, no header as the projector wants for one column) and
``projector_config.pbtxt``; browse them with ``tensorboard --logdir DIR/projector`` (Projector
tab), or load the two TSV files at https://projector.tensorflow.org.

The TSV files escape labels as :mod:`lightning_kge.escaping` documents (``\\\\``, ``\\t``,
``\\n``, ``\\r``, ``\\uXXXX`` for other control characters and U+2028, U+2029), so each line is
one row; other labels (``#x``, ``NULL``, ``"quoted"``) are written as they are.

The folder is built beside ``DIR`` under a hidden name and renamed to ``DIR`` once complete: an
export that fails (a full disk) leaves no partial folder, and with ``overwrite=true`` the earlier
export is replaced only once the new one is whole. ``DIR`` must be new, empty, or (with
``overwrite=true``) an earlier export: a folder holding other files is refused.

Read back with numpy: ``np.load("DIR/entity.npy")``, labels with
``[label for _, label in lightning_kge.escaping.read_tsv("DIR/entities.tsv")]``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from lightning_kge import atomic
from lightning_kge.checkpoints import load_module
from lightning_kge.errors import UserError, reports_user_errors
from lightning_kge.escaping import escape, tsv_line
from lightning_kge.models import ComplEx, RotatE, pRotatE
from lightning_kge.models.base import KGEModel
from lightning_kge.module import KGEModule
from lightning_kge.serialization import to_spec
from lightning_kge.configs import config_dir

EXPORT_FILES = frozenset({"entities.tsv", "relations.tsv", "manifest.json"})
"""The files an export writes besides its ``.npy`` tables and ``projector/``."""

PROJECTOR_FILES = frozenset({"vectors.tsv", "metadata.tsv", "projector_config.pbtxt"})

PROJECTOR_CONFIG = """embeddings {
  tensor_name: "entity"
  tensor_path: "vectors.tsv"
  metadata_path: "metadata.tsv"
}
"""


def arrays(model: KGEModel) -> dict[str, tuple[np.ndarray, str]]:
    """Every file's array and meaning: the model's parameters as stored, then their readable views."""
    stored = {name.removesuffix(".weight"): p.detach().cpu().float().numpy() for name, p in model.named_parameters()}
    out = {name: (value, "as stored by the model") for name, value in stored.items()}
    out["entity"] = (stored["entity"], "(E, w) the entity table as stored")
    out["relation"] = (stored["relation"], "(R, w) the relation table as stored")
    d = model.dim
    if isinstance(model, (RotatE, ComplEx)):
        out["entity_real"] = (stored["entity"][:, :d], "(E, d) real parts of the entities")
        out["entity_imag"] = (stored["entity"][:, d:], "(E, d) imaginary parts of the entities")
    if isinstance(model, ComplEx):
        out["relation_real"] = (stored["relation"][:, :d], "(R, d) real parts of the relations")
        out["relation_imag"] = (stored["relation"][:, d:], "(R, d) imaginary parts of the relations")
    if isinstance(model, (RotatE, pRotatE)):
        phase = model.phase(model.relation.weight.detach().cpu().float()).numpy()
        out["relation_phase"] = (phase, "(R, d) relation phases θ in radians: r = cos θ + i sin θ")
    if isinstance(model, pRotatE):
        phase = model.phase(model.entity.weight.detach().cpu().float()).numpy()
        out["entity_phase"] = (phase, "(E, d) entity phases in radians")
    return out


def export_embeddings(module: KGEModule, out: str | Path, projector: bool = False, overwrite: bool = False) -> list[Path]:
    """Write the embeddings of ``module`` to the folder ``out`` in the layout of the module docstring.

    The folder is built under a hidden name beside ``out`` and renamed to ``out`` once complete
    (:func:`lightning_kge.atomic.replacing_folder`).

    Args:
        module: the trained module (its ``graph`` gives the labels; without one, ids are labels).
        out: the folder; it must not exist, be empty, or (with ``overwrite``) hold an earlier export.
        projector: also write the TensorBoard projector's files under ``out/projector``.
        overwrite: replace an earlier export in ``out``; otherwise one there is an error.

    Returns:
        The files written.
    """
    out = Path(out)
    model = module.model
    graph = module.graph
    entities = graph.entities if graph is not None else tuple(map(str, range(model.num_entities)))
    relations = graph.relations if graph is not None else tuple(map(str, range(model.num_relations)))
    files: dict[str, Any] = {"entities.tsv": label_table(entities), "relations.tsv": label_table(relations)}
    contents = arrays(model)
    files.update({f"{name}.npy": value for name, (value, _) in contents.items()})
    manifest = {
        "model": to_spec(model),
        "graph": None if graph is None else graph.summary(),
        "files": {f"{name}.npy": {"shape": list(value.shape), "dtype": "float32", "meaning": meaning}
                  for name, (value, meaning) in contents.items()},
    }
    manifest["files"].update({"entities.tsv": {"rows": len(entities), "meaning": "id<TAB>label of each entity"},
                              "relations.tsv": {"rows": len(relations), "meaning": "id<TAB>label of each relation"}})
    files["manifest.json"] = json.dumps(manifest, indent=2) + "\n"
    if projector:
        vectors = contents["entity"][0]
        files["projector/vectors.tsv"] = "".join("\t".join(f"{x:.9g}" for x in row) + "\n" for row in vectors)
        files["projector/metadata.tsv"] = "".join(escape(label) + "\n" for label in entities)
        files["projector/projector_config.pbtxt"] = PROJECTOR_CONFIG
    check_out(out, overwrite)
    with atomic.replacing_folder(out, replace=True) as folder:
        for name, value in files.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(value, np.ndarray):
                np.save(path, value)
            else:
                path.write_text(value, encoding="utf-8")
    return [out / name for name in files]


def is_export_file(path: Path) -> bool:
    """Whether ``path`` (in an export folder) is a file an export writes."""
    if path.is_dir():
        return path.name == "projector" and all(p.name in PROJECTOR_FILES for p in path.iterdir())
    return path.name in EXPORT_FILES or path.suffix == ".npy"


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an ``out`` that is not a folder, holds other files than an export, or an export without ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise UserError("is a file, not a folder", str(out), "give out=DIR of a new folder")
    if not out.is_dir():
        return
    if Path.cwd().resolve().is_relative_to(out.resolve()):  # it is replaced as a whole
        raise UserError("out is the current folder or holds it", str(out),
                        "export to a folder of its own: out=DIR (it is created)")
    if not any(out.iterdir()):
        return
    entries = sorted(out.iterdir())
    others = [p.name for p in entries if not is_export_file(p)]
    if others:
        raise UserError(f"the folder holds files that no export writes ({', '.join(others[:3])}"
                        f"{', …' if len(others) > 3 else ''})", str(out),
                        "export to a new or empty folder (out=DIR); overwrite=true replaces only an earlier export")
    if not overwrite:
        raise UserError(f"{entries[0].name} and {len(entries) - 1} more files exist already", str(out),
                        "export to a new folder (out=DIR), or set overwrite=true")


def label_table(labels: tuple[str, ...]) -> str:
    """``id<TAB>label`` lines, labels escaped (:func:`lightning_kge.escaping.escape`).

    Example:
        >>> label_table(("a", "b"))
        '0\\ta\\n1\\tb\\n'
        >>> label_table(("a\\tb",))
        '0\\ta\\\\tb\\n'
    """
    return "".join(tsv_line([i, label]) for i, label in enumerate(labels))


def export(cfg: DictConfig) -> list[Path]:
    """Export the checkpoint ``cfg.ckpt`` to ``cfg.out``."""
    with torch.no_grad():
        written = export_embeddings(load_module(cfg.ckpt, cfg.get("trust")), cfg.out, cfg.projector, cfg.overwrite)
    print(f"wrote {len(written)} files to {cfg.out}")
    return written


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="export")
@reports_user_errors
def main(cfg: DictConfig) -> Any:
    """Command-line entry point (Hydra)."""
    return export(cfg)


if __name__ == "__main__":
    main()
