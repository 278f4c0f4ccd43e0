"""The plot command: phase histograms and training curves as PNGs; relations chosen from the data."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from lightning_kge.errors import UserError
from lightning_kge.plot import choose_relations, plot, reverse_overlap
from lightning_kge.configs import config_dir
from tiny_run import tiny_run

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(tmp_path_factory.getbasetemp())


def plot_config(*overrides: str):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="plot", overrides=list(overrides))


def test_plot_writes_non_empty_pngs_of_phases_and_training_curves(run: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="needs the extra 'plot'")
    written = plot(plot_config(f"ckpt={run / 'checkpoints' / 'last.ckpt'}", f"out={tmp_path}",
                               "relation=likes", "inverse=[knows,mentors]"))
    names = {"relation_phases.png", "inverse_phases.png", "symmetric_phases.png", "training_curves.png"}
    assert {p.name for p in written} == names
    for name in names:
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, name


def test_plot_without_matplotlib_names_the_extra(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(UserError, match=r"pip install 'lightning-kge\[plot\]'"):
        plot(plot_config(f"ckpt={run / 'checkpoints' / 'last.ckpt'}", f"out={tmp_path}"))


def test_reverse_overlap_counts_reversed_pairs_like_a_loop(random_triples) -> None:
    triples = random_triples(6, 3, 80, seed=1)
    known = {tuple(x) for x in triples.tolist()}
    expected = torch.zeros(3, 3, dtype=torch.long)
    for h, a, t in known:
        for b in range(3):
            expected[a, b] += (t, b, h) in known
    assert torch.equal(reverse_overlap(triples, 6, 3), expected)


def test_default_relations_are_the_largest_the_most_inverse_and_the_most_symmetric() -> None:
    sym = [[0, 0, 1], [1, 0, 0], [2, 0, 3], [3, 0, 2]]          # r0 symmetric
    parent = [[0, 1, 4], [1, 1, 4], [2, 1, 5], [3, 1, 5], [4, 1, 6]]  # r1 (the largest)
    child = [[4, 2, 0], [4, 2, 1], [5, 2, 2]]                    # r2: the reverse of r1 (3 of its triples)
    chosen = choose_relations(torch.tensor(sym + parent + child), 7, 3)
    assert chosen["relation"] == 1 and set(chosen["inverse"]) == {1, 2} and chosen["symmetric"] == 0


def test_a_relation_label_with_dollar_signs_is_plotted_as_text(tmp_path_factory: pytest.TempPathFactory,
                                                               tmp_path: Path) -> None:
    """``$\\frac{$`` would crash matplotlib's mathtext; titles show labels as they are."""
    pytest.importorskip("matplotlib", reason="needs the extra 'plot'")
    from odd_labels import RELATIONS, odd_run

    run = odd_run(tmp_path_factory.getbasetemp())
    label = RELATIONS["knows"]
    written = plot(plot_config(f"ckpt={run / 'checkpoints' / 'last.ckpt'}", f"out={tmp_path}",
                               f"relation='{label}'", f"symmetric='{label}'"))
    assert {p.name for p in written} >= {"relation_phases.png", "symmetric_phases.png"}
    assert all((tmp_path / p.name).read_bytes().startswith(PNG) for p in written)
