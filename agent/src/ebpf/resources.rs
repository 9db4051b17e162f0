//! Attaches the syscall tracepoints that see connects and socket() calls
//! fail for want of a local port or a file descriptor (feature
//! `connect_resources`).

use std::path::Path;

use aya::{
    maps::{MapData, RingBuf},
    programs::TracePoint,
    Ebpf,
};
use sockeye_common::{names, tracepoint::TracepointOffsets, tracepoint::ABSENT};

use super::tracefs;

pub const FEATURE: &str = "connect_resources";

/// (program, tracepoint), entries before exits: an exit attached alone
/// would find no arguments and count misses. connect()'s destination is
/// kept by the connect4/connect6 hooks, attached with sock_ops.
const PROGRAMS: [(&str, &str); 3] = [
    (names::PROG_SYS_ENTER_SOCKET, "sys_enter_socket"),
    (names::PROG_SYS_EXIT_CONNECT, "sys_exit_connect"),
    (names::PROG_SYS_EXIT_SOCKET, "sys_exit_socket"),
];

/// Loads and attaches all four programs and returns their ring buffer.
/// Any failure detaches what was attached and says why; the caller reports
/// the feature as off and the rest of the agent is unaffected.
pub fn attach(
    ebpf: &mut Ebpf,
    offsets: &TracepointOffsets,
    tracefs_root: &Path,
) -> Result<RingBuf<MapData>, String> {
    if let Err(e) = tracefs::check_mounted(tracefs_root) {
        return Err(e.to_string());
    }
    let fields = [
        offsets.connect_ret,
        offsets.socket_family,
        offsets.socket_ret,
    ];
    if fields.contains(&ABSENT) {
        return Err(format!(
            "the syscall tracepoints are missing or lack the fields we read (see {}/events/syscalls/sys_exit_connect/format): \
             this kernel was probably built without CONFIG_FTRACE_SYSCALLS; \
             connects that find no free local port and socket() calls over the fd limit are not seen",
            tracefs_root.display()
        ));
    }
    for (i, (prog, tracepoint)) in PROGRAMS.iter().enumerate() {
        if let Err(why) = attach_one(ebpf, prog, tracepoint) {
            for (done, _) in &PROGRAMS[..i] {
                unload(ebpf, done);
            }
            return Err(why);
        }
    }
    let ring = ebpf
        .take_map(names::RESOURCE_EVENTS_MAP)
        .ok_or_else(|| format!("map {} is missing", names::RESOURCE_EVENTS_MAP))
        .and_then(|m| RingBuf::try_from(m).map_err(|e| format!("{e}")));
    if ring.is_err() {
        for (prog, _) in &PROGRAMS {
            unload(ebpf, prog);
        }
    }
    ring
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut TracePoint, String> {
    ebpf.program_mut(name)
        .ok_or_else(|| format!("program {name} is missing from the object"))?
        .try_into()
        .map_err(|e| format!("program {name}: {e}"))
}

fn attach_one(ebpf: &mut Ebpf, name: &str, tracepoint: &str) -> Result<(), String> {
    let tp = program(ebpf, name)?;
    tp.load()
        .map_err(|e| format!("loading {name} failed: {}", super::verifier_message(&e)))?;
    tp.attach("syscalls", tracepoint)
        .map(|_link| ())
        .map_err(|e| format!("attaching syscalls:{tracepoint} failed: {e}"))
}

/// Detaches and unloads; a program that never loaded is left as it is.
fn unload(ebpf: &mut Ebpf, name: &str) {
    if let Ok(tp) = program(ebpf, name) {
        if let Err(e) = tp.unload() {
            log::debug!("unloading {name}: {e}");
        }
    }
}
