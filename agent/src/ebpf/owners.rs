//! Attaches the hooks that capture who owns a TCP socket (kernel side:
//! `agent-ebpf/src/owners.rs`): connect4/connect6, post_bind4/post_bind6 and
//! sock_release on the cgroup v2 root. The TCP lifecycle needs them as much
//! as sock_ops: without them no connection is attributed to a container.

use std::fs::File;

use aya::{
    programs::{links::CgroupAttachMode, CgroupSock, CgroupSockAddr, ProgramError},
    Ebpf,
};
use sockeye_common::names;

use super::LoadError;

/// Loads and attaches every owner hook; the first failure is returned.
pub fn attach(ebpf: &mut Ebpf, cgroup: &File, path: &str) -> Result<(), LoadError> {
    for name in [names::PROG_CONNECT4, names::PROG_CONNECT6] {
        let prog: &mut CgroupSockAddr = program(ebpf, name)?
            .try_into()
            .map_err(|source| hook_error(name, path, source))?;
        // Links, like sock_ops: other tools' programs on the root keep running.
        prog.load()
            .and_then(|()| prog.attach(cgroup, CgroupAttachMode::Single))
            .map_err(|source| hook_error(name, path, source))?;
    }
    for name in [
        names::PROG_POST_BIND4,
        names::PROG_POST_BIND6,
        names::PROG_SOCK_RELEASE,
    ] {
        let prog: &mut CgroupSock = program(ebpf, name)?
            .try_into()
            .map_err(|source| hook_error(name, path, source))?;
        prog.load()
            .and_then(|()| prog.attach(cgroup, CgroupAttachMode::Single))
            .map_err(|source| hook_error(name, path, source))?;
    }
    Ok(())
}

fn program<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut aya::programs::Program, LoadError> {
    ebpf.program_mut(name).ok_or(LoadError::Missing {
        kind: "program",
        name,
    })
}

fn hook_error(name: &'static str, path: &str, source: ProgramError) -> LoadError {
    LoadError::OwnerHook {
        name,
        path: path.to_string(),
        source,
    }
}
