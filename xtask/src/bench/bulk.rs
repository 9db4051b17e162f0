//! The bulk-throughput arm: one iperf3 TCP stream over loopback. Few
//! connections, many large packets: what a tracer costs per packet rather
//! than per connection (the agent's cgroup_skb programs run on every one).

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// How long iperf3's server may take to listen.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs one stream for `duration`; returns the receiver's bits per second.
pub fn run(duration: Duration) -> Result<f64> {
    let port = free_port()?;
    let mut server = Server(
        Command::new("iperf3")
            .args(["-s", "-1", "-B", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting iperf3 (scripts/bootstrap.sh --bench installs it)")?,
    );
    wait_listening(port, &mut server.0)?;
    let out = Command::new("iperf3")
        .args(["-c", "127.0.0.1", "-p", &port.to_string(), "-J"])
        .args(["-t", &duration.as_secs().max(1).to_string()])
        .stdin(Stdio::null())
        .output()
        .context("running the iperf3 client")?;
    if !out.status.success() {
        bail!(
            "iperf3 client failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
    }
    received_bps(&String::from_utf8_lossy(&out.stdout))
}

/// The server's process; killed if it is still there when dropped (it
/// exits by itself after its one test).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    // Released at once; iperf3 binds it a moment later. Another process
    // taking it in between makes iperf3 fail loudly, not measure wrong.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Waits until a socket listens on 127.0.0.1:`port` (from /proc/net/tcp):
/// a probe connection would use up iperf3's one test.
fn wait_listening(port: u16, server: &mut Child) -> Result<()> {
    let wanted = format!("0100007F:{port:04X}");
    let deadline = Instant::now() + LISTEN_TIMEOUT;
    loop {
        let table = fs::read_to_string("/proc/net/tcp").context("reading /proc/net/tcp")?;
        let listening = table.lines().skip(1).any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address, rem_address, st (0A = LISTEN)
            fields.get(1) == Some(&wanted.as_str()) && fields.get(3) == Some(&"0A")
        });
        if listening {
            return Ok(());
        }
        if let Some(status) = server.try_wait()? {
            bail!("iperf3 server exited before listening ({status})");
        }
        if Instant::now() >= deadline {
            bail!(
                "iperf3 server did not listen on port {port} within {} s",
                LISTEN_TIMEOUT.as_secs()
            );
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// `end.sum_received.bits_per_second` of iperf3's JSON report.
fn received_bps(json: &str) -> Result<f64> {
    let v: Value = serde_json::from_str(json).context("iperf3 -J output is not JSON")?;
    if let Some(error) = v.get("error").and_then(Value::as_str) {
        bail!("iperf3: {error}");
    }
    v.pointer("/end/sum_received/bits_per_second")
        .and_then(Value::as_f64)
        .context("iperf3 -J output has no end.sum_received.bits_per_second")
}

#[cfg(test)]
mod tests {
    use super::received_bps;

    #[test]
    fn reads_the_receivers_rate() {
        let json = r#"{"end":{"sum_sent":{"bits_per_second":2.0},"sum_received":{"bits_per_second":1.5e10}}}"#;
        assert_eq!(received_bps(json).unwrap(), 1.5e10);
        assert!(received_bps(r#"{"error":"unable to connect"}"#)
            .unwrap_err()
            .to_string()
            .contains("unable to connect"));
        assert!(received_bps("{}").is_err());
    }
}
