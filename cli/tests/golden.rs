//! Every command's output in every format, from fixed proto data, compared
//! byte for byte with `tests/golden/*.txt`. After an intended change, run
//! with `UPDATE_GOLDEN=1` and review the diff of those files.

mod fixtures;

use std::{path::PathBuf, time::Duration};

use clap::{CommandFactory, Parser};
use fixtures::*;
use sockeye_cli::{
    args::{Output, RankBy},
    commands::{conns, diagnose, dns, top, watch, View},
    table::Width,
    Cli, Role,
};

fn view(output: Output, role: Role) -> View {
    View {
        output,
        role,
        filter: None,
        now_unix_ms: NOW_MS,
        tz: tz(),
        width: Width::All,
    }
}

fn check(name: &str, got: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).expect("write golden file");
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert!(
        got == want,
        "{name} differs from {}\n--- got:\n{got}\n--- want:\n{want}",
        path.display()
    );
}

/// JSON output: every line one object with a known `type`.
fn check_json(name: &str, got: &str, types: &[&str]) {
    assert!(!got.is_empty() && got.ends_with('\n'));
    for line in got.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {line}"));
        let t = v["type"].as_str().unwrap_or_default();
        assert!(types.contains(&t), "{name}: type {t:?} in {line}");
    }
    check(name, got);
}

#[test]
fn conns_from_an_agent() {
    let snap = [agent_snapshot()];
    check(
        "conns.table.txt",
        &conns::render(&snap, &view(Output::Table, Role::Agent)),
    );
    check(
        "conns.wide.txt",
        &conns::render(&snap, &view(Output::Wide, Role::Agent)),
    );
    check_json(
        "conns.json.txt",
        &conns::render(&snap, &view(Output::Json, Role::Agent)),
        &["connection", "node"],
    );
}

#[test]
fn conns_from_the_collector_and_nothing_found() {
    check(
        "conns.collector.txt",
        &conns::render(&cluster_snapshot(), &view(Output::Table, Role::Collector)),
    );
    let v = View {
        filter: Some("namespace=nope".into()),
        ..view(Output::Table, Role::Agent)
    };
    assert_eq!(
        conns::render(&[empty_snapshot()], &v),
        "No connections found for namespace=nope.\n"
    );
    // Nothing found on a node that lost events says so.
    let mut lossy = empty_snapshot();
    lossy.aggregates.as_mut().unwrap().drops = Some(tcp_drops(7));
    assert_eq!(
        conns::render(&[lossy], &v),
        "No connections found for namespace=nope.\n\
         note: node-a lost 7 events since the agent started (kernel_ringbuf_full:7): counts may be low\n"
    );
    // The collector has no node matching: no age note either.
    assert_eq!(
        conns::render(&[], &view(Output::Table, Role::Collector)),
        "No connections found.\n"
    );
}

#[test]
fn dns_from_an_agent_and_the_collector() {
    let snap = [agent_snapshot()];
    check(
        "dns.table.txt",
        &dns::render(&snap, &view(Output::Table, Role::Agent)),
    );
    check(
        "dns.wide.txt",
        &dns::render(&snap, &view(Output::Wide, Role::Agent)),
    );
    check_json(
        "dns.json.txt",
        &dns::render(&snap, &view(Output::Json, Role::Agent)),
        &["dns_name", "dns_total", "node"],
    );
    check(
        "dns.collector.txt",
        &dns::render(&cluster_snapshot(), &view(Output::Table, Role::Collector)),
    );
    let v = View {
        filter: Some("destination=example.com".into()),
        ..view(Output::Table, Role::Agent)
    };
    assert_eq!(
        dns::render(&[empty_snapshot()], &v),
        "No DNS queries found for destination=example.com.\n"
    );
}

#[test]
fn top_from_an_agent() {
    let snap = agent_snapshot();
    let by = |b| top::rank(&snap, b, 20);
    let basis = top::Basis::Agent(&snap);
    check(
        "top.agent.table.txt",
        &top::render(
            &by(RankBy::Failures),
            basis,
            &view(Output::Table, Role::Agent),
        ),
    );
    check(
        "top.agent.latency.wide.txt",
        &top::render(
            &by(RankBy::Latency),
            basis,
            &view(Output::Wide, Role::Agent),
        ),
    );
    check_json(
        "top.agent.open.json.txt",
        &top::render(&by(RankBy::Open), basis, &view(Output::Json, Role::Agent)),
        &["top", "node"],
    );
}

#[test]
fn agent_ranking_matches_the_collectors_rules() {
    let snap = agent_snapshot();
    let order = |by, limit| -> Vec<String> {
        top::rank(&snap, by, limit)
            .rows
            .iter()
            .map(|r| {
                let d = r.destination.as_ref().unwrap();
                format!("{}:{}", d.ip, d.port)
            })
            .collect()
    };
    // Outbound only: the inbound :8080 flow is not a destination.
    assert_eq!(
        order(RankBy::Failures, 20),
        [
            "fd00::53:443",
            "10.96.0.12:6379",
            "10.96.0.9:5432",
            "10.0.0.10:443"
        ]
    );
    assert_eq!(
        order(RankBy::Latency, 20),
        [
            "10.96.0.12:6379",
            "10.0.0.10:443",
            "10.96.0.9:5432",
            "fd00::53:443"
        ]
    );
    assert_eq!(order(RankBy::Open, 2), ["10.96.0.12:6379", "10.0.0.10:443"]);
}

#[test]
fn top_from_the_collector() {
    let resp = top_response();
    let basis = top::Basis::Collector {
        since: Duration::from_secs(15 * 60),
        from_unix_ms: NOW_MS - 15 * 60 * 1000,
        to_unix_ms: NOW_MS,
    };
    check(
        "top.collector.table.txt",
        &top::render(&resp, basis, &view(Output::Table, Role::Collector)),
    );
    check(
        "top.collector.wide.txt",
        &top::render(&resp, basis, &view(Output::Wide, Role::Collector)),
    );
    check_json(
        "top.collector.json.txt",
        &top::render(&resp, basis, &view(Output::Json, Role::Collector)),
        &["top", "range"],
    );
    let none = sockeye_proto::v1::QueryTopResponse::default();
    let basis = top::Basis::Collector {
        since: Duration::from_secs(3600),
        from_unix_ms: 0,
        to_unix_ms: NOW_MS,
    };
    assert_eq!(
        top::render(&none, basis, &view(Output::Table, Role::Collector)),
        "No destinations found.\n\
         note: no windows over the last 1h: are agents pushing to this collector?\n"
    );
}

fn stream(view: &View, header: bool, lines: impl Iterator<Item = String>) -> String {
    let mut out = if header {
        watch::header(view)
    } else {
        String::new()
    };
    out.extend(lines);
    out
}

#[test]
fn watch_traces_from_an_agent() {
    let t = traces();
    for (name, output) in [
        ("watch.table.txt", Output::Table),
        ("watch.wide.txt", Output::Wide),
    ] {
        let v = view(output, Role::Agent);
        check(
            name,
            &stream(&v, true, t.iter().map(|e| watch::render_trace(e, &v))),
        );
    }
    let v = view(Output::Json, Role::Agent);
    assert_eq!(watch::header(&v), "", "JSON has no header line");
    check_json(
        "watch.json.txt",
        &stream(&v, false, t.iter().map(|e| watch::render_trace(e, &v))),
        &["trace"],
    );
}

#[test]
fn watch_windows_from_the_collector() {
    let w = windows();
    for (name, output) in [
        ("windows.table.txt", Output::Table),
        ("windows.wide.txt", Output::Wide),
    ] {
        let v = view(output, Role::Collector);
        check(
            name,
            &stream(&v, true, w.iter().map(|x| watch::render_window(x, &v))),
        );
    }
    let v = view(Output::Json, Role::Collector);
    check_json(
        "windows.json.txt",
        &stream(&v, false, w.iter().map(|x| watch::render_window(x, &v))),
        &["window"],
    );
}

#[test]
fn diagnose_from_an_agent() {
    let reply = agent_findings();
    let findings = diagnose::from_agent(&reply);
    let basis = diagnose::Basis::Agent(&reply);
    for (name, output) in [
        ("diagnose.agent.table.txt", Output::Table),
        ("diagnose.agent.wide.txt", Output::Wide),
    ] {
        check(
            name,
            &diagnose::render(&findings, basis, true, &view(output, Role::Agent)),
        );
    }
    check_json(
        "diagnose.agent.json.txt",
        &diagnose::render(&findings, basis, true, &view(Output::Json, Role::Agent)),
        &["finding", "node"],
    );
    // Open before resolved, most severe first, then the oldest.
    let order: Vec<&str> = findings.iter().map(|m| m.kind.as_str()).collect();
    assert_eq!(
        order,
        [
            "connection_leak",
            "connect_resource_exhaustion",
            "close_wait",
            "dependency_restart",
            "dns_degradation",
            "pool_exhaustion"
        ]
    );
    assert_eq!(diagnose::open_count(&findings), 5);
}

#[test]
fn diagnose_finds_nothing_and_says_what_may_hide_a_finding() {
    let mut reply = agent_findings();
    reply.findings.clear();
    let v = View {
        filter: Some("namespace=shop".into()),
        ..view(Output::Table, Role::Agent)
    };
    let none = diagnose::from_agent(&reply);
    assert_eq!(
        diagnose::render(&none, diagnose::Basis::Agent(&reply), false, &v),
        "no findings on node-a (open now; --all adds resolved ones; for namespace=shop)\n\
         warning: node-a lost 12 events since the agent started (kernel_ringbuf_full:12): a finding may be hidden\n"
    );
    reply.drops = Some(tcp_drops(0));
    assert_eq!(
        diagnose::render(
            &none,
            diagnose::Basis::Agent(&reply),
            true,
            &view(Output::Table, Role::Agent)
        ),
        "no findings on node-a (open now or resolved lately)\n"
    );
    let basis = |windows, dropped_windows, node| diagnose::Basis::Collector {
        since: Duration::from_secs(3600),
        from_unix_ms: NOW_MS - 3_600_000,
        to_unix_ms: NOW_MS,
        windows,
        dropped_windows,
        node,
    };
    let cv = view(Output::Table, Role::Collector);
    assert_eq!(
        diagnose::render(&[], basis(42, 0, None), false, &cv),
        "no findings on any node (open at the end of the last 1h; --all adds resolved ones)\n\
         42 windows over the last 1h, none dropped\n"
    );
    assert_eq!(
        diagnose::render(&[], basis(41, 2, Some("node-b")), true, &cv),
        "no findings on node-b (open or resolved in the last 1h)\n\
         warning: 41 windows over the last 1h; agents dropped 2 more (the collector was away too long): a finding may be missing\n"
    );
    assert_eq!(
        diagnose::render(&[], basis(0, 0, None), false, &cv),
        "no findings on any node (open at the end of the last 1h; --all adds resolved ones)\n\
         note: no windows over the last 1h: are agents pushing to this collector?\n"
    );
}

#[test]
fn diagnose_from_the_collector() {
    let reply = cluster_findings();
    let basis = diagnose::Basis::Collector {
        since: Duration::from_secs(15 * 60),
        from_unix_ms: NOW_MS - 15 * 60 * 1000,
        to_unix_ms: NOW_MS,
        windows: reply.windows,
        dropped_windows: reply.dropped_windows,
        node: None,
    };
    for (name, output) in [
        ("diagnose.collector.table.txt", Output::Table),
        ("diagnose.collector.wide.txt", Output::Wide),
    ] {
        check(
            name,
            &diagnose::render(
                &reply.findings,
                basis,
                false,
                &view(output, Role::Collector),
            ),
        );
    }
    check_json(
        "diagnose.collector.json.txt",
        &diagnose::render(
            &reply.findings,
            basis,
            false,
            &view(Output::Json, Role::Collector),
        ),
        &["finding", "range"],
    );
}

#[test]
fn diagnose_watch_from_an_agent() {
    let reply = agent_findings();
    let leak = leak("node-a");
    let update = |f: &sockeye_proto::v1::Finding, missed| sockeye_proto::v1::FindingUpdate {
        finding: Some(f.clone()),
        missed_before: missed,
    };
    let escalated = sockeye_proto::v1::Finding {
        severity: "critical".into(),
        updated_unix_ms: NOW_MS - 20_000,
        ..reply.findings[4].clone()
    };
    let resolved = sockeye_proto::v1::Finding {
        resolved_unix_ms: NOW_MS - 12_000,
        updated_unix_ms: NOW_MS - 10_000,
        ..leak.clone()
    };
    let updates = [
        update(&leak, 0),
        update(&reply.findings[4], 0),
        update(&escalated, 0),
        update(&resolved, 7),
    ];
    for (name, output) in [
        ("diagnose.watch.table.txt", Output::Table),
        ("diagnose.watch.json.txt", Output::Json),
    ] {
        let v = view(output, Role::Agent);
        let mut seen = diagnose::Seen::default();
        let mut out = diagnose::stream_header(&v);
        for u in &updates {
            out.push_str(&diagnose::render_update(u, "node-a", &mut seen, &v));
        }
        if output == Output::Json {
            check_json(name, &out, &["finding"]);
        } else {
            check(name, &out);
        }
        // The DNS finding is still open; the leak resolved.
        assert_eq!(seen.open(), 1, "{name}");
    }
}

#[test]
fn help_is_what_the_readme_shows() {
    let mut cmd = Cli::command();
    check("help.txt", &cmd.render_help().to_string());
    // `sockeye top --help`, with the global flags as users see them.
    let top = Cli::try_parse_from(["sockeye", "top", "--help"]).unwrap_err();
    assert_eq!(top.kind(), clap::error::ErrorKind::DisplayHelp);
    check("help.top.txt", &top.render().to_string());
    let diagnose = Cli::try_parse_from(["sockeye", "diagnose", "--help"]).unwrap_err();
    check("help.diagnose.txt", &diagnose.render().to_string());
    // And it parses what the README shows.
    Cli::try_parse_from([
        "sockeye", "conns", "-n", "shop", "--pod", "checkout", "-o", "wide",
    ])
    .expect("README example parses");
}

/// Lines wider than `cols` characters, notes aside (they are prose).
fn too_wide(text: &str, cols: usize) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.starts_with("note: ") && l.chars().count() > cols)
        .collect()
}

/// The narrow tables fitted to terminals of 80, 120 and 200 columns: the
/// least important columns go first, names are cut in the middle, and no
/// line is wider than the terminal.
#[test]
fn narrow_tables_fit_80_120_and_200_columns() {
    let snap = [agent_snapshot()];
    let reply = agent_findings();
    let findings = diagnose::from_agent(&reply);
    let t = traces();
    for cols in [80, 120, 200] {
        let v = View {
            width: Width::Fit(cols),
            ..view(Output::Table, Role::Agent)
        };
        let top = top::render(
            &top::rank(&snap[0], RankBy::Failures, 20),
            top::Basis::Agent(&snap[0]),
            &v,
        );
        let collector = View {
            width: Width::Fit(cols),
            ..view(Output::Table, Role::Collector)
        };
        for (name, text) in [
            ("conns", conns::render(&snap, &v)),
            (
                "conns.collector",
                conns::render(&cluster_snapshot(), &collector),
            ),
            ("dns", dns::render(&snap, &v)),
            ("top", top),
            (
                "diagnose",
                diagnose::render(&findings, diagnose::Basis::Agent(&reply), true, &v),
            ),
            (
                "watch",
                stream(&v, true, t.iter().map(|e| watch::render_trace(e, &v))),
            ),
        ] {
            check(&format!("{name}.fit{cols}.txt"), &text);
            // Trace details are not cut (a trace is one sentence), and a
            // finding's headline is one line; its prose is wrapped.
            if !matches!(name, "watch" | "diagnose") {
                assert_eq!(
                    too_wide(&text, cols),
                    Vec::<&str>::new(),
                    "{name} at {cols}"
                );
            }
        }
    }
    // -o wide is never fitted.
    let v = View {
        width: Width::Fit(80),
        ..view(Output::Wide, Role::Agent)
    };
    assert_eq!(
        conns::render(&snap, &v),
        conns::render(&snap, &view(Output::Wide, Role::Agent))
    );
}
