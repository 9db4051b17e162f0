//! The ClickHouse schema, applied by every collector at start: numbered
//! migrations recorded in `schema_migrations`. Each statement is idempotent
//! (`IF NOT EXISTS`), so replicas starting together may both apply one and
//! nothing breaks; the record of a version is a `ReplacingMergeTree` row, so
//! recording it twice keeps one.
//!
//! Only types and engines ClickHouse 18.16 has (no `LowCardinality`, no
//! `Map`, no table `TTL`: retention drops day partitions instead).

use super::http::{ClickHouseError, Http};

/// The newest schema this collector knows. A store at a newer version was
/// migrated by a newer collector: this one refuses to write to it.
pub const LATEST: u32 = 6;

/// `windows_minute` from the raw table, for windows already stored (run by
/// versions 4 and 5; a set merge, so running it twice counts nothing twice).
const BACKFILL_WINDOWS_MINUTE: &str = "INSERT INTO {db}.windows_minute
    SELECT day, intDiv(end_unix_ms, 60000) AS minute, node,
        uniqExactState(agent_id, seq) AS stored
    FROM {db}.windows GROUP BY day, minute, node";

/// `{db}` stands for the database name.
const MIGRATIONS: &[(u32, &[&str])] = &[
    (
        1,
        // Windows are keyed by (agent_id, seq): agent_id is the agent's
        // node, pid and start time, so (node, boot, sequence) in one. The
        // dedup is `ReplacingMergeTree` on that key, not an insert dedup
        // token: ClickHouse keeps dedup tokens only for Replicated tables,
        // and only for the last blocks inserted, while a window may be
        // resent hours later (an agent's buffer) through another replica.
        // The store checks for the key before inserting, and reads use
        // FINAL, so two replicas racing on one window still show it once
        // before ClickHouse merges the copies away. The copies always share
        // a partition (same end, same day), which is where
        // ReplacingMergeTree collapses them.
        &["CREATE TABLE IF NOT EXISTS {db}.windows (
                day Date,
                end_unix_ms Int64,
                agent_id String,
                seq UInt64,
                node String,
                inserted_unix_ms Int64,
                body String
            ) ENGINE = ReplacingMergeTree()
            PARTITION BY day
            ORDER BY (agent_id, seq)"],
    ),
    (
        2,
        // Retention drops whole days; windows of the day that holds the
        // cutoff stay until it is dropped but must not be read: every read
        // starts at the highest cutoff recorded here, shared by replicas.
        &["CREATE TABLE IF NOT EXISTS {db}.retention_floor (
                key UInt8,
                floor_unix_ms Int64
            ) ENGINE = ReplacingMergeTree(floor_unix_ms)
            ORDER BY key"],
    ),
    (
        3,
        // The insert feed live streams follow across replicas: the key of
        // every row inserted into `windows`, ordered by when it was
        // inserted, so "what was inserted since t" is a range of this
        // table's primary key. Filled by a materialized view here, written
        // by the collector from version 6. Partitioned by the day of
        // insert, and only the last minute of it is ever read: retention
        // drops days older than yesterday. Windows stored before this version are not in it,
        // which only matters for live streams, and those are seconds old.
        &[
            "CREATE TABLE IF NOT EXISTS {db}.windows_feed (
                inserted_day Date,
                inserted_unix_ms Int64,
                day Date,
                agent_id String,
                seq UInt64
            ) ENGINE = MergeTree()
            PARTITION BY inserted_day
            ORDER BY (inserted_unix_ms, agent_id, seq)",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.windows_feed_mv TO {db}.windows_feed AS
            SELECT toDate(intDiv(inserted_unix_ms, 1000)) AS inserted_day,
                inserted_unix_ms, day, agent_id, seq
            FROM {db}.windows",
        ],
    ),
    (
        4,
        // Per-minute rollups of outbound TCP flows for long QueryTop ranges
        // (`super::rollup`). The collector writes them, into a Null table a
        // materialized view aggregates: only the collector can decode a
        // window's protobuf body, and a view on `windows` cannot.
        //
        // A window rolled up twice (two replicas racing, or a retry) would
        // count twice in an AggregatingMergeTree, and ClickHouse 18.16 has
        // no insert dedup token for plain MergeTree tables. So duplicates
        // are not kept out, they are found: every minute and node records
        // how many window inserts it got (`inserts`) and the set of
        // distinct (agent_id, seq) (`stored`), and `windows_minute`, a view
        // on the raw table's own inserts, records the windows the raw
        // table has. A (minute, node) is answered from rollups only when
        // the three agree; any other is read raw, where FINAL dedups.
        // That also covers a window whose rollup insert failed, and
        // windows stored before this version (backfilled into
        // `windows_minute` below; uniqExact states merge as sets, so
        // running the backfill twice counts nothing twice).
        &[
            "CREATE TABLE IF NOT EXISTS {db}.windows_minute (
                day Date,
                minute Int64,
                node String,
                stored AggregateFunction(uniqExact, String, UInt64)
            ) ENGINE = AggregatingMergeTree()
            PARTITION BY day
            ORDER BY (minute, node)",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.windows_minute_mv TO {db}.windows_minute AS
            SELECT day, intDiv(end_unix_ms, 60000) AS minute, node,
                uniqExactState(agent_id, seq) AS stored
            FROM {db}.windows GROUP BY day, minute, node",
            BACKFILL_WINDOWS_MINUTE,
            // One input row per window (`row` 0: its node-level part) and
            // one per (workload, remote) of its outbound flows (`row` 1),
            // all in one INSERT, so a window is rolled up whole or not.
            "CREATE TABLE IF NOT EXISTS {db}.tcp_minute_in (
                day Date,
                minute Int64,
                node String,
                agent_id String,
                seq UInt64,
                row UInt8,
                workload String,
                remote String,
                w_end Int64,
                w_dropped UInt64,
                f_ok UInt64,
                f_failed UInt64,
                f_open UInt64,
                f_lows Array(UInt64),
                f_highs Array(UInt64),
                f_counts Array(UInt64),
                f_sum UInt64,
                f_min UInt64,
                f_max UInt64,
                f_latest Tuple(Int64, String, UInt64, UInt32),
                f_drops_at Tuple(Int64, String, UInt64, UInt32),
                f_drops String
            ) ENGINE = Null",
            "CREATE TABLE IF NOT EXISTS {db}.tcp_minute (
                day Date,
                minute Int64,
                node String,
                row UInt8,
                workload String,
                remote String,
                inserts AggregateFunction(count),
                stored AggregateFunction(uniqExact, String, UInt64),
                latest_end AggregateFunction(max, Int64),
                dropped AggregateFunction(sum, UInt64),
                ok AggregateFunction(sum, UInt64),
                failed AggregateFunction(sum, UInt64),
                open AggregateFunction(sumMap, Array(Int64), Array(UInt64)),
                bins AggregateFunction(sumMap, Array(UInt64), Array(UInt64)),
                highs AggregateFunction(groupUniqArrayArray, Array(Tuple(UInt64, UInt64))),
                sum_ns AggregateFunction(sum, UInt64),
                min_ns AggregateFunction(min, UInt64),
                max_ns AggregateFunction(max, UInt64),
                latest AggregateFunction(max, Tuple(Int64, String, UInt64, UInt32)),
                drops_at AggregateFunction(min, Tuple(Int64, String, UInt64, UInt32)),
                drops AggregateFunction(argMin, String, Tuple(Int64, String, UInt64, UInt32))
            ) ENGINE = AggregatingMergeTree()
            PARTITION BY day
            ORDER BY (minute, node, row, workload, remote)",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.tcp_minute_mv TO {db}.tcp_minute AS
            SELECT day, minute, node, row, workload, remote,
                countState() AS inserts,
                uniqExactState(agent_id, seq) AS stored,
                maxState(w_end) AS latest_end,
                sumState(w_dropped) AS dropped,
                sumState(f_ok) AS ok,
                sumState(f_failed) AS failed,
                sumMapState([w_end], [f_open]) AS open,
                sumMapState(f_lows, f_counts) AS bins,
                groupUniqArrayArrayState(arrayMap((lo, hi) -> (lo, hi), f_lows, f_highs)) AS highs,
                sumState(f_sum) AS sum_ns,
                minState(f_min) AS min_ns,
                maxState(f_max) AS max_ns,
                maxState(f_latest) AS latest,
                minState(f_drops_at) AS drops_at,
                argMinState(f_drops, f_drops_at) AS drops
            FROM {db}.tcp_minute_in
            GROUP BY day, minute, node, row, workload, remote",
        ],
    ),
    (
        5,
        // `windows_minute` is written by the collector before the raw
        // insert (`super::rollup`'s `record_minute`), no longer by a view
        // in the raw insert: a ClickHouse killed while answering that
        // insert could keep the raw part and lose the view's, and an agent
        // told at its next Hello that the window is stored never sends it
        // again to repair it. The minute then looked whole with the window
        // missing from both (a CI run: QueryTop 59 windows of 60 after a
        // restart). The backfill runs once more, for windows a version-4
        // collector stored that way.
        &[
            "DROP TABLE IF EXISTS {db}.windows_minute_mv",
            BACKFILL_WINDOWS_MINUTE,
        ],
    ),
    (
        6,
        // The insert feed the same way: written by the collector before
        // the raw insert (`super::feed`'s `record_in_feed`), no longer by a
        // view in it. A raw insert cut after its part landed kept the
        // window and lost its feed row, and live streams on the other
        // replicas never delivered it. Replicas still at version 5 write no
        // feed row once this runs: upgrade them together.
        &["DROP TABLE IF EXISTS {db}.windows_feed_mv"],
    ),
];

/// Why the schema could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("ClickHouse database {db} has schema version {found}, this collector knows up to {expected}; run a collector at least as new as the one that migrated it")]
    TooNew {
        db: String,
        found: u32,
        expected: u32,
    },
    #[error("applying schema version {version} to ClickHouse database {db}: {source}")]
    Apply {
        db: String,
        version: u32,
        #[source]
        source: ClickHouseError,
    },
}

/// Creates the database if needed and applies what is missing; returns the
/// version the store is at now.
pub async fn migrate(http: &Http, db: &str) -> Result<u32, SchemaError> {
    let at = |version| {
        let db = db.to_string();
        move |source| SchemaError::Apply {
            db,
            version,
            source,
        }
    };
    http.run(&format!("CREATE DATABASE IF NOT EXISTS {db}"), None)
        .await
        .map_err(at(0))?;
    http.run(
        &format!(
            "CREATE TABLE IF NOT EXISTS {db}.schema_migrations (
                version UInt32,
                applied_unix_ms Int64
            ) ENGINE = ReplacingMergeTree() ORDER BY version"
        ),
        None,
    )
    .await
    .map_err(at(0))?;
    let found: u32 = http
        .number(&format!("SELECT max(version) FROM {db}.schema_migrations"))
        .await
        .map_err(at(0))?;
    if found > LATEST {
        return Err(SchemaError::TooNew {
            db: db.to_string(),
            found,
            expected: LATEST,
        });
    }
    for (version, statements) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        for s in *statements {
            http.run(&s.replace("{db}", db), None)
                .await
                .map_err(at(*version))?;
        }
        http.run(
            &format!(
                "INSERT INTO {db}.schema_migrations VALUES ({version}, {})",
                crate::collector::unix_ms_now()
            ),
            None,
        )
        .await
        .map_err(at(*version))?;
        log::info!("store: ClickHouse database {db} migrated to schema version {version}");
    }
    Ok(LATEST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_and_end_at_latest() {
        let versions: Vec<u32> = MIGRATIONS.iter().map(|(v, _)| *v).collect();
        assert!(versions.windows(2).all(|w| w[1] == w[0] + 1));
        assert_eq!(versions.first(), Some(&1));
        assert_eq!(versions.last(), Some(&LATEST));
    }
}
