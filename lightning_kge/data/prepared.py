"""A graph ready for training and evaluation: splits, indexes, statistics and fingerprint, made
once per source and cached (:mod:`lightning_kge.data.store`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from lightning_kge.data import store
from lightning_kge.data.graph import SPLITS, KnowledgeGraph, UnseenPolicy, check_source, graph_fingerprint, parse_graph
from lightning_kge.data.index import TripleIndex, UnionIndex
from lightning_kge.data.statistics import GraphStatistics
from lightning_kge.data.tsv import warn_renamed


@dataclasses.dataclass
class PreparedGraph:
    """Everything the datamodule derives from a graph's files, made once.

    Attributes:
        graph: the splits and labels.
        train_index: the training triples (corruption draws outside them).
        extra_index: the valid and test triples that are not training triples; with
            ``train_index`` it makes :attr:`filter_index`.
        statistics: relation categories (all splits), Bernoulli probabilities, subsampling
            weights and degrees (train).
        fingerprint: :func:`~lightning_kge.data.graph.graph_fingerprint` of ``graph``.
        cached: whether this came from the cache.
    """

    graph: KnowledgeGraph
    train_index: TripleIndex
    extra_index: TripleIndex
    statistics: GraphStatistics
    fingerprint: str
    cached: bool = False

    @property
    def filter_index(self) -> UnionIndex:
        """Every known triple of every split (the evaluation filter), built from the two indexes."""
        return UnionIndex(self.train_index, self.extra_index)


def prepare_graph(folder: str | Path, unseen: UnseenPolicy = "error", cache: bool | None = None) -> PreparedGraph:
    """The :class:`PreparedGraph` of a folder's ``train.txt``, ``valid.txt`` and ``test.txt``.

    With the cache on, the files are hashed: the same bytes (and ``unseen``) load the prepared
    graph from ``cache_dir("graphs")``, memory-mapped, with the warnings the first read gave
    (NFC renames here; dropped and duplicate triples are in ``graph.dropped`` and
    ``graph.duplicates``); other bytes are parsed (:func:`~lightning_kge.data.graph.parse_graph`)
    and the result is cached. Processes preparing the same files at once (DDP ranks) take turns,
    so one parses and the others load its result.

    Args:
        folder: the dataset folder.
        unseen: the unseen-label policy (see :func:`~lightning_kge.data.graph.load_graph`).
        cache: use and fill the cache; ``None`` caches graphs whose files hold at least
            :data:`~lightning_kge.data.store.MIN_CACHED_BYTES`.

    Raises:
        TripleFileError: a missing folder or any problem in a file, naming ``FILE:LINE``.
        ArgumentError: an unknown ``unseen`` policy.
    """
    folder = check_source(folder, unseen)
    files = [folder / f"{split}.txt" for split in SPLITS]
    if cache is None:
        cache = store.total_bytes(files) >= store.MIN_CACHED_BYTES
    if not cache:
        return build(parse_graph(folder, unseen))
    try:
        key = store.source_key(files, unseen)
    except OSError:  # missing or unreadable: parsing says which and why
        return build(parse_graph(folder, unseen))
    with store.locked(key) as usable:
        found = store.read(key) if usable else None
        if found is not None:
            try:
                return _from_cache(folder, *found)
            except (KeyError, ValueError, TypeError) as error:  # an entry of another layout: replace it
                store.log.warning("graph cache entry %s unusable (%s): parsing again", key[:32], error)
        prepared = build(parse_graph(folder, unseen))
        if usable:
            _to_cache(key, str(folder.resolve()), unseen, prepared)
        return prepared


def build(graph: KnowledgeGraph) -> PreparedGraph:
    """Index a parsed graph, compute its statistics and fingerprint; count train duplicates."""
    E, R = graph.num_entities, graph.num_relations
    train = graph.triples["train"]
    train_index, row_queries = TripleIndex.with_row_queries(train, E, R)
    duplicates = len(train) - train_index.num_pairs // 2
    graph.duplicates = {split: count for split in SPLITS
                        if (count := duplicates if split == "train" else graph.duplicates.get(split, 0))}
    evaluation = torch.cat([graph.triples["valid"], graph.triples["test"]])
    h, r, t = evaluation.unbind(1)
    extra_index = TripleIndex(evaluation[~train_index.contains(h, r, t)], E, R)
    statistics = GraphStatistics.compute(train, train_index, row_queries, extra_index)
    del row_queries
    return PreparedGraph(graph, train_index, extra_index, statistics, graph_fingerprint(graph))


def _to_cache(key: str, source: str, unseen: str, prepared: PreparedGraph) -> None:
    graph = prepared.graph
    arrays = {split: graph.triples[split].to(torch.int32).numpy() for split in SPLITS}  # ids < 2³¹
    for name, index in (("train_index", prepared.train_index), ("extra_index", prepared.extra_index)):
        arrays.update({f"{name}.{part}": value.numpy() for part, value in index.state().items()})
    arrays.update({f"statistics.{name}": value.numpy() for name, value in prepared.statistics.state().items()})
    meta = {
        "source": f"{source}\0{unseen}", "num_entities": graph.num_entities, "num_relations": graph.num_relations,
        "dropped": graph.dropped, "duplicates": graph.duplicates, "renamed": graph.renamed,
        "fingerprint": prepared.fingerprint,
    }
    store.write(key, meta, arrays, {"entities": graph.entities, "relations": graph.relations})


def _from_cache(folder: Path, meta: dict, arrays: dict[str, np.ndarray], labels: dict[str, list[str]]) -> PreparedGraph:
    triples = {split: torch.from_numpy(arrays[split].astype(np.int64)) for split in SPLITS}
    graph = KnowledgeGraph(labels["entities"], labels["relations"], triples, dict(meta["dropped"]),
                           dict(meta["duplicates"]), dict(meta["renamed"]))
    E, R = graph.num_entities, graph.num_relations
    if (E, R) != (meta["num_entities"], meta["num_relations"]):
        raise ValueError(f"graph cache: {E} entity and {R} relation labels, meta says otherwise")

    def tensors(prefix: str) -> dict[str, torch.Tensor]:
        return {name.removeprefix(prefix): torch.from_numpy(value) for name, value in arrays.items()
                if name.startswith(prefix)}

    # Memory-mapped arrays are copy-on-write, so writable: torch takes them without a warning.
    indexes = [TripleIndex.from_state(tensors(f"{name}."), E, R) for name in ("train_index", "extra_index")]
    statistics = GraphStatistics(**tensors("statistics."))
    for split in SPLITS:  # the warnings of the first read
        if graph.renamed.get(split):
            warn_renamed(folder / f"{split}.txt", graph.renamed[split])
    return PreparedGraph(graph, *indexes, statistics, meta["fingerprint"], cached=True)
