//! The agent's main loop: drain the ring buffer, refresh the output every
//! interval, stop cleanly on SIGINT/SIGTERM.

use std::{
    io::Write,
    os::fd::{AsRawFd, RawFd},
    time::Duration,
};

use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
    sync::{mpsc, oneshot},
    time::{interval, MissedTickBehavior},
};

use crate::{
    api::{filter::ApiFilter, findings::messages, respond, service::ApiRequest},
    attribution::filter::WorkloadFilter,
    clock,
    findings::Finding,
    http::HealthState,
    metrics::Metrics,
    output::{
        findings::{self, ChangeLog},
        findings_table::Shown,
        json, table, OutputFormat,
    },
    Agent,
};

/// The kernel side wakes us only when a lot of data is waiting (to save a
/// wakeup per event), so we also drain on this short timer.
const DRAIN_EVERY: Duration = Duration::from_millis(20);

/// How often the detectors run: often enough that a finding shows within
/// seconds of its evidence, rarely enough to cost nothing (one pass over
/// the flow table).
pub const FINDINGS_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct RunOptions {
    pub output: OutputFormat,
    pub interval: Duration,
    pub filter: WorkloadFilter,
    /// Stop after this long (None: until a signal).
    pub duration: Option<Duration>,
    /// Rows shown by the table.
    pub top: usize,
    /// Told that the loop runs, for the health endpoint.
    pub health: Option<HealthState>,
    /// Requests from the API service, when it runs.
    pub api: Option<mpsc::Receiver<ApiRequest>>,
    /// Stops the loop when it fires (or its sender is dropped), like a signal.
    pub stop: Option<oneshot::Receiver<()>>,
    /// Prometheus metrics, updated at start and every interval.
    pub metrics: Option<Metrics>,
}

/// Borrowed ring buffer fd for tokio's readiness polling.
struct Fd(RawFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

pub async fn run(mut agent: Agent, mut opts: RunOptions) -> std::io::Result<()> {
    let mut api = opts.api.take();
    let mut stop = opts.stop.take();
    let mut metrics = opts.metrics.take();
    if let Some(m) = metrics.as_mut() {
        m.update(&mut agent);
    }
    // SAFETY: the fd belongs to `agent.probes.events`, which `agent` owns for
    // the whole function; `ring` is declared later, so it is dropped first.
    let ring = unsafe {
        AsyncFd::register_with_interest(
            Fd(agent.probes.events.as_raw_fd()),
            tokio::io::Interest::READABLE,
        )
    }
    .map_err(std::io::Error::from)?;
    // SAFETY: as above, for the DNS ring buffer.
    let dns_ring = match agent.probes.dns_events.as_ref() {
        Some(r) => Some(
            unsafe {
                AsyncFd::register_with_interest(Fd(r.as_raw_fd()), tokio::io::Interest::READABLE)
            }
            .map_err(std::io::Error::from)?,
        ),
        None => None,
    };
    // Handlers first: a signal sent as soon as the ready line is read must
    // stop the agent cleanly, not kill it with the default action.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut stdout = std::io::stdout().lock();
    if opts.output == OutputFormat::Json {
        json::ready(
            &mut stdout,
            agent.features(),
            agent.preexisting.stats.sockets,
        )?;
    }
    let mut drain_tick = interval(DRAIN_EVERY);
    drain_tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut out_tick = interval(opts.interval);
    out_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    out_tick.tick().await;
    let deadline = tokio::time::sleep(opts.duration.unwrap_or(Duration::MAX / 4));
    tokio::pin!(deadline);
    let mut printed_seq = 0;
    let mut push_tick = agent.pusher.as_ref().map(|p| {
        let mut t = interval(p.every);
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
        t
    });
    let mut findings_tick = interval(FINDINGS_EVERY);
    findings_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut finding_log = ChangeLog::default();
    let health = opts.health.as_ref();
    if let Some(h) = health {
        h.set_ready(true);
    }

    loop {
        tokio::select! {
            guard = ring.readable() => {
                let mut guard = guard?;
                agent.drain();
                guard.clear_ready();
            }
            guard = readable(dns_ring.as_ref()) => {
                let mut guard = guard?;
                agent.drain();
                guard.clear_ready();
            }
            Some(request) = next_request(api.as_mut()) => {
                agent.drain();
                respond::answer(&mut agent, request);
            }
            _ = ticked(push_tick.as_mut()) => {
                agent.drain();
                push_window(&mut agent);
            }
            _ = findings_tick.tick(), if agent.findings.enabled() => {
                agent.drain();
                agent.evaluate_findings();
                // The changes are taken here only: watchers and the JSON
                // lines get every one.
                let changes = agent.findings.take_changes();
                agent.finding_updates.publish(&changes);
                if opts.output == OutputFormat::Json {
                    finding_log.record(&changes);
                }
            }
            _ = drain_tick.tick() => {
                agent.drain();
                if let Some(h) = health {
                    h.beat();
                }
            }
            _ = out_tick.tick() => {
                agent.drain();
                agent.housekeeping();
                if let Some(m) = metrics.as_mut() {
                    m.update(&mut agent);
                }
                printed_seq = emit(&mut stdout, &mut agent, &opts, &mut finding_log, printed_seq)?;
                agent.end_window();
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = &mut deadline => break,
            _ = stopped(stop.as_mut()) => break,
        }
    }
    if let Some(h) = health {
        h.set_ready(false);
    }
    // A last window, so what happened since the previous one is not lost;
    // in JSON it ends with the final stats line.
    agent.drain();
    agent.housekeeping();
    emit(
        &mut stdout,
        &mut agent,
        &opts,
        &mut finding_log,
        printed_seq,
    )?;
    if agent.pusher.is_some() {
        push_window(&mut agent);
        flush_pushes(&agent).await;
    }
    Ok(())
}

fn push_window(agent: &mut Agent) {
    let everything = ApiFilter::everything();
    let mut agg = respond::aggregates(agent, &everything);
    let Some(p) = agent.pusher.as_mut() else {
        return;
    };
    // Every resolution so far happened before this point (same thread).
    let end_ns = clock::monotonic_ns();
    let resolved = agent.findings.resolved_since(p.findings_since_ns);
    agg.findings
        .extend(messages(&agent.finding_updates, resolved, &everything));
    p.findings_since_ns = end_ns;
    p.window(agg);
}

/// Gives the last windows a moment to reach the collector before exit.
async fn flush_pushes(agent: &Agent) {
    const GRACE: Duration = Duration::from_secs(2);
    let Some(p) = &agent.pusher else { return };
    // Let the sender take the last window in before looking.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let deadline = tokio::time::Instant::now() + GRACE;
    while p.stats.buffered.load(std::sync::atomic::Ordering::Relaxed) > 0
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Fires with an optional interval; never without one.
async fn ticked(t: Option<&mut tokio::time::Interval>) {
    match t {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Fires when the stop channel does; never when there is none.
async fn stopped(stop: Option<&mut oneshot::Receiver<()>>) {
    match stop {
        Some(rx) => {
            let _ = rx.await;
        }
        None => std::future::pending().await,
    }
}

/// The next API request; never ready when the API is off (or its service
/// has stopped).
async fn next_request(api: Option<&mut mpsc::Receiver<ApiRequest>>) -> Option<ApiRequest> {
    match api {
        Some(rx) => match rx.recv().await {
            Some(r) => Some(r),
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// Readiness of an optional ring buffer; never ready when there is none.
async fn readable(
    fd: Option<&AsyncFd<Fd>>,
) -> std::io::Result<tokio::io::unix::AsyncFdReadyGuard<'_, Fd>> {
    match fd {
        Some(fd) => fd.readable().await,
        None => std::future::pending().await,
    }
}

fn emit<W: Write>(
    out: &mut W,
    agent: &mut Agent,
    opts: &RunOptions,
    finding_log: &mut ChangeLog,
    printed_seq: u64,
) -> std::io::Result<u64> {
    if opts.output == OutputFormat::None {
        return Ok(printed_seq);
    }
    let snap = agent.snapshot_filtered(&opts.filter);
    let health = agent.health();
    match opts.output {
        OutputFormat::None => Ok(printed_seq),
        OutputFormat::Json => {
            let clock = agent.finding_updates.clock();
            findings::write(out, &finding_log.take(), &opts.filter, clock)?;
            json::window(out, &snap, &health, printed_seq)
        }
        OutputFormat::Table => {
            let shown_here = |f: &&Finding| findings::shown(&opts.filter, f);
            let shown = Shown {
                open: agent
                    .findings
                    .open()
                    .into_iter()
                    .filter(shown_here)
                    .collect(),
                resolved: agent.findings.resolved().filter(shown_here).collect(),
                now_ns: clock::monotonic_ns(),
            };
            // Clear the screen and home the cursor, then redraw.
            write!(
                out,
                "\x1b[H\x1b[2J{}",
                table::render(
                    &snap,
                    &shown,
                    &health,
                    opts.interval.as_secs_f64(),
                    opts.filter.describe().as_deref(),
                    opts.top,
                )
            )?;
            out.flush()?;
            Ok(printed_seq)
        }
    }
}
