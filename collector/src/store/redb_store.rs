//! The embedded store: one redb file in the data directory.
//!
//! Every write is its own ACID transaction committed with fsync
//! (`Durability::Immediate`), so a window is acknowledged only once it would
//! survive a crash. Quick repair is on, so reopening after a crash does not
//! walk the whole file.

use std::{
    ops::{Bound, RangeInclusive},
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use sockeye_proto::v1::Window;

use super::{Page, PutOutcome, PutResult, Store, StoreError, WindowKey, DB_FILE};

/// (end_unix_ms, agent_id, seq) -> encoded `Window`.
const WINDOWS: TableDefinition<(i64, &str, u64), &[u8]> = TableDefinition::new("windows");
/// (agent_id, seq) -> end_unix_ms: the dedup index, and the way back to
/// the window's key.
const SEEN: TableDefinition<(&str, u64), i64> = TableDefinition::new("seen");
/// agent_id -> (highest stored seq, latest end_unix_ms).
const AGENTS: TableDefinition<&str, (u64, i64)> = TableDefinition::new("agents");
/// node -> key of its latest window.
const LATEST: TableDefinition<&str, (i64, &str, u64)> = TableDefinition::new("latest_by_node");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Bump when the tables above change meaning.
const SCHEMA_VERSION: u64 = 1;
/// Retention deletes in batches so one transaction stays small.
const DELETE_BATCH: usize = 4096;

/// The redb-backed [`Store`].
pub struct RedbStore {
    path: PathBuf,
    cache_bytes: usize,
    /// Operations hold a clone of the `Arc` for their duration; `close` and
    /// `reopen` wait for them before releasing the file.
    db: RwLock<State>,
}

enum State {
    Open(Arc<Database>),
    /// Between a failed write and the file opening again.
    Reopening,
    Closed,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish()
    }
}

fn db_err(op: &'static str) -> impl FnOnce(redb::Error) -> StoreError {
    move |source| StoreError::Db { op, source }
}

/// Shorthand: any redb error into `StoreError::Db` for `op`.
macro_rules! tx {
    ($op:expr, $e:expr) => {
        $e.map_err(|e| StoreError::Db {
            op: $op,
            source: redb::Error::from(e),
        })
    };
}

impl RedbStore {
    /// Opens (or creates) `data_dir/collector.redb`. Blocking: the first open
    /// after a crash may repair the file.
    pub fn open(data_dir: &Path, cache_bytes: usize) -> Result<Self, StoreError> {
        // Windows name every workload and destination of the cluster: a new
        // data directory is private to the collector's user. An existing one
        // keeps the mode its owner gave it.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(|source| StoreError::CreateDir {
                path: data_dir.to_path_buf(),
                source,
            })?;
        let path = data_dir.join(DB_FILE);
        let db = open_db(&path, cache_bytes)?;
        Ok(Self {
            path,
            cache_bytes,
            db: RwLock::new(State::Open(Arc::new(db))),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn db(&self) -> Result<Arc<Database>, StoreError> {
        // A poisoned lock only means a panic elsewhere while holding it; the
        // state inside is still consistent.
        let guard = self.db.read().unwrap_or_else(|p| p.into_inner());
        match &*guard {
            State::Open(db) => Ok(db.clone()),
            State::Reopening => Err(StoreError::Reopening),
            State::Closed => Err(StoreError::Closed),
        }
    }

    /// Puts `next` in place and returns the database that was open, once no
    /// operation holds it any more (they are short: one transaction each);
    /// `None` if none was open, or if operations still ran after 30 s (the
    /// file then stays open until they end).
    async fn take(&self, next: State) -> Option<Database> {
        let taken = {
            let mut guard = self.db.write().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *guard, next)
        };
        let State::Open(mut db) = taken else {
            return None;
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match Arc::try_unwrap(db) {
                Ok(inner) => return Some(inner),
                Err(shared) if tokio::time::Instant::now() < deadline => {
                    db = shared;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(_) => {
                    log::warn!("store: operations still running after 30 s; the file stays open until they end");
                    return None;
                }
            }
        }
    }

    /// Runs `f` with the database on the blocking pool.
    async fn blocking<T, F>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.db()?;
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|source| StoreError::Task { op, source })?
    }
}

fn open_db(path: &Path, cache_bytes: usize) -> Result<Database, StoreError> {
    let db = Database::builder()
        .set_cache_size(cache_bytes)
        .set_repair_callback(|s| {
            log::warn!(
                "store: repairing after an unclean shutdown ({:.0}%)",
                s.progress() * 100.0
            )
        })
        .create(path)
        .map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    init_schema(&db, path)?;
    Ok(db)
}

/// A write transaction with quick repair: each commit also saves the
/// allocator state, so reopening after a crash does not walk the whole file.
fn write_txn(db: &Database, op: &'static str) -> Result<redb::WriteTransaction, StoreError> {
    let mut txn = tx!(op, db.begin_write())?;
    txn.set_quick_repair(true);
    Ok(txn)
}

fn init_schema(db: &Database, path: &Path) -> Result<(), StoreError> {
    const OP: &str = "init schema";
    let txn = write_txn(db, OP)?;
    {
        let mut meta = tx!(OP, txn.open_table(META))?;
        let found = tx!(OP, meta.get("schema_version"))?.map(|v| v.value());
        match found {
            None => {
                tx!(OP, meta.insert("schema_version", SCHEMA_VERSION))?;
            }
            Some(v) if v == SCHEMA_VERSION => {}
            Some(found) => {
                return Err(StoreError::Schema {
                    path: path.to_path_buf(),
                    found,
                    expected: SCHEMA_VERSION,
                })
            }
        }
        // Create every table now so readers never meet a missing table.
        tx!(OP, txn.open_table(WINDOWS))?;
        tx!(OP, txn.open_table(SEEN))?;
        tx!(OP, txn.open_table(AGENTS))?;
        tx!(OP, txn.open_table(LATEST))?;
    }
    tx!(OP, txn.commit())
}

fn put_blocking(db: &Database, window: &Window, bytes: &[u8]) -> Result<PutResult, StoreError> {
    const OP: &str = "put window";
    let (agent, seq, end, node) = (
        window.agent_id.as_str(),
        window.seq,
        window.end_unix_ms,
        window.node.as_str(),
    );
    let txn = write_txn(db, OP)?;
    let mut highest_seq = seq;
    let mut duplicate_of = None;
    {
        let mut seen = tx!(OP, txn.open_table(SEEN))?;
        let mut agents = tx!(OP, txn.open_table(AGENTS))?;
        let previous = tx!(OP, agents.get(agent))?.map(|g| g.value());
        if tx!(OP, seen.get((agent, seq)))?.is_some() {
            duplicate_of = Some(previous.map_or(seq, |(h, _)| h));
        } else {
            tx!(OP, seen.insert((agent, seq), end))?;
            let mut windows = tx!(OP, txn.open_table(WINDOWS))?;
            tx!(OP, windows.insert((end, agent, seq), bytes))?;
            let (h, latest_end) = previous.unwrap_or((seq, end));
            highest_seq = h.max(seq);
            tx!(OP, agents.insert(agent, (highest_seq, latest_end.max(end))))?;
            let mut latest = tx!(OP, txn.open_table(LATEST))?;
            let newer = match tx!(OP, latest.get(node))? {
                None => true,
                Some(g) => {
                    let (e, a, s) = g.value();
                    (end, agent, seq) > (e, a, s)
                }
            };
            if newer {
                tx!(OP, latest.insert(node, (end, agent, seq)))?;
            }
        }
    }
    if let Some(highest_seq) = duplicate_of {
        // Nothing was written; say so explicitly rather than by drop.
        tx!(OP, txn.abort())?;
        return Ok(PutResult {
            outcome: PutOutcome::Duplicate,
            highest_seq,
            rollup_failed: false,
        });
    }
    tx!(OP, txn.commit())?;
    Ok(PutResult {
        outcome: PutOutcome::Stored,
        highest_seq,
        rollup_failed: false,
    })
}

fn decode(key: (i64, &str, u64), bytes: &[u8], corrupt: &mut u64) -> Option<Window> {
    match Window::decode(bytes) {
        Ok(w) => Some(w),
        Err(e) => {
            *corrupt += 1;
            log::warn!(
                "store: window (end {}, agent {}, seq {}) cannot be decoded, skipped: {e}",
                key.0,
                key.1,
                key.2
            );
            None
        }
    }
}

fn scan_blocking(
    db: &Database,
    range: RangeInclusive<i64>,
    after: Option<WindowKey>,
    limit: usize,
) -> Result<Page, StoreError> {
    const OP: &str = "scan windows";
    let (from, to) = (*range.start(), *range.end());
    let mut page = Page::default();
    if from > to || limit == 0 {
        return Ok(page);
    }
    let txn = tx!(OP, db.begin_read())?;
    let table = tx!(OP, txn.open_table(WINDOWS))?;
    let lower = match &after {
        Some(k) => Bound::Excluded((k.end_unix_ms, k.agent_id.as_str(), k.seq)),
        None => Bound::Included((from, "", 0u64)),
    };
    // ("", 0) is the smallest (agent, seq): this bound excludes exactly the
    // windows that end after `to`.
    let upper = match to.checked_add(1) {
        Some(next) => Bound::Excluded((next, "", 0u64)),
        None => Bound::Unbounded,
    };
    let iter = tx!(OP, table.range::<(i64, &str, u64)>((lower, upper)))?;
    let mut last: Option<WindowKey> = None;
    for (visited, entry) in iter.enumerate() {
        let (k, v) = tx!(OP, entry)?;
        if visited == limit {
            // One more exists: the next page resumes after the last visited
            // record (a corrupt one counts, so paging always advances).
            page.next = last;
            break;
        }
        let key = k.value();
        last = Some(WindowKey {
            end_unix_ms: key.0,
            agent_id: key.1.to_string(),
            seq: key.2,
        });
        if let Some(w) = decode(key, v.value(), &mut page.corrupt) {
            page.windows.push(w);
        }
    }
    Ok(page)
}

fn latest_blocking(db: &Database) -> Result<Page, StoreError> {
    const OP: &str = "latest window per node";
    let txn = tx!(OP, db.begin_read())?;
    let latest = tx!(OP, txn.open_table(LATEST))?;
    let windows = tx!(OP, txn.open_table(WINDOWS))?;
    let mut page = Page::default();
    for entry in tx!(OP, latest.iter())? {
        let (_node, key) = tx!(OP, entry)?;
        let key = key.value();
        // Retention removes the pointer together with the window, so a
        // missing window means the pointer is stale: skip it.
        if let Some(v) = tx!(OP, windows.get(key))? {
            if let Some(w) = decode(key, v.value(), &mut page.corrupt) {
                page.windows.push(w);
            }
        }
    }
    Ok(page)
}

fn delete_blocking(db: &Database, cutoff: i64) -> Result<u64, StoreError> {
    const OP: &str = "delete expired windows";
    let mut deleted = 0u64;
    loop {
        let txn = write_txn(db, OP)?;
        let batch;
        {
            let mut windows = tx!(OP, txn.open_table(WINDOWS))?;
            let mut seen = tx!(OP, txn.open_table(SEEN))?;
            let mut keys: Vec<(i64, String, u64)> = Vec::new();
            let upper = Bound::Excluded((cutoff, "", 0u64));
            for entry in tx!(
                OP,
                windows.range::<(i64, &str, u64)>((Bound::Unbounded, upper))
            )?
            .take(DELETE_BATCH)
            {
                let (k, _) = tx!(OP, entry)?;
                let (e, a, s) = k.value();
                keys.push((e, a.to_string(), s));
            }
            for (e, a, s) in &keys {
                tx!(OP, windows.remove((*e, a.as_str(), *s)))?;
                tx!(OP, seen.remove((a.as_str(), *s)))?;
            }
            batch = keys.len();
            if batch < DELETE_BATCH {
                // Last batch: drop the per-node and per-agent records whose
                // newest window is gone too.
                let mut latest = tx!(OP, txn.open_table(LATEST))?;
                tx!(OP, latest.retain(|_, (e, _, _)| e >= cutoff))?;
                let mut agents = tx!(OP, txn.open_table(AGENTS))?;
                tx!(OP, agents.retain(|_, (_, e)| e >= cutoff))?;
            }
        }
        tx!(OP, txn.commit())?;
        deleted += batch as u64;
        if batch < DELETE_BATCH {
            return Ok(deleted);
        }
    }
}

#[tonic::async_trait]
impl Store for RedbStore {
    async fn put(&self, window: &Window) -> Result<PutResult, StoreError> {
        let bytes = window.encode_to_vec();
        // The blocking task needs owned data; the aggregates are already in
        // `bytes`, so clone only the key fields.
        let key = Window {
            node: window.node.clone(),
            agent_id: window.agent_id.clone(),
            seq: window.seq,
            start_unix_ms: window.start_unix_ms,
            end_unix_ms: window.end_unix_ms,
            aggregates: None,
            dropped_windows_before: window.dropped_windows_before,
        };
        self.blocking("put window", move |db| put_blocking(db, &key, &bytes))
            .await
    }

    async fn highest_seq(&self, agent_id: &str) -> Result<Option<u64>, StoreError> {
        let agent_id = agent_id.to_string();
        self.blocking("highest seq", move |db| {
            const OP: &str = "highest seq";
            let txn = tx!(OP, db.begin_read())?;
            let agents = tx!(OP, txn.open_table(AGENTS))?;
            Ok(tx!(OP, agents.get(agent_id.as_str()))?.map(|g| g.value().0))
        })
        .await
    }

    async fn scan(
        &self,
        end_unix_ms: RangeInclusive<i64>,
        after: Option<WindowKey>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        self.blocking("scan windows", move |db| {
            scan_blocking(db, end_unix_ms, after, limit)
        })
        .await
    }

    async fn latest_per_node(&self) -> Result<Page, StoreError> {
        self.blocking("latest window per node", latest_blocking)
            .await
    }

    async fn delete_ended_before(&self, cutoff_unix_ms: i64) -> Result<u64, StoreError> {
        self.blocking("delete expired windows", move |db| {
            delete_blocking(db, cutoff_unix_ms)
        })
        .await
    }

    async fn window_count(&self) -> Result<u64, StoreError> {
        self.blocking("count windows", |db| {
            const OP: &str = "count windows";
            let txn = tx!(OP, db.begin_read())?;
            let t = tx!(OP, txn.open_table(WINDOWS))?;
            tx!(OP, t.len())
        })
        .await
    }

    async fn close(&self) -> Result<(), StoreError> {
        let Some(db) = self.take(State::Closed).await else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || db.close())
            .await
            .map_err(|source| StoreError::Task {
                op: "close",
                source,
            })?
            .map_err(|e| db_err("close")(e.into()))
    }

    async fn reopen(&self) -> Result<(), StoreError> {
        if matches!(
            &*self.db.read().unwrap_or_else(|p| p.into_inner()),
            State::Closed
        ) {
            return Err(StoreError::Closed);
        }
        let old = self.take(State::Reopening).await;
        let (path, cache) = (self.path.clone(), self.cache_bytes);
        let db = tokio::task::spawn_blocking(move || {
            if let Some(old) = old {
                // After an I/O error redb refuses to close cleanly; what was
                // committed is on disk, and dropping releases the file.
                let _ = old.close();
            }
            open_db(&path, cache)
        })
        .await
        .map_err(|source| StoreError::Task {
            op: "reopen",
            source,
        })??;
        let mut guard = self.db.write().unwrap_or_else(|p| p.into_inner());
        if matches!(*guard, State::Reopening) {
            *guard = State::Open(Arc::new(db));
        }
        Ok(())
    }
}
