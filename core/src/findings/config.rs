//! Detection thresholds, with defaults meant for production and a TOML file
//! (`--findings-config`) to change them. Unknown keys are errors, so a typo
//! does not silently leave a default in place.

use std::{path::Path, time::Duration};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the findings config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("findings config {path}: {source}")]
    Parse {
        path: String,
        source: Box<toml::de::Error>,
    },
    #[error("findings config: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FindingsConfig {
    /// Resolved findings remembered (for `include_resolved` and the table).
    pub resolved_kept: usize,
    /// Flows whose open-socket history is sampled; past it the quietest are
    /// dropped (counted in `findings_series_skipped`).
    pub max_series: usize,
    pub leak: LeakConfig,
    pub close_wait: CloseWaitConfig,
    pub pool: PoolConfig,
    pub restart: RestartConfig,
    pub dns: DnsConfig,
    pub resources: ResourcesConfig,
    pub stale: StaleConfig,
    pub limit: LimitConfig,
    pub dns_search: DnsSearchConfig,
    pub probes: ProbesConfig,
}

/// Kubernetes probes that time out (the kubelet gives up on a container
/// that has not answered), related to what the container waits on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProbesConfig {
    /// The span judged, seconds.
    pub window_s: f64,
    /// Timeouts within it that open it (fewer if the probe's
    /// failureThreshold is lower).
    pub min_failures: u64,
    /// Resolves after this long without a timeout, seconds.
    pub resolve_after_s: f64,
}

impl Default for ProbesConfig {
    fn default() -> Self {
        Self {
            window_s: 60.0,
            min_failures: 2,
            resolve_after_s: 60.0,
        }
    }
}

/// Stale connections at a server: connections it holds whose client is
/// gone (its socket closed, or its pod's cgroup removed) without a FIN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StaleConfig {
    /// Dead-peer connections held by one listener that open it.
    pub min_stale: u64,
    /// Restarts of the client workloads are counted over this span, seconds.
    pub restart_window_s: f64,
    /// Resolves after this long below the minimum, seconds.
    pub resolve_after_s: f64,
}

/// A server at its connection limit: it accepts new connections and
/// closes them itself within moments, with almost no bytes, while the
/// connections it holds stay flat (maxclients, max_connections, a full
/// worker pool). Seen from a client of a server elsewhere: sessions the
/// peer closes at once, again and again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitConfig {
    /// Refused sessions (see `aggregate::flows::SHORT_SESSION_NS`) within
    /// the window that open it.
    pub min_refused: u64,
    /// The span judged, seconds.
    pub window_s: f64,
    /// The server holds at least this many connections, flat for
    /// `plateau_s` (a limit is a count it reached).
    pub min_held: u64,
    pub plateau_s: f64,
    /// Resolves after this long without a refused session, seconds.
    pub resolve_after_s: f64,
}

/// Connection leak: open sockets to one destination grow steadily while
/// few are closed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeakConfig {
    /// The span over which growth is judged, seconds.
    pub window_s: f64,
    /// Growth must have lasted at least this long, seconds (a pool filling
    /// up at start takes a few seconds, a leak keeps going).
    pub min_span_s: f64,
    /// Sockets gained over the span.
    pub min_growth: u64,
    /// Sockets gained per minute.
    pub min_rate_per_min: f64,
    /// Evidence: sockets with no data for this long count as idle, seconds.
    pub idle_after_s: f64,
    /// The finding resolves when the count stops growing for this long,
    /// seconds, or falls back near where it started.
    pub resolve_after_flat_s: f64,
}

/// CLOSE_WAIT pile-up: the peer closed, the application never did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CloseWaitConfig {
    /// Sockets of one flow in CLOSE_WAIT at once.
    pub min_sockets: u64,
    /// Only sockets that have waited at least this long count, seconds.
    pub min_wait_s: f64,
}

/// Pool exhaustion: open connections flatten at a ceiling while connects
/// fail or wait, or a listener's accept queue overflows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// The span over which the ceiling and the failures are judged, seconds.
    pub window_s: f64,
    /// Connects that failed, timed out or were slow within the span.
    pub min_failed_or_slow: u64,
    /// A connect slower than this counts as waiting, ms (a SYN retransmit
    /// takes 1 s).
    pub slow_connect_ms: f64,
    /// Open sockets at the ceiling, at least.
    pub min_open: u64,
    /// Resolves after this long without failed or slow connects, seconds.
    pub resolve_after_s: f64,
}

/// Dependency restart: refused connects to one destination while its
/// listener was gone. It resolves when the destination accepts again (its
/// listener is back, or a connect succeeds), with the gap as evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestartConfig {
    /// Refused connects (all clients together) that open the finding.
    pub min_refused: u64,
    /// With no listener on this node to watch, an outage whose clients
    /// stopped trying ends this long after the last refusal, seconds.
    pub quiet_after_s: f64,
}

/// DNS degradation: timeouts or latency rising for a server or a name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// The span judged, seconds.
    pub window_s: f64,
    /// Queries within the span before anything is judged.
    pub min_queries: u64,
    /// Share of queries that timed out.
    pub timeout_ratio: f64,
    /// p90 latency above this is degraded, ms.
    pub slow_p90_ms: f64,
    /// Share of answers that are SERVFAIL.
    pub servfail_ratio: f64,
    /// Resolves after this long healthy, seconds.
    pub resolve_after_s: f64,
}

/// DNS search-list expansion: most of a workload's queries to a server are
/// NXDOMAINs for search-suffixed names its lookups walked through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsSearchConfig {
    /// The span judged, seconds.
    pub window_s: f64,
    /// Queries within the span before anything is judged.
    pub min_queries: u64,
    /// Share of the queries that were wasted.
    pub min_wasted_ratio: f64,
    /// Wasted queries per second (over the span) from which it is a
    /// warning; below, the waste is real but cheap: info.
    pub warning_wasted_per_s: f64,
    /// Resolves after this long without it, seconds.
    pub resolve_after_s: f64,
}

/// Resource exhaustion at connect: local ports or file descriptors run out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResourcesConfig {
    /// Failures (EADDRNOTAVAIL, EMFILE, ENFILE, ENOBUFS) that open it.
    pub min_failures: u64,
    /// Resolves after this long without one, seconds.
    pub resolve_after_s: f64,
}

impl Default for FindingsConfig {
    fn default() -> Self {
        Self {
            resolved_kept: 256,
            max_series: 4096,
            leak: LeakConfig::default(),
            close_wait: CloseWaitConfig::default(),
            pool: PoolConfig::default(),
            restart: RestartConfig::default(),
            dns: DnsConfig::default(),
            resources: ResourcesConfig::default(),
            stale: StaleConfig::default(),
            limit: LimitConfig::default(),
            dns_search: DnsSearchConfig::default(),
            probes: ProbesConfig::default(),
        }
    }
}

impl Default for StaleConfig {
    fn default() -> Self {
        Self {
            min_stale: 5,
            restart_window_s: 600.0,
            resolve_after_s: 30.0,
        }
    }
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self {
            min_refused: 5,
            window_s: 30.0,
            min_held: 3,
            plateau_s: 10.0,
            resolve_after_s: 30.0,
        }
    }
}

impl Default for LeakConfig {
    fn default() -> Self {
        Self {
            window_s: 120.0,
            min_span_s: 20.0,
            min_growth: 10,
            min_rate_per_min: 10.0,
            idle_after_s: 300.0,
            resolve_after_flat_s: 300.0,
        }
    }
}

impl Default for CloseWaitConfig {
    fn default() -> Self {
        Self {
            min_sockets: 5,
            min_wait_s: 30.0,
        }
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            window_s: 60.0,
            min_failed_or_slow: 3,
            slow_connect_ms: 900.0,
            min_open: 2,
            resolve_after_s: 60.0,
        }
    }
}

impl Default for RestartConfig {
    fn default() -> Self {
        Self {
            min_refused: 3,
            quiet_after_s: 300.0,
        }
    }
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            window_s: 60.0,
            min_queries: 20,
            timeout_ratio: 0.05,
            slow_p90_ms: 500.0,
            servfail_ratio: 0.2,
            resolve_after_s: 60.0,
        }
    }
}

impl Default for DnsSearchConfig {
    fn default() -> Self {
        Self {
            window_s: 60.0,
            min_queries: 20,
            min_wasted_ratio: 0.5,
            warning_wasted_per_s: 1.0,
            resolve_after_s: 60.0,
        }
    }
}

impl Default for ResourcesConfig {
    fn default() -> Self {
        Self {
            min_failures: 1,
            resolve_after_s: 60.0,
        }
    }
}

/// Seconds as a Duration in ns, for comparisons with monotonic timestamps.
pub fn ns(seconds: f64) -> u64 {
    Duration::from_secs_f64(seconds).as_nanos() as u64
}

impl FindingsConfig {
    /// Reads and validates a TOML file; missing keys keep their defaults.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let config: Self = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: shown,
            source: Box::new(source),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The defaults as TOML, for `sockeye-agent findings-config`.
    pub fn defaults_toml() -> String {
        toml::to_string_pretty(&Self::default()).unwrap_or_default()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let seconds = [
            ("leak.window_s", self.leak.window_s),
            ("leak.min_span_s", self.leak.min_span_s),
            ("leak.idle_after_s", self.leak.idle_after_s),
            ("leak.resolve_after_flat_s", self.leak.resolve_after_flat_s),
            ("close_wait.min_wait_s", self.close_wait.min_wait_s),
            ("pool.window_s", self.pool.window_s),
            ("pool.slow_connect_ms", self.pool.slow_connect_ms),
            ("pool.resolve_after_s", self.pool.resolve_after_s),
            ("restart.quiet_after_s", self.restart.quiet_after_s),
            ("dns.window_s", self.dns.window_s),
            ("dns.slow_p90_ms", self.dns.slow_p90_ms),
            ("dns.resolve_after_s", self.dns.resolve_after_s),
            ("resources.resolve_after_s", self.resources.resolve_after_s),
            ("stale.restart_window_s", self.stale.restart_window_s),
            ("stale.resolve_after_s", self.stale.resolve_after_s),
            ("limit.window_s", self.limit.window_s),
            ("limit.plateau_s", self.limit.plateau_s),
            ("limit.resolve_after_s", self.limit.resolve_after_s),
            ("probes.window_s", self.probes.window_s),
            ("probes.resolve_after_s", self.probes.resolve_after_s),
            ("dns_search.window_s", self.dns_search.window_s),
            (
                "dns_search.resolve_after_s",
                self.dns_search.resolve_after_s,
            ),
        ];
        for (name, v) in seconds {
            // A day bounds every span; past it Duration math is pointless.
            if !(v > 0.0 && v <= 86_400.0) {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be above 0 and at most 86400, got {v}"
                )));
            }
        }
        if self.leak.min_span_s > self.leak.window_s {
            return Err(ConfigError::Invalid(format!(
                "leak.min_span_s ({}) must not exceed leak.window_s ({})",
                self.leak.min_span_s, self.leak.window_s
            )));
        }
        for (name, v) in [
            ("dns.timeout_ratio", self.dns.timeout_ratio),
            ("dns.servfail_ratio", self.dns.servfail_ratio),
            (
                "dns_search.min_wasted_ratio",
                self.dns_search.min_wasted_ratio,
            ),
        ] {
            if !(v > 0.0 && v <= 1.0) {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be in (0, 1], got {v}"
                )));
            }
        }
        if self.leak.min_rate_per_min.is_nan() || self.leak.min_rate_per_min <= 0.0 {
            return Err(ConfigError::Invalid(format!(
                "leak.min_rate_per_min must be above 0, got {}",
                self.leak.min_rate_per_min
            )));
        }
        for (name, v) in [
            ("leak.min_growth", self.leak.min_growth),
            ("close_wait.min_sockets", self.close_wait.min_sockets),
            ("pool.min_failed_or_slow", self.pool.min_failed_or_slow),
            ("restart.min_refused", self.restart.min_refused),
            ("dns.min_queries", self.dns.min_queries),
            ("resources.min_failures", self.resources.min_failures),
            ("dns_search.min_queries", self.dns_search.min_queries),
            ("stale.min_stale", self.stale.min_stale),
            ("limit.min_refused", self.limit.min_refused),
            ("limit.min_held", self.limit.min_held),
            ("probes.min_failures", self.probes.min_failures),
        ] {
            if v == 0 {
                return Err(ConfigError::Invalid(format!("{name} must be at least 1")));
            }
        }
        let per_s = self.dns_search.warning_wasted_per_s;
        if !(per_s >= 0.0 && per_s.is_finite()) {
            return Err(ConfigError::Invalid(format!(
                "dns_search.warning_wasted_per_s must be 0 or more, got {per_s}"
            )));
        }
        if self.max_series == 0 {
            return Err(ConfigError::Invalid("max_series must be at least 1".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_through_toml() {
        let text = FindingsConfig::defaults_toml();
        let back: FindingsConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, FindingsConfig::default());
        back.validate().unwrap();
    }

    #[test]
    fn partial_files_keep_defaults_and_typos_are_errors() {
        let c: FindingsConfig = toml::from_str("[leak]\nmin_growth = 3\n").unwrap();
        assert_eq!(c.leak.min_growth, 3);
        assert_eq!(c.leak.window_s, LeakConfig::default().window_s);
        let err = toml::from_str::<FindingsConfig>("[leak]\nmin_grwth = 3\n").unwrap_err();
        assert!(err.to_string().contains("min_grwth"), "{err}");
    }

    #[test]
    fn the_deployed_file_is_the_defaults() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kustomize/base/findings.toml");
        assert_eq!(
            FindingsConfig::load(&path).unwrap(),
            FindingsConfig::default()
        );
    }

    #[test]
    fn bad_values_are_named() {
        let mut c = FindingsConfig::default();
        c.dns.timeout_ratio = 1.5;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("dns.timeout_ratio"), "{e}");
        let mut c = FindingsConfig::default();
        c.leak.min_span_s = 500.0;
        assert!(c.validate().unwrap_err().to_string().contains("min_span_s"));
        let mut c = FindingsConfig::default();
        c.pool.window_s = f64::NAN;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("pool.window_s"));
    }
}
