"""GraphInfo: what a trained model must know of its graph, kept in its checkpoint."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from lightning_kge.data.graph import SPLITS, KnowledgeGraph, graph_fingerprint
from lightning_kge.data.statistics import GraphStatistics, relation_categories


@dataclasses.dataclass(frozen=True)
class GraphInfo:
    """The description of a graph that a module keeps: sizes, labels, categories, regions, identity.

    ``build()`` hands it from the datamodule to the module, which saves it in its
    hyperparameters, so a checkpoint alone maps ids to labels and says which data it was trained
    on. It holds no triples.

    Attributes:
        entities: entity labels in id order.
        relations: relation labels in id order.
        relation_categories: per relation, an index into
            :data:`~lightning_kge.data.statistics.CATEGORIES` (over all splits).
        regions: candidate entity ids of the countries protocol (AUC-PR), or ``None``.
        fingerprint: SHA-256 of the labels and the id triples of every split (:func:`describe`).
        source: where the data came from (a dataset name or a folder), for messages.

    Example:
        >>> info = GraphInfo(("a", "b"), ("r",), (0,))
        >>> info.num_entities, info.entity_id["b"], GraphInfo.from_dict(info.to_dict()) == info
        (2, 1, True)
    """

    entities: tuple[str, ...]
    relations: tuple[str, ...]
    relation_categories: tuple[int, ...]
    regions: tuple[int, ...] | None = None
    fingerprint: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        # Accept lists (as loaded from a checkpoint's hyperparameters); store tuples.
        for name in ("entities", "relations", "relation_categories", "regions"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        if len(self.relation_categories) != len(self.relations):
            raise ValueError(
                f"{len(self.relation_categories)} relation categories for {len(self.relations)} relations"
            )

    @property
    def num_entities(self) -> int:
        return len(self.entities)

    @property
    def num_relations(self) -> int:
        return len(self.relations)

    @functools.cached_property
    def entity_id(self) -> dict[str, int]:
        """Entity label -> id."""
        return {label: i for i, label in enumerate(self.entities)}

    @functools.cached_property
    def relation_id(self) -> dict[str, int]:
        """Relation label -> id."""
        return {label: i for i, label in enumerate(self.relations)}

    def categories(self) -> Tensor:
        """``(R,)`` relation categories as a tensor."""
        return torch.tensor(self.relation_categories, dtype=torch.long)

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and strings, for a checkpoint's hyperparameters."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> GraphInfo:
        """The inverse of :meth:`to_dict`."""
        return cls(**dict(values))

    def summary(self) -> dict[str, Any]:
        """Sizes and identity without the labels (for loggers)."""
        return {
            "num_entities": self.num_entities,
            "num_relations": self.num_relations,
            "fingerprint": self.fingerprint,
            "source": self.source,
        }


def describe(graph: KnowledgeGraph, regions: Sequence[int] | None = None, source: str = "",
             statistics: GraphStatistics | None = None, fingerprint: str | None = None) -> GraphInfo:
    """The :class:`GraphInfo` of a loaded graph; categories are taken over all splits.

    Args:
        graph: the graph.
        regions: candidate entity ids of the countries protocol, or ``None``.
        source: a dataset name or folder, for messages.
        statistics: the graph's statistics if already computed (their categories are used).
        fingerprint: the graph's fingerprint if already computed (as :func:`fingerprint` gives it).

    Example:
        >>> graph = KnowledgeGraph(["a", "b"], ["r"], {s: torch.tensor([[0, 0, 1]]) for s in SPLITS})
        >>> info = describe(graph)
        >>> info.entities, info.relation_categories, len(info.fingerprint)
        (('a', 'b'), (0,), 64)
    """
    if statistics is not None:
        categories = statistics.relation_categories
    else:
        categories = relation_categories(torch.cat([graph.triples[s] for s in SPLITS]), graph.num_relations)
    return GraphInfo(
        entities=tuple(graph.entities),
        relations=tuple(graph.relations),
        relation_categories=tuple(categories.tolist()),
        regions=None if regions is None else tuple(int(r) for r in regions),
        fingerprint=fingerprint or graph_fingerprint(graph),
        source=source,
    )


def fingerprint(graph: KnowledgeGraph) -> str:
    """SHA-256 over the labels in id order and each split's id triples (in order).

    Two graphs have the same fingerprint exactly when they hold the same labels with the same ids
    and the same triples per split (:func:`~lightning_kge.data.graph.graph_fingerprint`).
    """
    return graph_fingerprint(graph)
