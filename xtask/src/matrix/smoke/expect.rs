//! What the smoke test expects the agent to report, checked against the
//! agent's JSON lines (`flow` and `dns`). Counts are exact: a line with one
//! connect or query too many fails as surely as one with one missing.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde_json::Value;

use super::super::protocol::Check;

/// One line of the smoke cgroup and the values some of its fields must have.
pub struct Expectation {
    pub name: String,
    /// Which line: its `type` and [`identity`].
    line: (String, String),
    /// Field path (`connects_ok`, `connects_failed.refused`) and value. A
    /// key missing from a map (`connects_failed`, `states`, `rcodes`) counts
    /// as 0.
    fields: Vec<(&'static str, u64)>,
}

impl Expectation {
    /// The flow of `direction` (`outbound`/`inbound`) with `remote`:`port`.
    pub fn flow(
        name: &str,
        direction: &str,
        remote: IpAddr,
        port: u16,
        fields: Vec<(&'static str, u64)>,
    ) -> Self {
        Self {
            name: name.to_string(),
            line: ("flow".into(), format!("{direction} {remote} port {port}")),
            fields,
        }
    }

    /// The DNS row of `qname` (type `qtype`) asked of `server`.
    pub fn dns(
        name: &str,
        qname: &str,
        qtype: &str,
        server: SocketAddr,
        fields: Vec<(&'static str, u64)>,
    ) -> Self {
        Self {
            name: name.to_string(),
            line: ("dns".into(), format!("{qname} {qtype} @{server}")),
            fields,
        }
    }

    /// The `resource_failure` row of `syscall` (`connect`/`socket`)
    /// failing with `errno` (`EMFILE`, ...), to `destination` if any.
    pub fn resource_failure(
        name: &str,
        syscall: &str,
        errno: &str,
        destination: Option<SocketAddr>,
        fields: Vec<(&'static str, u64)>,
    ) -> Self {
        let dest = destination.map_or_else(|| "-".to_string(), |d| d.to_string());
        Self {
            name: name.to_string(),
            line: (
                "resource_failure".into(),
                format!("{syscall} {errno} {dest}"),
            ),
            fields,
        }
    }

    /// Compares with the latest report of the line.
    pub fn check(&self, observed: &Observed) -> Check {
        let (kind, id) = &self.line;
        let Some(line) = observed.lines.get(&self.line) else {
            return Check {
                name: self.name.clone(),
                ok: false,
                detail: format!("no {kind} line {id}; {}", observed.describe()),
            };
        };
        let mut ok = true;
        let mut seen = Vec::new();
        for &(path, want) in &self.fields {
            let got = field(line, path);
            ok &= got == Some(want);
            let got = got.map_or_else(|| "missing".to_string(), |n| n.to_string());
            seen.push(format!("{path}={got} (want {want})"));
        }
        Check {
            name: self.name.clone(),
            ok,
            detail: format!("{kind} {id}: {}", seen.join(", ")),
        }
    }
}

/// The latest report of every flow and DNS row of one cgroup.
pub struct Observed {
    cgroup_id: u64,
    lines: BTreeMap<(String, String), Value>,
}

impl Observed {
    pub fn new(cgroup_id: u64) -> Self {
        Self {
            cgroup_id,
            lines: BTreeMap::new(),
        }
    }

    /// Takes in one agent line; other cgroups' lines are ignored.
    pub fn record(&mut self, line: &Value) {
        if line["workload"]["cgroup_id"] != self.cgroup_id {
            return;
        }
        if let Some(key) = identity(line) {
            self.lines.insert(key, line.clone());
        }
    }

    /// Every line seen, compactly, for failure messages.
    pub fn describe(&self) -> String {
        if self.lines.is_empty() {
            return format!("the agent reported nothing for cgroup {}", self.cgroup_id);
        }
        let mut text = format!("lines of cgroup {} as last reported:", self.cgroup_id);
        for ((kind, id), line) in &self.lines {
            let counts = match kind.as_str() {
                "flow" => format!(
                    "connects_ok={} connects_failed={} closed_total={} open={} states={}",
                    line["connects_ok"],
                    line["connects_failed"],
                    line["closed_total"],
                    line["open"],
                    line["states"]
                ),
                "resource_failure" => format!(
                    "failures_total={} last_pid={}",
                    line["failures_total"], line["last_pid"]
                ),
                _ => format!(
                    "queries={} answers={} rcodes={} timeouts={}",
                    line["queries"], line["answers"], line["rcodes"], line["timeouts"]
                ),
            };
            text.push_str(&format!("\n  {kind} {id}: {counts}"));
        }
        text
    }

    /// The lines `expected` name, as seen.
    fn matching<'a>(
        &'a self,
        expected: &'a [Expectation],
    ) -> impl Iterator<Item = (&'a Expectation, &'a Value)> {
        expected
            .iter()
            .filter_map(|e| self.lines.get(&e.line).map(|line| (e, line)))
    }
}

/// `(type, identity)` of a flow or DNS line, as [`Expectation`] names it.
fn identity(line: &Value) -> Option<(String, String)> {
    let text = |field: &str| line[field].as_str().unwrap_or_default().to_string();
    match line["type"].as_str()? {
        "flow" => Some((
            "flow".into(),
            format!(
                "{} {} port {}",
                text("direction"),
                text("remote"),
                line["port"]
            ),
        )),
        "dns" => Some((
            "dns".into(),
            format!("{} {} @{}", text("name"), text("qtype"), text("server")),
        )),
        "resource_failure" => Some((
            "resource_failure".into(),
            format!(
                "{} {} {}",
                text("syscall"),
                text("errno"),
                line["destination"].as_str().unwrap_or("-")
            ),
        )),
        _ => None,
    }
}

/// The line's value at `path`; a key missing from a map is 0, a missing
/// top-level field is `None` (the agent's output changed).
fn field(line: &Value, path: &str) -> Option<u64> {
    match path.split_once('.') {
        Some((map, key)) => {
            let map = line.get(map)?.as_object()?;
            map.get(key).map_or(Some(0), Value::as_u64)
        }
        None => line.get(path)?.as_u64(),
    }
}

/// Whether every expected line carries the smoke cgroup's path: the agent
/// named a cgroup it saw being created.
pub fn cgroup_named(observed: &Observed, expected: &[Expectation], path: &str) -> Check {
    let wrong: Vec<String> = observed
        .matching(expected)
        .filter(|(_, line)| line["workload"]["cgroup_path"] != path)
        .map(|(e, line)| format!("{} has {}", e.line.1, line["workload"]["cgroup_path"]))
        .collect();
    Check {
        name: "cgroup named".to_string(),
        ok: wrong.is_empty(),
        detail: if wrong.is_empty() {
            format!("every line is attributed to {path}")
        } else {
            format!("want cgroup_path {path}: {}", wrong.join("; "))
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow_line(cgroup: u64, ok: u64) -> Value {
        serde_json::json!({
            "type": "flow",
            "workload": {"cgroup_id": cgroup, "cgroup_path": "/smoke", "owner": null},
            "direction": "outbound", "remote": "127.0.0.1", "port": 8080,
            "connects_ok": ok, "connects_failed": {"refused": 1}, "states": {},
        })
    }

    fn out(fields: Vec<(&'static str, u64)>) -> Expectation {
        Expectation::flow(
            "out",
            "outbound",
            "127.0.0.1".parse().unwrap(),
            8080,
            fields,
        )
    }

    #[test]
    fn exact_counts_and_map_keys() {
        let mut seen = Observed::new(42);
        seen.record(&flow_line(42, 4));
        let want = out(vec![("connects_ok", 5), ("connects_failed.refused", 1)]);
        let check = want.check(&seen);
        assert!(!check.ok);
        assert!(
            check.detail.contains("connects_ok=4 (want 5)"),
            "{}",
            check.detail
        );
        // The latest report wins, and one too many fails as well.
        seen.record(&flow_line(42, 5));
        assert!(want.check(&seen).ok);
        seen.record(&flow_line(42, 6));
        assert!(!want.check(&seen).ok);
        assert!(out(vec![("states.TIME_WAIT", 0)]).check(&seen).ok);
        assert!(!out(vec![("no_such_field", 0)]).check(&seen).ok);
    }

    #[test]
    fn dns_rows_by_name_type_and_server() {
        let mut seen = Observed::new(42);
        seen.record(&serde_json::json!({
            "type": "dns", "workload": {"cgroup_id": 42, "cgroup_path": "/smoke"},
            "name": "ok.test", "qtype": "A", "server": "127.0.77.53:53",
            "queries": 3, "answers": 3, "rcodes": {"NOERROR": 3},
        }));
        let server = "127.0.77.53:53".parse().unwrap();
        let want = |qtype| {
            Expectation::dns(
                "dns",
                "ok.test",
                qtype,
                server,
                vec![("queries", 3), ("rcodes.NOERROR", 3)],
            )
        };
        assert!(want("A").check(&seen).ok);
        assert!(!want("AAAA").check(&seen).ok);
    }

    #[test]
    fn other_cgroups_and_missing_lines() {
        let mut seen = Observed::new(7);
        seen.record(&flow_line(42, 5));
        let check = out(vec![("connects_ok", 5)]).check(&seen);
        assert!(!check.ok);
        assert!(
            check.detail.contains("reported nothing for cgroup 7"),
            "{}",
            check.detail
        );
    }

    #[test]
    fn cgroup_path_must_match() {
        let mut seen = Observed::new(42);
        seen.record(&flow_line(42, 5));
        let want = [out(vec![])];
        assert!(cgroup_named(&seen, &want, "/smoke").ok);
        assert!(!cgroup_named(&seen, &want, "/other").ok);
    }
}
