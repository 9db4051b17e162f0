//! What a finding is: a verdict with its life (opened, updated, resolved)
//! and its words, as every output (API, metrics, table, JSON) shows it.

use std::net::IpAddr;

use crate::workload::Workload;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    ConnectionLeak,
    CloseWait,
    PoolExhaustion,
    DependencyRestart,
    DnsDegradation,
    ConnectResourceExhaustion,
    StaleConnections,
    ServerAtLimit,
    SessionsRefused,
    DnsSearchExpansion,
    ProbeFailures,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::ConnectionLeak,
        Kind::CloseWait,
        Kind::PoolExhaustion,
        Kind::DependencyRestart,
        Kind::DnsDegradation,
        Kind::ConnectResourceExhaustion,
        Kind::StaleConnections,
        Kind::ServerAtLimit,
        Kind::SessionsRefused,
        Kind::DnsSearchExpansion,
        Kind::ProbeFailures,
    ];

    /// The name in the API, metrics and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::ConnectionLeak => "connection_leak",
            Kind::CloseWait => "close_wait",
            Kind::PoolExhaustion => "pool_exhaustion",
            Kind::DependencyRestart => "dependency_restart",
            Kind::DnsDegradation => "dns_degradation",
            Kind::ConnectResourceExhaustion => "connect_resource_exhaustion",
            Kind::StaleConnections => "stale_connections",
            Kind::ServerAtLimit => "server_at_limit",
            Kind::SessionsRefused => "sessions_refused",
            Kind::DnsSearchExpansion => "dns_search_expansion",
            Kind::ProbeFailures => "probe_failures",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub const fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

impl Confidence {
    pub const fn name(self) -> &'static str {
        match self {
            Confidence::Low => "low",
            Confidence::Medium => "medium",
            Confidence::High => "high",
        }
    }

    /// One signal is a hint, two agree, three or more make it solid.
    pub fn from_signals(signals: usize) -> Self {
        match signals {
            0 | 1 => Confidence::Low,
            2 => Confidence::Medium,
            _ => Confidence::High,
        }
    }
}

/// Where the problem is: a remote endpoint, and for DNS the name asked.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Destination {
    pub addr: IpAddr,
    pub port: u16,
    /// DNS findings about one name (the endpoint is then its server).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_name: Option<String>,
}

impl Destination {
    /// An endpoint, not a DNS name.
    pub fn endpoint(addr: IpAddr, port: u16) -> Self {
        Self {
            addr,
            port,
            dns_name: None,
        }
    }

    /// Where a flow goes: its remote address and the port that names it.
    pub fn of_flow(key: &crate::aggregate::flows::FlowKey) -> Self {
        Self::endpoint(key.remote, key.port)
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.port),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.port),
        }
    }
}

/// One measured fact: a stable key, a number and unit for machines, a
/// sentence for people.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Evidence {
    /// Stable, snake_case (see [`super::verdict::Fact::key`]).
    pub key: &'static str,
    /// The fact worded: "212 sockets open (was 12 at 02:03:10 UTC)".
    pub fact: String,
    pub value: f64,
    pub unit: &'static str,
    /// Monotonic ns when it was measured (or the start of what it describes).
    pub at_ns: u64,
    /// What the number is about, named ("pid 4411 (php-fpm)",
    /// "shop/web-1/app", "api.example.com"); absent when it is the finding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub about: Option<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Finding {
    /// Stable for one occurrence: the same while it holds and once resolved.
    pub id: String,
    pub kind: Kind,
    pub subject: Workload,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<Destination>,
    /// Monotonic ns when the problem started (not when it was detected).
    pub since_ns: u64,
    /// Monotonic ns when it stopped holding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_ns: Option<u64>,
    /// Monotonic ns of the last change (opened, escalated, resolved).
    pub updated_ns: u64,
    pub severity: Severity,
    pub confidence: Confidence,
    /// Independent signals that agree, by stable name; `confidence`
    /// follows from how many.
    pub signals: Vec<&'static str>,
    pub summary: String,
    pub evidence: Vec<Evidence>,
    pub next_step: String,
    /// Other workloads that felt it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub affected: Vec<Workload>,
}

impl Finding {
    pub fn is_open(&self) -> bool {
        self.resolved_ns.is_none()
    }
}
