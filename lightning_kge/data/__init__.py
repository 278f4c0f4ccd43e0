"""Reading, bundling and downloading knowledge graphs."""

from lightning_kge.data.graph import KnowledgeGraph, load_graph
from lightning_kge.data.index import TripleIndex
from lightning_kge.data.tsv import TripleFileError, read_triples

__all__ = ["KnowledgeGraph", "load_graph", "TripleIndex", "TripleFileError", "read_triples"]
