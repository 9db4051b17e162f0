//! Attaches the DNS programs: cgroup_skb egress and ingress on the cgroup v2
//! root.

use std::fs::File;

use aya::{
    maps::{MapData, RingBuf},
    programs::{links::CgroupAttachMode, CgroupSkb, CgroupSkbAttachType},
    Ebpf,
};
use sockeye_common::names;

/// What attaching gave us.
pub struct DnsProbes {
    pub events: RingBuf<MapData>,
    /// Whether queries carry the sending process (the kernel let the
    /// egress program read the current task).
    pub with_process: bool,
}

/// Loads and attaches both directions (the watched ports were set at load
/// time). Any failure leaves DNS off (the caller reports it as a disabled
/// feature) and TCP tracing unaffected.
pub fn attach(ebpf: &mut Ebpf, cgroup: &File) -> Result<DnsProbes, String> {
    let with_process = match load(ebpf, names::PROG_DNS_EGRESS) {
        Ok(()) => true,
        Err(why) => {
            log::info!(
                "DNS queries will not name their process: {why}; using {}",
                names::PROG_DNS_EGRESS_NO_TASK
            );
            load(ebpf, names::PROG_DNS_EGRESS_NO_TASK)?;
            false
        }
    };
    let egress = if with_process {
        names::PROG_DNS_EGRESS
    } else {
        names::PROG_DNS_EGRESS_NO_TASK
    };
    load(ebpf, names::PROG_DNS_INGRESS)?;
    // Links, like sock_ops: other tools' cgroup_skb programs keep running.
    attach_one(ebpf, egress, cgroup, CgroupSkbAttachType::Egress)?;
    attach_one(
        ebpf,
        names::PROG_DNS_INGRESS,
        cgroup,
        CgroupSkbAttachType::Ingress,
    )?;

    let events = ebpf
        .take_map(names::DNS_EVENTS_MAP)
        .ok_or_else(|| format!("map {} is missing", names::DNS_EVENTS_MAP))?;
    let events = RingBuf::try_from(events).map_err(|e| format!("{e}"))?;
    Ok(DnsProbes {
        events,
        with_process,
    })
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut CgroupSkb, String> {
    ebpf.program_mut(name)
        .ok_or_else(|| format!("program {name} is missing from the object"))?
        .try_into()
        .map_err(|e| format!("program {name}: {e}"))
}

fn load(ebpf: &mut Ebpf, name: &str) -> Result<(), String> {
    program(ebpf, name)?
        .load()
        .map_err(|e| format!("loading {name} failed: {}", super::verifier_message(&e)))
}

fn attach_one(
    ebpf: &mut Ebpf,
    name: &str,
    cgroup: &File,
    kind: CgroupSkbAttachType,
) -> Result<(), String> {
    program(ebpf, name)?
        .attach(cgroup, kind, CgroupAttachMode::Single)
        .map(|_link| ())
        .map_err(|e| format!("attaching {name} failed: {e}"))
}
