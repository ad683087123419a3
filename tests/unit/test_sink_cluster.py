"""The cluster rewrite of the single-node schema."""

from __future__ import annotations

import pytest

from sink import store
from sink.cluster import ClusterRewriter


def test_a_mergetree_table_becomes_replicated_local_plus_distributed() -> None:
    rw = ClusterRewriter("main")
    local, dist = rw.rewrite(
        "CREATE TABLE IF NOT EXISTS db.t (a String, v UInt64) ENGINE = ReplacingMergeTree(v) ORDER BY a "
        "SETTINGS non_replicated_deduplication_window = 100",
        "cityHash64(a)",
    )
    assert local == (
        "CREATE TABLE IF NOT EXISTS db.t_local ON CLUSTER 'main' (a String, v UInt64) "
        "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db/t_local', '{replica}', v) ORDER BY a"
    )
    assert dist == (
        "CREATE TABLE IF NOT EXISTS db.t ON CLUSTER 'main' AS db.t_local "
        "ENGINE = Distributed('main', db, t_local, cityHash64(a))"
    )


def test_materialized_views_read_and_write_local_tables_except_from_the_input_table() -> None:
    rw = ClusterRewriter("main")
    rw.rewrite("CREATE TABLE IF NOT EXISTS db.input (a String) ENGINE = Null")
    rw.rewrite("CREATE TABLE IF NOT EXISTS db.events (a String) ENGINE = MergeTree ORDER BY a")
    rw.rewrite("CREATE TABLE IF NOT EXISTS db.agg (a String) ENGINE = AggregatingMergeTree ORDER BY a")
    [from_input] = rw.rewrite("CREATE MATERIALIZED VIEW IF NOT EXISTS db.m1 TO db.events AS SELECT a FROM db.input")
    [from_events] = rw.rewrite("CREATE MATERIALIZED VIEW IF NOT EXISTS db.m2 TO db.agg AS SELECT a FROM db.events")
    assert from_input.endswith("ON CLUSTER 'main' TO db.events AS SELECT a FROM db.input")
    assert from_events.endswith("ON CLUSTER 'main' TO db.agg_local AS SELECT a FROM db.events_local")


def test_views_keep_the_distributed_names() -> None:
    [view] = ClusterRewriter("c").rewrite("CREATE VIEW IF NOT EXISTS db.v AS SELECT * FROM db.events FINAL")
    assert view == "CREATE VIEW IF NOT EXISTS db.v ON CLUSTER 'c' AS SELECT * FROM db.events FINAL"


def test_unknown_statements_are_refused_rather_than_run_unchanged_on_one_node() -> None:
    with pytest.raises(ValueError):
        ClusterRewriter("c").rewrite("RENAME TABLE db.t TO db.u")
    with pytest.raises(ValueError):
        ClusterRewriter("c").rewrite("TRUNCATE TABLE db.t")


def test_alter_reaches_the_local_table_and_its_distributed_table() -> None:
    rewriter = ClusterRewriter("c")
    rewriter.rewrite("CREATE TABLE IF NOT EXISTS db.t (x UInt8) ENGINE = MergeTree ORDER BY x", "rand()")
    assert rewriter.rewrite("ALTER TABLE db.t ADD COLUMN IF NOT EXISTS y UInt8") == [
        "ALTER TABLE db.t_local ON CLUSTER 'c' ADD COLUMN IF NOT EXISTS y UInt8",
        "ALTER TABLE db.t ON CLUSTER 'c' ADD COLUMN IF NOT EXISTS y UInt8",
    ]
    assert rewriter.rewrite("ALTER TABLE db.plain ADD COLUMN y UInt8") == [
        "ALTER TABLE db.plain ON CLUSTER 'c' ADD COLUMN y UInt8"
    ]
    assert rewriter.rewrite("DROP VIEW IF EXISTS db.v") == ["DROP VIEW IF EXISTS db.v ON CLUSTER 'c'"]
    # A data migration runs once, on one node, through the Distributed tables.
    insert = "INSERT INTO db.t (x) SELECT 1"
    assert rewriter.rewrite(insert) == [insert]


def test_the_shipped_schema_rewrites_completely() -> None:
    single = [s for _, _, ss in store.schema_statements("whereby") for s in ss]
    cluster = [s for _, _, ss in store.schema_statements("whereby", "main") for s in ss]
    tables = sum(1 for s in single if "MergeTree" in s)
    # An ALTER of a replicated table runs on its _local table too (events, and since 011 the derived rows).
    replicated = ("events", "connection_rows", "session_rows")
    alters = sum(1 for s in single for t in replicated if s.startswith(f"ALTER TABLE whereby.{t} "))
    assert len(cluster) == len(single) + tables + alters
    assert all("ON CLUSTER 'main'" in s for s in cluster if not s.startswith("INSERT INTO"))
    assert not any("non_replicated_deduplication_window" in s for s in cluster)


def test_the_database_name_must_be_an_identifier() -> None:
    with pytest.raises(store.ConfigError):
        store.statements("SELECT 1", "x; DROP TABLE y")
