-- Dimension tables, upserted by the sink from the compacted dimensions topic. `version` is the record's
-- offset in that (single-partition) topic, so the newest record for a key wins; a tombstone is stored
-- as a row with deleted = true, and the views below hide it.

-- cluster shard key: cityHash64(customer_id)
CREATE TABLE IF NOT EXISTS {db}.dim_customers
(
    customer_id        String,
    name               Nullable(String),
    room_name_prefixes Array(String),
    attributes         Map(String, String),
    deleted            Bool,
    version            UInt64,
    updated_at         DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY customer_id
SETTINGS non_replicated_deduplication_window = 1000;

-- cluster shard key: cityHash64(external_id)
CREATE TABLE IF NOT EXISTS {db}.dim_users
(
    external_id String,
    user_id     Nullable(String),
    customer_id Nullable(String),
    name        Nullable(String),
    email       Nullable(String),
    attributes  Map(String, String),
    deleted     Bool,
    version     UInt64,
    updated_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY external_id
SETTINGS non_replicated_deduplication_window = 1000;

CREATE VIEW IF NOT EXISTS {db}.customers AS
SELECT customer_id, name, room_name_prefixes, attributes, version, updated_at
FROM {db}.dim_customers FINAL
WHERE NOT deleted;

CREATE VIEW IF NOT EXISTS {db}.users AS
SELECT external_id, user_id, customer_id, name, email, attributes, version, updated_at
FROM {db}.dim_users FINAL
WHERE NOT deleted;
