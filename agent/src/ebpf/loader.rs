//! Loads the embedded kernel object and attaches each program, probing
//! features: a hook this kernel lacks disables only its feature, with one
//! clear log line, while the rest keeps running.

use std::{fs::File, path::PathBuf};

use aya::{
    maps::{Array, MapData, RingBuf},
    programs::{links::CgroupAttachMode, SockOps, TracePoint},
    Ebpf, EbpfLoader,
};
use sockeye_common::{dns::MAX_DNS_PORTS, names, tracepoint::ABSENT};

use super::tracefs;

/// The kernel object built by `build.rs` from the `agent-ebpf` crate.
pub(super) static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sockeye"));

/// Feature name of the cgroup-naming tracepoint (its ring buffer is only
/// read when the feature is on).
const CGROUP_NAMES: &str = "cgroup_names";

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Mount point of the cgroup v2 hierarchy; sock_ops attaches to its root.
    pub cgroup_root: PathBuf,
    pub tracefs: PathBuf,
    /// Ring buffer size: a power of two, multiple of the page size.
    pub ringbuf_bytes: u32,
    /// Capacity of the kernel's socket map (sockets tracked at once).
    pub max_sockets: u32,
    pub max_listeners: u32,
    /// Ports watched for DNS; empty turns DNS tracing off.
    pub dns_ports: Vec<u16>,
    /// DNS ring buffer size: a power of two, multiple of the page size.
    pub dns_ringbuf_bytes: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{what} ring buffer size {bytes} is not a power of two of at least 4096 bytes")]
    RingbufSize { what: &'static str, bytes: u32 },
    #[error("DNS ports {ports:?}: at most {MAX_DNS_PORTS}, none of them 0")]
    DnsPorts { ports: Vec<u16> },
    #[error("failed to load the eBPF object (is this a BPF-capable kernel, and are we root or CAP_BPF+CAP_NET_ADMIN+CAP_PERFMON?)")]
    Object {
        #[source]
        source: aya::EbpfError,
    },
    #[error("the eBPF object has no {kind} named {name}: agent and kernel programs were built from different sources")]
    Missing {
        kind: &'static str,
        name: &'static str,
    },
    #[error("cannot open the cgroup v2 root {path} to attach sock_ops")]
    CgroupRoot {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the TCP lifecycle program (sock_ops on {path}) could not be loaded or attached; the agent cannot work without it")]
    SockOps {
        path: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("the socket owner hook {name} (on {path}) could not be loaded or attached; without it no connection is attributed to a container")]
    OwnerHook {
        name: &'static str,
        path: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("map {name} has an unexpected type")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

/// One optional capability and whether this kernel gave it to us.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Feature {
    pub name: &'static str,
    pub enabled: bool,
    /// What it gives when enabled, or why it is disabled.
    pub detail: String,
}

/// The loaded, attached programs. Dropping it detaches everything.
pub struct Probes {
    pub ebpf: Ebpf,
    pub events: RingBuf<MapData>,
    /// Names of new cgroups; None when the cgroup_names feature is off.
    pub cgroup_events: Option<RingBuf<MapData>>,
    /// DNS queries and answers; None when the dns feature is off.
    pub dns_events: Option<RingBuf<MapData>>,
    /// Connects and socket() calls that ran out of ports or fds; None when
    /// the connect_resources feature is off.
    pub resource_events: Option<RingBuf<MapData>>,
    pub features: Vec<Feature>,
    /// How long TCP events waited in `events` before they were read.
    pub lag: super::lag::RingLag,
}

pub fn load(opts: &LoadOptions) -> Result<Probes, LoadError> {
    for (what, bytes) in [
        ("event", opts.ringbuf_bytes),
        ("DNS", opts.dns_ringbuf_bytes),
    ] {
        if !bytes.is_power_of_two() || bytes < 4096 {
            return Err(LoadError::RingbufSize { what, bytes });
        }
    }
    let dns_ports = dns_port_list(&opts.dns_ports)?;
    raise_memlock_rlimit();
    let mut ebpf = EbpfLoader::new()
        .override_global(names::DNS_PORTS_GLOBAL, &dns_ports, true)
        .map_max_entries(names::EVENTS_MAP, opts.ringbuf_bytes)
        .map_max_entries(names::DNS_EVENTS_MAP, opts.dns_ringbuf_bytes)
        .map_max_entries(names::SOCKETS_MAP, opts.max_sockets)
        .map_max_entries(names::LISTENERS_MAP, opts.max_listeners)
        .load(OBJECT)
        .map_err(|source| LoadError::Object { source })?;

    let mut features = Vec::new();
    let offsets = attach_tracepoints(&mut ebpf, opts, &mut features)?;
    let path = opts.cgroup_root.display().to_string();
    let cgroup = File::open(&opts.cgroup_root).map_err(|source| LoadError::CgroupRoot {
        path: path.clone(),
        source,
    })?;
    // Owners first: a socket that connects between the two attaches would
    // be seen by sock_ops without its owner.
    super::owners::attach(&mut ebpf, &cgroup, &path)?;
    attach_sock_ops(&mut ebpf, &cgroup, path)?;
    features.insert(
        0,
        Feature {
            name: "tcp_lifecycle",
            enabled: true,
            detail: format!(
                "sock_ops and the connect/bind/release owner hooks on cgroup v2 root {}",
                opts.cgroup_root.display()
            ),
        },
    );
    // What sock_ops itself sees of a connect that closes: no hooks of their
    // own, so on wherever the TCP lifecycle is.
    features.insert(
        1,
        Feature {
            name: "connect_refused_cause",
            enabled: true,
            detail: "sock_ops: a connecting socket closed by the segment it received (a RST) was refused".into(),
        },
    );
    features.insert(
        2,
        Feature {
            name: "connect_unreachable_cause",
            enabled: true,
            detail: "sock_ops: a connecting socket the kernel closed without RST or timeout was unreachable (an ICMP error)".into(),
        },
    );
    let dns_events = attach_dns(&mut ebpf, &cgroup, opts, &mut features);
    let resource_events = attach_resources(&mut ebpf, &offsets, opts, &mut features);

    let events = ebpf.take_map(names::EVENTS_MAP).ok_or(LoadError::Missing {
        kind: "map",
        name: names::EVENTS_MAP,
    })?;
    let events = RingBuf::try_from(events).map_err(|source| LoadError::Map {
        name: names::EVENTS_MAP,
        source,
    })?;
    let cgroup_names = features.iter().any(|f| f.name == CGROUP_NAMES && f.enabled);
    let cgroup_events = match ebpf.take_map(names::CGROUP_EVENTS_MAP) {
        Some(map) if cgroup_names => {
            Some(RingBuf::try_from(map).map_err(|source| LoadError::Map {
                name: names::CGROUP_EVENTS_MAP,
                source,
            })?)
        }
        _ => None,
    };
    Ok(Probes {
        ebpf,
        events,
        cgroup_events,
        dns_events,
        resource_events,
        features,
        lag: super::lag::RingLag::default(),
    })
}

/// Optional: without the syscall tracepoints the agent still traces TCP,
/// but does not see connects fail for want of a port or an fd.
fn attach_resources(
    ebpf: &mut Ebpf,
    offsets: &sockeye_common::tracepoint::TracepointOffsets,
    opts: &LoadOptions,
    features: &mut Vec<Feature>,
) -> Option<RingBuf<MapData>> {
    let (ring, feature) = match super::resources::attach(ebpf, offsets, &opts.tracefs) {
        Ok(ring) => (
            Some(ring),
            Feature {
                name: super::resources::FEATURE,
                enabled: true,
                detail: "syscall tracepoints: connect() failing with EADDRNOTAVAIL (no free local port) and socket() with EMFILE/ENFILE (fd limit), ENOBUFS/ENOMEM".into(),
            },
        ),
        Err(why) => {
            log::warn!("feature {} disabled: {why}", super::resources::FEATURE);
            (
                None,
                Feature {
                    name: super::resources::FEATURE,
                    enabled: false,
                    detail: why,
                },
            )
        }
    };
    features.push(feature);
    ring
}

/// The DNS port list as the kernel programs read it: `ports`, then zeros.
pub(super) fn dns_port_list(ports: &[u16]) -> Result<[u16; MAX_DNS_PORTS as usize], LoadError> {
    if ports.len() > MAX_DNS_PORTS as usize || ports.contains(&0) {
        return Err(LoadError::DnsPorts {
            ports: ports.to_vec(),
        });
    }
    let mut list = [0u16; MAX_DNS_PORTS as usize];
    list[..ports.len()].copy_from_slice(ports);
    Ok(list)
}

/// DNS is optional: without it the agent still traces TCP.
fn attach_dns(
    ebpf: &mut Ebpf,
    cgroup: &File,
    opts: &LoadOptions,
    features: &mut Vec<Feature>,
) -> Option<RingBuf<MapData>> {
    if opts.dns_ports.is_empty() {
        features.push(Feature {
            name: "dns",
            enabled: false,
            detail: "turned off (--no-dns)".into(),
        });
        return None;
    }
    match super::dns::attach(ebpf, cgroup) {
        Ok(probes) => {
            let ports: Vec<String> = opts.dns_ports.iter().map(|p| p.to_string()).collect();
            features.push(Feature {
                name: "dns",
                enabled: true,
                detail: format!(
                    "cgroup_skb on the cgroup v2 root: DNS over UDP and TCP ports {}",
                    ports.join(",")
                ),
            });
            features.push(Feature {
                name: "dns_process",
                enabled: probes.with_process,
                detail: if probes.with_process {
                    "DNS queries name their process".into()
                } else {
                    "this kernel does not let cgroup_skb read the current task: DNS queries are attributed to containers, not processes".into()
                },
            });
            Some(probes.events)
        }
        Err(why) => {
            log::warn!("feature dns disabled: {why}");
            features.push(Feature {
                name: "dns",
                enabled: false,
                detail: why,
            });
            None
        }
    }
}

fn attach_sock_ops(ebpf: &mut Ebpf, cgroup: &File, path: String) -> Result<(), LoadError> {
    let prog: &mut SockOps = ebpf
        .program_mut(names::PROG_SOCK_OPS)
        .ok_or(LoadError::Missing {
            kind: "program",
            name: names::PROG_SOCK_OPS,
        })?
        .try_into()
        .map_err(|source| LoadError::SockOps {
            path: path.clone(),
            source,
        })?;
    // On kernels with BPF links (5.7+, all we support) aya attaches through
    // bpf_link_create, which rejects attach flags and always behaves like
    // "allow multiple": other tools' sock_ops programs on the root keep running.
    prog.load()
        .and_then(|()| prog.attach(cgroup, CgroupAttachMode::Single))
        .map(|_link| ())
        .map_err(|source| LoadError::SockOps { path, source })
}

/// The cgroup_mkdir tracepoint is optional (returns the offsets found, which
/// the syscall tracepoints use too): without it, cgroups are named by
/// lookup, which can miss containers that live for milliseconds.
fn attach_tracepoints(
    ebpf: &mut Ebpf,
    opts: &LoadOptions,
    features: &mut Vec<Feature>,
) -> Result<sockeye_common::tracepoint::TracepointOffsets, LoadError> {
    let (offsets, errors) = tracefs::tracepoint_offsets(&opts.tracefs);
    if let Err(e) = tracefs::check_mounted(&opts.tracefs) {
        log::warn!("{e}; containers that live for milliseconds may go unnamed");
    }
    for e in &errors {
        log::debug!("tracefs: {e}");
    }
    let mut table: Array<_, sockeye_common::tracepoint::TracepointOffsets> = Array::try_from(
        ebpf.map_mut(names::TP_OFFSETS_MAP)
            .ok_or(LoadError::Missing {
                kind: "map",
                name: names::TP_OFFSETS_MAP,
            })?,
    )
    .map_err(|source| LoadError::Map {
        name: names::TP_OFFSETS_MAP,
        source,
    })?;
    table.set(0, offsets, 0).map_err(|source| LoadError::Map {
        name: names::TP_OFFSETS_MAP,
        source,
    })?;

    let wanted = [(
        CGROUP_NAMES,
        names::PROG_CGROUP_MKDIR,
        "cgroup",
        "cgroup_mkdir",
        [offsets.mkdir_root, offsets.mkdir_id, offsets.mkdir_path].contains(&ABSENT),
        "cgroups named when created: short-lived containers keep their names",
    )];
    for (feature, prog_name, category, tp, fields_missing, gives) in wanted {
        let result = if fields_missing {
            Err(format!(
                "tracepoint {category}:{tp} is missing or lacks the fields we read (see {}/events/{category}/{tp}/format)",
                opts.tracefs.display()
            ))
        } else {
            attach_tracepoint(ebpf, prog_name, category, tp)
        };
        match result {
            Ok(()) => features.push(Feature {
                name: feature,
                enabled: true,
                detail: gives.to_string(),
            }),
            Err(why) => {
                log::warn!("feature {feature} disabled: {why}");
                features.push(Feature {
                    name: feature,
                    enabled: false,
                    detail: why,
                });
            }
        }
    }
    Ok(offsets)
}

fn attach_tracepoint(
    ebpf: &mut Ebpf,
    prog: &str,
    category: &str,
    name: &str,
) -> Result<(), String> {
    let program = ebpf
        .program_mut(prog)
        .ok_or_else(|| format!("program {prog} is missing from the object"))?;
    let tp: &mut TracePoint = program.try_into().map_err(|e| format!("{e}"))?;
    tp.load()
        .map_err(|e| format!("loading {category}:{name} failed: {e}"))?;
    tp.attach(category, name)
        .map(|_| ())
        .map_err(|e| format!("attaching {category}:{name} failed: {e}"))
}

/// Kernels before 5.11 charge BPF maps against RLIMIT_MEMLOCK; newer ones use
/// memory cgroups and ignore it. Failure is not fatal: in a container the
/// limit may not be ours to raise, and a modern kernel does not need it.
pub(super) fn raise_memlock_rlimit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid, fully initialised struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        log::debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}
