//! The `sockeye` CLI against the real agent loaded in-process, run
//! in-process on the agent's unix socket: a pod's connections (`conns`,
//! `top`), its DNS names (`dns`), live traces (`watch`), what is wrong
//! (`diagnose`), and the messages when the agent cannot be reached.

use std::{
    collections::HashMap,
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use sockeye_agent::{api::server::ServeOptions, findings::FindingsConfig, Config};
use sockeye_cli::{execute, exit, run, Cli, CliError, Outcome};
use sockeye_tests::{
    api::{runtime, ApiAgent},
    dns::{dig, Dnsmasq},
    net::{Pod, TestNet},
    peer, require_root,
};

const WAIT: Duration = Duration::from_secs(15);

/// The pod's cgroup path as the agent reports it: a `--container` filter.
fn cgroup(pod: &Pod) -> String {
    pod.cgroup_dir
        .display()
        .to_string()
        .trim_start_matches("/sys/fs/cgroup/unified")
        .to_string()
}

async fn sockeye_into(args: &[&str], out: &mut dyn Write) -> Result<(), CliError> {
    let mut argv = vec!["sockeye"];
    argv.extend_from_slice(args);
    let cli = Cli::from_args(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    run(cli, out).await
}

/// Runs the CLI in-process: its output, or its error.
fn sockeye(args: &[&str]) -> Result<String, CliError> {
    runtime().block_on(async {
        let mut out = Vec::new();
        tokio::time::timeout(WAIT, sockeye_into(args, &mut out))
            .await
            .expect("the CLI answers in time")?;
        Ok(String::from_utf8(out).expect("UTF-8"))
    })
}

/// A table's rows as column -> cell (narrow tables have no spaces in cells).
fn table_rows(table: &str) -> Vec<HashMap<String, String>> {
    let mut lines = table.lines().take_while(|l| !l.starts_with("note: "));
    let header: Vec<String> = lines
        .next()
        .expect("a header")
        .split_whitespace()
        .map(String::from)
        .collect();
    lines
        .map(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(cells.len(), header.len(), "{l:?} under {header:?}");
            header
                .iter()
                .cloned()
                .zip(cells.into_iter().map(String::from))
                .collect()
        })
        .collect()
}

/// Runs `args` until `done` holds for its output (the agent aggregates
/// what it reads a little later); the last output otherwise.
fn sockeye_until(args: &[&str], done: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let out = sockeye(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        if done(&out) {
            return out;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{args:?} never matched:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn is_duration(s: &str) -> bool {
    ["µs", "ms", "s"].iter().any(|u| s.ends_with(u)) && s.starts_with(|c: char| c.is_ascii_digit())
}

#[test]
fn conns_and_top_show_a_pods_connections() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("clicon", &["client", "server"]);
    let (client, server) = (net.pod(0), net.pod(1));
    let agent = ApiAgent::start(Config::default(), ServeOptions::default());
    let target = agent.target();
    let _srv = peer::listen(server, &format!("{}:8080", server.ip4), "read");
    let (cli, ok) = peer::connect(client, &format!("{}:8080", server.ip4), 3, false, 2000);
    assert!(ok.iter().all(|r| r.starts_with("ok")), "{ok:?}");
    // Nothing listens on :9: refused.
    let (_c, refused) = peer::connect(client, &format!("{}:9", server.ip4), 2, false, 2000);
    assert!(refused.iter().all(|r| r.starts_with("err")), "{refused:?}");

    let path = cgroup(client);
    let dest = format!("{}:8080", server.ip4);
    // Wait until every connect and close is counted.
    let json = sockeye_until(
        &["--agent", &target, "conns", "-c", &path, "-o", "json"],
        |o| {
            o.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .any(|v| v["connects_failed"]["refused"] == 2)
                && o.contains(r#""connects_ok":3,"#)
                && o.contains(r#""closed":3,"#)
        },
    );
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(lines.len(), 3, "two connections, one node line:\n{json}");
    let c = lines
        .iter()
        .find(|v| v["remote"]["port"] == 8080)
        .expect("the :8080 connection");
    assert_eq!(c["type"], "connection");
    assert_eq!(c["direction"], "outbound");
    assert_eq!(c["workload"]["cgroup_id"], client.cgroup_id);
    assert_eq!(c["connects_ok"], 3);
    assert_eq!(c["last_pid"], cli.pid());
    assert_eq!(lines[2]["type"], "node");

    let out = sockeye(&["--agent", &target, "conns", "--container", &path]).expect("conns");
    let rows = table_rows(&out);
    assert_eq!(
        rows.len(),
        2,
        "only the client pod's two destinations:\n{out}"
    );
    let r = rows
        .iter()
        .find(|r| r["REMOTE"] == dest)
        .expect("the :8080 row");
    // A cgroup no runtime made is named by its path under the host.
    assert!(
        r["WORKLOAD"].starts_with("host/sockeye-test-") && r["WORKLOAD"].ends_with("/client"),
        "{out}"
    );
    assert_eq!(
        (r["DIR"].as_str(), r["OK"].as_str(), r["FAIL"].as_str()),
        ("out", "3", "0"),
        "{out}"
    );
    // Closed by the client first: its sockets may linger in TIME_WAIT,
    // which the agent shows as a state but not as open.
    assert_eq!(r["OPEN"], "0", "{out}");
    assert!(matches!(r["STATES"].as_str(), "-" | "TW:3"), "{out}");
    for p in ["P50", "P90", "P99", "MAX"] {
        assert!(is_duration(&r[p]), "{p} {:?} in\n{out}", r[p]);
    }
    let r = rows
        .iter()
        .find(|r| r["REMOTE"] == format!("{}:9", server.ip4))
        .expect("the :9 row");
    assert_eq!(
        (
            r["OK"].as_str(),
            r["FAIL"].as_str(),
            r["REF/TMO/UNR/ABT"].as_str(),
            r["P50"].as_str()
        ),
        ("0", "2", "2/0/0/0", "-"),
        "{out}"
    );

    // Wide names the process and the full cgroup.
    let wide = sockeye(&[
        "--agent", &target, "conns", "-c", &path, "-d", &dest, "-o", "wide",
    ])
    .expect("wide");
    assert!(wide.contains(&format!("netpeer({})", cli.pid())), "{wide}");
    assert!(wide.contains(&path), "{wide}");

    // The server pod sees the same three connections, accepted.
    let out = sockeye_until(&["--agent", &target, "conns", "-c", &cgroup(server)], |o| {
        o.contains(" in ") && o.contains(" 3 ")
    });
    let rows = table_rows(&out);
    assert_eq!(rows.len(), 1, "{out}");
    assert_eq!(
        (rows[0]["DIR"].as_str(), rows[0]["OK"].as_str()),
        ("in", "3"),
        "{out}"
    );

    // top ranks the client's destinations: the failing one first.
    let out = sockeye(&["--agent", &target, "top", "-c", &path]).expect("top");
    let rows = table_rows(&out);
    let order: Vec<&str> = rows.iter().map(|r| r["DESTINATION"].as_str()).collect();
    assert_eq!(order, [format!("{}:9", server.ip4), dest.clone()], "{out}");
    assert_eq!(rows[0]["FAIL%"], "100%", "{out}");
    let out = sockeye(&[
        "--agent", &target, "top", "-c", &path, "--by", "latency", "--limit", "1",
    ])
    .expect("top by latency");
    let rows = table_rows(&out);
    assert_eq!(rows.len(), 1, "{out}");
    assert_eq!(
        rows[0]["DESTINATION"], dest,
        "only it has latencies:\n{out}"
    );

    // A filter that matches nothing here says so.
    let none = sockeye(&["--agent", &target, "conns", "-c", &path, "-d", ":7"]).expect("conns");
    assert!(
        none.starts_with(&format!(
            "No connections found for container={path} destination=:7.\n"
        )),
        "{none}"
    );
    // The agent's own words for a bad filter.
    let e = sockeye(&["--agent", &target, "conns", "-d", "10.0.0.1:port"]).unwrap_err();
    assert_eq!(e.exit_code(), exit::FAILED);
    assert!(
        e.to_string()
            .contains("\"10.0.0.1:port\": port \"port\" is not a number from 1 to 65535"),
        "{e}"
    );
}

#[test]
fn dns_shows_a_pods_names() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("clidns", &["client", "server"]);
    let (client, server) = (net.pod(0), net.pod(1));
    let _dnsmasq = Dnsmasq::start(server, &["--address=/ok.test/10.1.2.3", "--local=/test/"]);
    let agent = ApiAgent::start(Config::default(), ServeOptions::default());
    let target = agent.target();
    let at = format!("@{}", server.ip4);
    for _ in 0..2 {
        let (_, out) = dig(client, &[&at, "ok.test", "A", "+tries=1", "+time=3"]);
        assert!(out.contains("10.1.2.3"), "{out}");
    }
    let (_, out) = dig(client, &[&at, "nope.test", "A", "+tries=1", "+time=3"]);
    assert!(out.contains("NXDOMAIN"), "{out}");

    let path = cgroup(client);
    let out = sockeye_until(&["--agent", &target, "dns", "-c", &path], |o| {
        o.contains("nope.test")
            && o.lines()
                .any(|l| l.contains("ok.test") && l.contains(" 2 "))
    });
    let rows = table_rows(&out);
    let server53 = format!("{}:53", server.ip4);
    let row = |name: &str| {
        rows.iter()
            .find(|r| r["NAME"] == name)
            .unwrap_or_else(|| panic!("{name} in\n{out}"))
    };
    let ok = row("ok.test");
    assert_eq!(
        (
            ok["TYPE"].as_str(),
            ok["SERVER"].as_str(),
            ok["Q"].as_str(),
            ok["OK"].as_str()
        ),
        ("A", server53.as_str(), "2", "2"),
        "{out}"
    );
    assert!(is_duration(&ok["P50"]), "{out}");
    let nx = row("nope.test");
    assert_eq!(
        (nx["Q"].as_str(), nx["NXDOM"].as_str(), nx["OK"].as_str()),
        ("1", "1", "0"),
        "{out}"
    );
    let total = row("(total)");
    assert_eq!(
        (
            total["SERVER"].as_str(),
            total["Q"].as_str(),
            total["OK"].as_str(),
            total["NXDOM"].as_str()
        ),
        ("(all)", "3", "2", "1"),
        "{out}"
    );
    // A name filter keeps only it (and its subdomains).
    let out = sockeye(&[
        "--agent",
        &target,
        "dns",
        "-c",
        &path,
        "-d",
        "nope.test",
        "-o",
        "json",
    ])
    .expect("json");
    let names: Vec<String> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON"))
        .filter(|v| v["type"] == "dns_name")
        .map(|v| v["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(names, ["nope.test"], "{out}");
}

/// A `Write` the test reads while the CLI still writes to it.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Shared {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `sockeye args` until `done` holds for what it printed, while
/// `traffic` (started once the header shows the watch has begun) runs on
/// another thread.
fn watch_while(
    args: &[&str],
    traffic: impl FnOnce() + Send + 'static,
    done: impl Fn(&str) -> bool,
) -> String {
    let out = Shared::default();
    let seen = out.clone();
    runtime().block_on(async {
        let mut writer = out.clone();
        let cli = sockeye_into(args, &mut writer);
        let waiter = async {
            poll(&seen, |t| t.starts_with("TIME(UTC)")).await;
            let t = std::thread::spawn(traffic);
            poll(&seen, &done).await;
            t.join().expect("traffic");
        };
        tokio::select! {
            r = cli => panic!("watch ended early: {r:?}\n{}", seen.text()),
            () = waiter => {}
        }
    });
    out.text()
}

async fn poll(out: &Shared, done: impl Fn(&str) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done(&out.text()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not seen in time:\n{}",
            out.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn watch_prints_a_pods_connections_as_they_happen() {
    if !require_root() {
        return;
    }
    let net = Arc::new(TestNet::with_pods(
        "cliwatch",
        &["client", "server", "other"],
    ));
    let agent = ApiAgent::start(Config::default(), ServeOptions::default());
    let target = agent.target();
    let (client, server) = (net.pod(0), net.pod(1));
    let _srv = peer::listen(server, &format!("{}:8080", server.ip4), "read");
    let dest = format!("{}:8080", server.ip4);
    let path = cgroup(client);
    let pids = Arc::new(Mutex::new(Vec::new()));
    let traffic = {
        let (net, dest, pids) = (net.clone(), dest.clone(), pids.clone());
        move || {
            let (c, results) = peer::connect(net.pod(0), &dest, 2, false, 2000);
            assert!(results.iter().all(|r| r.starts_with("ok")), "{results:?}");
            // Another pod's connections must not show.
            let _ = peer::connect(net.pod(2), &dest, 2, false, 2000);
            pids.lock().expect("lock").push(c.pid());
        }
    };
    let out = watch_while(
        &["--agent", &target, "watch", "-c", &path, "--kind", "tcp"],
        traffic,
        |t| t.matches(" tcp closed ").count() >= 2,
    );
    let pid = pids.lock().expect("lock")[0];
    let events: Vec<&str> = out.lines().skip(1).collect();
    let established: Vec<&&str> = events
        .iter()
        .filter(|l| l.contains(" tcp established "))
        .collect();
    assert_eq!(established.len(), 2, "{out}");
    for l in &established {
        assert!(l.contains(&format!("  {}:", client.ip4)), "{l}");
        assert!(l.contains(&format!(" → {dest} in ")), "{l}");
        assert!(l.ends_with(&format!("  netpeer({pid})")), "{l}");
    }
    for l in &events {
        assert!(
            l.contains(&client.ip4.to_string()),
            "only the client pod: {l}\n{out}"
        );
        assert!(!l.contains(" dns "), "--kind tcp: {l}");
    }
}

#[test]
fn watch_prints_dns_queries_and_answers() {
    if !require_root() {
        return;
    }
    let net = Arc::new(TestNet::with_pods("cliwdns", &["client", "server"]));
    let _dnsmasq = Dnsmasq::start(
        net.pod(1),
        &["--address=/ok.test/10.1.2.3", "--local=/test/"],
    );
    let agent = ApiAgent::start(Config::default(), ServeOptions::default());
    let target = agent.target();
    let at = format!("@{}", net.pod(1).ip4);
    let traffic = {
        let net = net.clone();
        move || {
            let (_, out) = dig(net.pod(0), &[&at, "ok.test", "A", "+tries=1", "+time=3"]);
            assert!(out.contains("10.1.2.3"), "{out}");
        }
    };
    let path = cgroup(net.pod(0));
    let out = watch_while(
        &["--agent", &target, "watch", "-c", &path, "--kind", "dns"],
        traffic,
        |t| t.contains(" dns answer "),
    );
    let server = format!("{}:53", net.pod(1).ip4);
    let event = |name: &str, details: String| format!("  {name:<15}  {details}");
    assert!(
        out.contains(&event("dns query", format!("A ok.test → {server}"))),
        "{out}"
    );
    assert!(
        out.contains(&event(
            "dns answer",
            format!("A ok.test ← {server} NOERROR 1 answer in ")
        )),
        "{out}"
    );
}

/// `diagnose` against the agent: its exit status and output.
fn diagnose(args: &[&str]) -> (Outcome, String) {
    runtime().block_on(async {
        let mut argv = vec!["sockeye"];
        argv.extend_from_slice(args);
        let cli = Cli::from_args(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        let mut out = Vec::new();
        let outcome = tokio::time::timeout(WAIT, execute(cli, &mut out))
            .await
            .expect("the CLI answers in time")
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        (outcome, String::from_utf8(out).expect("UTF-8"))
    })
}

#[test]
fn diagnose_names_a_pod_that_leaves_connections_in_close_wait() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("clidiag", &["client", "server"]);
    let (client, server) = (net.pod(0), net.pod(1));
    let mut findings = FindingsConfig::default();
    findings.close_wait.min_wait_s = 2.0;
    let agent = ApiAgent::start(
        Config {
            findings: Some(findings),
            ..Config::default()
        },
        ServeOptions::default(),
    );
    let target = agent.target();
    let path = cgroup(client);
    let (outcome, out) = diagnose(&["--agent", &target, "diagnose", "-c", &path]);
    assert_eq!(outcome.exit_code(), 0, "nothing wrong yet:\n{out}");
    assert!(out.starts_with("no findings"), "{out}");

    // The server closes every connection at once; the client never closes
    // its side of the 6 it holds.
    let addr = format!("{}:8080", server.ip4);
    let _srv = peer::listen(server, &addr, "close");
    let (_cli, results) = peer::connect(client, &addr, 6, true, 2000);
    assert!(results.iter().all(|r| r.starts_with("ok")), "{results:?}");

    let deadline = std::time::Instant::now() + WAIT;
    let (outcome, out) = loop {
        let (outcome, out) = diagnose(&["--agent", &target, "diagnose", "-c", &path]);
        if out.contains("ROOT CAUSE") || std::time::Instant::now() > deadline {
            break (outcome, out);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(outcome.exit_code(), exit::FINDINGS, "{out}");
    let first = out.lines().next().unwrap_or_default();
    assert!(first.starts_with("WARNING close_wait"), "{out}");
    // Long lines wrap; the words are what matters.
    let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
    for want in [
        format!("does not close 6 connections to {addr} that the peer has closed (CLOSE_WAIT)"),
        format!("EVIDENCE: 6 sockets to {addr} in CLOSE_WAIT for more than 2.00s"),
        "all held by pid".to_string(),
        " NEXT: ".to_string(),
        " CONFIDENCE: ".to_string(),
    ] {
        assert!(flat.contains(&want), "{want:?} in\n{out}");
    }
    // Another pod has nothing wrong.
    let (outcome, out) = diagnose(&["--agent", &target, "diagnose", "-c", &cgroup(server)]);
    assert_eq!(outcome.exit_code(), 0, "{out}");
}

#[test]
fn an_agent_that_cannot_be_reached_is_a_clear_error() {
    if !require_root() {
        return;
    }
    // A socket that is gone: the agent stopped (it removes its socket).
    let agent = ApiAgent::start(Config::default(), ServeOptions::default());
    let target = agent.target();
    sockeye(&["--agent", &target, "conns"]).expect("reachable while it runs");
    drop(agent);
    let e = sockeye(&["--agent", &target, "conns"]).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("cannot reach the agent at {target}: No such file or directory (is sockeye-agent running? the socket is root-only: try sudo)")
    );
    assert_eq!(e.exit_code(), exit::UNREACHABLE);

    // A socket file nobody listens on (an agent that was killed).
    let dir = std::env::temp_dir().join(format!("sockeye-cli-stale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("agent.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    let e = sockeye(&["--agent", &path.display().to_string(), "dns"]).unwrap_err();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        e.to_string(),
        format!("cannot reach the agent at unix://{}: Connection refused (the socket is there but nothing listens: is sockeye-agent running?)", path.display())
    );
    assert_eq!(e.exit_code(), exit::UNREACHABLE);
}
