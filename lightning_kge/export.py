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

Read back with numpy: ``np.load("DIR/entity.npy")``, labels with
``[line.split("\\t")[1] for line in open("DIR/entities.tsv")]``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from lightning_kge.checkpoints import load_module
from lightning_kge.errors import UserError, reports_user_errors
from lightning_kge.models import ComplEx, RotatE, pRotatE
from lightning_kge.models.base import KGEModel
from lightning_kge.module import KGEModule
from lightning_kge.serialization import to_spec
from lightning_kge.configs import config_dir

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
    """Write the embeddings of ``module`` to ``out`` in the layout of the module docstring.

    Args:
        module: the trained module (its ``graph`` gives the labels; without one, ids are labels).
        out: the folder (created if needed).
        projector: also write the TensorBoard projector's files under ``out/projector``.
        overwrite: replace files of an earlier export; otherwise existing files are an error.

    Returns:
        The files written.
    """
    out = Path(out)
    model = module.model
    graph = module.graph
    entities = graph.entities if graph is not None else tuple(map(str, range(model.num_entities)))
    relations = graph.relations if graph is not None else tuple(map(str, range(model.num_relations)))
    files: dict[Path, Any] = {out / "entities.tsv": label_table(entities), out / "relations.tsv": label_table(relations)}
    contents = arrays(model)
    files.update({out / f"{name}.npy": value for name, (value, _) in contents.items()})
    manifest = {
        "model": to_spec(model),
        "graph": None if graph is None else graph.summary(),
        "files": {f"{name}.npy": {"shape": list(value.shape), "dtype": "float32", "meaning": meaning}
                  for name, (value, meaning) in contents.items()},
    }
    manifest["files"].update({"entities.tsv": {"rows": len(entities), "meaning": "id<TAB>label of each entity"},
                              "relations.tsv": {"rows": len(relations), "meaning": "id<TAB>label of each relation"}})
    files[out / "manifest.json"] = json.dumps(manifest, indent=2) + "\n"
    if projector:
        vectors = contents["entity"][0]
        files[out / "projector" / "vectors.tsv"] = "".join("\t".join(f"{x:.9g}" for x in row) + "\n" for row in vectors)
        files[out / "projector" / "metadata.tsv"] = "".join(f"{label}\n" for label in entities)
        files[out / "projector" / "projector_config.pbtxt"] = PROJECTOR_CONFIG
    existing = [path for path in files if path.exists()]
    if existing and not overwrite:
        raise UserError(f"{existing[0].name} and {len(existing) - 1} more files exist already", str(out),
                        "export to a new folder (out=DIR), or set overwrite=true")
    for path, value in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(value, np.ndarray):
            np.save(path, value)
        else:
            path.write_text(value, encoding="utf-8")
    return list(files)


def label_table(labels: tuple[str, ...]) -> str:
    """``id<TAB>label`` lines.

    Example:
        >>> label_table(("a", "b"))
        '0\\ta\\n1\\tb\\n'
    """
    return "".join(f"{i}\t{label}\n" for i, label in enumerate(labels))


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
