//! The `sockeye-collector` binary as a separate process: acked windows
//! survive SIGKILL, a stuck WatchWindows client does not grow its memory,
//! and SIGTERM stops it promptly even with streams open.

mod common;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use common::*;
use sockeye_collector::{READY_LOG, WATCH_MISSED_COUNTER};
use sockeye_proto::v1 as pb;

/// A collector process; killed when dropped.
struct Proc {
    child: Child,
    addr: SocketAddr,
}

impl Proc {
    fn spawn(data_dir: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sockeye-collector"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sockeye-collector");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        // Keep reading after the line is found, so the pipe never fills.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("collector: {line}");
                if let Some(rest) = line.split(READY_LOG).nth(1) {
                    let _ = tx.send(rest.to_string());
                }
            }
        });
        // Every listener is bound once the collector says it is ready: the
        // unix socket too, which is bound after the TCP listener.
        let listening = rx
            .recv_timeout(WAIT)
            .expect("the collector logs that it is ready");
        let addr = listening
            .split(", ")
            .find_map(|l| l.strip_prefix("tcp "))
            .unwrap_or_else(|| panic!("no tcp listener in {listening:?}"))
            .parse()
            .expect("a socket address");
        Self { child, addr }
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS")
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({sig})");
    }

    /// Waits for the process to exit; returns its exit code.
    fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the collector did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn acked_windows_survive_sigkill_and_dedup_holds() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let t0 = now_ms();
    let mut proc = Proc::spawn(&data, &[]);
    let mut client = tcp_client(proc.addr).await;
    let mut p = Pusher::open(&mut client, "node-a", "agent-1").await;
    for seq in 1..=10 {
        p.send(busy_window(
            "node-a",
            "agent-1",
            seq,
            t0 + seq as i64 * 10_000,
        ))
        .await;
    }
    p.ack_through(10).await;
    // No shutdown, no flush: the process just dies.
    proc.signal(libc::SIGKILL);
    proc.wait_exit(WAIT);
    drop((p, client));

    let proc = Proc::spawn(&data, &[]);
    let mut client = tcp_client(proc.addr).await;
    assert_eq!(stored_windows(&mut client).await, 10, "every acked window");
    let mut p = Pusher::open(&mut client, "node-a", "agent-1").await;
    assert_eq!(p.next_ack().await.acked_seq, 10);
    for seq in 8..=12 {
        p.send(busy_window(
            "node-a",
            "agent-1",
            seq,
            t0 + seq as i64 * 10_000,
        ))
        .await;
    }
    p.ack_through(12).await;
    assert_eq!(stored_windows(&mut client).await, 12, "8..=10 were resends");
}

#[tokio::test]
async fn a_stuck_watcher_does_not_grow_collector_memory() {
    const WARMUP: u64 = 30;
    const MORE: u64 = 400;
    let dir = tempfile::tempdir().unwrap();
    let proc = Proc::spawn(
        &dir.path().join("data"),
        &["--watch-buffer", "4", "--store-cache-mib", "8"],
    );
    let mut client = tcp_client(proc.addr).await;
    let mut stuck = within(
        "WatchWindows",
        client.watch_windows(pb::WatchWindowsRequest::default()),
    )
    .await
    .unwrap()
    .into_inner();
    let t0 = now_ms();
    let node = pod("prod", "payments-7d9f8b-x2x", "php", "node-a");
    let big = |seq: u64| {
        let flows = (0..200)
            .map(|i| {
                flow(
                    &node,
                    ep(&format!("10.77.0.{i}"), 6379),
                    &[180_000, 410_000],
                    &[("refused", 1)],
                    3,
                )
            })
            .collect();
        window("node-a", "agent-1", seq, t0 + seq as i64, flows, vec![])
    };
    let bytes = prost::Message::encoded_len(&big(1)) as u64;
    let mut p = Pusher::open(&mut client, "node-a", "agent-1").await;
    for seq in 1..=WARMUP {
        p.send(big(seq)).await;
        p.ack_through(seq).await;
    }
    let before = proc.rss_kib();
    let mut middle = 0;
    for seq in WARMUP + 1..=WARMUP + MORE {
        p.send(big(seq)).await;
        p.ack_through(seq).await;
        if seq == WARMUP + MORE / 2 {
            middle = proc.rss_kib();
        }
    }
    let after = proc.rss_kib();
    let pushed_kib = MORE * bytes / 1024;
    eprintln!(
        "rss {before} KiB -> {middle} KiB -> {after} KiB while {pushed_kib} KiB went past a stuck watcher"
    );
    // What the stuck client holds is the ring (4 windows, decoded) plus
    // HTTP/2's send buffer; keeping what it missed would grow by at least the
    // bytes pushed. Allocator and store caches settle in the first half; the
    // second half must be flat.
    assert!(
        after.saturating_sub(before) < pushed_kib / 3,
        "rss grew {} KiB while {pushed_kib} KiB were pushed",
        after.saturating_sub(before)
    );
    assert!(
        after.saturating_sub(middle) < pushed_kib / 2 / 4,
        "rss still grew {} KiB in the second half",
        after.saturating_sub(middle)
    );

    // And the client learns exactly what it missed.
    let (mut delivered, mut missed) = (0u64, 0u64);
    while delivered + missed < WARMUP + MORE {
        let w = within("a watched window", stuck.message())
            .await
            .unwrap()
            .unwrap();
        delivered += 1;
        missed += w
            .aggregates
            .and_then(|a| a.drops)
            .and_then(|d| d.counters.get(WATCH_MISSED_COUNTER).copied())
            .unwrap_or(0);
    }
    assert!(missed > 0, "the stuck client missed windows");
    assert_eq!(delivered + missed, WARMUP + MORE);
}

#[tokio::test]
async fn sigterm_stops_promptly_with_streams_open_and_removes_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/collector.sock");
    let mut proc = Proc::spawn(
        &dir.path().join("data"),
        &["--unix", socket.to_str().unwrap(), "--retention", "90m"],
    );
    let mut client = unix_client(&socket).await;
    let mut p = Pusher::open(&mut client, "node-a", "agent-1").await;
    p.send(busy_window("node-a", "agent-1", 1, now_ms())).await;
    assert_eq!(p.next_ack().await.acked_seq, 1);
    // A watcher that never reads, holding its stream open.
    let _stuck = client
        .watch_windows(pb::WatchWindowsRequest::default())
        .await
        .unwrap();
    proc.signal(libc::SIGTERM);
    let err = p.error().await;
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert_eq!(proc.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(!socket.exists(), "the socket file is removed on exit");
}

#[test]
fn bad_flags_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_sockeye-collector"))
            .args(["--data-dir"])
            .arg(dir.path().join("data"))
            .args(args)
            .output()
            .expect("run sockeye-collector");
        assert!(!out.status.success(), "{args:?} must fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(run(&["--retention", "forever"]).contains("--retention"));
    assert!(run(&["--listen", "localhost"]).contains("not an address"));
    assert!(run(&["--tls-cert", "/nonexistent.pem"]).contains("--tls-key"));
    let e = run(&[
        "--tls-cert",
        "/nonexistent.pem",
        "--tls-key",
        "/nonexistent.key",
    ]);
    assert!(e.contains("cannot read --tls-cert /nonexistent.pem"), "{e}");
    assert!(run(&["--listen", "off"]).contains("nothing to serve on"));
}
