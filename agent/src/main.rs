//! `sockeye-agent`: traces every TCP socket and DNS query on this node and
//! prints, per container, connects, failures by cause, latency, open
//! sockets, and DNS names with latency, errors and timeouts.

use std::{
    io::{IsTerminal, Write},
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use clap::{Parser, Subcommand};
use sockeye_agent::{
    agent::node_name,
    aggregate::Limits,
    api::{
        self,
        server::{self, ServeOptions, TlsFiles},
    },
    attribution::{
        filter::WorkloadFilter,
        kube_watch::{self, WatchOptions},
        runtime_records::{RecordRoots, CONTAINERD_ROOT, CONTAINERS_STORAGE_ROOTS},
    },
    dns::DnsConfig,
    ebpf::verify,
    findings::FindingsConfig,
    http::{self, health::DEFAULT_STALE_AFTER, HealthState},
    metrics::{Capacities, Metrics, MetricsConfig, DEFAULT_MAX_LABEL_SETS},
    output::OutputFormat,
    push::PushConfig,
    run::{run, RunOptions},
    Agent, Config,
};
use sockeye_collector::{Collector, CollectorConfig};
use sockeye_common::dns::MAX_DNS_PORTS;
use sockeye_proto::connect::ClientTls;

#[derive(Debug, Parser)]
#[command(version, about, long_about = None, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Output format [default: table on a terminal, json otherwise].
    #[arg(short, long, value_enum)]
    output: Option<OutputFormat>,
    /// Seconds between refreshes of the table / JSON windows.
    #[arg(short, long, default_value_t = 2.0)]
    interval: f64,
    /// Show only workloads whose label, container id, pod uid, cgroup path, or
    /// Kubernetes namespace, pod or container name contains this.
    #[arg(short, long)]
    container: Option<String>,
    /// Show only this Kubernetes namespace.
    #[arg(long)]
    namespace: Option<String>,
    /// Show only this pod: its name, the prefix its controller gives it ("web" for
    /// web-7d9f8b6c5-x2x4q), or its owning workload's name.
    #[arg(long)]
    pod: Option<String>,
    /// Flows shown by the table (the ones with failures and open sockets first).
    #[arg(long, default_value_t = 40)]
    top: usize,
    /// Stop after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long)]
    duration: Option<f64>,
    /// Sockets tracked at once (kernel map and user table); beyond it sockets are counted as lost.
    #[arg(long, default_value_t = 65_536)]
    max_sockets: usize,
    /// Aggregation keys (container, direction, remote, port) kept; beyond it the stalest are evicted and counted.
    #[arg(long, default_value_t = 16_384)]
    max_flows: usize,
    /// Ring buffer size in MiB (a power of two).
    #[arg(long, default_value_t = 4)]
    ringbuf_mib: u32,
    /// cgroup v2 mount point [default: found in /proc/self/mountinfo].
    #[arg(long)]
    cgroup_root: Option<PathBuf>,
    /// tracefs mount point.
    #[arg(long, default_value = "/sys/kernel/tracing")]
    tracefs: PathBuf,
    /// procfs mount point (for sockets that predate the agent).
    #[arg(long, default_value = "/proc")]
    proc: PathBuf,
    /// Do not scan /proc for sockets that existed before the agent started.
    #[arg(long)]
    no_scan: bool,
    /// Seconds between checks of the sockets believed open against the
    /// kernel's own table (closing, and counting, those whose close event
    /// was lost); 0: never.
    #[arg(long, default_value_t = 60.0)]
    reconcile_every: f64,
    /// containerd state directory, for pod names from container records (repeatable).
    #[arg(long, value_name = "DIR", default_values_t = [CONTAINERD_ROOT.to_string()])]
    containerd_root: Vec<String>,
    /// containers/storage run or graph root of CRI-O and podman, for pod names from container records (repeatable).
    #[arg(long, value_name = "DIR", default_values_t = CONTAINERS_STORAGE_ROOTS.map(String::from))]
    containers_storage: Vec<String>,
    /// Unix socket of the agent API (gRPC, root only), or "off".
    #[arg(long, default_value = server::DEFAULT_SOCKET)]
    api_socket: PathBuf,
    /// Also serve the agent API on TCP at this address (e.g. 0.0.0.0:7071).
    #[arg(long)]
    api_addr: Option<SocketAddr>,
    /// TLS certificate (PEM) for the TCP API.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for the TCP API.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA (PEM) that TCP API clients' certificates must chain to (mutual TLS).
    #[arg(long, requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Push aggregated windows to this collector: http://host:port,
    /// https://host:port, unix:///path, or "embedded" to run a collector
    /// inside the agent (on a unix socket next to the API's).
    #[arg(long, env = "SOCKEYE_COLLECTOR")]
    collector: Option<String>,
    /// Data directory of the embedded collector.
    #[arg(long, default_value = "/var/lib/sockeye")]
    collector_data_dir: PathBuf,
    /// Unix socket of the embedded collector.
    #[arg(long, default_value = "/run/sockeye/collector.sock")]
    collector_socket: PathBuf,
    /// Seconds between windows pushed to the collector.
    #[arg(long, default_value_t = 10.0)]
    push_every: f64,
    /// Unacknowledged windows kept while the collector is away, at most
    /// (default: a day of 10 s windows); past it or --push-buffer-mib the
    /// oldest are dropped and counted.
    #[arg(long, default_value_t = PushConfig::default().buffer)]
    push_buffer: usize,
    /// Encoded size of the unacknowledged windows kept, at most, in MiB
    /// (what the buffer costs in memory).
    #[arg(long, default_value_t = PushConfig::default().buffer_bytes >> 20)]
    push_buffer_mib: usize,
    /// Largest gRPC message sent to the collector (its --max-message-bytes);
    /// larger windows are sent in chunks.
    #[arg(long, default_value_t = PushConfig::default().max_message_bytes)]
    push_max_message_bytes: usize,
    /// File with the bearer token to present to the collector (a projected
    /// ServiceAccount token with audience sockeye-collector); read again
    /// for each connection, as the kubelet renews it.
    #[arg(long, value_name = "FILE", env = "SOCKEYE_COLLECTOR_TOKEN_FILE")]
    collector_token_file: Option<PathBuf>,
    /// CA (PEM) to trust for an https:// collector.
    #[arg(long)]
    collector_ca: Option<PathBuf>,
    /// Client certificate (PEM) for a collector that requires mutual TLS.
    #[arg(long, requires = "collector_key")]
    collector_cert: Option<PathBuf>,
    /// Client key (PEM) for a collector that requires mutual TLS.
    #[arg(long, requires = "collector_cert")]
    collector_key: Option<PathBuf>,
    /// This node's name, to watch only its pods through the Kubernetes API (the DaemonSet sets it from spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// Do not watch pods through the Kubernetes API (labels, owners, probes); names still come from container records.
    #[arg(long)]
    no_kube_api: bool,
    /// Reach the Kubernetes API with this kubeconfig instead of the pod's service account (an agent run outside the cluster; needs --node-name).
    #[arg(long, value_name = "PATH", conflicts_with = "no_kube_api")]
    kubeconfig: Option<PathBuf>,
    /// Address of the HTTP endpoint with /healthz, /readyz and /metrics, or "off".
    #[arg(long, default_value = http::DEFAULT_ADDR)]
    http_addr: String,
    /// Label sets of the TCP metrics (workload, direction, destination), of the DNS ones (workload, server), and of the open findings (kind, severity, workload), each; further ones are counted under "other".
    #[arg(long, default_value_t = DEFAULT_MAX_LABEL_SETS)]
    metrics_max_label_sets: usize,
    /// UDP and TCP ports watched for DNS, comma-separated (at most 16).
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_DNS_PORTS, value_parser = clap::value_parser!(u16).range(1..))]
    dns_ports: Vec<u16>,
    /// Do not trace DNS.
    #[arg(long)]
    no_dns: bool,
    /// Seconds without an answer after which a DNS query counts as a timeout.
    #[arg(long, default_value_t = 5.0)]
    dns_timeout: f64,
    /// DNS (container, name, type, server) rows kept; further names are counted in an "<other>" row.
    #[arg(long, default_value_t = 2_048)]
    dns_max_names: usize,
    /// DNS queries awaiting an answer at once; beyond it queries are counted as lost.
    #[arg(long, default_value_t = 16_384)]
    dns_max_pending: usize,
    /// DNS ring buffer size in MiB (a power of two).
    #[arg(long, default_value_t = 2)]
    dns_ringbuf_mib: u32,
    /// TOML file with detection thresholds (see `sockeye-agent findings-config` for every key and its default).
    #[arg(long, value_name = "FILE")]
    findings_config: Option<PathBuf>,
    /// Do not detect findings (leaks, CLOSE_WAIT, pool exhaustion, restarts, DNS degradation).
    #[arg(long, conflicts_with = "findings_config")]
    no_findings: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load every kernel program through this kernel's verifier without
    /// attaching it, print one JSON line per program (name, kind, loaded,
    /// error with the verifier's message, verified_insns, load_us, fallback)
    /// and exit with status 1 if any was refused without a fallback that
    /// loaded.
    Verify {
        /// The DNS ports to verify with, as the agent's --dns-ports: the
        /// verifier sees them as constants, so they shape the DNS programs.
        #[arg(long, value_delimiter = ',', default_value = DEFAULT_DNS_PORTS, value_parser = clap::value_parser!(u16).range(1..))]
        dns_ports: Vec<u16>,
    },
    /// Print the detection thresholds' defaults as a TOML file for
    /// --findings-config (every key is optional).
    FindingsConfig,
}

/// `--dns-ports` of the agent and of `verify`.
const DEFAULT_DNS_PORTS: &str = "53";

fn seconds(name: &str, v: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("--{name} must be a positive number of seconds, got {v}"))
}

/// A ring buffer size given in MiB, checked the way the kernel wants it.
fn mib(name: &str, v: u32) -> Result<u32, String> {
    if !v.is_power_of_two() {
        return Err(format!("--{name} must be a power of two, got {v}"));
    }
    v.checked_mul(1 << 20)
        .ok_or_else(|| format!("--{name} is too large"))
}

/// Runs a collector inside the agent, on a unix socket, so the whole path
/// (agent -> collector -> CLI) works on one machine.
async fn start_embedded_collector(
    data_dir: &std::path::Path,
    socket: &std::path::Path,
) -> Result<(PathBuf, Collector), Box<dyn std::error::Error>> {
    let collector = Collector::open(CollectorConfig::new(data_dir)).await?;
    let listener = sockeye_collector::bind_unix(socket).await?;
    let serving = collector.clone();
    tokio::spawn(async move {
        if let Err(e) = serving.serve_unix(listener).await {
            log::error!("embedded collector stopped: {e}");
        }
    });
    log::info!(
        "embedded collector on unix://{} (data in {})",
        socket.display(),
        data_dir.display()
    );
    Ok((socket.to_path_buf(), collector))
}

fn main() -> ExitCode {
    sockeye_collector::logging::init();
    let args = Args::parse();
    match real_main(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Print the whole cause chain: the innermost error often says what to do.
            let mut msg = format!("error: {e}");
            let mut src = e.source();
            while let Some(s) = src {
                msg.push_str(&format!("\n  caused by: {s}"));
                src = s.source();
            }
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(Command::Verify { dns_ports }) = &args.command {
        return verify_programs(dns_ports);
    }
    if let Some(Command::FindingsConfig) = &args.command {
        print!("{}", FindingsConfig::defaults_toml());
        return Ok(());
    }
    let findings = match (&args.findings_config, args.no_findings) {
        (_, true) => None,
        (Some(path), false) => Some(FindingsConfig::load(path)?),
        (None, false) => Some(FindingsConfig::default()),
    };
    let interval = seconds("interval", args.interval)?;
    let duration = args.duration.map(|d| seconds("duration", d)).transpose()?;
    let ringbuf_bytes = mib("ringbuf-mib", args.ringbuf_mib)?;
    let dns_ringbuf_bytes = mib("dns-ringbuf-mib", args.dns_ringbuf_mib)?;
    if args.dns_max_names == 0 || args.dns_max_pending == 0 {
        return Err("--dns-max-names and --dns-max-pending must be at least 1".into());
    }
    if args.metrics_max_label_sets == 0 {
        return Err("--metrics-max-label-sets must be at least 1".into());
    }
    if args.dns_ports.len() > MAX_DNS_PORTS as usize {
        return Err(format!(
            "--dns-ports lists {} ports; at most {MAX_DNS_PORTS} can be watched",
            args.dns_ports.len()
        )
        .into());
    }
    let output = args.output.unwrap_or(if std::io::stdout().is_terminal() {
        OutputFormat::Table
    } else {
        OutputFormat::Json
    });
    let config = Config {
        cgroup_root: args.cgroup_root,
        tracefs: args.tracefs,
        proc_root: args.proc,
        ringbuf_bytes,
        limits: Limits {
            max_sockets: args.max_sockets,
            max_flows: args.max_flows,
            ..Limits::default()
        },
        scan_preexisting: !args.no_scan,
        records: RecordRoots {
            containerd: args.containerd_root.iter().map(PathBuf::from).collect(),
            containers_storage: args.containers_storage.iter().map(PathBuf::from).collect(),
        },
        dns_ports: if args.no_dns {
            Vec::new()
        } else {
            args.dns_ports
        },
        dns_ringbuf_bytes,
        dns: DnsConfig {
            timeout: seconds("dns-timeout", args.dns_timeout)?,
            max_names: args.dns_max_names,
            max_pending: args.dns_max_pending,
            ..DnsConfig::default()
        },
        node_name: args.node_name.clone().unwrap_or_else(node_name),
        findings,
        reconcile_every: (args.reconcile_every != 0.0)
            .then(|| seconds("reconcile-every", args.reconcile_every))
            .transpose()?,
    };
    let api_opts = ServeOptions {
        unix: (args.api_socket.as_os_str() != "off").then(|| args.api_socket.clone()),
        tcp: args.api_addr,
        tls: match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: args.tls_client_ca.clone(),
            }),
            (None, None) if args.tls_client_ca.is_none() => None,
            _ => {
                return Err(
                    "--tls-cert and --tls-key go together (and --tls-client-ca needs them)".into(),
                )
            }
        },
    };
    let http_addr: Option<SocketAddr> = match args.http_addr.as_str() {
        "off" => None,
        a => Some(
            a.parse()
                .map_err(|e| format!("--http-addr must be IP:PORT or off, got {a:?}: {e}"))?,
        ),
    };
    let mut agent = Agent::start(&config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The API client spawns its own tasks: it needs the runtime entered.
    let _entered = runtime.enter();
    let (pods, watch) = kube_watch::start(&WatchOptions {
        enabled: !args.no_kube_api,
        node_name: args.node_name,
        kubeconfig: args.kubeconfig,
    });
    agent.attributor.set_pod_index(pods);
    if let Some(watch) = watch {
        runtime.spawn(watch);
    }
    let (health, metrics) = match http_addr {
        Some(addr) => {
            let listener = runtime.block_on(http::bind(addr))?;
            // The bound address: with port 0 the kernel picked it.
            let bound = listener.local_addr().unwrap_or(addr);
            log::info!(
                "health and metrics endpoint on http://{bound} (/healthz, /readyz, /metrics)"
            );
            let state = HealthState::new(DEFAULT_STALE_AFTER);
            let (metrics, handle) = Metrics::new(
                MetricsConfig {
                    max_label_sets: args.metrics_max_label_sets,
                },
                Capacities::of(&config),
            );
            runtime.spawn(http::serve(listener, state.clone(), Some(handle)));
            (Some(state), Some(metrics))
        }
        None => (None, None),
    };
    let api = if api_opts.unix.is_some() || api_opts.tcp.is_some() {
        let (rx, at) = runtime.block_on(api::start(&agent, &api_opts))?;
        if let Some(p) = &at.unix {
            log::info!("API on unix socket {} (root only)", p.display());
        }
        if let Some(a) = at.tcp {
            let tls = match &api_opts.tls {
                Some(t) if t.client_ca.is_some() => "mutual TLS",
                Some(_) => "TLS",
                None => "plaintext",
            };
            log::info!("API on tcp {a} ({tls})");
        }
        Some(rx)
    } else {
        None
    };
    let embedded = match args.collector.as_deref() {
        None => None,
        Some(target) => {
            let (target, embedded) = if target == "embedded" {
                let (path, collector) = runtime.block_on(start_embedded_collector(
                    &args.collector_data_dir,
                    &args.collector_socket,
                ))?;
                (format!("unix://{}", path.display()), Some(collector))
            } else {
                (target.to_string(), None)
            };
            let tls =
                (args.collector_ca.is_some() || args.collector_cert.is_some()).then(|| ClientTls {
                    ca: args.collector_ca.clone(),
                    cert: args.collector_cert.clone(),
                    key: args.collector_key.clone(),
                    domain: None,
                });
            log::info!("pushing windows every {}s to {target}", args.push_every);
            if args.push_max_message_bytes < 64 * 1024 {
                return Err("--push-max-message-bytes must be at least 65536".into());
            }
            agent.start_pushing(PushConfig {
                target,
                tls,
                token_file: args.collector_token_file.clone(),
                every: seconds("push-every", args.push_every)?,
                buffer: args.push_buffer.max(1),
                buffer_bytes: args.push_buffer_mib.max(1).saturating_mul(1 << 20),
                max_message_bytes: args.push_max_message_bytes,
            });
            embedded
        }
    };
    let result = runtime.block_on(run(
        agent,
        RunOptions {
            output,
            interval,
            filter: WorkloadFilter {
                text: args.container,
                namespace: args.namespace,
                pod: args.pod,
            },
            duration,
            top: args.top,
            health,
            api,
            stop: None,
            metrics,
        },
    ));
    if let Some(c) = embedded {
        if let Err(e) = runtime.block_on(c.close()) {
            log::warn!("closing the embedded collector: {e}");
        }
    }
    match result {
        // A closed pipe (`| head`) is a normal way to stop reading.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// `sockeye-agent verify`: one JSON line per program, whatever the outcome,
/// then an error if any program was refused.
fn verify_programs(dns_ports: &[u16]) -> Result<(), Box<dyn std::error::Error>> {
    let reports = verify::verify(dns_ports)?;
    let mut out = std::io::stdout().lock();
    for report in &reports {
        serde_json::to_writer(&mut out, report)?;
        writeln!(out)?;
    }
    out.flush()?;
    // A refused program whose fallback loaded is how the agent is meant to
    // run on this kernel, not a failure.
    let refused: Vec<&str> = reports
        .iter()
        .filter(|r| !r.covered(&reports))
        .map(|r| r.name.as_str())
        .collect();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} programs were refused by this kernel, without a fallback that loaded: {} (see the error field of each)",
            refused.len(),
            reports.len(),
            refused.join(", ")
        )
        .into())
    }
}
