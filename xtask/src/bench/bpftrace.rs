//! The peer arm: a generic bpftrace script on `sock:inet_sock_set_state`,
//! the cheapest TCP tracer an operator might run instead of the agent
//! (issue 17). It keeps a connect-latency histogram per destination port,
//! socket ages and counts of states entered: far less than the agent
//! knows, so the agent should cost no more than this.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// The script, thirteen lines. States by number (`include/net/tcp_states.h`):
/// 1 ESTABLISHED, 2 SYN_SENT, 3 SYN_RECV, 7 CLOSE; protocol 6 is TCP.
pub const SCRIPT: &str = r#"tracepoint:sock:inet_sock_set_state /args->protocol == 6/ {
  @states[args->newstate] = count();
  if (args->newstate == 2) { @connect_start[args->skaddr] = nsecs; }
  if (args->oldstate == 2 && args->newstate == 1) {
    @connect_us[args->dport] = hist((nsecs - @connect_start[args->skaddr]) / 1000);
    delete(@connect_start[args->skaddr]);
  }
  if (args->newstate == 1 || args->newstate == 3) { @born[args->skaddr] = nsecs; }
  if (args->newstate == 7) {
    @age_us = hist((nsecs - @born[args->skaddr]) / 1000);
    delete(@born[args->skaddr]); delete(@connect_start[args->skaddr]);
  }
}"#;

/// What bpftrace prints once its probes are attached.
const ATTACHED: &str = "Attaching";

/// A running bpftrace. Dropping it kills it.
pub struct Bpftrace {
    child: Child,
}

impl Bpftrace {
    /// Starts the script and waits until its probe is attached.
    pub fn start(timeout: Duration) -> Result<Bpftrace> {
        let mut child = Command::new("bpftrace")
            .args(["-e", SCRIPT])
            // Its maps are printed at exit; we do not need them, only the
            // cost of keeping them.
            .env("BPFTRACE_MAP_KEYS_MAX", "65536")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting bpftrace (scripts/bootstrap.sh --bench installs it)")?;
        let stdout = child.stdout.take().context("bpftrace stdout not piped")?;
        let (tx, rx) = mpsc::channel();
        thread::Builder::new()
            .name("bench-bpftrace-stdout".into())
            .spawn(move || {
                let mut attached = false;
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { return };
                    if !attached && line.starts_with(ATTACHED) {
                        attached = true;
                        let _ = tx.send(());
                    }
                    // Keep reading: the maps printed at exit must not block
                    // it on a full pipe.
                }
            })
            .context("spawning the bpftrace stdout reader")?;
        let mut tracer = Bpftrace { child };
        if rx.recv_timeout(timeout).is_err() {
            let stderr = tracer.kill_and_stderr();
            bail!(
                "bpftrace did not attach within {} s:\n{stderr}",
                timeout.as_secs()
            );
        }
        Ok(tracer)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it with SIGINT (it prints its maps and exits).
    pub fn stop(mut self, timeout: Duration) -> Result<()> {
        let pid = libc::pid_t::try_from(self.child.id()).context("bpftrace pid out of range")?;
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our
        // unreaped child.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().context("waiting for bpftrace")? {
                if !status.success() {
                    bail!("bpftrace exited with {status}");
                }
                return Ok(());
            }
            thread::sleep(Duration::from_millis(20));
        }
        let stderr = self.kill_and_stderr();
        bail!(
            "bpftrace did not exit within {} s of SIGINT:\n{stderr}",
            timeout.as_secs()
        )
    }

    fn kill_and_stderr(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut text = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for Bpftrace {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
