//! The alert rules and the Grafana dashboard in deploy/monitoring query
//! only what the agent exports: every metric name in every expression is
//! one of the sample names the families render ([`names::exported`]).

use std::{collections::BTreeSet, path::PathBuf};

use crate::{findings::Kind, metrics::names};

fn read(file: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/monitoring")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// PromQL words that are never metric names where they stand.
const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "and",
    "or",
    "unless",
    "inf",
    "nan",
];
/// Aggregations, which may take their `by (...)` before the parenthesis.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

/// Skips from `open` at `i` to just after its matching `close`.
fn skip_group(c: &[char], mut i: usize, open: char, close: char) -> usize {
    let mut depth = 0;
    while i < c.len() {
        if c[i] == open {
            depth += 1;
        } else if c[i] == close {
            depth -= 1;
            if depth == 0 {
                return i + 1;
            }
        } else if matches!(c[i], '"' | '\'' | '`') {
            i = skip_string(c, i) - 1;
        }
        i += 1;
    }
    i
}

fn skip_string(c: &[char], i: usize) -> usize {
    let quote = c[i];
    let mut j = i + 1;
    while j < c.len() && c[j] != quote {
        j += if c[j] == '\\' { 2 } else { 1 };
    }
    j + 1
}

/// The metric names a PromQL expression selects (Grafana's `$variables`
/// skipped): identifiers that are not functions, keywords, label lists,
/// label matchers, durations or strings.
fn metric_names(expr: &str) -> Vec<String> {
    let c: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if matches!(ch, '"' | '\'' | '`') {
            i = skip_string(&c, i);
        } else if ch == '{' {
            i = skip_group(&c, i, '{', '}');
        } else if ch == '[' {
            i = skip_group(&c, i, '[', ']');
        } else if ch == '$' || ch.is_ascii_digit() || ch == '.' {
            // A variable, a number or a duration: one word.
            i += 1;
            while i < c.len() && (c[i].is_ascii_alphanumeric() || matches!(c[i], '_' | '.')) {
                i += 1;
            }
        } else if ch.is_ascii_alphabetic() || ch == '_' || ch == ':' {
            let start = i;
            while i < c.len() && (c[i].is_ascii_alphanumeric() || matches!(c[i], '_' | ':')) {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let mut next = i;
            while next < c.len() && c[next].is_whitespace() {
                next += 1;
            }
            let called = c.get(next) == Some(&'(');
            if KEYWORDS.contains(&word.as_str()) {
                if called {
                    i = skip_group(&c, next, '(', ')');
                }
            } else if !called && !AGGREGATIONS.contains(&word.as_str()) {
                out.push(word);
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The `expr:` values of a rules file: one line, or a block (`|`) of the
/// lines indented deeper than the key.
fn rule_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let Some(value) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if !value.starts_with('|') && !value.starts_with('>') {
            out.push(value.to_string());
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let block: Vec<&str> = lines[n + 1..]
            .iter()
            .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
            .copied()
            .collect();
        out.push(block.join("\n"));
    }
    out
}

/// Every query of a Grafana dashboard: panels' targets (rows' panels too),
/// template variables and annotations.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut panels: Vec<&serde_json::Value> = Vec::new();
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        panels.push(p);
        panels.extend(p["panels"].as_array().into_iter().flatten());
    }
    for p in panels {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.extend(t["expr"].as_str().map(String::from));
        }
    }
    let variables = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten();
    // Other variable types (datasource, textbox) hold no query.
    for v in variables.filter(|v| v["type"] == "query") {
        let q = v["query"]["query"].as_str().or(v["query"].as_str());
        // label_values(metric{...}, label): the label is no metric.
        out.extend(q.map(|q| match q.strip_prefix("label_values(") {
            Some(args) => args.rsplit_once(',').map_or(args, |(m, _)| m).to_string(),
            None => q.to_string(),
        }));
    }
    for a in dashboard["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        out.extend(a["expr"].as_str().map(String::from));
    }
    out
}

/// The names `queries` use that the agent does not export.
fn unknown(queries: &[String], exported: &BTreeSet<String>) -> Vec<String> {
    queries
        .iter()
        .flat_map(|q| metric_names(q))
        .filter(|n| !exported.contains(n))
        .collect()
}

#[test]
fn the_scanner_finds_metric_names_and_nothing_else() {
    let e = r#"sum by (le, server) (rate(sockeye_dns_request_duration_seconds_bucket{namespace=~"$namespace"}[$__rate_interval]))
        / on (namespace, workload) group_left max without (instance) (sockeye_tcp_pool_ceiling offset 5m) > 0.05 and bool x:y
        + label_replace(up, "destination", "$1", "server", "(.*)") * 1e3"#;
    assert_eq!(
        metric_names(e),
        [
            "sockeye_dns_request_duration_seconds_bucket",
            "sockeye_tcp_pool_ceiling",
            "x:y",
            "up"
        ]
    );
}

#[test]
fn the_agent_exports_what_the_queries_need_and_nothing_is_made_up() {
    let exported = names::exported();
    for name in [
        "sockeye_tcp_connect_duration_seconds_bucket",
        "sockeye_tcp_connect_failures_total",
        "sockeye_finding_start_time_seconds",
        "sockeye_push_collector_errors_total",
        "sockeye_process_cpu_seconds_total",
        "sockeye_build_info",
    ] {
        assert!(exported.contains(name), "{name} not in {exported:#?}");
    }
    let bad = vec!["rate(sockeye_tcp_conects_total[5m])".to_string()];
    assert_eq!(unknown(&bad, &exported), ["sockeye_tcp_conects_total"]);
}

#[test]
fn every_alert_rule_queries_only_exported_metrics() {
    let rules = read("sockeye-rules.yml");
    let exprs = rule_exprs(&rules);
    assert!(exprs.len() >= 17, "{exprs:#?}");
    assert_eq!(unknown(&exprs, &names::exported()), Vec::<String>::new());
    // One alert per kind of finding, so a new kind cannot go unalerted.
    for kind in Kind::ALL {
        let selector = format!(
            r#"sockeye_finding_start_time_seconds{{kind="{}"}}"#,
            kind.name()
        );
        assert!(
            exprs.contains(&selector),
            "no alert rule for {}",
            kind.name()
        );
    }
}

#[test]
fn every_alert_rule_has_a_unit_test() {
    let rules = read("sockeye-rules.yml");
    let tests = read("sockeye-rules.test.yml");
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- alert:"))
        .map(str::trim)
        .collect();
    assert!(alerts.len() >= 17);
    for a in alerts {
        // Both a firing case and, for every rule, the test's other cases.
        let tested = tests
            .lines()
            .filter(|l| l.trim() == format!("alertname: {a}"))
            .count();
        assert!(tested >= 1, "{a} has no test in sockeye-rules.test.yml");
    }
}

#[test]
fn every_dashboard_query_uses_only_exported_metrics() {
    let text = read("sockeye-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON: {e}"));
    assert_eq!(
        dashboard["uid"], "sockeye-workloads",
        "the alerts link here"
    );
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 10, "{queries:#?}");
    assert_eq!(unknown(&queries, &names::exported()), Vec::<String>::new());
    // Every panel has a datasource and at least one query; ids are unique.
    let mut ids = BTreeSet::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().unwrap_or("?");
        assert!(ids.insert(p["id"].as_u64().expect("id")), "{title}: id");
        assert!(
            p["targets"].as_array().is_some_and(|t| !t.is_empty()),
            "{title} queries nothing"
        );
        assert!(p["gridPos"]["w"].as_u64().is_some(), "{title}: gridPos");
    }
}
