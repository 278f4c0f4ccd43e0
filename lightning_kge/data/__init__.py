"""Reading, bundling and downloading knowledge graphs."""

from lightning_kge.data.graph import KnowledgeGraph, describe_duplicates, load_graph
from lightning_kge.data.index import TripleIndex, UnionIndex
from lightning_kge.data.tsv import TripleFileError, normalize_label, read_triples

__all__ = [
    "KnowledgeGraph",
    "load_graph",
    "describe_duplicates",
    "TripleIndex",
    "UnionIndex",
    "TripleFileError",
    "normalize_label",
    "read_triples",
]
