//! The real agent with its HTTP endpoint and metrics: the same loop the
//! binary runs, in a background thread, scraped over real HTTP the way
//! Prometheus does it, and the answer checked as Prometheus text.

use std::{
    collections::HashSet,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::mpsc,
    thread::JoinHandle,
    time::Duration,
};

use prometheus_parse::{LineInfo, Scrape};
use sockeye_agent::{
    attribution::{cgroup_fs, container, filter::WorkloadFilter, Workload},
    http::{self, health::DEFAULT_STALE_AFTER, HealthState},
    metrics::{labels::WorkloadLabels, Capacities, Metrics, MetricsConfig},
    output::OutputFormat,
    run::{run, RunOptions},
    Config,
};
use tokio::sync::oneshot;

use crate::{agent::start_with, net::Pod};

/// The workload labels the agent gives `pod` (a cgroup of its own, which
/// the agent classifies by path like any other).
pub fn labels_of(pod: &Pod) -> WorkloadLabels {
    let mount = cgroup_fs::find_cgroup2_mount().expect("cgroup v2 mount");
    let path = pod
        .cgroup_dir
        .strip_prefix(&mount)
        .expect("pod under the mount");
    let path = format!("/{}", path.display());
    WorkloadLabels::of(&Workload {
        cgroup_id: pod.cgroup_id,
        owner: Some(container::classify(&path)),
        cgroup_path: Some(path),
        pod: None,
    })
}

/// Stopped (programs detached) on drop.
pub struct MetricsAgent {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsAgent {
    /// Starts the agent with `config`, folding metrics every second, its
    /// HTTP endpoint on a free loopback port.
    pub fn start(config: Config, metrics: MetricsConfig) -> Self {
        let (stop, stop_rx) = oneshot::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let agent = start_with(&config);
            let listener = runtime
                .block_on(http::bind("127.0.0.1:0".parse().expect("address")))
                .expect("HTTP endpoint binds");
            let addr = listener.local_addr().expect("bound address");
            let (metrics, handle) = Metrics::new(metrics, Capacities::of(&config));
            let health = HealthState::new(DEFAULT_STALE_AFTER);
            runtime.spawn(http::serve(listener, health.clone(), Some(handle)));
            ready_tx.send(addr).expect("test waits");
            let opts = RunOptions {
                output: OutputFormat::None,
                interval: Duration::from_secs(1),
                filter: WorkloadFilter::default(),
                duration: None,
                top: 0,
                health: Some(health),
                api: None,
                stop: Some(stop_rx),
                metrics: Some(metrics),
            };
            runtime.block_on(run(agent, opts)).expect("agent loop");
        });
        let addr = ready_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("agent with metrics started");
        Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// GET /metrics over HTTP/1.1: (response head, body).
    pub fn scrape(&self) -> (String, String) {
        let mut s = TcpStream::connect(self.addr).expect("connect to the HTTP endpoint");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: sockeye\r\nConnection: close\r\n\r\n")
            .expect("send request");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("read answer");
        let (head, body) = answer
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no end of headers in {answer:?}"));
        (head.to_string(), body.to_string())
    }
}

impl Drop for MetricsAgent {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Parses `body` as Prometheus text, and first checks what that parser
/// lets through silently: every line is a HELP, TYPE or UNIT line, `# EOF`
/// (last), or a sample of a declared family with a numeric value.
pub fn parse(body: &str) -> Scrape {
    let mut families: HashSet<String> = HashSet::new();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "OpenMetrics ends with # EOF");
    for (i, line) in lines.iter().enumerate() {
        if *line == "# EOF" {
            assert_eq!(i, lines.len() - 1, "# EOF before the end");
            continue;
        }
        if let Some(unit) = line.strip_prefix("# UNIT ") {
            let (name, unit) = unit.split_once(' ').expect("# UNIT name unit");
            assert!(name.ends_with(&format!("_{unit}")), "{line}");
            continue;
        }
        match LineInfo::parse(line) {
            LineInfo::Doc { .. } => {}
            LineInfo::Type {
                metric_name,
                metric_alias,
                ..
            } => {
                families.insert(metric_alias.unwrap_or(metric_name));
            }
            LineInfo::Sample {
                metric_name, value, ..
            } => {
                value
                    .parse::<f64>()
                    .unwrap_or_else(|e| panic!("{line}: value: {e}"));
                let family = ["_total", "_bucket", "_sum", "_count", "_info"]
                    .iter()
                    .find_map(|s| metric_name.strip_suffix(s))
                    .filter(|f| families.contains(*f))
                    .unwrap_or(metric_name);
                assert!(families.contains(family), "{line}: no # TYPE for it");
            }
            other => panic!("line {i} is not Prometheus text: {line:?} ({other:?})"),
        }
    }
    Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("parses")
}

/// The value of the sample `name` whose labels include all of `labels`;
/// panics if several match.
pub fn sample(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = scrape.samples.iter().filter(|s| {
        s.metric == name
            && labels
                .iter()
                .all(|(k, v)| s.labels.get(k).is_some_and(|x| x == *v))
    });
    let first = found.next()?;
    assert!(
        found.next().is_none(),
        "several {name} samples match {labels:?}"
    );
    match &first.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => Some(*v),
        other => panic!("{name} is not a single value: {other:?}"),
    }
}

/// The cumulative count of the bucket `le` of histogram `name`.
pub fn bucket(scrape: &Scrape, name: &str, labels: &[(&str, &str)], le: f64) -> Option<f64> {
    let s = scrape.samples.iter().find(|s| {
        s.metric == name
            && labels
                .iter()
                .all(|(k, v)| s.labels.get(k).is_some_and(|x| x == *v))
    })?;
    match &s.value {
        prometheus_parse::Value::Histogram(b) => {
            b.iter().find(|c| c.less_than == le).map(|c| c.count)
        }
        other => panic!("{name} is not a histogram: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "# HELP x_seconds X.\n# TYPE x_seconds histogram\n# UNIT x_seconds seconds\nx_seconds_sum 0.5\nx_seconds_count 1\nx_seconds_bucket{le=\"1.0\"} 1\nx_seconds_bucket{le=\"+Inf\"} 1\n# TYPE y counter\ny_total{a=\"b\"} 2\n# EOF\n";

    #[test]
    fn parses_good_text() {
        let s = parse(GOOD);
        assert_eq!(sample(&s, "y_total", &[("a", "b")]), Some(2.0));
        assert_eq!(bucket(&s, "x_seconds", &[], 1.0), Some(1.0));
        assert_eq!(sample(&s, "x_seconds_count", &[]), Some(1.0));
    }

    #[test]
    #[should_panic(expected = "no # TYPE")]
    fn rejects_an_undeclared_sample() {
        parse(&GOOD.replace("y_total{", "z_total{"));
    }

    #[test]
    #[should_panic(expected = "not Prometheus text")]
    fn rejects_a_line_that_is_not_a_sample() {
        parse(&GOOD.replace("y_total{a=\"b\"} 2", "y_total{a=\"b\"}"));
    }

    #[test]
    #[should_panic(expected = "# EOF")]
    fn rejects_text_without_eof() {
        parse(&GOOD.replace("# EOF\n", ""));
    }
}
