//! The alert rules end to end: a real Prometheus (Debian's `prometheus`)
//! loads deploy/monitoring/sockeye-rules.yml and scrapes the real agent's
//! /metrics (the run loop and HTTP endpoint of `--http-addr`) while a
//! replayed connection leak (real redis-server and client in pods) goes
//! on; the leak alert is read from Prometheus' own API, firing with the
//! pod's labels, and resolved once the leak is fixed.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use sockeye_agent::{findings::FindingsConfig, metrics::MetricsConfig, Config};
use sockeye_tests::{
    metrics::{labels_of, MetricsAgent},
    net::TestNet,
    redis::{PoolClient, RedisServer},
    require_root,
};

/// Scrapes and rule evaluations this often, so the test waits seconds,
/// not the minutes of a real setup's intervals.
const EVERY: &str = "1s";
/// Prometheus answers /-/ready within this (it replays an empty WAL).
const READY_WITHIN: Duration = Duration::from_secs(30);
/// The leak finding comes within 60 s of the leak; scrape and evaluation
/// add a few seconds.
const ALERT_WITHIN: Duration = Duration::from_secs(90);

fn rules_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/monitoring/sockeye-rules.yml")
}

/// A free loopback port: bound, read, released (Prometheus binds it next).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("its address").port()
}

/// GET `path` over HTTP/1.0 (no chunked encoding): (status line, body).
fn get(addr: SocketAddr, path: &str) -> Option<(String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: prometheus\r\n\r\n").ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

/// A Prometheus server of its own: temporary config and storage, killed and
/// removed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` with Sockeye's rules, and waits
    /// until it is ready and its first scrape of `target` succeeded.
    fn start(target: SocketAddr) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "sockeye-prometheus-{}-{}",
            std::process::id(),
            target.port()
        ));
        std::fs::create_dir_all(&dir).expect("Prometheus' directory");
        let config = format!(
            "global:\n  scrape_interval: {EVERY}\n  evaluation_interval: {EVERY}\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: sockeye-agent\n    honor_labels: true\n    \
             static_configs:\n      - targets: ['{target}']\n",
            rules = rules_file().display()
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("write its config");
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start prometheus (scripts/bootstrap.sh --test installs it)");
        let mut p = Self { child, addr, dir };
        p.wait_until(READY_WITHIN, "ready", |p| {
            get(p.addr, "/-/ready").is_some_and(|(status, _)| status.contains(" 200 "))
        });
        p.wait_until(READY_WITHIN, "scraping the agent", |p| {
            p.api("/api/v1/targets")["activeTargets"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| t["health"] == "up")
        });
        p
    }

    /// The `data` of an API answer (Null when it cannot be had yet).
    fn api(&self, path: &str) -> Value {
        let Some((status, body)) = get(self.addr, path) else {
            return Value::Null;
        };
        assert!(status.contains(" 200 "), "{path}: {status}: {body}");
        let v: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
        assert_eq!(v["status"], "success", "{path}: {body}");
        v["data"].clone()
    }

    fn wait_until(&mut self, within: Duration, what: &str, done: impl Fn(&Self) -> bool) {
        let end = Instant::now() + within;
        while !done(self) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("prometheus exited ({status}) before {what}; its log is on stderr");
            }
            assert!(
                Instant::now() < end,
                "prometheus not {what} within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The alerts Prometheus holds now (pending and firing).
    fn alerts(&self) -> Vec<Value> {
        self.api("/api/v1/alerts")["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn label<'a>(alert: &'a Value, name: &str) -> &'a str {
    alert["labels"][name].as_str().unwrap_or_default()
}

fn annotation<'a>(alert: &'a Value, name: &str) -> &'a str {
    alert["annotations"][name].as_str().unwrap_or_default()
}

#[test]
fn a_replayed_leak_fires_the_leak_alert_in_a_real_prometheus_and_it_resolves_with_the_finding() {
    if !require_root() {
        return;
    }
    assert!(rules_file().is_file(), "{}", rules_file().display());
    let net = TestNet::with_pods("promleak", &["app", "redis"]);
    let (app_pod, redis_pod) = (net.pod(0), net.pod(1));
    let redis = RedisServer::start(redis_pod);
    let agent = MetricsAgent::start(
        Config {
            findings: Some(FindingsConfig::default()),
            ..Config::default()
        },
        MetricsConfig::default(),
    );
    let prometheus = Prometheus::start(agent.addr);

    // Other tests' findings may fire alerts too: only this pod's leak to
    // this redis counts (the finding id starts with kind/cgroup/destination).
    let id_prefix = format!("connection_leak/{}/{}/", app_pod.cgroup_id, redis.addr);
    let ours = |a: &&Value| label(a, "finding_id").starts_with(&id_prefix);

    let mut app = PoolClient::start(app_pod, redis.addr, 3, 100);
    std::thread::sleep(Duration::from_secs(5));
    app.read();
    assert!(
        !prometheus.alerts().iter().any(|a| ours(&a)),
        "a healthy pool raised an alert: {:#?}",
        prometheus.alerts()
    );

    app.start_leaking(1000);
    let started = Instant::now();
    let alert = loop {
        app.read();
        let alerts = prometheus.alerts();
        if let Some(a) = alerts.iter().find(|a| ours(a) && a["state"] == "firing") {
            break a.clone();
        }
        assert!(
            started.elapsed() < ALERT_WITHIN,
            "no firing SockeyeConnectionLeak for {id_prefix} within {ALERT_WITHIN:?}; alerts: {alerts:#?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let fired_after = started.elapsed();
    eprintln!(
        "the leak alert fired {:.1} s after the leak began:\n{}",
        fired_after.as_secs_f64(),
        serde_json::to_string_pretty(&alert).unwrap_or_default()
    );

    let want = labels_of(app_pod);
    for (name, value) in [
        ("alertname", "SockeyeConnectionLeak"),
        ("kind", "connection_leak"),
        ("namespace", want.namespace.as_str()),
        ("workload", want.workload.as_str()),
        ("container", want.container.as_str()),
        ("destination", &redis.addr.to_string()),
        ("team", "sockeye"),
        ("instance", &agent.addr.to_string()),
    ] {
        assert_eq!(label(&alert, name), value, "label {name}: {alert:#}");
    }
    assert!(
        ["warning", "critical"].contains(&label(&alert, "severity")),
        "{alert:#}"
    );
    // Empty labels (a pod outside Kubernetes has no namespace) are left out.
    let who: Vec<&str> = [&want.namespace, &want.workload, &want.container]
        .into_iter()
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(
        annotation(&alert, "summary"),
        format!("{} is leaking connections to {}", who.join("/"), redis.addr)
    );
    let id = label(&alert, "finding_id");
    assert_eq!(annotation(&alert, "finding_id"), id);
    let quoted_id = id.replace('/', "%2F").replace(':', "%3A");
    assert!(
        annotation(&alert, "finding_url").ends_with(&format!("&var-finding={quoted_id}")),
        "{alert:#}"
    );
    let description = annotation(&alert, "description");
    let in_namespace = match want.namespace.as_str() {
        "" => String::new(),
        ns => format!(" -n {ns}"),
    };
    assert!(
        description.contains(&format!("sockeye diagnose{in_namespace} -d {}", redis.addr))
            && description.contains(" UTC)"),
        "{description}"
    );

    // The fix: the leaked connections are closed; the finding resolves, its
    // series leaves /metrics, and the alert ends.
    app.close_leaked();
    let closed = Instant::now();
    loop {
        app.read();
        if !prometheus.alerts().iter().any(|a| ours(&a)) {
            break;
        }
        assert!(
            closed.elapsed() < Duration::from_secs(60),
            "the leak alert outlived the fix: {:#?}",
            prometheus.alerts()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "the leak alert ended {:.1} s after the app closed its leaked connections",
        closed.elapsed().as_secs_f64()
    );
}
