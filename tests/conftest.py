"""Fixtures shared by the tests: the bundled nations graph, a random graph, the tiny datasets of
``tests/data`` (with their fingerprints, as downloadable datasets), ``shared/data`` and a local
HTTP server."""

from __future__ import annotations

import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from lightning_kge.data.datasets import resolve_dataset
from lightning_kge.data.download import RemoteDataset
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


FIXTURES = Path(__file__).resolve().parent / "data"
"""Tiny synthetic datasets shipped with the tests (``tests/data/README.md`` describes them)."""

COUNTRIES_TINY = FIXTURES / "countries_tiny"
"""A countries-like graph: 42 entities, relations ``locatedin`` and ``neighbor``, 90 train lines
(one line twice, as in the real countries files), 3 valid and 4 test ``country locatedin region``
triples, and ``regions.list`` with the 5 regions. Runs ``experiment=rotate_countries_s1`` with
``data.name=null data.path=<it>``."""

TINY_KG = FIXTURES / "tiny_kg"
"""A generic graph: 10 people, relations ``knows``, ``likes``, ``mentors``; 25/5/5 triples."""

UNREACHABLE = "http://127.0.0.1:9"
"""A URL nothing answers (the discard port): the fixtures' default source, so that a test that
forgets to serve them fails instead of reaching the network."""

TINY_REMOTE: dict[str, RemoteDataset] = {
    "countries_tiny": RemoteDataset(
        "countries_tiny",
        UNREACHABLE,
        fingerprints={"train.txt": "2f7bd681a20385f1", "valid.txt": "d17c5959212551a0",
                      "test.txt": "b5414187668f4128"},
        counts={"train.txt": 90, "valid.txt": 3, "test.txt": 4},
        labels={"regions.list": 5},
    ),
    "tiny_kg": RemoteDataset(
        "tiny_kg",
        UNREACHABLE,
        fingerprints={"train.txt": "08970e8817eec33a", "valid.txt": "f04f78c9b8770033",
                      "test.txt": "e8a05247700b7bdd"},
        counts={"train.txt": 25, "valid.txt": 5, "test.txt": 5},
    ),
}
"""The fixture folders as downloadable datasets (for ``fetch_dataset``), each with the
fingerprints and line counts of its files: served from ``FIXTURES`` by ``serve``, a mirror
(``LIGHTNING_KGE_MIRROR``) finds them under their folder names."""


@pytest.fixture
def countries_tiny() -> Path:
    """The folder of the tiny countries-like graph (read-only: copy it before changing it)."""
    return COUNTRIES_TINY


@pytest.fixture
def tiny_kg() -> Path:
    """The folder of the tiny generic graph (read-only: copy it before changing it)."""
    return TINY_KG


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
"""The benchmark files beside the checkout (``../shared/data``); absent in a user's clone."""


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data``; skips the test where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"benchmark files not found at {SHARED_DATA} (shared/data beside the checkout)")
    return SHARED_DATA


class _CountingHandler(SimpleHTTPRequestHandler):
    """Serves files from ``directory`` and records every requested path on the server."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        with self.server.lock:
            self.server.requested.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def serve(request: pytest.FixtureRequest):
    """Start an HTTP server on 127.0.0.1 for a folder; returns ``(base_url, requested_paths)``."""

    def start(root: Path) -> tuple[str, list[str]]:
        handler = partial(_CountingHandler, directory=str(root))
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.requested, server.lock = [], threading.Lock()
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join()

        request.addfinalizer(stop)
        return f"http://127.0.0.1:{server.server_address[1]}", server.requested

    return start
