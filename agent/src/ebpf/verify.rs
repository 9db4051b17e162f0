//! Puts every program of the kernel object through this kernel's verifier,
//! without attaching it, and reports what the verifier said about each:
//! loaded or refused (and why), instructions processed, load time. This is
//! `sockeye-agent verify`, and what the kernel matrix (`cargo xtask matrix`)
//! records on every kernel.
//!
//! It walks the object's program list instead of naming programs, so a new
//! program is covered without touching this file.

use std::time::Instant;

use aya::{
    programs::{Program, ProgramError},
    Ebpf, EbpfLoader,
};
use sockeye_common::names;

/// Lines of a refused program's verifier log kept in its report. The reason
/// is at the end of the log; the start can be megabytes of instructions.
const LOG_TAIL_LINES: usize = 40;

/// What this kernel's verifier said about one program.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProgramReport {
    pub name: String,
    /// Program type, e.g. `sock_ops`, `tracepoint`, `cgroup_skb`.
    pub kind: String,
    pub loaded: bool,
    /// Why the program was not loaded: the syscall's error and the end of
    /// the verifier log.
    pub error: Option<String>,
    /// Instructions the verifier processed: `verified_insns` from the
    /// kernel's program info (5.16+) for a loaded program, "processed N
    /// insns" from the log for a refused one.
    pub verified_insns: Option<u32>,
    /// Wall time of loading the program, in µs: mostly the verifier, plus
    /// the JIT. (aya 0.14 asks the kernel for a verifier log, which carries
    /// the verifier's own "verification time", only after a failed load.)
    pub load_us: u64,
    /// The program the agent loads instead if this one is refused
    /// ([`names::FALLBACKS`]); `None` for a program that must load.
    pub fallback: Option<&'static str>,
}

impl ProgramReport {
    /// Loaded, or refused with a fallback that loaded: the agent has the
    /// feature on this kernel.
    pub fn covered(&self, all: &[ProgramReport]) -> bool {
        self.loaded
            || self
                .fallback
                .is_some_and(|f| all.iter().any(|r| r.name == f && r.loaded))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Options(#[from] super::LoadError),
    #[error("failed to parse the eBPF object or create its maps, before any program reached the verifier")]
    Object {
        #[source]
        source: aya::EbpfError,
    },
}

/// Loads every program of the embedded object, as the agent does with
/// `--dns-ports` set to `dns_ports`, and reports on each, sorted by name.
/// Programs are unloaded again when this returns.
///
/// The ports matter: they are read-only data the verifier sees as
/// constants, so with none set it would prune the DNS programs' whole
/// packet path and verify a program the agent never loads.
///
/// # Minimum kernel version
/// Instruction counts of loaded programs need 5.16 (`verified_insns`);
/// before that they are `None`.
pub fn verify(dns_ports: &[u16]) -> Result<Vec<ProgramReport>, VerifyError> {
    let dns_ports = super::loader::dns_port_list(dns_ports)?;
    super::loader::raise_memlock_rlimit();
    let mut ebpf: Ebpf = EbpfLoader::new()
        .override_global(names::DNS_PORTS_GLOBAL, &dns_ports, true)
        .load(super::loader::OBJECT)
        .map_err(|source| VerifyError::Object { source })?;
    let mut reports: Vec<ProgramReport> = ebpf
        .programs_mut()
        .map(|(name, program)| verify_one(name, program))
        .collect();
    reports.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(reports)
}

fn verify_one(name: &str, program: &mut Program) -> ProgramReport {
    let kind = kind(program);
    let start = Instant::now();
    let result = load(program);
    let load_us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    let (loaded, error, verified_insns) = match result {
        Some(Ok(())) => {
            let insns = program
                .info()
                .ok()
                .and_then(|info| info.verified_instruction_count());
            (true, None, insns)
        }
        Some(Err(ProgramError::LoadError {
            io_error,
            verifier_log,
        })) => {
            let log = verifier_log.to_string();
            let message = format!("BPF_PROG_LOAD failed: {io_error}\n{}", log_tail(&log));
            (false, Some(message), processed_insns(&log))
        }
        Some(Err(other)) => (false, Some(error_chain(&other)), None),
        None => (
            false,
            Some(format!(
                "verify cannot load a {kind} program: its type needs attach-time arguments; \
                 teach agent/src/ebpf/verify.rs to load it"
            )),
            None,
        ),
    };
    ProgramReport {
        name: name.to_string(),
        kind,
        loaded,
        error,
        verified_insns,
        load_us,
        fallback: names::FALLBACKS
            .iter()
            .find(|(preferred, _)| *preferred == name)
            .map(|&(_, fallback)| fallback),
    }
}

/// Loads a program whose type needs no arguments at load time: every hook
/// Sockeye uses, and the common ones it may use next. `None` for the types
/// that need a BTF target or attach type first (fentry, lsm, ...).
fn load(program: &mut Program) -> Option<Result<(), ProgramError>> {
    Some(match program {
        Program::SockOps(p) => p.load(),
        Program::TracePoint(p) => p.load(),
        Program::RawTracePoint(p) => p.load(),
        Program::CgroupSkb(p) => p.load(),
        Program::CgroupSock(p) => p.load(),
        Program::CgroupSockAddr(p) => p.load(),
        Program::SocketFilter(p) => p.load(),
        Program::SchedClassifier(p) => p.load(),
        Program::KProbe(p) => p.load(),
        Program::UProbe(p) => p.load(),
        Program::Xdp(p) => p.load(),
        _ => return None,
    })
}

/// The kernel's name for the program type (`BPF_PROG_TYPE_SOCK_OPS` ->
/// `sock_ops`).
fn kind(program: &Program) -> String {
    let known = match program {
        Program::SockOps(_) => "sock_ops",
        Program::TracePoint(_) => "tracepoint",
        Program::RawTracePoint(_) => "raw_tracepoint",
        Program::CgroupSkb(_) => "cgroup_skb",
        Program::CgroupSock(_) => "cgroup_sock",
        Program::CgroupSockAddr(_) => "cgroup_sock_addr",
        Program::SocketFilter(_) => "socket_filter",
        Program::SchedClassifier(_) => "sched_cls",
        Program::KProbe(_) => "kprobe",
        Program::UProbe(_) => "uprobe",
        Program::Xdp(_) => "xdp",
        // aya's name for the rest, e.g. `fentry`.
        other => return format!("{:?}", other.prog_type()).to_ascii_lowercase(),
    };
    known.to_string()
}

/// The last [`LOG_TAIL_LINES`] lines of a verifier log, saying how many
/// were cut.
fn log_tail(log: &str) -> String {
    let lines: Vec<&str> = log.trim_end().lines().collect();
    let cut = lines.len().saturating_sub(LOG_TAIL_LINES);
    let tail = lines[cut..].join("\n");
    if cut == 0 {
        tail
    } else {
        format!("({cut} earlier verifier log lines cut)\n{tail}")
    }
}

/// N from the verifier's stats line "processed N insns (limit ...) ...".
fn processed_insns(log: &str) -> Option<u32> {
    log.lines().rev().find_map(|line| {
        line.strip_prefix("processed ")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFUSED_LOG: &str = "0: R1=ctx() R10=fp0\n\
        0: (61) r2 = *(u32 *)(r1 +4096)\n\
        invalid bpf_context access off=4096 size=4\n\
        verification time 37 usec\n\
        stack depth 0\n\
        processed 1 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0\n";

    #[test]
    fn instruction_count_from_a_refused_programs_log() {
        assert_eq!(processed_insns(REFUSED_LOG), Some(1));
        assert_eq!(processed_insns("no stats here\n"), None);
    }

    #[test]
    fn log_tail_keeps_the_reason_and_says_what_it_cut() {
        let long: String =
            (0..100).map(|i| format!("{i}: insn\n")).collect::<String>() + REFUSED_LOG;
        let tail = log_tail(&long);
        assert!(
            tail.starts_with("(66 earlier verifier log lines cut)\n"),
            "{tail}"
        );
        assert!(tail.contains("invalid bpf_context access off=4096"));
        assert_eq!(log_tail(REFUSED_LOG), REFUSED_LOG.trim_end());
    }
}
