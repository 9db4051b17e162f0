//! A container's Kubernetes probes, as its pod spec declares them: what
//! the kubelet asks it, how long it waits, how many failures restart it.

/// Which probe. The discriminants are what the `probe_kind` fact holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ProbeKind {
    /// Failing it restarts the container.
    Liveness = 0,
    /// Failing it takes the pod out of its Services' endpoints.
    Readiness = 1,
    /// Liveness and readiness wait for it.
    Startup = 2,
}

impl ProbeKind {
    pub fn from_code(code: u64) -> Self {
        match code {
            1 => ProbeKind::Readiness,
            2 => ProbeKind::Startup,
            _ => ProbeKind::Liveness,
        }
    }
}

impl ProbeKind {
    pub const fn name(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "liveness",
            ProbeKind::Readiness => "readiness",
            ProbeKind::Startup => "startup",
        }
    }
}

/// How the kubelet probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    Http { path: String },
    Tcp,
    Grpc,
}

/// One probe of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    pub kind: ProbeKind,
    pub action: ProbeAction,
    /// The container port it connects to.
    pub port: u16,
    /// `timeoutSeconds` (Kubernetes' default 1).
    pub timeout_s: u32,
    /// `periodSeconds` (default 10).
    pub period_s: u32,
    /// `failureThreshold` (default 3): failures in a row before it acts.
    pub failure_threshold: u32,
}
