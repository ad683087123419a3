"""The pure parts of `make chaos`'s report: outage incidents, the pass rule, and merging a filtered run."""

from __future__ import annotations

from chaos.run import healthy, merge
from chaos.whereby import incidents


def test_attempts_merge_into_incidents() -> None:
    attempts = [(5.0, 5.1), (1.0, 4.0), (1.5, 2.0), (10.0, 13.0), (10.1, 12.0)]
    assert incidents(attempts) == [(1.0, 5.1), (10.0, 13.0)]
    assert incidents([]) == []
    assert incidents([(0.0, 1.0), (3.5, 4.0)], gap_s=2.0) == [(0.0, 1.0), (3.5, 4.0)]


def test_nothing_lost_or_doubled_passes() -> None:
    assert healthy({"name": "x", "lost": 0, "duplicated": 0})
    assert not healthy({"name": "x", "lost": 1, "duplicated": 0})
    assert not healthy({"name": "x", "lost": 0, "duplicated": 2})
    assert not healthy({"name": "x", "error": "boom"})


def test_a_fault_that_outlasted_its_load_fails() -> None:
    """It would report 0 lost without having acted under load: that is not a pass."""
    assert healthy({"name": "x", "lost": 0, "duplicated": 0, "load_outlasted_fault": True})
    assert not healthy({"name": "x", "lost": 0, "duplicated": 0, "load_outlasted_fault": False})


def test_the_negative_control_passes_only_when_it_sees_duplicates() -> None:
    assert healthy({"name": "control", "negative_control": True, "duplicated": 3})
    assert not healthy({"name": "control", "negative_control": True, "duplicated": 0})


def test_a_filtered_run_replaces_only_its_own_rows() -> None:
    previous = [
        {"name": "kill_enrich", "scenario": "kill_enrich", "lost": 0},
        {"name": "duplicates_reordering", "scenario": "duplicates_reordering"},
        {"name": "duplicates_reordering (dedup off)", "scenario": "duplicates_reordering"},
        {"name": "cluster_leader_kill", "scenario": "cluster_leader_kill", "lost": 5},
    ]
    fresh = [{"name": "cluster_leader_kill", "scenario": "cluster_leader_kill", "lost": 0}]
    merged = merge(previous, fresh)
    assert [row["name"] for row in merged] == [
        "kill_enrich",
        "duplicates_reordering",
        "duplicates_reordering (dedup off)",
        "cluster_leader_kill",
    ]
    assert merged[-1]["lost"] == 0
