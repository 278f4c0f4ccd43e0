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

    ``build()`` hands it from the datamodule to the module, which saves it in its checkpoints as
    a compact blob (:meth:`to_state`: the labels as one UTF-8 tensor, never in the hyperparameters
    that loggers and OmegaConf see), so a checkpoint alone maps ids to labels and says which data
    it was trained on. It holds no triples.

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
        >>> GraphInfo.from_state(info.to_state()) == info
        True
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

    def to_state(self) -> dict[str, Any]:
        """A compact, ``weights_only``-loadable form for checkpoints: labels as UTF-8 tensors.

        Each label list is one ``uint8`` tensor of the labels' UTF-8 bytes, joined, with an
        ``int64`` tensor of their lengths in characters, so saving and loading take time
        proportional to the text, and no label passes through a pickle or a config.
        """
        state: dict[str, Any] = {f"{name}": _pack(getattr(self, name)) for name in ("entities", "relations")}
        state["relation_categories"] = torch.tensor(self.relation_categories, dtype=torch.int8)
        state["regions"] = None if self.regions is None else torch.tensor(self.regions, dtype=torch.int64)
        state["fingerprint"] = self.fingerprint
        state["source"] = self.source
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> GraphInfo:
        """The inverse of :meth:`to_state`."""
        regions = state.get("regions")
        return cls(
            entities=_unpack(state["entities"]),
            relations=_unpack(state["relations"]),
            relation_categories=tuple(int(c) for c in state["relation_categories"].tolist()),
            regions=None if regions is None else tuple(int(r) for r in regions.tolist()),
            fingerprint=str(state.get("fingerprint", "")),
            source=str(state.get("source", "")),
        )

    def summary(self) -> dict[str, Any]:
        """Sizes and identity without the labels (for loggers)."""
        return {
            "num_entities": self.num_entities,
            "num_relations": self.num_relations,
            "fingerprint": self.fingerprint,
            "source": self.source,
        }


def _pack(labels: Sequence[str]) -> dict[str, Tensor]:
    """Labels as ``{"text": uint8 UTF-8 bytes, "lengths": int64 characters per label}``."""
    data = "".join(labels).encode("utf-8")
    text = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8)
    lengths = torch.tensor([len(label) for label in labels], dtype=torch.int64)
    return {"text": text, "lengths": lengths}


def _unpack(packed: Mapping[str, Tensor]) -> tuple[str, ...]:
    """The inverse of :func:`_pack`."""
    text = packed["text"].numpy().tobytes().decode("utf-8")
    ends = torch.cumsum(packed["lengths"], 0).tolist()
    starts = [0, *ends[:-1]]
    return tuple(text[a:b] for a, b in zip(starts, ends))


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
