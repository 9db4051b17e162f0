//! Room on the data directory's disk.
//!
//! A full disk must not take the collector down: windows are refused while
//! free space is below `min_free_bytes` (or after the store hit ENOSPC),
//! with a clear `Unavailable` status, so agents keep them and retry; queries
//! go on from what is stored. When space returns (twice the minimum, so it
//! does not flap) a store that failed a write is reopened, and writes resume.

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use tonic::Status;

use crate::{
    stats::Counters,
    store::{Store, StoreError},
};

/// How often free space is checked when nothing is being written.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Whether writes are refused now, from whether they were before and the
/// free space: refused below `min_free`, allowed again from twice that (at
/// least 1 MiB above it), so a disk hovering at the limit does not flap.
pub fn refuse_writes(was_full: bool, free: u64, min_free: u64) -> bool {
    if was_full {
        free < min_free
            .saturating_mul(2)
            .max(min_free.saturating_add(1 << 20))
    } else {
        free < min_free
    }
}

/// Bytes an unprivileged process may still write on the file system of `dir`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a NUL-terminated path; `st` is plain old data that
    // statvfs fills in, read only after it returned 0.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
    }
}

pub(crate) struct Disk {
    dir: PathBuf,
    min_free: u64,
    full: AtomicBool,
    /// A write failed with an I/O error: the store must be reopened before
    /// it writes again (redb refuses every write after one).
    needs_reopen: AtomicBool,
    /// One recovery at a time.
    recovering: tokio::sync::Mutex<()>,
    counters: Arc<Counters>,
}

impl Disk {
    pub fn new(dir: PathBuf, min_free: u64, counters: Arc<Counters>) -> Self {
        Self {
            dir,
            min_free,
            full: AtomicBool::new(false),
            needs_reopen: AtomicBool::new(false),
            recovering: tokio::sync::Mutex::new(()),
            counters,
        }
    }

    pub fn is_full(&self) -> bool {
        self.full.load(Relaxed)
    }

    /// Checks free space now and updates the state and gauges. A file
    /// system that cannot be asked (a store elsewhere) counts as roomy.
    fn refresh(&self) -> Option<u64> {
        let free = free_bytes(&self.dir).ok()?;
        Counters::set(&self.counters.store_disk_free_bytes, free);
        let was = self.full.load(Relaxed);
        let now = refuse_writes(was || self.needs_reopen.load(Relaxed), free, self.min_free);
        if now != was {
            self.full.store(now, Relaxed);
            Counters::set(&self.counters.store_disk_full, u64::from(now));
            if now {
                log::error!(
                    "store: the disk of {} is full ({} MiB free, --min-free-mib is {}): new windows are refused until space returns; agents keep them and retry; queries go on",
                    self.dir.display(),
                    free >> 20,
                    self.min_free >> 20
                );
            }
        }
        Some(free)
    }

    /// Whether a window may be written now; reopens a store that failed
    /// once space has returned.
    pub async fn admit(&self, store: &dyn Store) -> Result<(), Status> {
        let free = self.refresh();
        if self.is_full() {
            Counters::add(&self.counters.store_writes_refused_disk_full, 1);
            return Err(Status::unavailable(format!(
                "the collector's disk is full ({} MiB free in its data directory): windows are refused until space returns; keep them and retry",
                free.unwrap_or(0) >> 20
            )));
        }
        if self.needs_reopen.load(Relaxed) {
            self.recover(store).await?;
        }
        Ok(())
    }

    /// After a failed write: an I/O error (ENOSPC, above all) marks the disk
    /// full until space is back and the store reopened.
    pub fn write_failed(&self, e: &StoreError) {
        if e.is_io() {
            self.needs_reopen.store(true, Relaxed);
            self.full.store(true, Relaxed);
            Counters::set(&self.counters.store_disk_full, 1);
            if e.is_disk_full() {
                Counters::add(&self.counters.store_writes_refused_disk_full, 1);
                log::error!(
                    "store: the disk of {} is full: {e}; new windows are refused until space returns",
                    self.dir.display()
                );
            } else {
                Counters::add(&self.counters.store_write_errors, 1);
                log::error!("store: a write failed: {e}; writes stop until the store is reopened");
            }
        } else {
            Counters::add(&self.counters.store_write_errors, 1);
        }
    }

    async fn recover(&self, store: &dyn Store) -> Result<(), Status> {
        let _one = self.recovering.lock().await;
        if !self.needs_reopen.load(Relaxed) {
            return Ok(());
        }
        match store.reopen().await {
            Ok(()) => {
                self.needs_reopen.store(false, Relaxed);
                log::info!("store: reopened after the failed write; windows are written again");
                Ok(())
            }
            Err(e) => {
                log::error!("store: reopening after a failed write failed: {e}; trying again with the next window");
                Err(Status::unavailable(format!(
                    "the collector's store cannot be reopened yet ({e}); keep the windows and retry"
                )))
            }
        }
    }

    /// Keeps the state and gauges current while nothing is written, and
    /// says when writes can resume.
    pub async fn watch(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let was = self.is_full();
            let free = self.refresh();
            if was && !self.is_full() {
                if self.needs_reopen.load(Relaxed) {
                    let _ = self.recover(store.as_ref()).await;
                }
                log::info!(
                    "store: the disk has room again ({} MiB free): windows are accepted again",
                    free.unwrap_or(0) >> 20
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn writes_stop_below_the_minimum_and_resume_only_well_above_it() {
        assert!(!refuse_writes(false, 100 * MIB, 64 * MIB));
        assert!(refuse_writes(false, 63 * MIB, 64 * MIB));
        // Back at 100 MiB free after being full: not yet (128 needed).
        assert!(refuse_writes(true, 100 * MIB, 64 * MIB));
        assert!(!refuse_writes(true, 128 * MIB, 64 * MIB));
        // No minimum: only an ENOSPC makes it full, 1 MiB free ends that.
        assert!(!refuse_writes(false, 0, 0));
        assert!(refuse_writes(true, MIB - 1, 0));
        assert!(!refuse_writes(true, MIB, 0));
    }

    #[test]
    fn free_space_of_a_real_directory() {
        let free = free_bytes(Path::new("/")).unwrap();
        assert!(free > 0);
        assert!(free_bytes(Path::new("/nonexistent/sockeye")).is_err());
    }
}
