//! What the detectors ask the kernel on demand, for evidence the events do
//! not carry: how idle a suspect flow's sockets are, whether a listener's
//! accept queue is full, how often a namespace's listen queues overflowed,
//! and the name of a process. Asked only about findings (a few sockets),
//! never per event. The agent answers through `sock_diag` and procfs;
//! tests answer from a table ([`Answers`]).

use std::net::IpAddr;

use ahash::HashMap;

/// Idle times of a flow's sockets, from `tcp_info`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Idle {
    /// Sockets the kernel described.
    pub sockets: u64,
    /// Of them, idle (nothing sent or received) for at least the threshold.
    pub idle: u64,
    pub longest_ms: u32,
    pub median_ms: u32,
}

/// A question the kernel could not answer: the process is gone, or the
/// agent may not look. That finding then lacks that evidence (counted).
#[derive(Debug, thiserror::Error)]
#[error("{question} for pid {pid}: {reason}")]
pub struct ProbeError {
    pub question: &'static str,
    pub pid: u32,
    pub reason: String,
}

pub trait Probe {
    /// Idle times of the connections to `remote`:`port` in `pid`'s network
    /// namespace (a pod's: its containers share it, so they count together).
    fn idle(
        &mut self,
        pid: u32,
        remote: IpAddr,
        port: u16,
        idle_after_ms: u64,
    ) -> Result<Idle, ProbeError>;

    /// A listener's accept queue on `port` in `pid`'s namespace: (waiting,
    /// limit) of the fullest one (a full queue shows limit + 1).
    fn accept_queue(&mut self, pid: u32, port: u16) -> Result<Option<(u32, u32)>, ProbeError>;

    /// ListenOverflows of the network namespace `pid` lives in.
    fn listen_overflows(&mut self, pid: u32) -> Result<u64, ProbeError>;

    /// The command name of a running process.
    fn process_name(&mut self, pid: u32) -> Option<String>;
}

/// A [`Probe`] that answers from tables set by a test; what is not in them
/// fails like a process that is gone.
#[derive(Debug, Default)]
pub struct Answers {
    pub idle: HashMap<(u32, IpAddr, u16), Idle>,
    pub accept_queues: HashMap<(u32, u16), (u32, u32)>,
    pub listen_overflows: HashMap<u32, u64>,
    pub names: HashMap<u32, String>,
}

impl Answers {
    fn missing(question: &'static str, pid: u32) -> ProbeError {
        ProbeError {
            question,
            pid,
            reason: "no such process".into(),
        }
    }
}

impl Probe for Answers {
    fn idle(&mut self, pid: u32, remote: IpAddr, port: u16, _: u64) -> Result<Idle, ProbeError> {
        self.idle
            .get(&(pid, remote, port))
            .copied()
            .ok_or_else(|| Self::missing("idle times", pid))
    }

    fn accept_queue(&mut self, pid: u32, port: u16) -> Result<Option<(u32, u32)>, ProbeError> {
        Ok(self.accept_queues.get(&(pid, port)).copied())
    }

    fn listen_overflows(&mut self, pid: u32) -> Result<u64, ProbeError> {
        self.listen_overflows
            .get(&pid)
            .copied()
            .ok_or_else(|| Self::missing("listen overflows", pid))
    }

    fn process_name(&mut self, pid: u32) -> Option<String> {
        self.names.get(&pid).cloned()
    }
}
