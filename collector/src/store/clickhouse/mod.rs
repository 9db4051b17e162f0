//! A [`Store`] on ClickHouse, shared by any number of collector replicas:
//! each window is one row, its protobuf encoding in a `String` column next
//! to the key columns, so every query the collector answers reads the same
//! windows it would read from redb, and answers the same.
//!
//! It speaks the HTTP interface with RowBinary (hyper's client), not the
//! `clickhouse` crate: that crate (0.14 onwards) reads answers as
//! `RowBinaryWithNamesAndTypes` by default, which ClickHouse 18.16, the
//! server Debian ships, does not have.
//!
//! An insert is acknowledged by ClickHouse once the part is written, and
//! the collector acks the window to the agent only after that. On a
//! replicated cluster, give the collector's user `insert_quorum` in its
//! ClickHouse profile so an ack also means "on a quorum of replicas".

mod feed;
mod http;
mod rollup;
mod rowbinary;
mod schema;

use std::{
    ops::RangeInclusive,
    sync::{
        atomic::{AtomicBool, AtomicI64, Ordering::Relaxed},
        Arc,
    },
};

use prost::Message;
use sockeye_proto::v1::Window;

pub use http::{ClickHouseError, STATEMENT_TIMEOUT};
pub use schema::{SchemaError, LATEST as SCHEMA_VERSION};

use super::{Feed, Page, PutOutcome, PutResult, Rollups, Store, StoreError, WindowKey};
use http::{quote, Http};
use rowbinary::{day_of, yyyymmdd, Reader};

/// Where a ClickHouse store is: `clickhouse://[user[:password]@]host:port/db`,
/// `port` being ClickHouse's HTTP port (8123 by default).
#[derive(Clone, PartialEq, Eq)]
pub struct ClickHouseUrl {
    pub host_port: String,
    pub database: String,
    pub user: Option<(String, String)>,
}

impl std::fmt::Debug for ClickHouseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "clickhouse://")?;
        if let Some((u, _)) = &self.user {
            write!(f, "{u}:***@")?;
        }
        write!(f, "{}/{}", self.host_port, self.database)
    }
}

impl std::fmt::Display for ClickHouseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl std::str::FromStr for ClickHouseUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let usage = "like clickhouse://host:8123/sockeye (ClickHouse's HTTP port; user:password@ before the host if needed)";
        let rest = s
            .strip_prefix("clickhouse://")
            .ok_or_else(|| format!("{s:?} is not a ClickHouse URL {usage}"))?;
        let (authority, database) = rest.split_once('/').unwrap_or((rest, "sockeye"));
        let database = if database.is_empty() {
            "sockeye"
        } else {
            database
        };
        // The name goes into statements unquoted.
        if !database
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
            || database.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(format!(
                "database {database:?}: use letters, digits and _ only, not starting with a digit"
            ));
        }
        let (user, host_port) = match authority.rsplit_once('@') {
            Some((cred, hp)) => {
                let (u, p) = cred.split_once(':').unwrap_or((cred, ""));
                (Some((u.to_string(), p.to_string())), hp)
            }
            None => (None, authority),
        };
        let Some((host, port)) = host_port.rsplit_once(':') else {
            return Err(format!("{s:?} has no port; {usage}"));
        };
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(format!("{s:?}: bad host or port; {usage}"));
        }
        Ok(Self {
            host_port: host_port.to_string(),
            database: database.to_string(),
            user,
        })
    }
}

/// The ClickHouse-backed [`Store`].
#[derive(Debug)]
pub struct ClickHouseStore {
    http: Http,
    db: String,
    /// Windows that ended before this are deleted as far as readers are
    /// concerned (their day's partition may still be there).
    floor: AtomicI64,
    closed: AtomicBool,
}

fn ch(op: &'static str) -> impl FnOnce(ClickHouseError) -> StoreError {
    move |source| StoreError::ClickHouse { op, source }
}

/// `(end, agent, seq) > key`, spelled out (tuple comparison in ClickHouse
/// 18.16 works, but this also keeps the primary key usable).
fn after_key(k: &WindowKey) -> String {
    let a = quote(&k.agent_id);
    format!(
        "(end_unix_ms > {e} OR (end_unix_ms = {e} AND (agent_id > {a} OR (agent_id = {a} AND seq > {s}))))",
        e = k.end_unix_ms,
        s = k.seq
    )
}

impl ClickHouseStore {
    /// Connects, applies the schema and reads the retention floor. Fails
    /// with a clear error when the server cannot be reached: start it, or
    /// fix `--store`.
    pub async fn open(url: &ClickHouseUrl) -> Result<Self, StoreError> {
        let http = Http::new(
            &url.host_port,
            url.user.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
        );
        let db = url.database.clone();
        schema::migrate(&http, &db).await?;
        let store = Self {
            http,
            db,
            floor: AtomicI64::new(i64::MIN),
            closed: AtomicBool::new(false),
        };
        store.refresh_floor().await?;
        Ok(store)
    }

    /// The HTTP base URL, for logs.
    pub fn endpoint(&self) -> String {
        format!("{}{}", self.http.base(), self.db)
    }

    fn check_open(&self) -> Result<(), StoreError> {
        if self.closed.load(Relaxed) {
            Err(StoreError::Closed)
        } else {
            Ok(())
        }
    }

    async fn refresh_floor(&self) -> Result<i64, StoreError> {
        let lines = self
            .http
            .lines(&format!(
                "SELECT floor_unix_ms FROM {}.retention_floor ORDER BY floor_unix_ms DESC LIMIT 1",
                self.db
            ))
            .await
            .map_err(ch("read retention floor"))?;
        let floor = match lines.first() {
            None => i64::MIN,
            Some(l) => l.trim().parse().map_err(|_| {
                ch("read retention floor")(ClickHouseError::Decode {
                    what: format!("{l:?} is not a time"),
                })
            })?,
        };
        self.floor.fetch_max(floor, Relaxed);
        Ok(self.floor.load(Relaxed))
    }

    fn floor(&self) -> i64 {
        self.floor.load(Relaxed)
    }

    /// Rows of `end_unix_ms, agent_id, seq, body` as a page.
    fn page(&self, op: &'static str, bytes: &[u8], limit: usize) -> Result<Page, StoreError> {
        let mut r = Reader::new(bytes);
        let mut page = Page::default();
        let mut visited = 0usize;
        let mut last = None;
        while !r.is_empty() {
            let end_unix_ms = r.i64().map_err(ch(op))?;
            let agent_id = r.string().map_err(ch(op))?;
            let seq = r.u64().map_err(ch(op))?;
            let body = r.bytes().map_err(ch(op))?;
            if visited == limit {
                page.next = last;
                break;
            }
            visited += 1;
            match Window::decode(body) {
                Ok(w) => page.windows.push(w),
                Err(e) => {
                    page.corrupt += 1;
                    log::warn!(
                        "store: window (end {end_unix_ms}, agent {agent_id}, seq {seq}) cannot be decoded, skipped: {e}"
                    );
                }
            }
            last = Some(WindowKey {
                end_unix_ms,
                agent_id,
                seq,
            });
        }
        Ok(page)
    }

    /// Drops the partitions of `table` whose day is before `day`
    /// (`YYYYMMDD`).
    async fn drop_days_before(&self, table: &str, cutoff_day: u32) -> Result<(), StoreError> {
        const OP: &str = "delete expired windows";
        let parts = self
            .http
            .lines(&format!(
                "SELECT DISTINCT partition_id FROM system.parts WHERE database = {} AND table = {} AND active",
                quote(&self.db),
                quote(table)
            ))
            .await
            .map_err(ch(OP))?;
        for id in parts {
            let Ok(day) = id.trim().parse::<u32>() else {
                log::warn!(
                    "store: partition {id:?} of {}.{table} is not a day; left alone",
                    self.db
                );
                continue;
            };
            if day < cutoff_day {
                self.http
                    .run(
                        &format!(
                            "ALTER TABLE {}.{table} DROP PARTITION ID {}",
                            self.db,
                            quote(id.trim())
                        ),
                        None,
                    )
                    .await
                    .map_err(ch(OP))?;
                log::info!("retention: dropped the partition of day {day} of {table}");
            }
        }
        Ok(())
    }

    /// `(highest seq, whether seq is stored)` for `agent_id`, above the floor.
    async fn agent_state(
        &self,
        op: &'static str,
        agent_id: &str,
        seq: u64,
    ) -> Result<Option<(u64, bool)>, StoreError> {
        let lines = self
            .http
            .lines(&format!(
                "SELECT max(seq), countIf(seq = {seq}), count() FROM {}.windows WHERE agent_id = {} AND end_unix_ms >= {}",
                self.db,
                quote(agent_id),
                self.floor()
            ))
            .await
            .map_err(ch(op))?;
        let bad = || {
            ch(op)(ClickHouseError::Decode {
                what: format!("{lines:?} is not (max, count, count)"),
            })
        };
        let line = lines.first().ok_or_else(bad)?;
        let mut f = line.split('\t').map(|x| x.trim().parse::<u64>());
        let (Some(Ok(max)), Some(Ok(this)), Some(Ok(all))) = (f.next(), f.next(), f.next()) else {
            return Err(bad());
        };
        Ok((all > 0).then_some((max, this > 0)))
    }
}

#[tonic::async_trait]
impl Store for ClickHouseStore {
    async fn put(&self, window: &Window) -> Result<PutResult, StoreError> {
        const OP: &str = "put window";
        self.check_open()?;
        let state = self.agent_state(OP, &window.agent_id, window.seq).await?;
        if let Some((highest, true)) = state {
            return Ok(PutResult {
                outcome: PutOutcome::Duplicate,
                highest_seq: highest,
                rollup_failed: false,
            });
        }
        self.record_minute(window).await.map_err(ch(OP))?;
        let stamp = crate::collector::unix_ms_now();
        self.record_in_feed(window, stamp).await.map_err(ch(OP))?;
        let mut row = Vec::with_capacity(window.encoded_len() + 128);
        rowbinary::put_u16(&mut row, day_of(window.end_unix_ms));
        rowbinary::put_i64(&mut row, window.end_unix_ms);
        rowbinary::put_bytes(&mut row, window.agent_id.as_bytes());
        rowbinary::put_u64(&mut row, window.seq);
        rowbinary::put_bytes(&mut row, window.node.as_bytes());
        rowbinary::put_i64(&mut row, stamp);
        rowbinary::put_bytes(&mut row, &window.encode_to_vec());
        self.http
            .run(
                &format!(
                    "INSERT INTO {}.windows (day, end_unix_ms, agent_id, seq, node, inserted_unix_ms, body) FORMAT RowBinary",
                    self.db
                ),
                Some(row),
            )
            .await
            .map_err(ch(OP))?;
        let rollup_failed = !self.roll_up(window).await;
        Ok(PutResult {
            outcome: PutOutcome::Stored,
            highest_seq: state.map_or(window.seq, |(h, _)| h.max(window.seq)),
            rollup_failed,
        })
    }

    async fn highest_seq(&self, agent_id: &str) -> Result<Option<u64>, StoreError> {
        self.check_open()?;
        Ok(self
            .agent_state("highest seq", agent_id, 0)
            .await?
            .map(|(h, _)| h))
    }

    async fn scan(
        &self,
        end_unix_ms: RangeInclusive<i64>,
        after: Option<WindowKey>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        const OP: &str = "scan windows";
        self.check_open()?;
        let (from, to) = ((*end_unix_ms.start()).max(self.floor()), *end_unix_ms.end());
        if from > to || limit == 0 {
            return Ok(Page::default());
        }
        let after = after.map_or_else(|| "1".to_string(), |k| after_key(&k));
        let sql = format!(
            "SELECT end_unix_ms, agent_id, seq, body FROM {db}.windows FINAL
             WHERE {days} end_unix_ms >= {from} AND end_unix_ms <= {to} AND {after}
             ORDER BY end_unix_ms, agent_id, seq
             LIMIT {n} FORMAT RowBinary",
            db = self.db,
            days = day_bounds(from, to),
            n = limit.saturating_add(1),
        );
        let bytes = self.http.run(&sql, None).await.map_err(ch(OP))?;
        self.page(OP, &bytes, limit)
    }

    async fn latest_per_node(&self) -> Result<Page, StoreError> {
        const OP: &str = "latest window per node";
        self.check_open()?;
        let sql = format!(
            "SELECT end_unix_ms, agent_id, seq, body FROM {db}.windows FINAL
             WHERE end_unix_ms >= {floor}
             ORDER BY node, end_unix_ms DESC, agent_id DESC, seq DESC
             LIMIT 1 BY node FORMAT RowBinary",
            db = self.db,
            floor = self.floor(),
        );
        let bytes = self.http.run(&sql, None).await.map_err(ch(OP))?;
        self.page(OP, &bytes, usize::MAX)
    }

    async fn delete_ended_before(&self, cutoff_unix_ms: i64) -> Result<u64, StoreError> {
        const OP: &str = "delete expired windows";
        self.check_open()?;
        let old = self.refresh_floor().await?;
        let mut deleted = 0;
        if cutoff_unix_ms > old {
            deleted = self
                .http
                .number(&format!(
                    "SELECT count() FROM {}.windows FINAL WHERE end_unix_ms < {cutoff_unix_ms} AND end_unix_ms >= {old}",
                    self.db
                ))
                .await
                .map_err(ch(OP))?;
            // Raised first, so no reader sees a window past the cutoff
            // while its partition waits to be dropped.
            self.http
                .run(
                    &format!(
                        "INSERT INTO {}.retention_floor VALUES (0, {cutoff_unix_ms})",
                        self.db
                    ),
                    None,
                )
                .await
                .map_err(ch(OP))?;
            self.floor.fetch_max(cutoff_unix_ms, Relaxed);
        }
        // Days that ended by the cutoff go whole (ClickHouse 18.16 has no
        // TTL; dropping a partition is a file operation, not a rewrite).
        let cutoff_day = yyyymmdd(day_of(cutoff_unix_ms));
        for table in ["windows", "windows_minute", "tcp_minute"] {
            self.drop_days_before(table, cutoff_day).await?;
        }
        // The feed is read only for its last minute: a day of it is plenty.
        let yesterday = day_of(crate::collector::unix_ms_now()).saturating_sub(1);
        self.drop_days_before("windows_feed", yyyymmdd(yesterday))
            .await?;
        Ok(deleted)
    }

    async fn window_count(&self) -> Result<u64, StoreError> {
        self.check_open()?;
        self.http
            .number(&format!(
                "SELECT count() FROM {}.windows FINAL WHERE end_unix_ms >= {}",
                self.db,
                self.floor()
            ))
            .await
            .map_err(ch("count windows"))
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.closed.store(true, Relaxed);
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.check_open()?;
        self.http
            .run("SELECT 1", None)
            .await
            .map(|_| ())
            .map_err(ch("ping"))
    }

    fn feed(&self) -> Option<&dyn Feed> {
        Some(self)
    }

    fn rollups(&self) -> Option<&dyn Rollups> {
        Some(self)
    }
}

/// Conditions on `day` that let ClickHouse skip whole partitions, for the
/// bounds a `Date` can hold (an unbounded end has none).
fn day_bounds(from: i64, to: i64) -> String {
    // 2105-01-01: ClickHouse 18.16 reads later dates wrong.
    const LAST_DAY: u16 = 49_308;
    let mut out = String::new();
    if day_of(from) > 0 {
        out += &format!("day >= toDate({}) AND ", quote(&date(day_of(from))));
    }
    if day_of(to) < LAST_DAY {
        out += &format!("day <= toDate({}) AND ", quote(&date(day_of(to))));
    }
    out
}

/// `YYYY-MM-DD` of a day since 1970.
pub(super) fn date(day: u16) -> String {
    let d = yyyymmdd(day);
    format!("{:04}-{:02}-{:02}", d / 10_000, d / 100 % 100, d % 100)
}

/// A store shared by replicas, as the trait object the collector holds.
pub async fn open_shared(url: &ClickHouseUrl) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(ClickHouseStore::open(url).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u: ClickHouseUrl = "clickhouse://127.0.0.1:8123/sock_1".parse().unwrap();
        assert_eq!(u.host_port, "127.0.0.1:8123");
        assert_eq!(u.database, "sock_1");
        assert_eq!(u.user, None);
        let u: ClickHouseUrl = "clickhouse://me:pw@ch:8123".parse().unwrap();
        assert_eq!(u.database, "sockeye");
        assert_eq!(u.user, Some(("me".into(), "pw".into())));
        assert_eq!(u.to_string(), "clickhouse://me:***@ch:8123/sockeye");
        for bad in [
            "http://ch:8123/x",
            "clickhouse://ch/x",
            "clickhouse://ch:port/x",
            "clickhouse://ch:8123/x;DROP",
            "clickhouse://ch:8123/1x",
        ] {
            assert!(bad.parse::<ClickHouseUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn dates() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(day_of(1_796_169_600_000)), "2026-12-02");
        assert_eq!(date(49_308), "2105-01-01");
        assert_eq!(day_bounds(0, i64::MAX), "");
        assert_eq!(
            day_bounds(1_796_169_600_000, 1_796_169_600_000),
            "day >= toDate('2026-12-02') AND day <= toDate('2026-12-02') AND "
        );
    }
}
