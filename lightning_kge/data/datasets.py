"""Where a dataset named in a config lives: bundled in the package, or downloaded and cached."""

from __future__ import annotations

from pathlib import Path

from lightning_kge.errors import ArgumentError

BUNDLED_ROOT = Path(__file__).resolve().parent / "bundled"
BUNDLED = ("nations", "kinships", "umls")
"""Shipped with the package (from the pykeen 1.11.1 wheel; Kok and Domingos, 2007)."""


def resolve_dataset(name: str, url: str | None = None) -> Path:
    """The local folder of dataset ``name``, downloading and verifying it on first use.

    Downloads go to ``$LIGHTNING_KGE_CACHE/datasets/<folder>`` (see
    :func:`lightning_kge.data.download.fetch_dataset`).

    Args:
        name: a bundled name (``nations``, ``kinships``, ``umls``) or a downloadable one
            (see :data:`lightning_kge.data.download.DATASETS`).
        url: base URL overriding the download source (downloadable datasets only).

    Raises:
        ArgumentError: an unknown name, or a ``url`` for a bundled dataset (naming the config
            key ``data.name`` or ``data.url``).

    Example:
        >>> resolve_dataset("nations").name
        'nations'
    """
    if name in BUNDLED:
        if url is not None:
            raise ArgumentError(
                "url", url, f"null: dataset {name!r} is bundled with the package", key="data.url"
            )
        return BUNDLED_ROOT / name
    from lightning_kge.data.download import DATASETS, fetch_dataset

    if name not in DATASETS:
        known = ", ".join(sorted((*BUNDLED, *DATASETS)))
        raise ArgumentError(
            "name", name, f"one of {known}, or data.name=null data.path=FOLDER", key="data.name"
        )
    return fetch_dataset(name, url=url)
