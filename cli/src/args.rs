//! Command-line flags. Selection and output flags are global, so they go
//! before or after the command, as with kubectl.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
use sockeye_proto::{connect::ClientTls, v1 as pb};

const AFTER_HELP: &str = "\
Targets: unix:///path or a socket path, http://host:port, https://host:port,
or host:port (https when a --tls-* flag is given). Without --agent or
--collector, $SOCKEYE_AGENT or $SOCKEYE_COLLECTOR is used, else the local
agent at unix:///run/sockeye/agent.sock (root only: run with sudo).

Exit codes: 0 done; 1 the agent or collector answered with an error (or a
stream broke); 2 bad flags or values; 3 the agent or collector cannot be
reached; 4 (diagnose only) done, and open findings were shown.

Examples:
  sudo sockeye conns -n shop --pod checkout
  sudo sockeye top --by latency -w
  sudo sockeye dns --destination stripe.com -o wide
  sudo sockeye watch --container checkout --kind tcp
  sudo sockeye diagnose -n shop
  sockeye --collector collector.sockeye:7070 top --since 1h -n prod
  sockeye --collector collector.sockeye:7070 watch -o json
  sockeye --collector collector.sockeye:7070 diagnose --since 1h --all";

#[derive(Debug, Clone, Parser)]
#[command(
    name = "sockeye",
    version,
    about = "Ask a Sockeye agent (this node) or the collector (the cluster) what TCP connections and DNS queries are doing, and what is wrong with them",
    after_help = AFTER_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Agent API to ask [env: SOCKEYE_AGENT] [default: unix:///run/sockeye/agent.sock]
    #[arg(long, global = true, value_name = "TARGET")]
    pub agent: Option<String>,
    /// Ask the collector instead: the whole cluster [env: SOCKEYE_COLLECTOR]
    #[arg(long, global = true, value_name = "TARGET")]
    pub collector: Option<String>,
    /// CA certificate (PEM) to trust for https:// targets.
    #[arg(long, global = true, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, global = true, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    #[arg(long, global = true, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Name expected in the server's certificate, when not the target's host.
    #[arg(long, global = true, value_name = "NAME")]
    pub tls_server_name: Option<String>,
    /// File with a bearer token to present: a collector lets only its
    /// readers query (`kubectl -n sockeye create token sockeye-reader
    /// --audience sockeye-collector > token`). $SOCKEYE_TOKEN may hold the
    /// token itself instead.
    #[arg(long, global = true, value_name = "FILE", env = "SOCKEYE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Seconds to wait for the connection.
    #[arg(long, global = true, value_name = "SECS", default_value = "10", value_parser = seconds)]
    pub connect_timeout: Duration,

    /// Kubernetes namespace (exact).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// Pod name, the prefix its controller gives its pods ("web" selects
    /// web-7d9f8b6c5-x2x4q) or the owner's name.
    #[arg(long, global = true)]
    pub pod: Option<String>,
    /// Text contained in the workload's label, container id, pod uid,
    /// cgroup path, or namespace, pod or container name.
    #[arg(short = 'c', long, global = true)]
    pub container: Option<String>,
    /// Node name (exact).
    #[arg(long, global = true)]
    pub node: Option<String>,
    /// Remote address: 10.0.1.12, 10.0.1.12:6379, [fd00::1]:53, :6379, or a
    /// DNS name (DNS rows and findings: the name and its subdomains).
    #[arg(short = 'd', long, global = true, value_name = "DEST")]
    pub destination: Option<String>,

    /// Output format: aligned table, wider table, or one JSON object per line.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Redraw every SECS seconds (default 2) until interrupted; on a pipe,
    /// print one frame after another. diagnose from an agent: stream every
    /// change instead.
    #[arg(short = 'w', long, global = true, value_name = "SECS", num_args = 0..=1,
          default_missing_value = "2", value_parser = seconds)]
    pub watch: Option<Duration>,
    /// Stop after N frames (with -w), N events (watch) or N changes
    /// (diagnose -w from an agent).
    #[arg(long, global = true, value_name = "N")]
    pub count: Option<u64>,

    /// Set by the binary when stdout is a terminal: -w redraws in place.
    #[arg(skip)]
    pub terminal: bool,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Outbound destinations ranked by failed connects, connect latency or
    /// open sockets.
    Top(TopArgs),
    /// Connections by workload and destination: connects, failures by cause,
    /// latency percentiles, open sockets, states, oldest.
    Conns,
    /// DNS names asked: queries, answers by result, timeouts, latency; a
    /// totals row per workload.
    Dns,
    /// Live stream: an agent's TCP and DNS traces, or the windows agents push
    /// to the collector.
    Watch(WatchArgs),
    /// What is wrong: findings (connection leaks, CLOSE_WAIT pile-ups, pool
    /// exhaustion, dependency restarts, DNS degradation, resource exhaustion
    /// at connect), each with its root cause, evidence and next step.
    #[command(after_help = DIAGNOSE_AFTER_HELP)]
    Diagnose(DiagnoseArgs),
}

const DIAGNOSE_AFTER_HELP: &str = "\
From an agent: the findings that hold on its node now. From the collector:
each node's findings over --since, merged when several nodes report the
same problem (same kind and destination, or same kind and owner).

-w: from an agent, every change as it happens (opened, changed, resolved;
SECS is not used); from the collector, ask again every SECS seconds.

Exit codes: 0 no open finding (resolved ones shown by --all do not count);
4 open findings were shown (with -w, in the last answer or still open when
the stream stopped); 1 the agent or collector answered with an error; 2 bad
flags; 3 the agent or collector cannot be reached. So `sockeye diagnose ||
page-someone` pages on findings and on failures alike, and a script that
wants to tell them apart tests for 4.

Examples:
  sudo sockeye diagnose
  sudo sockeye diagnose -n shop -o wide
  sudo sockeye diagnose -w -o json
  sockeye --collector collector.sockeye:7070 diagnose --since 1h --all";

#[derive(Debug, Clone, Args)]
pub struct TopArgs {
    /// What to rank by.
    #[arg(long, value_enum, default_value_t = RankBy::Failures)]
    pub by: RankBy,
    /// Rows to show (at most 1000).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Collector only: the time range, ending now ("15m", "2h", "1d")
    /// [default: 15m]
    #[arg(long, value_name = "DURATION", value_parser = since)]
    pub since: Option<Duration>,
}

#[derive(Debug, Clone, Args)]
pub struct DiagnoseArgs {
    /// Also show resolved findings (an agent remembers the latest ones;
    /// the collector has those in --since).
    #[arg(long)]
    pub all: bool,
    /// Collector only: the time range, ending now ("15m", "2h", "1d")
    /// [default: 15m]
    #[arg(long, value_name = "DURATION", value_parser = since)]
    pub since: Option<Duration>,
}

#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Agent only: trace kinds to stream (repeatable) [default: both].
    #[arg(long, value_enum)]
    pub kind: Vec<TraceKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Wide,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RankBy {
    /// Failed connects, most first (then most connects).
    Failures,
    /// p99 connect latency, slowest first.
    Latency,
    /// Open sockets now, most first.
    Open,
}

// clap's value enum, for `--by`; the ranking is `sockeye_proto::top`'s.
impl From<RankBy> for sockeye_proto::top::RankBy {
    fn from(by: RankBy) -> Self {
        match by {
            RankBy::Failures => Self::Failures,
            RankBy::Latency => Self::Latency,
            RankBy::Open => Self::Open,
        }
    }
}

impl RankBy {
    /// The name QueryTop takes.
    pub fn as_str(self) -> &'static str {
        sockeye_proto::top::RankBy::from(self).as_str()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TraceKind {
    Tcp,
    Dns,
}

impl TraceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Dns => "dns",
        }
    }
}

fn seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(0.1..=86_400.0).contains(&v) {
        return Err(format!("{s} is not between 0.1 and 86400 seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

fn since(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like 15m, 2h or 1d: {e}"))?;
    if d.is_zero() {
        return Err("the range must be longer than 0".to_string());
    }
    Ok(d)
}

impl Cli {
    /// Parses `args` (the first is the program name) without exiting, so
    /// callers without clap in scope can run commands in-process.
    pub fn from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::try_parse_from(args)
    }

    /// The filter as the API takes it; flags not given match everything.
    pub fn filter(&self) -> pb::Filter {
        let v = |o: &Option<String>| o.clone().unwrap_or_default();
        pb::Filter {
            namespace: v(&self.namespace),
            pod: v(&self.pod),
            container: v(&self.container),
            destination: v(&self.destination),
            node: v(&self.node),
        }
    }

    /// "namespace=shop pod=web", for "nothing found" messages.
    pub fn describe_filter(&self) -> Option<String> {
        let parts: Vec<String> = [
            ("namespace", &self.namespace),
            ("pod", &self.pod),
            ("container", &self.container),
            ("node", &self.node),
            ("destination", &self.destination),
        ]
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
        .collect();
        (!parts.is_empty()).then(|| parts.join(" "))
    }

    pub fn tls(&self) -> Option<ClientTls> {
        let any = self.tls_ca.is_some()
            || self.tls_cert.is_some()
            || self.tls_key.is_some()
            || self.tls_server_name.is_some();
        any.then(|| ClientTls {
            ca: self.tls_ca.clone(),
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            domain: self.tls_server_name.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_flags_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_before_or_after_the_command() {
        let a = Cli::try_parse_from([
            "sockeye", "-n", "shop", "conns", "--pod", "web", "-o", "wide",
        ])
        .unwrap();
        assert_eq!(a.filter().namespace, "shop");
        assert_eq!(a.filter().pod, "web");
        assert_eq!(a.output, Output::Wide);
        assert_eq!(a.describe_filter().unwrap(), "namespace=shop pod=web");
        let a = Cli::try_parse_from(["sockeye", "top", "--by", "latency", "-w"]).unwrap();
        assert_eq!(a.watch, Some(Duration::from_secs(2)));
        let Command::Top(t) = a.command else {
            panic!("top")
        };
        assert_eq!((t.by, t.limit, t.since), (RankBy::Latency, 20, None));
        let a = Cli::try_parse_from(["sockeye", "top", "--since", "1h30m", "-w", "0.5"]).unwrap();
        assert_eq!(a.watch, Some(Duration::from_millis(500)));
        let Command::Top(t) = a.command else {
            panic!("top")
        };
        assert_eq!(t.since, Some(Duration::from_secs(5400)));
    }

    #[test]
    fn bad_values_are_refused_by_the_parser() {
        for args in [
            &["sockeye", "top", "--by", "size"][..],
            &["sockeye", "top", "--limit", "0"],
            &["sockeye", "top", "--limit", "1001"],
            &["sockeye", "top", "--since", "soon"],
            &["sockeye", "conns", "-w", "0"],
            &["sockeye", "conns", "-o", "yaml"],
            &["sockeye", "watch", "--kind", "udp"],
            &["sockeye", "conns", "--tls-cert", "c.pem"],
            &["sockeye"],
        ] {
            let e = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn tls_is_set_by_any_tls_flag() {
        let a = Cli::try_parse_from(["sockeye", "conns"]).unwrap();
        assert!(a.tls().is_none());
        let a = Cli::try_parse_from(["sockeye", "conns", "--tls-server-name", "agent"]).unwrap();
        assert_eq!(a.tls().unwrap().domain.as_deref(), Some("agent"));
    }
}
