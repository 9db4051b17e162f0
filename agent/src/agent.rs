//! The agent as a library: load the probes, drain events into the
//! aggregator, and produce snapshots. The binary and the integration tests
//! both drive this.

use std::path::PathBuf;

use crate::{
    aggregate::{resources::ResourceFailures, Aggregator, Limits},
    api::{findings::FindingUpdates, traces::TracePublisher},
    attribution::{cgroup_fs, filter::WorkloadFilter, runtime_records::RecordRoots, Attributor},
    clock,
    dns::{DnsConfig, DnsTracer},
    ebpf::{self, counters, Feature, LoadOptions, Probes},
    event::{CgroupName, Event},
    findings::{config, Findings, FindingsConfig, Inputs, Kind},
    preexisting::Preexisting,
    probe::KernelProbe,
    push::{PushConfig, Pusher},
    snapshot::{self, FindingsHealth, Health, Snapshot},
};

#[derive(Debug, Clone)]
pub struct Config {
    /// None: find the cgroup v2 mount in /proc/self/mountinfo.
    pub cgroup_root: Option<PathBuf>,
    pub tracefs: PathBuf,
    pub proc_root: PathBuf,
    pub ringbuf_bytes: u32,
    pub limits: Limits,
    pub scan_preexisting: bool,
    /// Where container runtimes keep their records (pod names).
    pub records: RecordRoots,
    /// Ports watched for DNS; empty turns DNS tracing off.
    pub dns_ports: Vec<u16>,
    pub dns_ringbuf_bytes: u32,
    pub dns: DnsConfig,
    /// This node's name, as the API reports it.
    pub node_name: String,
    /// Detection thresholds; None turns findings off.
    pub findings: Option<FindingsConfig>,
    /// How often sockets believed open are checked against the kernel's
    /// table (`reconcile`); None: never.
    pub reconcile_every: Option<std::time::Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cgroup_root: None,
            tracefs: PathBuf::from(ebpf::tracefs::TRACEFS),
            proc_root: PathBuf::from("/proc"),
            ringbuf_bytes: 4 << 20,
            limits: Limits::default(),
            scan_preexisting: true,
            records: RecordRoots::default(),
            dns_ports: vec![53],
            dns_ringbuf_bytes: 2 << 20,
            dns: DnsConfig::default(),
            node_name: node_name(),
            findings: Some(FindingsConfig::default()),
            reconcile_every: Some(std::time::Duration::from_secs(60)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Cgroup(#[from] cgroup_fs::CgroupFsError),
    #[error(transparent)]
    Load(#[from] ebpf::LoadError),
    #[error("--max-sockets {value} does not fit the kernel map size (u32)")]
    MaxSockets { value: usize },
}

pub struct Agent {
    pub probes: Probes,
    pub aggregator: Aggregator,
    pub attributor: Attributor,
    pub preexisting: Preexisting,
    pub dns: DnsTracer,
    /// Live traces for API watchers; built only while someone watches.
    pub traces: TracePublisher,
    /// Windows for the collector, when one is configured.
    pub pusher: Option<Pusher>,
    pub cgroup_root: PathBuf,
    /// What is wrong, from the aggregates (see `findings`).
    pub findings: Findings,
    /// Finding changes for API watchers.
    pub finding_updates: FindingUpdates,
    /// Sockets whose close event was lost, closed from the kernel's table.
    pub reconciler: Option<crate::reconcile::Reconciler>,
    proc_root: PathBuf,
    /// What the detectors ask the kernel on demand.
    probe: KernelProbe,
}

impl Agent {
    /// Loads and attaches the programs, then scans for pre-existing sockets.
    /// Attaching first means a socket opened during the scan is seen by the
    /// kernel programs; one found by both is counted once (different ids,
    /// but a socket in the scan that the kernel also reports is rare and
    /// short-lived).
    pub fn start(config: &Config) -> Result<Self, StartError> {
        let cgroup_root = match &config.cgroup_root {
            Some(p) => p.clone(),
            None => cgroup_fs::find_cgroup2_mount()?,
        };
        let max_sockets =
            u32::try_from(config.limits.max_sockets).map_err(|_| StartError::MaxSockets {
                value: config.limits.max_sockets,
            })?;
        let mut probes = ebpf::load(&LoadOptions {
            cgroup_root: cgroup_root.clone(),
            tracefs: config.tracefs.clone(),
            ringbuf_bytes: config.ringbuf_bytes,
            max_sockets,
            max_listeners: 4096,
            dns_ports: config.dns_ports.clone(),
            dns_ringbuf_bytes: config.dns_ringbuf_bytes,
        })?;
        for f in &probes.features {
            if f.enabled {
                log::info!("feature {}: {}", f.name, f.detail);
            }
        }
        let mut aggregator = Aggregator::new(config.limits);
        // Resource failures are counted over the span their finding
        // resolves after, so the two agree on what an episode is.
        let resolve_after_s = config
            .findings
            .as_ref()
            .map_or(FindingsConfig::default().resources.resolve_after_s, |f| {
                f.resources.resolve_after_s
            });
        aggregator.resources = ResourceFailures::new(
            crate::aggregate::resources::DEFAULT_MAX_KEYS,
            config::ns(resolve_after_s),
        );
        let preexisting = if config.scan_preexisting {
            let p = Preexisting::scan(
                &config.proc_root,
                &cgroup_root,
                &mut aggregator,
                clock::monotonic_ns(),
            );
            log::info!(
                "found {} pre-existing TCP sockets in {} network namespaces",
                p.stats.sockets,
                p.stats.netns_seen
            );
            let seeds = p.listener_seeds();
            let failed = ebpf::listeners::seed(&mut probes.ebpf, &seeds)?;
            if failed > 0 {
                log::warn!("{failed} pre-existing listeners did not fit the kernel listener map");
            }
            p
        } else {
            Preexisting::default()
        };
        let probe = KernelProbe::new(config.proc_root.clone(), &cgroup_root);
        Ok(Self {
            probe,
            probes,
            aggregator,
            attributor: Attributor::with_records(cgroup_root.clone(), config.records.clone()),
            preexisting,
            dns: DnsTracer::new(config.dns),
            traces: TracePublisher::new(config.node_name.clone()),
            pusher: None,
            cgroup_root,
            finding_updates: FindingUpdates::new(config.node_name.clone()),
            reconciler: config.reconcile_every.map(|every| {
                crate::reconcile::Reconciler::new(every, &config.proc_root, clock::monotonic_ns())
            }),
            proc_root: config.proc_root.clone(),
            findings: match &config.findings {
                Some(c) => Findings::new(c.clone()),
                None => Findings::disabled(),
            },
        })
    }

    pub fn features(&self) -> &[Feature] {
        &self.probes.features
    }

    /// Consumes every event waiting in the ring buffers; returns how many
    /// TCP events. Cgroups seen for the first time are resolved right away:
    /// a short-lived container's cgroup may be gone by the next snapshot.
    pub fn drain(&mut self) -> usize {
        if let Some(ring) = self.probes.cgroup_events.as_mut() {
            while let Some(item) = ring.next() {
                match CgroupName::decode(&item) {
                    Some(c) => self.attributor.learn(c.id, c.path),
                    None => self.aggregator.decode_errors += 1,
                }
            }
        }
        let watched = self.traces.watched();
        let mut n = 0;
        let now = clock::monotonic_ns();
        while let Some(item) = self.probes.events.next() {
            self.probes.lag.observe(&item, now);
            self.aggregator.handle_record(&item);
            if watched {
                // Decoded twice, but only while someone watches.
                if let Ok(ev) = Event::decode(&item) {
                    self.traces.tcp(&mut self.attributor, &ev);
                }
            }
            n += 1;
        }
        if let Some(ring) = self.probes.dns_events.as_mut() {
            self.dns.set_tracing(watched);
            while let Some(item) = ring.next() {
                self.dns.handle_record(&item);
            }
            self.dns.tick(clock::monotonic_ns());
            for e in self.dns.take_traces() {
                self.traces.dns(&mut self.attributor, &e);
            }
        }
        self.drain_resources();
        let new_cgroups = std::mem::take(&mut self.aggregator.new_cgroups)
            .into_iter()
            .chain(std::mem::take(&mut self.dns.new_cgroups))
            .chain(std::mem::take(&mut self.aggregator.resources.new_cgroups));
        let now = clock::monotonic_ns();
        for w in self.attributor.name_pending() {
            self.findings.instances.saw(&w, now);
        }
        for id in new_cgroups {
            // Named now, while the cgroup exists; each new instance of a
            // workload is a restart the findings relate to connections.
            let w = self.attributor.workload(id);
            self.findings.instances.saw(&w, now);
        }
        n
    }

    /// Counts connects and socket() calls that ran out of ports or fds, and
    /// reads the limit each new episode ran into while the process that
    /// failed is still likely to be there.
    fn drain_resources(&mut self) {
        let Some(ring) = self.probes.resource_events.as_mut() else {
            return;
        };
        let resources = &mut self.aggregator.resources;
        while let Some(item) = ring.next() {
            resources.handle_record(&item);
        }
        for (key, tgid) in resources.take_limit_requests() {
            let limit = crate::proc_limits::read(&self.proc_root, key.errno, tgid);
            resources.set_limit(&key, limit);
        }
    }

    /// Periodic housekeeping: TIME_WAIT expiry, idle flows, pre-existing
    /// sockets refresh.
    pub fn housekeeping(&mut self) {
        let now = clock::monotonic_ns();
        if self.preexisting.remaining() > 0 {
            self.preexisting.refresh(&mut self.aggregator, now);
        }
        if let Some(r) = &mut self.reconciler {
            r.maybe_run(&mut self.aggregator, now);
        }
        self.aggregator.sweep(now);
    }

    /// Runs the detectors on the aggregates as they are now.
    pub fn evaluate_findings(&mut self) {
        let inputs = Inputs {
            tcp: &self.aggregator,
            dns: &self.dns.aggregates,
            now_ns: clock::monotonic_ns(),
        };
        self.findings
            .evaluate(&inputs, &mut self.attributor, &mut self.probe);
    }

    /// Ends an output interval: per-interval counts start again.
    pub fn end_window(&mut self) {
        self.aggregator.reset_window();
        self.dns.end_window();
        self.traces.forget_workloads();
    }

    /// Workloads matching `text` like `--container` does (None: all).
    pub fn snapshot(&mut self, text: Option<&str>) -> Snapshot {
        self.snapshot_filtered(&WorkloadFilter::from(text))
    }

    pub fn snapshot_filtered(&mut self, filter: &WorkloadFilter) -> Snapshot {
        snapshot::take(
            &self.aggregator,
            &self.dns.aggregates,
            &mut self.attributor,
            clock::monotonic_ns(),
            filter,
        )
    }

    pub fn health(&self) -> Health {
        let mut h = Health::collect(
            &self.aggregator,
            self.dns.health(),
            &counters::read_all(&self.probes.ebpf),
            &self.attributor,
        );
        h.ring_lag = self.probes.lag.summary();
        if self.findings.enabled() {
            // Flows and DNS servers without a history: problems there are
            // not judged.
            let skipped = self.findings.stats.series_skipped;
            h.lost.insert("findings_series_skipped", skipped);
            h.lost_total += skipped;
            h.findings = Some(self.findings_health());
        }
        if let Some(r) = &self.reconciler {
            // A close event lost somewhere: the socket was closed late.
            let n = r.stats.sockets_reconciled;
            h.lost.insert("sockets_reconciled", n);
            h.lost_total += n;
        }
        if let Some(p) = &self.pusher {
            for (name, n) in p.lost() {
                h.lost.insert(name, n);
                h.lost_total += n;
            }
            h.push = Some(p.health());
        }
        h
    }

    fn findings_health(&self) -> FindingsHealth {
        let stats = &self.findings.stats;
        let by_kind = |counts: &[u64; Kind::ALL.len()]| {
            Kind::ALL
                .iter()
                .zip(counts)
                .map(|(k, n)| (k.name(), *n))
                .collect()
        };
        FindingsHealth {
            evaluations: stats.evaluations,
            open: self.findings.open().len() as u64,
            opened: by_kind(&stats.opened),
            resolved: by_kind(&stats.resolved),
            resolved_forgotten: stats.resolved_forgotten,
            probe_failures: stats.probe_failures,
            watch_updates_missed: self.finding_updates.missed(),
        }
    }

    /// Starts pushing windows to a collector (on the current tokio runtime).
    pub fn start_pushing(&mut self, cfg: PushConfig) {
        self.pusher = Some(Pusher::start(cfg, self.traces.node().to_string()));
    }
}

/// The node's name: `NODE_NAME` (set by the DaemonSet from spec.nodeName)
/// or the host name.
pub fn node_name() -> String {
    if let Ok(n) = std::env::var("NODE_NAME") {
        if !n.is_empty() {
            return n;
        }
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
