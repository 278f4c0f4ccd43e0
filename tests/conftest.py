"""Small fixtures shared by the unit tests: the bundled nations graph and a random graph."""

from __future__ import annotations

import pytest
import torch

from lightning_kge.data.datasets import resolve_dataset
from lightning_kge.data.graph import KnowledgeGraph, load_graph


@pytest.fixture(scope="session")
def nations() -> KnowledgeGraph:
    """The bundled nations graph (14 entities, 55 relations, dense: good for filtering tests)."""
    return load_graph(resolve_dataset("nations"))


def _random_triples(num_entities: int, num_relations: int, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    h = torch.randint(num_entities, (n,), generator=g)
    r = torch.randint(num_relations, (n,), generator=g)
    t = torch.randint(num_entities, (n,), generator=g)
    return torch.stack([h, r, t], dim=1)


@pytest.fixture
def random_triples():
    """``random_triples(E, R, n, seed)``: ``(n, 3)`` random ``(h, r, t)`` ids, duplicates possible."""
    return _random_triples
