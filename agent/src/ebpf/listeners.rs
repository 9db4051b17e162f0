//! Seeds the kernel's listener map with listeners that predate the agent,
//! so connections they accept are attributed to the right owner.

use aya::{
    maps::{HashMap, MapError},
    Ebpf,
};
use sockeye_common::{
    event::{ListenerKey, SockInfo},
    names,
};

use super::LoadError;
use crate::event::comm_bytes;

/// Map update flag: insert only if the key is absent (uapi `BPF_NOEXIST`).
const BPF_NOEXIST: u64 = 1;

/// A listener found in /proc, resolved to the kernel's key.
#[derive(Debug, Clone)]
pub struct ListenerSeed {
    pub netns_cookie: u64,
    pub port: u16,
    pub cgroup_id: u64,
    pub tgid: u32,
    pub comm: String,
}

/// Inserts the seeds; returns how many did not fit (map full).
pub fn seed(ebpf: &mut Ebpf, seeds: &[ListenerSeed]) -> Result<u64, LoadError> {
    let map = ebpf
        .map_mut(names::LISTENERS_MAP)
        .ok_or(LoadError::Missing {
            kind: "map",
            name: names::LISTENERS_MAP,
        })?;
    let mut map: HashMap<_, ListenerKey, SockInfo> =
        HashMap::try_from(map).map_err(|source| LoadError::Map {
            name: names::LISTENERS_MAP,
            source,
        })?;
    let mut failed = 0;
    for s in seeds {
        let key = ListenerKey {
            netns_cookie: s.netns_cookie,
            port: u32::from(s.port),
            _pad: 0,
        };
        let info = SockInfo {
            start_ns: 0,
            state_ns: 0,
            cgroup_id: s.cgroup_id,
            tgid: s.tgid,
            pid: s.tgid,
            syn_retransmits: 0,
            flags: 0,
            comm: comm_bytes(&s.comm),
        };
        // BPF_NOEXIST: a listener the kernel side already recorded (it
        // started after attach) is more precise than our scan.
        match map.insert(key, info, BPF_NOEXIST) {
            Ok(()) => {}
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => {
                log::debug!("cannot seed listener on port {}: {e}", s.port);
                failed += 1;
            }
        }
    }
    Ok(failed)
}
