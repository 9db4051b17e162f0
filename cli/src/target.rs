//! Which server to ask (an agent or the collector), how its address is
//! written, and connecting to it with a message that says why it failed.

use std::{error::Error as _, io, time::Duration};

use sockeye_proto::connect::{connect, Bearer, ClientTls, ConnectError};
use tonic::transport::Channel;

use crate::error::{CliError, Role};

/// The agent's default API socket (`sockeye-agent --api-socket`).
pub const DEFAULT_AGENT: &str = "unix:///run/sockeye/agent.sock";
pub const AGENT_ENV: &str = "SOCKEYE_AGENT";
pub const COLLECTOR_ENV: &str = "SOCKEYE_COLLECTOR";
/// A bearer token itself (when there is no `--token-file`).
pub const TOKEN_ENV: &str = "SOCKEYE_TOKEN";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub role: Role,
    /// `unix:///...`, `http://...` or `https://...`.
    pub url: String,
}

/// Picks the server: a flag beats an environment variable, and the agent's
/// default socket is used when nothing is given. Two of a kind at the same
/// level is ambiguous and refused rather than guessed.
pub fn resolve(
    agent: Option<&str>,
    collector: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
    tls: bool,
) -> Result<Target, CliError> {
    let (role, raw) = match (agent, collector) {
        (Some(_), Some(_)) => return Err(CliError::BothTargets),
        (Some(a), None) => (Role::Agent, a.to_string()),
        (None, Some(c)) => (Role::Collector, c.to_string()),
        (None, None) => {
            let var = |k| env(k).filter(|v: &String| !v.trim().is_empty());
            match (var(AGENT_ENV), var(COLLECTOR_ENV)) {
                (Some(_), Some(_)) => return Err(CliError::BothTargetsInEnv),
                (Some(a), None) => (Role::Agent, a),
                (None, Some(c)) => (Role::Collector, c),
                (None, None) => (Role::Agent, DEFAULT_AGENT.to_string()),
            }
        }
    };
    Ok(Target {
        role,
        url: normalize(&raw, tls)?,
    })
}

/// Accepts the URL forms `sockeye_proto::connect` knows, plus a socket
/// path (`/run/sockeye/agent.sock`) and a bare `host:port` (https when TLS
/// flags are given, http otherwise).
pub fn normalize(raw: &str, tls: bool) -> Result<String, CliError> {
    let s = raw.trim();
    let bad = || CliError::BadTarget {
        target: raw.to_string(),
    };
    let url = if s.starts_with("unix://") || s.starts_with("http://") || s.starts_with("https://") {
        s.to_string()
    } else if s.starts_with('/') || s.starts_with("./") || s.starts_with("../") {
        format!("unix://{s}")
    } else if s.contains("://") {
        return Err(bad());
    } else {
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad());
        }
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://{s}")
    };
    if url == "unix://" || url.ends_with("://") {
        return Err(bad());
    }
    if tls && !url.starts_with("https://") {
        return Err(CliError::TlsWithoutHttps { target: url });
    }
    Ok(url)
}

/// The bearer token to present: `--token-file`, else `$SOCKEYE_TOKEN`,
/// else none.
pub fn bearer(
    token_file: Option<&std::path::Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Bearer, CliError> {
    let token = match token_file {
        Some(path) => Bearer::from_file(path),
        None => match env(TOKEN_ENV).filter(|t| !t.trim().is_empty()) {
            Some(t) => Bearer::from_token(&t, "$SOCKEYE_TOKEN"),
            None => return Ok(Bearer::none()),
        },
    };
    token.map_err(|e| match e {
        ConnectError::File { path, source } => CliError::TlsFile {
            path,
            reason: strip_os_error(&source.to_string()),
        },
        ConnectError::BadToken { path } => CliError::BadToken { path },
        other => CliError::BadToken {
            path: other.to_string(),
        },
    })
}

/// Opens a channel, or says in words why not and what to try.
pub async fn open(
    target: &Target,
    tls: Option<&ClientTls>,
    timeout: Duration,
) -> Result<Channel, CliError> {
    match tokio::time::timeout(timeout, connect(&target.url, tls)).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(connect_error(target, e)),
        Err(_) => Err(CliError::ConnectTimeout {
            role: target.role,
            target: target.url.clone(),
            secs: timeout.as_secs().max(1),
        }),
    }
}

fn connect_error(target: &Target, e: ConnectError) -> CliError {
    match e {
        ConnectError::Target(t) => CliError::BadTarget { target: t },
        ConnectError::File { path, source } => CliError::TlsFile {
            path,
            reason: strip_os_error(&source.to_string()),
        },
        ConnectError::BadToken { path } => CliError::BadToken { path },
        ConnectError::Transport { .. } => {
            let (reason, kind) = root_cause(&e);
            CliError::Unreachable {
                role: target.role,
                target: target.url.clone(),
                hint: hint(target, kind, &reason),
                reason,
                source: Box::new(e),
            }
        }
    }
}

/// The innermost I/O error in words ("No such file or directory"), or the
/// innermost error of any kind.
fn root_cause(e: &ConnectError) -> (String, Option<io::ErrorKind>) {
    let mut last = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<io::Error>() {
            return (strip_os_error(&io.to_string()), Some(io.kind()));
        }
        last = c.to_string();
        cur = c.source();
    }
    (last, None)
}

/// "No such file or directory (os error 2)" -> "No such file or directory".
fn strip_os_error(s: &str) -> String {
    match s.rfind(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_string(),
        _ => s.to_string(),
    }
}

fn hint(target: &Target, kind: Option<io::ErrorKind>, reason: &str) -> &'static str {
    use io::ErrorKind::*;
    let unix = target.url.starts_with("unix://");
    let tls_failed = target.url.starts_with("https://")
        && (kind == Some(InvalidData) || reason.contains("certificate") || reason.contains("TLS"));
    match (target.role, unix, kind) {
        _ if tls_failed => {
            " (TLS failed: check --tls-ca and --tls-server-name; for mutual TLS, --tls-cert and --tls-key)"
        }
        (Role::Agent, true, Some(NotFound)) => {
            " (is sockeye-agent running? the socket is root-only: try sudo)"
        }
        (_, true, Some(PermissionDenied)) => " (the socket is root-only: try sudo)",
        (Role::Agent, true, Some(ConnectionRefused)) => {
            " (the socket is there but nothing listens: is sockeye-agent running?)"
        }
        (Role::Agent, false, Some(ConnectionRefused)) => {
            " (is sockeye-agent serving its API there? see its --api-addr)"
        }
        (Role::Collector, _, Some(NotFound | ConnectionRefused)) => {
            " (is sockeye-collector running and listening there?)"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn flags_beat_env_and_the_default_is_the_agent_socket() {
        let t = resolve(None, None, &no_env, false).unwrap();
        assert_eq!((t.role, t.url.as_str()), (Role::Agent, DEFAULT_AGENT));
        let env = |k: &str| (k == COLLECTOR_ENV).then(|| "collector:7070".to_string());
        let t = resolve(None, None, &env, false).unwrap();
        assert_eq!(
            (t.role, t.url.as_str()),
            (Role::Collector, "http://collector:7070")
        );
        let t = resolve(Some("/tmp/a.sock"), None, &env, false).unwrap();
        assert_eq!(
            (t.role, t.url.as_str()),
            (Role::Agent, "unix:///tmp/a.sock")
        );
        assert!(matches!(
            resolve(Some("a:1"), Some("b:2"), &no_env, false),
            Err(CliError::BothTargets)
        ));
        let both = |_: &str| Some("x:1".to_string());
        assert!(matches!(
            resolve(None, None, &both, false),
            Err(CliError::BothTargetsInEnv)
        ));
        let empty = |_: &str| Some(" ".to_string());
        assert_eq!(
            resolve(None, None, &empty, false).unwrap().url,
            DEFAULT_AGENT
        );
    }

    #[test]
    fn target_forms() {
        assert_eq!(
            normalize("unix:///run/a.sock", false).unwrap(),
            "unix:///run/a.sock"
        );
        assert_eq!(normalize("./a.sock", false).unwrap(), "unix://./a.sock");
        assert_eq!(
            normalize("10.0.0.5:7071", false).unwrap(),
            "http://10.0.0.5:7071"
        );
        assert_eq!(
            normalize("[fd00::5]:7071", true).unwrap(),
            "https://[fd00::5]:7071"
        );
        assert_eq!(normalize("https://c:7070", true).unwrap(), "https://c:7070");
        for bad in [
            "",
            "ftp://x",
            "collector",
            "c:port",
            ":7070",
            "unix://",
            "http://",
        ] {
            assert!(
                matches!(normalize(bad, false), Err(CliError::BadTarget { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            normalize("http://c:7070", true),
            Err(CliError::TlsWithoutHttps { .. })
        ));
        assert!(matches!(
            normalize("/a.sock", true),
            Err(CliError::TlsWithoutHttps { .. })
        ));
    }

    #[test]
    fn hints_follow_the_cause() {
        use io::ErrorKind::*;
        let t = |role, url: &str| Target {
            role,
            url: url.to_string(),
        };
        let sock = t(Role::Agent, DEFAULT_AGENT);
        // Tests run as root, which a 0600 socket cannot refuse: this case is
        // only checked here.
        assert_eq!(
            hint(&sock, Some(PermissionDenied), "Permission denied"),
            " (the socket is root-only: try sudo)"
        );
        assert!(hint(&sock, Some(NotFound), "").contains("is sockeye-agent running?"));
        assert!(hint(
            &t(Role::Agent, "http://n:7071"),
            Some(ConnectionRefused),
            ""
        )
        .contains("--api-addr"));
        assert!(hint(
            &t(Role::Collector, "https://c:7070"),
            Some(InvalidData),
            "bad"
        )
        .starts_with(" (TLS failed"));
        assert_eq!(
            hint(&t(Role::Collector, "http://c:7070"), Some(TimedOut), ""),
            ""
        );
    }

    #[tokio::test]
    async fn a_missing_socket_says_what_to_do() {
        let target = Target {
            role: Role::Agent,
            url: "unix:///nonexistent/sockeye/agent.sock".into(),
        };
        let e = open(&target, None, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot reach the agent at unix:///nonexistent/sockeye/agent.sock: No such file or directory (is sockeye-agent running? the socket is root-only: try sudo)"
        );
        assert_eq!(e.exit_code(), crate::error::exit::UNREACHABLE);
    }

    #[tokio::test]
    async fn a_closed_port_says_what_to_do() {
        // Bound then dropped: nothing listens on it now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let target = Target {
            role: Role::Collector,
            url: format!("http://127.0.0.1:{port}"),
        };
        let e = open(&target, None, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("cannot reach the collector at http://127.0.0.1:{port}: Connection refused (is sockeye-collector running and listening there?)")
        );
    }

    #[tokio::test]
    async fn an_unreadable_ca_file_is_named() {
        let target = Target {
            role: Role::Collector,
            url: "https://127.0.0.1:1".into(),
        };
        let tls = ClientTls {
            ca: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let e = open(&target, Some(&tls), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot read /nonexistent/ca.pem: No such file or directory"
        );
        assert_eq!(e.exit_code(), crate::error::exit::USAGE);
    }
}
