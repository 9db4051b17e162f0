//! Faults, with the real `sockeye-agent` and `sockeye-collector` binaries:
//! each test breaks something, checks that nothing is lost without a counter
//! (every window either stored or reported dropped by the window after it;
//! connects exact where no window was dropped) and that the system comes
//! back on its own, and prints how long that took.

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use sockeye_proto::v1::{self as pb, push_request::Msg};
use sockeye_tests::{
    faults::{check_accounted, connects_in, outage, publish_secret, Rig, READER},
    peer,
    procs::{free_port, http_get, wait_for},
    require_root,
};
use tonic::Code;

const DRAIN: Duration = Duration::from_secs(90);

/// Waits until the agent's backlog is gone (at most the window in flight
/// left: a new one is made every half second); returns how long it took.
fn drained(agent: &sockeye_tests::procs::AgentProc, since: Instant) -> Duration {
    wait_for("the agent's buffer to drain", DRAIN, || {
        (agent.push("windows_buffered") <= 1 && agent.push("windows_acked") > 0).then_some(())
    });
    since.elapsed()
}

#[test]
fn collector_outage_the_agent_buffers_then_drains_and_what_did_not_fit_is_counted() {
    if !require_root() {
        return;
    }
    let rig = Rig::new("outage");
    let (port, data) = (free_port(), rig.dir.join("data"));
    let outage = outage();
    // Half the outage's windows fit: the older half is dropped and counted.
    let fit = (outage.as_secs() as usize).to_string();
    let collector = rig.start_collector(port, &data, &[]);
    let agent = rig.start_agent(port, &["--push-buffer", &fit]);
    rig.connect(5);
    let first = rig.expect_connects(&agent, collector.grpc, 5);

    collector.proc.stop(Duration::from_secs(10));
    let down = Instant::now();
    // Early in the outage: these windows will not fit.
    rig.connect(3);
    wait_for("the agent to drop windows", outage * 2, || {
        (agent.dropped("push_windows_dropped") > 0).then_some(())
    });
    std::thread::sleep(outage.saturating_sub(down.elapsed()));
    // Late: these are in the newest windows, which are kept.
    rig.connect(4);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        agent.push("windows_buffered"),
        fit.parse::<u64>().unwrap(),
        "the buffer holds its bound"
    );
    assert_eq!(
        http_get(agent.http, "/readyz").unwrap().0,
        200,
        "the agent goes on"
    );
    let dropped = agent.dropped("push_windows_dropped");

    let collector = rig.start_collector(port, &data, &[]);
    let recovery = drained(&agent, Instant::now());
    // The early 3 were in dropped windows; everything else arrives once.
    // Unless the agent's backoff (jittered, up to 30 s) outlasted what its
    // buffer holds after the late connects: then their windows went too,
    // and were counted as dropped like the early ones.
    let ok = if agent.dropped("push_windows_dropped") == dropped {
        rig.expect_connects(&agent, collector.grpc, first + 4)
    } else {
        let ok = rig.collected(collector.grpc).0;
        assert!(
            (first..=first + 4).contains(&ok),
            "{ok} connects, {first} before the outage and 4 late"
        );
        println!("the agent's backoff outlasted its buffer: {ok} of {} connects arrived, the rest in windows dropped and counted", first + 4);
        ok
    };
    let reported = rig.collected(collector.grpc).1;
    assert!(
        reported >= dropped,
        "the collector was told: {reported} of {dropped}"
    );
    let dropped = agent.dropped("push_windows_dropped");
    let reconnects = agent.push("reconnects");
    agent.proc.stop(Duration::from_secs(10));
    collector.proc.stop(Duration::from_secs(10));
    let windows = rig.stored(&data);
    let (stored, reported) = check_accounted(&windows);
    assert_eq!(
        reported, dropped,
        "every dropped window counted, on both sides"
    );
    assert_eq!(connects_in(&windows, &rig.client_cgroup), ok);
    println!(
        "outage {outage:?}: {dropped} windows dropped and counted, {stored} stored, {reconnects} reconnects; drained {recovery:?} after the collector came back"
    );
}

#[test]
fn a_black_holed_collector_costs_timeouts_not_a_hung_agent() {
    if !require_root() {
        return;
    }
    let rig = Rig::new("blackhole");
    let (port, data) = (free_port(), rig.dir.join("data"));
    // Listens and never accepts, with the smallest backlog: the first
    // connection completes and its TLS handshake is never answered, later
    // SYNs are dropped (connect hangs).
    let mut hole = Command::new(peer::netpeer_path())
        .args(["listen", &format!("127.0.0.1:{port}"), "none", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("netpeer");
    std::thread::sleep(Duration::from_millis(300));
    let agent = rig.start_agent(port, &[]);
    rig.connect(6);
    wait_for("two sessions to time out", Duration::from_secs(60), || {
        (agent.push("reconnects") >= 2).then_some(())
    });
    assert!(
        agent.proc.count_lines("no answer within 10 s") + agent.proc.count_lines("timed out") >= 1,
        "the agent says why it gives up on a session"
    );
    // Meanwhile the agent is fine: ready, and counting.
    assert_eq!(http_get(agent.http, "/readyz").unwrap().0, 200);
    assert_eq!(agent.dropped("push_windows_dropped"), 0);
    assert!(agent.push("windows_buffered") > 0);

    let _ = hole.kill();
    let _ = hole.wait();
    let collector = rig.start_collector(port, &data, &[]);
    let recovery = drained(&agent, Instant::now());
    rig.expect_connects(&agent, collector.grpc, 6);
    assert_eq!(rig.collected(collector.grpc).1, 0, "no window dropped");
    let reconnects = agent.push("reconnects");
    agent.proc.stop(Duration::from_secs(10));
    collector.proc.stop(Duration::from_secs(10));
    let (stored, dropped) = check_accounted(&rig.stored(&data));
    assert_eq!(dropped, 0);
    println!("black hole: {reconnects} sessions timed out, nothing lost ({stored} windows); drained {recovery:?} after a collector answered");
}

/// A small tmpfs, unmounted on drop.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(at: std::path::PathBuf, mib: u32) -> Self {
        std::fs::create_dir_all(&at).unwrap();
        sockeye_tests::sh(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m"),
                "tmpfs",
                at.to_str().unwrap(),
            ],
        );
        Self(at)
    }

    /// Writes a file until the disk is full.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_collector_disk_that_fills_refuses_writes_serves_queries_and_recovers() {
    if !require_root() {
        return;
    }
    let rig = Rig::new("diskfull");
    let disk = SmallDisk::mount(rig.dir.join("disk"), 32);
    let (port, data) = (free_port(), disk.0.join("data"));
    // No reserve: the disk fills for real and a write fails with ENOSPC.
    let collector = rig.start_collector(port, &data, &["--min-free-mib", "0"]);
    let agent = rig.start_agent(port, &[]);
    rig.connect(5);
    let first = rig.expect_connects(&agent, collector.grpc, 5);

    let filler = disk.fill();
    let full = Instant::now();
    wait_for("the collector to refuse writes", DRAIN, || {
        (collector.stat("store_disk_full") == 1).then_some(())
    });
    rig.connect(7);
    wait_for("the agent to buffer", DRAIN, || {
        (agent.push("windows_buffered") >= 4).then_some(())
    });
    // Still serving: queries answer from what is stored, probes pass.
    assert_eq!(rig.collected(collector.grpc).0, first);
    assert_eq!(http_get(collector.http, "/readyz").unwrap().0, 200);
    assert!(collector.stat("store_writes_refused_disk_full") >= 1);
    assert_eq!(agent.dropped("push_windows_dropped"), 0);
    let full_for = full.elapsed();

    std::fs::remove_file(&filler).unwrap();
    let freed = Instant::now();
    let recovery = drained(&agent, freed);
    assert_eq!(collector.stat("store_disk_full"), 0);
    rig.expect_connects(&agent, collector.grpc, first + 7);
    assert_eq!(rig.collected(collector.grpc).1, 0, "no window dropped");
    agent.proc.stop(Duration::from_secs(10));
    collector.proc.stop(Duration::from_secs(10));
    let (stored, dropped) = check_accounted(&rig.stored(&data));
    assert_eq!(dropped, 0);
    println!("disk full for {full_for:?}: nothing lost ({stored} windows), drained {recovery:?} after space returned");
}

#[test]
fn a_ring_buffer_flood_is_counted_and_the_agent_recovers() {
    if !require_root() {
        return;
    }
    let rig = Rig::new("flood");
    let (port, data) = (free_port(), rig.dir.join("data"));
    let collector = rig.start_collector(port, &data, &[]);
    let agent = rig.start_agent(port, &["--ringbuf-mib", "1"]);
    rig.connect(3);
    wait_for("the first connects", DRAIN, || {
        (rig.collected(collector.grpc).0 == 3).then_some(())
    });
    // The agent stops reading (a slow consumer) while the pod connects
    // thousands of times: the kernel's ring buffer fills.
    agent.proc.signal(libc::SIGSTOP);
    rig.connect(5000);
    agent.proc.signal(libc::SIGCONT);
    let lost = wait_for("the kernel's drops to be counted", DRAIN, || {
        let n = agent.dropped("kernel_ringbuf_full");
        (n > 0).then_some(n)
    });
    // It recovers on its own: new connects are counted exactly.
    let before = wait_for("the flood to be read", DRAIN, || {
        let a = rig.collected(collector.grpc).0;
        std::thread::sleep(Duration::from_secs(2));
        (rig.collected(collector.grpc).0 == a).then_some(a)
    });
    assert!(
        before < 3 + 5000,
        "some connects were lost in the ring: {before}"
    );
    let t = Instant::now();
    rig.connect(10);
    wait_for("connects after the flood, exactly", DRAIN, || {
        (rig.collected(collector.grpc).0 == before + 10).then_some(())
    });
    let recovery = t.elapsed();
    agent.proc.stop(Duration::from_secs(10));
    collector.proc.stop(Duration::from_secs(10));
    let windows = rig.stored(&data);
    check_accounted(&windows);
    // The loss travelled with the data: the flow's windows carry the counter.
    let flagged = windows
        .iter()
        .flat_map(|w| w.aggregates.iter().flat_map(|a| a.tcp_flows.iter()))
        .filter(|f| {
            f.workload
                .as_ref()
                .is_some_and(|w| w.cgroup_path.contains(&rig.client_cgroup))
        })
        .any(|f| {
            f.drops
                .as_ref()
                .is_some_and(|d| d.counters.get("kernel_ringbuf_full").copied().unwrap_or(0) > 0)
        });
    assert!(
        flagged,
        "no window of the flooded flow says events were lost"
    );
    println!("flood: {lost} kernel events lost and counted, {} of 5003 connects seen; 10 new connects counted exactly {recovery:?} later", before);
}

#[test]
fn a_certificate_rotated_under_live_streams_serves_new_connections_and_drops_none() {
    if !require_root() {
        return;
    }
    let rig = Rig::new("rotate");
    let (port, data) = (free_port(), rig.dir.join("data"));
    let collector = rig.start_collector(port, &data, &[]);
    let agent = rig.start_agent(port, &[]);
    rig.connect(2);
    wait_for("the first connects", DRAIN, || {
        (rig.collected(collector.grpc).0 == 2).then_some(())
    });
    let mut reader = rig.client(collector.grpc, Some(READER), None);
    let mut watch = rig
        .rt
        .block_on(reader.watch_windows(pb::WatchWindowsRequest::default()))
        .unwrap()
        .into_inner();
    let reconnects = agent.push("reconnects");

    let (cert, key) = rig
        .pki
        .leaf(&["127.0.0.1", "rotated.sockeye.test"], "rotated");
    publish_secret(
        &rig.secret,
        "v2",
        &std::fs::read_to_string(cert).unwrap(),
        &std::fs::read_to_string(key).unwrap(),
    );
    let t = Instant::now();
    wait_for("the collector to reload", DRAIN, || {
        (collector.stat("tls_reloads") == 1).then_some(())
    });
    let reload = t.elapsed();
    // New connections get the new certificate (its name proves it)...
    let mut fresh = rig.client(collector.grpc, Some(READER), Some("rotated.sockeye.test"));
    rig.rt
        .block_on(fresh.query_top(pb::QueryTopRequest::default()))
        .expect("a new connection trusts the new certificate by its name");
    // ...and the open streams are the same streams.
    rig.connect(3);
    wait_for("connects after the rotation", DRAIN, || {
        (rig.collected(collector.grpc).0 == 5).then_some(())
    });
    let mut watched = 0;
    while watched < 3 {
        let w = rig
            .rt
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(20), watch.message()).await
            })
            .expect("the watch goes on")
            .expect("no error")
            .expect("open");
        assert_eq!(w.node, rig.node);
        watched += 1;
    }
    assert_eq!(
        agent.push("reconnects"),
        reconnects,
        "the agent's stream was not dropped"
    );
    assert_eq!(collector.stat("tls_reload_errors"), 0);
    agent.proc.stop(Duration::from_secs(10));
    collector.proc.stop(Duration::from_secs(10));
    let (stored, dropped) = check_accounted(&rig.stored(&data));
    assert_eq!(dropped, 0);
    println!("rotation: picked up {reload:?} after the Secret changed; 0 streams dropped, {stored} windows, none lost");
}

fn collector_client(
    rig: &Rig,
    addr: SocketAddr,
    token: Option<&str>,
) -> sockeye_proto::v1::collector_service_client::CollectorServiceClient<
    sockeye_proto::connect::AuthChannel,
> {
    rig.client(addr, token, None)
}

#[test]
fn a_forged_push_and_an_anonymous_query_are_refused_and_counted_then_the_right_token_drains() {
    if !require_root() {
        return;
    }
    let rig = Rig::new("forged");
    let (port, data) = (free_port(), rig.dir.join("data"));
    let collector = rig.start_collector(port, &data, &[]);
    // The agent claims to be ip-10-0-1-12 with a token issued on rig.node.
    let agent = rig.start_agent(port, &["--node-name", "ip-10-0-1-12"]);
    rig.connect(4);
    wait_for("the forged push to be refused", DRAIN, || {
        (collector.stat("auth_pushes_refused") >= 1).then_some(())
    });
    agent
        .proc
        .wait_line("PermissionDenied", Duration::from_secs(30));
    let mut anon = collector_client(&rig, collector.grpc, None);
    let e = rig
        .rt
        .block_on(anon.query_top(pb::QueryTopRequest::default()))
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert_eq!(collector.stat("auth_reads_refused"), 1);
    assert_eq!(
        collector.stat("windows_stored"),
        0,
        "nothing stored under another node's name"
    );
    assert_eq!(
        agent.dropped("push_windows_dropped"),
        0,
        "the agent keeps its windows meanwhile"
    );

    // The right identity (here: the token of the node it claims), and it
    // drains on its own: the token is read again for each session.
    rig.api.add_token(
        "token-of-ip-10-0-1-12",
        sockeye_tests::apiserver::TokenOwner::pod(
            "sockeye",
            "sockeye-agent",
            "ip-10-0-1-12",
            "sockeye-collector",
        ),
    );
    std::fs::write(&rig.token_file, "token-of-ip-10-0-1-12\n").unwrap();
    let recovery = drained(&agent, Instant::now());
    rig.expect_connects(&agent, collector.grpc, 4);
    assert_eq!(rig.collected(collector.grpc).1, 0, "no window dropped");
    let refused = collector.stat("auth_pushes_refused");
    agent.proc.stop(Duration::from_secs(10));
    collector.proc.stop(Duration::from_secs(10));
    let windows = rig.stored(&data);
    assert!(windows.iter().all(|w| w.node == "ip-10-0-1-12"));
    let (stored, dropped) = check_accounted(&windows);
    assert_eq!(dropped, 0);
    println!("forged: {refused} pushes refused, 1 anonymous query refused; with its own token the agent drained {stored} windows in {recovery:?}");
}

#[test]
fn oversized_and_malformed_messages_get_clear_errors_and_chunks_get_through() {
    if !require_root() {
        return;
    }
    let rig = Rig::new("oversize");
    let (port, data) = (free_port(), rig.dir.join("data"));
    // The collector takes 64 KiB messages; the agent starts out sending
    // up to 128 KiB, finds out, and sends smaller chunks.
    let collector = rig.start_collector(
        port,
        &data,
        &["--max-message-bytes", "65536", "--anonymous-tcp", "push"],
    );
    let mut c = collector_client(&rig, collector.grpc, None);
    let push = |c: &mut sockeye_proto::v1::collector_service_client::CollectorServiceClient<_>,
                msgs: Vec<Msg>|
     -> tonic::Status {
        let reqs: Vec<pb::PushRequest> = msgs
            .into_iter()
            .map(|m| pb::PushRequest { msg: Some(m) })
            .collect();
        rig.rt.block_on(async {
            let mut acks = match c.push(tokio_stream::iter(reqs)).await {
                Ok(r) => r.into_inner(),
                Err(s) => return s,
            };
            loop {
                match acks.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => return tonic::Status::ok(""),
                    Err(s) => return s,
                }
            }
        })
    };
    let hello = |node: &str| {
        Msg::Hello(pb::Hello {
            node: node.into(),
            agent_id: format!("{node}-raw"),
            version: "t".into(),
        })
    };
    let mut big = pb::Window {
        node: "raw".into(),
        agent_id: "raw-raw".into(),
        seq: 1,
        start_unix_ms: 1,
        end_unix_ms: 2,
        ..Default::default()
    };
    big.aggregates = Some(pb::Aggregates {
        tcp_flows: vec![pb::TcpFlow {
            last_comm: "x".repeat(200_000),
            ..Default::default()
        }],
        ..Default::default()
    });
    let e = push(&mut c, vec![hello("raw"), Msg::Window(big)]);
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    assert!(e.message().contains("65536"), "{e:?}");
    let garbage = Msg::Chunk(pb::WindowChunk {
        seq: 1,
        index: 0,
        count: 1,
        total_bytes: 3,
        data: vec![0xff, 0xff, 0xff],
    });
    let e = push(&mut c, vec![hello("raw"), garbage]);
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("not a Window"), "{e:?}");
    let e = push(&mut c, vec![hello("raw\x1b[2J")]);
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(collector.stat("push_rejected") >= 3);

    // The real agent, with windows larger than one message: 600 flows to
    // closed ports (refused connects), each a row of its own, in one
    // 10 s window.
    let agent = rig.start_agent(
        port,
        &["--push-max-message-bytes", "131072", "--push-every", "10"],
    );
    let server = rig.net.pod(1).ip4;
    let mut spawned = Vec::new();
    for p in 0..600u16 {
        spawned.push(peer::spawn(
            rig.net.pod(0),
            &[
                "connect",
                &format!("{server}:{}", 20_000 + p),
                "1",
                "close",
                "500",
            ],
        ));
    }
    for mut s in spawned {
        let _ = s.results(Duration::from_secs(30));
    }
    rig.connect(2);
    wait_for("windows in chunks to be joined", DRAIN, || {
        (collector.stat("windows_joined_from_chunks") > 0).then_some(())
    });
    let t = Instant::now();
    rig.expect_connects(&agent, collector.grpc, 2);
    let recovery = drained(&agent, t);
    assert!(
        agent.proc.count_lines("sending chunks of at most") >= 1,
        "the agent learnt the limit"
    );
    let joined = collector.stat("windows_joined_from_chunks");
    assert_eq!(http_get(collector.http, "/healthz").unwrap().0, 200);
    agent.proc.stop(Duration::from_secs(10));
    collector.proc.stop(Duration::from_secs(10));
    let windows: Vec<pb::Window> = rig
        .stored(&data)
        .into_iter()
        .filter(|w| w.node == rig.node)
        .collect();
    let (stored, dropped) = check_accounted(&windows);
    assert_eq!(dropped, 0);
    println!("oversize: OutOfRange, InvalidArgument x2, collector serving; {joined} of {stored} agent windows came in chunks, drained {recovery:?} after the limit was learnt");
}
