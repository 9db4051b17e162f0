//! What can go wrong, each with a message that says what to do, and the
//! exit code it maps to.

use std::fmt;

use tonic::Code;

/// Exit codes (documented in `--help` and the README).
pub mod exit {
    /// The request could not be made as given: bad flags or values.
    pub const USAGE: i32 = 2;
    /// The agent or collector answered with an error, or a stream broke.
    pub const FAILED: i32 = 1;
    /// The agent or collector could not be reached.
    pub const UNREACHABLE: i32 = 3;
    /// Not an error: `diagnose` worked and showed open findings.
    pub const FINDINGS: i32 = 4;
}

/// Which kind of server the CLI talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Agent,
    Collector,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Agent => "agent",
            Role::Collector => "collector",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Connecting failed; `reason` is the underlying error in words and
    /// `hint` what to try.
    #[error("cannot reach the {role} at {target}: {reason}{hint}")]
    Unreachable {
        role: Role,
        target: String,
        reason: String,
        hint: &'static str,
        // Boxed: it is large, and every Result of the CLI carries this type.
        #[source]
        source: Box<sockeye_proto::connect::ConnectError>,
    },
    #[error(
        "cannot reach the {role} at {target}: no connection within {secs}s (--connect-timeout)"
    )]
    ConnectTimeout {
        role: Role,
        target: String,
        secs: u64,
    },
    #[error("target {target:?}: expected unix:///path, a socket path, http://host:port, https://host:port or host:port")]
    BadTarget { target: String },
    #[error("cannot read {path}: {reason}")]
    TlsFile { path: String, reason: String },
    #[error("the token in {path} is not usable (empty, or not printable ASCII)")]
    BadToken { path: String },
    #[error("--tls-* flags need an https:// target (or host:port); {target} is not one")]
    TlsWithoutHttps { target: String },
    #[error("--agent and --collector both given: choose one")]
    BothTargets,
    #[error(
        "SOCKEYE_AGENT and SOCKEYE_COLLECTOR are both set: pass --agent or --collector to choose"
    )]
    BothTargetsInEnv,
    #[error(
        "--since needs --collector: an agent answers with what it counted since it started and the findings it holds now, not over a time range"
    )]
    SinceNeedsCollector,
    #[error("-w/--watch refreshes top, conns and dns; watch already streams")]
    WatchFlagOnWatch,
    #[error("--count needs -w/--watch, or the watch command")]
    CountWithoutWatch,
    #[error("--kind selects agent traces; the collector streams whole windows")]
    KindOnCollector,
    /// InvalidArgument: the server's own words say what is wrong.
    #[error("{message}")]
    InvalidArgument { message: String },
    #[error("the {role} at {target} does not serve {service}{hint}")]
    Unimplemented {
        role: Role,
        target: String,
        service: &'static str,
        hint: &'static str,
    },
    #[error("the {role} at {target} answered {code:?}: {message}{hint}")]
    Status {
        role: Role,
        target: String,
        code: Code,
        message: String,
        hint: &'static str,
    },
    #[error("the {role} at {target} ended the stream (is it shutting down?)")]
    StreamEnded { role: Role, target: String },
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Unreachable { .. } | Self::ConnectTimeout { .. } => exit::UNREACHABLE,
            Self::BadTarget { .. }
            | Self::TlsFile { .. }
            | Self::BadToken { .. }
            | Self::TlsWithoutHttps { .. }
            | Self::BothTargets
            | Self::BothTargetsInEnv
            | Self::SinceNeedsCollector
            | Self::WatchFlagOnWatch
            | Self::CountWithoutWatch
            | Self::KindOnCollector => exit::USAGE,
            Self::InvalidArgument { .. }
            | Self::Unimplemented { .. }
            | Self::Status { .. }
            | Self::StreamEnded { .. }
            | Self::Output(_) => exit::FAILED,
        }
    }

    /// The error for a failed call to `role` at `target`.
    pub fn from_status(role: Role, target: &str, s: &tonic::Status) -> Self {
        match s.code() {
            Code::InvalidArgument => Self::InvalidArgument {
                message: s.message().to_string(),
            },
            // Pointing --agent at a collector (or the reverse) lands here:
            // an unknown route has no message. A server that knows the
            // method but does not serve it yet says why.
            Code::Unimplemented if s.message().is_empty() => Self::Unimplemented {
                role,
                target: target.to_string(),
                service: match role {
                    Role::Agent => "sockeye.v1.AgentService",
                    Role::Collector => "sockeye.v1.CollectorService",
                },
                hint: match role {
                    Role::Agent => " (is it a collector? use --collector)",
                    Role::Collector => " (is it an agent? use --agent)",
                },
            },
            code => {
                let message = with_cause(s);
                // A TLS server that wants a client certificate accepts the
                // handshake and refuses the first call.
                let hint = if target.starts_with("https://") && message.contains("Certificate") {
                    " (TLS refused: the server may require a client certificate: --tls-cert and --tls-key)"
                } else if matches!(code, Code::Unauthenticated | Code::PermissionDenied)
                    && !message.contains("--token-file")
                {
                    " (present a reader's token: --token-file or $SOCKEYE_TOKEN; README \"Security\")"
                } else {
                    ""
                };
                Self::Status {
                    role,
                    target: target.to_string(),
                    code,
                    message,
                    hint,
                }
            }
        }
    }
}

/// The status message, and the innermost error under it when there is one
/// ("transport error: received fatal alert: CertificateRequired"): tonic's
/// own message alone does not say what went wrong.
fn with_cause(s: &tonic::Status) -> String {
    let mut message = s.message().to_string();
    let mut cur = std::error::Error::source(s);
    let mut innermost = None;
    while let Some(e) = cur {
        innermost = Some(e.to_string());
        cur = e.source();
    }
    if let Some(inner) = innermost.filter(|i| !message.contains(i.as_str())) {
        if message.is_empty() {
            message = inner;
        } else {
            message = format!("{message}: {inner}");
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_become_clear_errors() {
        let e = CliError::from_status(
            Role::Collector,
            "http://c:7070",
            &tonic::Status::invalid_argument("by \"size\" is not a ranking"),
        );
        assert_eq!(e.to_string(), "by \"size\" is not a ranking");
        assert_eq!(e.exit_code(), exit::FAILED);
        let e = CliError::from_status(
            Role::Agent,
            "http://c:7070",
            &tonic::Status::unimplemented(""),
        );
        assert_eq!(
            e.to_string(),
            "the agent at http://c:7070 does not serve sockeye.v1.AgentService (is it a collector? use --collector)"
        );
        let e = CliError::from_status(
            Role::Agent,
            "unix:///a.sock",
            &tonic::Status::unimplemented("findings are not served yet"),
        );
        assert_eq!(
            e.to_string(),
            "the agent at unix:///a.sock answered Unimplemented: findings are not served yet"
        );
        let e = CliError::from_status(
            Role::Agent,
            "unix:///a.sock",
            &tonic::Status::unavailable("the agent is shutting down"),
        );
        assert_eq!(
            e.to_string(),
            "the agent at unix:///a.sock answered Unavailable: the agent is shutting down"
        );
        assert_eq!(CliError::BothTargets.exit_code(), exit::USAGE);
    }
}
