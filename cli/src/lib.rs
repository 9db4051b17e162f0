//! `sockeye`, the engineer's CLI: asks an agent (this node, over its unix
//! socket or TCP) or the collector (the cluster) and prints aligned tables,
//! wide tables or JSON lines.
//!
//! Modules: `args` (flags), `target` (which server, connecting), `commands`
//! (`top`, `conns`, `dns`, `watch`, `diagnose`: fetch and pure rendering),
//! `live` (`-w` refresh), `table`, `format` and `json` (output), `error`.
//!
//! [`execute`] is what the binary calls, with any `Write` as stdout, so
//! tests run commands in-process and compare their output; [`run`] is the
//! same without the [`Outcome`].

pub mod args;
pub mod commands;
pub mod error;
pub mod format;
pub mod json;
pub mod live;
pub mod safe;
pub mod table;
pub mod target;

use std::{
    io::Write,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use sockeye_proto::v1 as pb;

pub use args::Cli;
use args::{Command, DiagnoseArgs, TopArgs};
use commands::{
    conns,
    diagnose::{self, fetch::Ask},
    dns, top, watch, Client, View,
};
pub use error::{exit, CliError, Role};
use target::Target;

/// Collector queries cover the last 15 minutes unless `--since` says.
pub const DEFAULT_SINCE: Duration = Duration::from_secs(15 * 60);

pub fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// How a command that worked ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// `diagnose` showed this many problems that hold (exit 4).
    OpenFindings(u64),
}

impl Outcome {
    pub fn exit_code(self) -> i32 {
        match self {
            Self::Done | Self::OpenFindings(0) => 0,
            Self::OpenFindings(_) => exit::FINDINGS,
        }
    }
}

/// [`execute`], for callers that only want the output.
pub async fn run(cli: Cli, out: &mut dyn Write) -> Result<(), CliError> {
    execute(cli, out).await.map(|_| ())
}

/// Runs one command, writing its output to `out`. The target comes from
/// the flags, else `SOCKEYE_AGENT` / `SOCKEYE_COLLECTOR`, else the local
/// agent socket.
pub async fn execute(cli: Cli, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let tls = cli.tls();
    let target = target::resolve(
        cli.agent.as_deref(),
        cli.collector.as_deref(),
        &|k| std::env::var(k).ok(),
        tls.is_some(),
    )?;
    check(&cli, &target)?;
    let bearer = target::bearer(cli.token_file.as_deref(), &|k| std::env::var(k).ok())?;
    let channel = target::open(&target, tls.as_ref(), cli.connect_timeout).await?;
    let mut client = Client::new(
        target.role,
        sockeye_proto::connect::with_bearer(channel, bearer),
    );
    let view = View {
        output: cli.output,
        role: target.role,
        filter: cli.describe_filter(),
        now_unix_ms: now_unix_ms(),
        tz: jiff::tz::TimeZone::system(),
        // Fitted on a terminal; on a pipe every column in full, for grep.
        width: if cli.terminal {
            table::Width::of_terminal()
        } else {
            table::Width::All
        },
    };
    let query = match &cli.command {
        Command::Diagnose(d) => {
            return run_diagnose(&cli, d, &target, &mut client, &view, out).await;
        }
        Command::Watch(w) => {
            return match &mut client {
                Client::Agent(c) => {
                    let request = pb::WatchTracesRequest {
                        filter: Some(cli.filter()),
                        kinds: w.kind.iter().map(|k| k.as_str().to_string()).collect(),
                    };
                    watch::traces(c, &target.url, request, &view, cli.count, out).await
                }
                Client::Collector(c) => {
                    watch::windows(c, &target.url, cli.filter(), &view, cli.count, out).await
                }
            }
            .map(|()| Outcome::Done);
        }
        Command::Top(t) => Query::Top(t),
        Command::Conns => Query::Conns,
        Command::Dns => Query::Dns,
    };
    let Some(every) = cli.watch else {
        let text = answer(&cli, query, &target, &mut client, &view).await?;
        safe::write(out, &text, cli.output)?;
        return Ok(Outcome::Done);
    };
    let title = format!(
        "sockeye {}  {}{}",
        query.name(),
        target.url,
        cli.describe_filter()
            .map(|f| format!("  {f}"))
            .unwrap_or_default()
    );
    let source = async || {
        let view = View {
            now_unix_ms: now_unix_ms(),
            ..view.clone()
        };
        answer(&cli, query, &target, &mut client, &view).await
    };
    live::refresh(
        source,
        &title,
        every,
        cli.count,
        cli.terminal,
        cli.output,
        out,
    )
    .await
    .map(|()| Outcome::Done)
}

/// `diagnose`: once, as an agent's live stream (`-w`), or the collector's
/// answer again every few seconds (`-w`).
async fn run_diagnose(
    cli: &Cli,
    d: &DiagnoseArgs,
    target: &Target,
    client: &mut Client,
    view: &View,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let ask = Ask {
        filter: cli.filter(),
        include_resolved: d.all,
        since: d.since,
    };
    let open = match (cli.watch, &mut *client) {
        (None, _) => {
            let (text, open) = diagnose::fetch::once(client, &target.url, &ask, view).await?;
            safe::write(out, &text, view.output)?;
            open
        }
        (Some(_), Client::Agent(c)) => {
            diagnose::fetch::stream(c, &target.url, &ask, view, cli.count, out).await?
        }
        (Some(every), Client::Collector(_)) => {
            let frames = diagnose::fetch::Frames {
                every,
                count: cli.count,
                terminal: cli.terminal,
            };
            diagnose::fetch::refresh(client, &target.url, &ask, view, frames, out).await?
        }
    };
    Ok(Outcome::OpenFindings(open))
}

/// Flag combinations that cannot work, refused before connecting.
fn check(cli: &Cli, target: &Target) -> Result<(), CliError> {
    match &cli.command {
        Command::Top(TopArgs { since: Some(_), .. })
        | Command::Diagnose(DiagnoseArgs { since: Some(_), .. })
            if target.role == Role::Agent =>
        {
            Err(CliError::SinceNeedsCollector)
        }
        Command::Watch(_) if cli.watch.is_some() => Err(CliError::WatchFlagOnWatch),
        Command::Watch(w) if !w.kind.is_empty() && target.role == Role::Collector => {
            Err(CliError::KindOnCollector)
        }
        Command::Top(_) | Command::Conns | Command::Dns | Command::Diagnose(_)
            if cli.count.is_some() && cli.watch.is_none() =>
        {
            Err(CliError::CountWithoutWatch)
        }
        _ => Ok(()),
    }
}

/// The commands that answer once per request (and so can be refreshed).
#[derive(Clone, Copy)]
enum Query<'a> {
    Top(&'a TopArgs),
    Conns,
    Dns,
}

impl Query<'_> {
    fn name(self) -> &'static str {
        match self {
            Query::Top(_) => "top",
            Query::Conns => "conns",
            Query::Dns => "dns",
        }
    }
}

/// One answer of `top`, `conns` or `dns`, rendered.
async fn answer(
    cli: &Cli,
    query: Query<'_>,
    target: &Target,
    client: &mut Client,
    view: &View,
) -> Result<String, CliError> {
    let filter = cli.filter();
    match query {
        Query::Conns => Ok(conns::render(
            &client.snapshots(&target.url, filter).await?,
            view,
        )),
        Query::Dns => Ok(dns::render(
            &client.snapshots(&target.url, filter).await?,
            view,
        )),
        Query::Top(t) => match client {
            Client::Agent(_) => {
                let snaps = client.snapshots(&target.url, filter).await?;
                let snap = snaps.into_iter().next().unwrap_or_default();
                let ranked = top::rank(&snap, t.by, t.limit as usize);
                Ok(top::render(&ranked, top::Basis::Agent(&snap), view))
            }
            Client::Collector(c) => {
                let since = t.since.unwrap_or(DEFAULT_SINCE);
                let to = view.now_unix_ms;
                let from = to.saturating_sub(since.as_millis() as i64).max(0);
                let resp = c
                    .query_top(pb::QueryTopRequest {
                        filter: Some(filter),
                        from_unix_ms: from,
                        to_unix_ms: to,
                        by: t.by.as_str().to_string(),
                        limit: t.limit,
                    })
                    .await
                    .map_err(|s| CliError::from_status(Role::Collector, &target.url, &s))?
                    .into_inner();
                let basis = top::Basis::Collector {
                    since,
                    from_unix_ms: from,
                    to_unix_ms: to,
                };
                Ok(top::render(&resp, basis, view))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(args: &[&str], role: Role) -> Result<(), CliError> {
        let cli = Cli::from_args(args).expect("flags parse");
        let target = Target {
            role,
            url: "unix:///a.sock".into(),
        };
        check(&cli, &target)
    }

    #[test]
    fn flag_combinations_that_cannot_work_are_refused_before_connecting() {
        use Role::*;
        let refused = [
            (&["sockeye", "top", "--since", "1h"][..], Agent),
            (&["sockeye", "watch", "-w"], Agent),
            (&["sockeye", "watch", "--kind", "dns"], Collector),
            (&["sockeye", "conns", "--count", "2"], Agent),
            (&["sockeye", "diagnose", "--since", "1h"], Agent),
            (&["sockeye", "diagnose", "--count", "1"], Collector),
        ];
        for (args, role) in refused {
            let e = checked(args, role).expect_err(&args.join(" "));
            assert_eq!(e.exit_code(), exit::USAGE, "{args:?}: {e}");
        }
        for (args, role) in [
            (&["sockeye", "top", "--since", "1h"][..], Collector),
            (
                &["sockeye", "watch", "--kind", "dns", "--count", "1"],
                Agent,
            ),
            (&["sockeye", "dns", "-w", "--count", "2"], Collector),
            (
                &["sockeye", "diagnose", "--since", "1h", "--all"],
                Collector,
            ),
            (&["sockeye", "diagnose", "-w", "--count", "3"], Agent),
        ] {
            checked(args, role).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
    }
}
