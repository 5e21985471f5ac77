"""Planning the demo world (no audio): catalogues, durations, versions, split, determinism, at full size."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from songtrace.errors import SongtraceError
from songtrace.world import ARTISTS, WorldConfig, artist_by_name, plan_world
from songtrace.world.plan import assign_splits, catalogue_sizes


@pytest.fixture(scope="module")
def plan400():
    return plan_world(WorldConfig())


def test_config_round_trips_and_validates():
    config = WorldConfig(tracks=50, seed=3, max_seconds=8.0, sample_rate=22050)
    assert WorldConfig.from_dict(config.to_dict()) == config
    for bad in (dict(tracks=1), dict(min_seconds=5.0, max_seconds=4.0), dict(sample_rate=100), dict(valid_fraction=0.7),
                dict(short_fraction=0.8, full_fraction=0.4), dict(max_seconds=-1.0)):
        with pytest.raises(SongtraceError):
            WorldConfig(**bad)


def test_default_world_has_many_artists_with_varied_catalogues(plan400):
    counts = collections.Counter(p.artist for p in plan400)
    assert len(plan400) == 400
    assert len(counts) >= 12
    assert min(counts.values()) == 3
    assert max(counts.values()) >= 50
    assert sorted({p.id for p in plan400}) == [f"t{i:04d}" for i in range(400)]


def test_artists_keep_their_style(plan400):
    for p in plan400:
        artist = artist_by_name(p.artist)
        if not p.version_of:
            assert p.piece.collection == artist.collection
            assert artist.tempo[0] <= p.bpm <= artist.tempo[1]
            assert abs(p.transpose - artist.transpose) <= 2


def test_durations_span_the_range_with_short_tracks(plan400):
    d = np.array([p.duration for p in plan400])
    assert d.min() >= 1.5 and d.max() <= 12.0
    assert d.min() < 2.0
    assert (d < 12.0 / 3).mean() >= 0.2
    assert (d == 12.0).mean() >= 0.3


def test_planted_versions_are_the_same_piece_by_another_artist(plan400):
    by_id = {p.id: p for p in plan400}
    versions = [p for p in plan400 if p.version_of]
    assert len(versions) == 20  # 5 % of 400
    originals = [by_id[v.version_of] for v in versions]
    assert len({o.id for o in originals}) == len(originals)
    for v, o in zip(versions, originals, strict=True):
        assert v.piece == o.piece and v.start_frac == o.start_frac
        assert v.artist != o.artist
        assert (v.transpose - o.transpose) % 12 != 0
        assert abs(v.bpm / o.bpm - 1) >= 0.1 - 1e-9
        assert v.version_group == o.version_group == o.id
        assert v.split == o.split == "train"
    grouped = {p.id for p in versions} | {o.id for o in originals}
    for p in plan400:
        if p.id not in grouped:
            assert p.version_group == p.id and p.version_of == ""


def test_pieces_are_not_reused_except_by_versions(plan400):
    sources = collections.Counter(p.piece.source for p in plan400 if not p.version_of)
    assert max(sources.values()) == 1


def test_split_is_stratified(plan400):
    splits = collections.Counter(p.split for p in plan400)
    assert splits["valid"] == 40
    for artist in {p.artist for p in plan400}:
        assert sum(p.split == "train" for p in plan400 if p.artist == artist) >= 2


def test_plan_is_deterministic_for_a_seed(plan400):
    assert plan_world(WorldConfig()) == plan400
    other = plan_world(WorldConfig(seed=1))
    assert [p.piece for p in other] != [p.piece for p in plan400]


def test_tiny_plan_keeps_several_artists_short_tracks_and_a_version():
    plan = plan_world(WorldConfig(tracks=12, max_seconds=2.0, min_seconds=1.0))
    counts = collections.Counter(p.artist for p in plan)
    assert len(counts) == 4 and set(counts.values()) == {3}
    assert len({artist_by_name(a).collection for a in counts}) == 4
    assert sum(p.duration <= 1.0 for p in plan) >= 1
    assert sum(bool(p.version_of) for p in plan) == 1
    assert sum(p.split == "valid" for p in plan) == 1


def test_catalogue_sizes_sum_and_minimum():
    for n in (51, 100, 400, 1000):
        sizes = catalogue_sizes(n, ARTISTS)
        assert sum(sizes) == n and min(sizes) >= 3
    assert catalogue_sizes(7, ARTISTS[:2]) == [4, 3]


def test_assign_splits_keeps_two_train_tracks_and_locked_tracks():
    artists = ["a"] * 3 + ["b"] * 20 + ["c"] * 2
    locked = [False] * 25
    locked[5] = locked[6] = True
    splits = assign_splits(artists, locked, 0.2, np.random.default_rng(0))
    assert splits.count("valid") == 5
    assert splits[5] == splits[6] == "train"
    for a in "abc":
        assert sum(s == "train" for s, x in zip(splits, artists, strict=True) if x == a) >= 2
