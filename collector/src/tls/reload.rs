//! The certificate in use, replaced when its files change.
//!
//! Kubernetes updates a mounted Secret by swapping a symlink (`..data`), and
//! cert-manager renews well before expiry, so the files are polled: every
//! `every` they are read again and, if their bytes changed, checked and put
//! in place for the next handshake. Established connections are not
//! touched (TLS 1.3 does not renegotiate), so no Push or Watch stream drops.
//! Files that do not check out (a key that does not match its certificate,
//! a half-written file) leave the old certificate in use; the next poll
//! tries again.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::{TlsConfig, TlsError};
use crate::stats::Counters;

/// How often the files are read by default.
pub const DEFAULT_RELOAD_EVERY: Duration = Duration::from_secs(10);

/// The TLS settings new connections get.
pub struct LiveTls {
    current: RwLock<(TlsConfig, TlsAcceptor)>,
}

impl std::fmt::Debug for LiveTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveTls").finish_non_exhaustive()
    }
}

/// What a reload found.
#[derive(Debug, PartialEq, Eq)]
pub enum Reloaded {
    Unchanged,
    Replaced,
}

impl LiveTls {
    pub fn new(cfg: TlsConfig) -> Result<Self, TlsError> {
        let acceptor = TlsAcceptor::from(cfg.server_config()?);
        Ok(Self {
            current: RwLock::new((cfg, acceptor)),
        })
    }

    /// The acceptor for the next handshake.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.read().1.clone()
    }

    pub fn is_mutual(&self) -> bool {
        self.read().0.is_mutual()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, (TlsConfig, TlsAcceptor)> {
        // A poisoned lock means a panic while swapping two values that are
        // each whole: either pair is usable.
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the files again and uses them from now on if they changed
    /// and check out. Settings given as PEM in memory never change.
    pub fn reload(&self) -> Result<Reloaded, TlsError> {
        let Some(files) = self.read().0.files().cloned() else {
            return Ok(Reloaded::Unchanged);
        };
        let fresh = TlsConfig::load(&files)?;
        if fresh.same_pem(&self.read().0) {
            return Ok(Reloaded::Unchanged);
        }
        let acceptor = TlsAcceptor::from(fresh.server_config()?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (fresh, acceptor);
        Ok(Reloaded::Replaced)
    }
}

/// Polls the files until shutdown, counting reloads and failed attempts.
pub(crate) async fn watch(
    live: Arc<LiveTls>,
    every: Duration,
    shutdown: CancellationToken,
    counters: Arc<Counters>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let l = live.clone();
        let result = match tokio::task::spawn_blocking(move || l.reload()).await {
            Ok(r) => r,
            Err(e) => {
                log::error!("TLS: reloading the certificate did not complete: {e}");
                continue;
            }
        };
        match result {
            Ok(Reloaded::Unchanged) => {
                if failing {
                    log::info!("TLS: the certificate files check out again (unchanged)");
                    failing = false;
                }
            }
            Ok(Reloaded::Replaced) => {
                Counters::add(&counters.tls_reloads, 1);
                failing = false;
                log::info!(
                    "TLS: certificate files changed; new connections get the new certificate, open ones keep theirs"
                );
            }
            Err(e) => {
                Counters::add(&counters.tls_reload_errors, 1);
                if !failing {
                    log::warn!("TLS: the certificate files changed but cannot be used, keeping the current certificate: {e}");
                    failing = true;
                }
            }
        }
    }
}
