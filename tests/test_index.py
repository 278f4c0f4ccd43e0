"""TripleIndex at scale (no silent key overflow, exact draws) and UnionIndex, against brute force."""

from __future__ import annotations

import pytest
import torch

from lightning_kge.data.index import MAX_IDS, TripleIndex, UnionIndex, check_packing
from lightning_kge.errors import ArgumentError, UserError

E_BIG, R_BIG = 30_000_000, 100_000
QUERY = (6148917, 69128)
"""With the former packing ``(h·R + r)·E + t``, ``(6148917, 69128, 19551623)`` wraps around int64
onto the key of ``(3, 5, 7)`` (issue 20)."""


def big_graph() -> torch.Tensor:
    h, r = QUERY
    return torch.tensor([
        [3, 5, 7],  # what the wrapped key of the absent triple below pointed at
        [h, r, 0], [h, r, 1], [h, r, 19551622], [h, r, 19551624], [h, r, E_BIG - 1],
        [E_BIG - 1, R_BIG - 1, E_BIG - 1], [0, R_BIG - 1, h], [19551623, r, h],
    ])


def test_the_index_answers_membership_exactly_at_30m_entities_and_100k_relations() -> None:
    triples = big_graph()
    index = TripleIndex(triples, E_BIG, R_BIG)
    assert not bool(index.contains(torch.tensor(QUERY[0]), torch.tensor(QUERY[1]), torch.tensor(19551623)))
    assert index.contains(*triples.unbind(1)).all()
    known = {tuple(x) for x in triples.tolist()}
    probes = triples.clone()
    probes[:, 2] = (probes[:, 2] + 1) % E_BIG  # neighbours of every true triple
    assert index.contains(*probes.unbind(1)).tolist() == [tuple(x) in known for x in probes.tolist()]
    rows, tails = index.true_tails(torch.tensor([QUERY[0], 3]), torch.tensor([QUERY[1], 5]))
    assert rows.tolist() == [0] * 5 + [1]
    assert tails.tolist() == [0, 1, 19551622, 19551624, E_BIG - 1, 7]
    rows, heads = index.true_heads(torch.tensor([QUERY[1]]), torch.tensor([0]))
    assert heads.tolist() == [QUERY[0]]


def test_draws_at_30m_entities_are_the_uniform_draw_of_the_unknown_entities() -> None:
    """Each draw is the ``⌊u·free⌋``-th entity outside the known answers, recomputed by hand."""
    index = TripleIndex(big_graph(), E_BIG, R_BIG)
    positives = torch.tensor([[QUERY[0], QUERY[1], 1], [19551623, QUERY[1], QUERY[0]], [5, 5, 5]])
    corrupt_head = torch.tensor([False, True, False])
    keys = index.query_keys(positives, corrupt_head)
    ids, ok = index.draw_unknown(keys, 4000, torch.Generator().manual_seed(3))
    uniform = torch.rand((3, 4000), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    graph = big_graph().tolist()
    known = [sorted(t for h, r, t in graph if (h, r) == QUERY),  # (h, r, ?) of row 0
             sorted(h for h, r, t in graph if (r, t) == (QUERY[1], QUERY[0])),  # (?, r, t) of row 1
             []]  # (5, 5, ?) is no known query
    assert known[0] == [0, 1, 19551622, 19551624, E_BIG - 1] and known[1] == [19551623]
    assert ok.all()
    for row in range(3):
        free = E_BIG - len(known[row])
        for u_float, got in zip(uniform[row].tolist(), ids[row].tolist()):
            u = min(int(u_float * free), free - 1)
            entity = u
            for answer in known[row]:  # the u-th unknown entity: skip each known answer at or below it
                if answer <= entity:
                    entity += 1
            assert got == entity
    assert not set(ids[0].tolist()) & set(known[0])


@pytest.mark.parametrize(("entities", "relations"), [(MAX_IDS, MAX_IDS), (MAX_IDS, 1), (1, MAX_IDS)])
def test_keys_do_not_overflow_at_the_largest_sizes(entities: int, relations: int) -> None:
    top = torch.tensor([[entities - 1, relations - 1, entities - 1], [0, 0, 0], [entities - 1, 0, 0]])
    index = TripleIndex(top, entities, relations)
    known = {tuple(x) for x in top.tolist()}
    corners = torch.cartesian_prod(*(torch.tensor(sorted({x for x in (0, 1, n // 2, n - 2, n - 1) if 0 <= x < n}))
                                     for n in (entities, relations, entities)))
    assert index.contains(*corners.unbind(1)).tolist() == [tuple(x) in known for x in corners.tolist()]
    keys = index.query_keys(top, torch.tensor([True, False, True]))
    assert bool((keys >= 0).all()) and bool((index.query_ids(keys) < index.num_queries).all())
    ids, ok = index.draw_unknown(keys, 50, torch.Generator().manual_seed(0))
    if entities > 1:
        assert ok.all() and bool((ids >= 0).all()) and bool((ids < entities).all())
        assert not bool(index.contains(ids[:1], top[:1, 1:2], top[:1, 2:3]).any())  # row 0 replaced its head


def test_sizes_beyond_2_to_the_31_and_overflowing_packings_are_refused() -> None:
    with pytest.raises(ArgumentError, match="num_entities"):
        TripleIndex(torch.zeros(1, 3, dtype=torch.long), MAX_IDS + 1, 1)
    with pytest.raises(ArgumentError, match="num_relations"):
        TripleIndex(torch.zeros(1, 3, dtype=torch.long), 1, 0)
    check_packing(2**32 - 2, MAX_IDS)  # 2³¹ − 1 triples: at most 2³² − 2 queries, still fits
    with pytest.raises(UserError, match="overflow"):
        check_packing(2**32, MAX_IDS)


def test_draws_never_return_a_known_answer_and_cover_every_unknown_entity(random_triples) -> None:
    E, R = 12, 3
    triples = random_triples(E, R, 80, seed=5)
    index = TripleIndex(triples, E, R)
    known = {tuple(x) for x in triples.tolist()}
    positives = triples[:20]
    for corrupt_head in (torch.zeros(20, dtype=torch.bool), torch.ones(20, dtype=torch.bool)):
        ids, ok = index.draw_unknown(index.query_keys(positives, corrupt_head), 2000, torch.Generator().manual_seed(1))
        for (h, r, t), row, head, has in zip(positives.tolist(), ids.tolist(), corrupt_head.tolist(), ok.tolist()):
            unknown = {e for e in range(E) if ((e, r, t) if head else (h, r, e)) not in known}
            assert has == bool(unknown)
            if unknown:
                assert set(row) == unknown  # 2,000 draws over at most 12 entities reach each one


def test_a_saturated_query_is_flagged_and_its_draws_masked() -> None:
    triples = torch.tensor([[0, 0, 0], [0, 0, 1], [0, 0, 2], [1, 0, 2]])
    index = TripleIndex(triples, 3, 1)
    assert index.saturated
    ids, ok = index.draw_unknown(index.query_keys(triples[:2], torch.tensor([False, True])), 5)
    assert ok.tolist() == [False, True] and ids[0].tolist() == [0] * 5
    assert not TripleIndex(triples[1:], 3, 1).saturated


def test_state_round_trips_the_index(random_triples) -> None:
    triples = random_triples(9, 4, 60, seed=7)
    index = TripleIndex(triples, 9, 4)
    again = TripleIndex.from_state(index.state(), 9, 4)
    grid = torch.cartesian_prod(torch.arange(9), torch.arange(4), torch.arange(9))
    assert torch.equal(again.contains(*grid.unbind(1)), index.contains(*grid.unbind(1)))
    keys = index.query_keys(triples, torch.arange(60) % 2 == 0)
    assert torch.equal(again.draw_unknown(keys, 7, torch.Generator().manual_seed(0))[0],
                       index.draw_unknown(keys, 7, torch.Generator().manual_seed(0))[0])
    assert again.saturated == index.saturated and again.num_queries == index.num_queries


def test_an_empty_index_knows_nothing_and_draws_uniformly() -> None:
    index = TripleIndex(torch.zeros(0, 3, dtype=torch.long), 5, 2)
    assert index.num_queries == 0 and not index.saturated
    assert not bool(index.contains(torch.tensor([0]), torch.tensor([1]), torch.tensor([2])).any())
    assert index.true_tails(torch.tensor([0, 1]), torch.tensor([0, 1]))[0].numel() == 0
    ids, ok = index.draw_unknown(torch.tensor([0, 7]), 300, torch.Generator().manual_seed(0))
    assert ok.all() and set(ids.flatten().tolist()) == set(range(5))


def test_a_union_of_disjoint_indexes_answers_as_one_index_of_all_triples(random_triples) -> None:
    E, R = 8, 3
    triples = torch.unique(random_triples(E, R, 90, seed=11), dim=0)
    first, second = triples[::2], triples[1::2]
    union = UnionIndex(TripleIndex(first, E, R), TripleIndex(second, E, R))
    whole = TripleIndex(triples, E, R)
    grid = torch.cartesian_prod(torch.arange(E), torch.arange(R), torch.arange(E))
    assert torch.equal(union.contains(*grid.unbind(1)), whole.contains(*grid.unbind(1)))
    queries = torch.cartesian_prod(torch.arange(E), torch.arange(R))
    for side in ("tails", "heads"):
        args = (queries[:, 0], queries[:, 1]) if side == "tails" else (queries[:, 1], queries[:, 0])
        got = getattr(union, f"true_{side}")(*args)
        expected = getattr(whole, f"true_{side}")(*args)
        assert sorted(zip(*(x.tolist() for x in got))) == sorted(zip(*(x.tolist() for x in expected)))
    with pytest.raises(ArgumentError):
        UnionIndex(TripleIndex(first, E, R), TripleIndex(second, E + 1, R))


def test_the_index_holds_at_most_48_bytes_per_distinct_triple(random_triples) -> None:
    """answers and draw_keys: 2 pairs of 8 bytes per triple each; the query table: at most 2 queries of 8 bytes."""
    triples = torch.unique(random_triples(5000, 50, 20000, seed=3), dim=0)
    index = TripleIndex(triples, 5000, 50)
    size = sum(value.numel() * value.element_size() for value in index.state().values())
    assert 32 * len(triples) < size <= 48 * len(triples) + 8
