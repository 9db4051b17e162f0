//! The [`Feed`] of the ClickHouse store: the key of every window put is
//! written into `windows_feed`, ordered by insert time, so a replica asking
//! "what was inserted since t" reads a range of that table's primary key,
//! not every row of `windows` (whose key is `(agent_id, seq)`).

use prost::Message;
use sockeye_proto::v1::Window;

use super::{
    ch, date,
    http::{quote, ClickHouseError},
    rowbinary::{self, day_of, Reader},
    ClickHouseStore,
};
use crate::store::{Feed, Inserted, StoreError};

impl ClickHouseStore {
    /// Writes `w`'s key into the feed, stamped `stamp` as its raw row will
    /// be, before the raw insert: the feed then holds every window the raw
    /// table has, whatever cuts a put short. (Until schema version 6 a view
    /// on `windows` wrote it within the raw insert, and an insert cut after
    /// the raw part landed lost it: the agent, told at its next Hello that
    /// the window was stored, never sent it again, and live streams on the
    /// other replicas never saw it.) A key whose raw row never lands is
    /// asked for by the followers until their deep read is past it.
    pub(super) async fn record_in_feed(
        &self,
        w: &Window,
        stamp: i64,
    ) -> Result<(), ClickHouseError> {
        let sql = format!(
            "INSERT INTO {}.windows_feed (inserted_day, inserted_unix_ms, day, agent_id, seq) FORMAT RowBinary",
            self.db
        );
        let mut row = Vec::with_capacity(w.agent_id.len() + 32);
        rowbinary::put_u16(&mut row, day_of(stamp));
        rowbinary::put_i64(&mut row, stamp);
        rowbinary::put_u16(&mut row, day_of(w.end_unix_ms));
        rowbinary::put_bytes(&mut row, w.agent_id.as_bytes());
        rowbinary::put_u64(&mut row, w.seq);
        self.http.run(&sql, Some(row)).await.map(|_| ())
    }
}

/// `(inserted, agent, seq) > key`, spelled out like `after_key`.
fn after_inserted(k: &Inserted) -> String {
    let a = quote(&k.agent_id);
    format!(
        "(inserted_unix_ms > {t} OR (inserted_unix_ms = {t} AND (agent_id > {a} OR (agent_id = {a} AND seq > {s}))))",
        t = k.inserted_unix_ms,
        s = k.seq
    )
}

#[tonic::async_trait]
impl Feed for ClickHouseStore {
    async fn inserted(
        &self,
        since_unix_ms: i64,
        after: Option<&Inserted>,
        limit: usize,
    ) -> Result<Vec<Inserted>, StoreError> {
        const OP: &str = "read the insert feed";
        self.check_open()?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let after = after.map_or_else(|| "1".to_string(), after_inserted);
        let sql = format!(
            "SELECT inserted_unix_ms, day, agent_id, seq FROM {db}.windows_feed
             WHERE inserted_day >= toDate({since_day}) AND inserted_unix_ms >= {since_unix_ms} AND {after}
             ORDER BY inserted_unix_ms, agent_id, seq
             LIMIT {limit} FORMAT RowBinary",
            db = self.db,
            since_day = quote(&date(super::rowbinary::day_of(since_unix_ms))),
        );
        let bytes = self.http.run(&sql, None).await.map_err(ch(OP))?;
        let mut r = Reader::new(&bytes);
        let mut out = Vec::new();
        while !r.is_empty() {
            out.push(Inserted {
                inserted_unix_ms: r.i64().map_err(ch(OP))?,
                end_day: r.u16().map_err(ch(OP))?,
                agent_id: r.string().map_err(ch(OP))?,
                seq: r.u64().map_err(ch(OP))?,
            });
        }
        Ok(out)
    }

    async fn windows(&self, keys: &[Inserted]) -> Result<(Vec<Window>, u64), StoreError> {
        const OP: &str = "read followed windows";
        self.check_open()?;
        if keys.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let mut days: Vec<u16> = keys.iter().map(|k| k.end_day).collect();
        days.sort_unstable();
        days.dedup();
        let days = days
            .iter()
            .map(|d| format!("toDate({})", quote(&date(*d))))
            .collect::<Vec<_>>()
            .join(", ");
        let tuples = keys
            .iter()
            .map(|k| format!("({}, {})", quote(&k.agent_id), k.seq))
            .collect::<Vec<_>>()
            .join(", ");
        // No FINAL: copies of one key (two replicas racing) are collapsed by
        // LIMIT BY, and the rows asked for are only seconds old, so FINAL
        // would merge whole day partitions for nothing.
        let sql = format!(
            "SELECT body FROM {db}.windows
             WHERE day IN ({days}) AND end_unix_ms >= {floor} AND (agent_id, seq) IN ({tuples})
             LIMIT 1 BY agent_id, seq FORMAT RowBinary",
            db = self.db,
            floor = self.floor(),
        );
        let bytes = self.http.run(&sql, None).await.map_err(ch(OP))?;
        let mut r = Reader::new(&bytes);
        let (mut windows, mut corrupt) = (Vec::new(), 0);
        while !r.is_empty() {
            match Window::decode(r.bytes().map_err(ch(OP))?) {
                Ok(w) => windows.push(w),
                Err(e) => {
                    corrupt += 1;
                    log::warn!("store: a followed window cannot be decoded, skipped: {e}");
                }
            }
        }
        Ok((windows, corrupt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_is_strictly_after_in_feed_order() {
        let k = Inserted {
            inserted_unix_ms: 5,
            end_day: 0,
            agent_id: "a'b".into(),
            seq: 7,
        };
        assert_eq!(
            after_inserted(&k),
            r"(inserted_unix_ms > 5 OR (inserted_unix_ms = 5 AND (agent_id > 'a\'b' OR (agent_id = 'a\'b' AND seq > 7))))"
        );
    }
}
