//! Findings as `sockeye.v1.Finding` messages: monotonic times become Unix
//! milliseconds, workloads the API's workloads.

use sockeye_proto::v1 as pb;

use super::convert;
use crate::findings::{Evidence, Finding};

/// Converts monotonic timestamps to Unix time, with the offset taken once
/// (at agent start), so a finding's times read the same in every reply.
#[derive(Debug, Clone, Copy)]
pub struct UnixClock {
    /// Add to a monotonic ns timestamp to get Unix ns.
    pub offset_ns: i64,
}

impl UnixClock {
    pub fn now() -> Self {
        Self {
            offset_ns: crate::clock::monotonic_to_unix_offset_ns(),
        }
    }

    /// Unix ms of a monotonic ns timestamp; 0 stays 0 ("not known").
    pub fn unix_ms(&self, mono_ns: u64) -> i64 {
        if mono_ns == 0 {
            return 0;
        }
        i64::try_from(mono_ns)
            .unwrap_or(i64::MAX)
            .saturating_add(self.offset_ns)
            / 1_000_000
    }
}

pub fn evidence(e: &Evidence, clock: UnixClock) -> pb::Evidence {
    pb::Evidence {
        fact: e.fact.clone(),
        value: e.value,
        unit: e.unit.to_string(),
        at_unix_ms: clock.unix_ms(e.at_ns),
        key: e.key.to_string(),
        about: e.about.clone().unwrap_or_default(),
    }
}

pub fn finding(f: &Finding, node: &str, clock: UnixClock) -> pb::Finding {
    let dest = f.destination.as_ref();
    pb::Finding {
        id: f.id.clone(),
        kind: f.kind.name().to_string(),
        subject: Some(convert::workload(&f.subject, node)),
        destination: dest.map(|d| convert::endpoint(d.addr, d.port)),
        since_unix_ms: clock.unix_ms(f.since_ns),
        resolved_unix_ms: f.resolved_ns.map_or(0, |ns| clock.unix_ms(ns)),
        severity: f.severity.name().to_string(),
        confidence: f.confidence.name().to_string(),
        summary: f.summary.clone(),
        evidence: f.evidence.iter().map(|e| evidence(e, clock)).collect(),
        next_step: f.next_step.clone(),
        node: node.to_string(),
        corroborating_signals: f.signals.len() as u32,
        signals: f.signals.iter().map(|s| s.to_string()).collect(),
        dns_name: dest.and_then(|d| d.dns_name.clone()).unwrap_or_default(),
        affected: f
            .affected
            .iter()
            .map(|w| convert::workload(w, node))
            .collect(),
        updated_unix_ms: clock.unix_ms(f.updated_ns),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{
        attribution::{
            container::{Owner, Runtime},
            pod_meta::{MetaSource, PodMeta, WorkloadRef},
            Workload,
        },
        findings::{Confidence, Destination, Kind, Severity},
    };

    const S: u64 = 1_000_000_000;

    pub fn pod_workload(cgroup_id: u64, ns: &str, pod: &str, container: &str) -> Workload {
        Workload {
            cgroup_id,
            cgroup_path: Some(format!("/kubepods.slice/{pod}/{container}")),
            owner: Some(Owner::Container {
                runtime: Runtime::Containerd,
                id: format!("{cgroup_id:016x}"),
                pod_uid: Some(format!("uid-{pod}")),
            }),
            pod: Some(PodMeta {
                namespace: ns.into(),
                name: pod.into(),
                uid: Some(format!("uid-{pod}")),
                container: Some(container.into()),
                workload: pod.rsplit_once('-').map(|(name, _)| WorkloadRef {
                    kind: "Deployment".into(),
                    name: name.into(),
                }),
                labels: BTreeMap::new(),
                source: MetaSource::KubeApi,
            }),
        }
    }

    /// A CLOSE_WAIT finding of `subject` towards 10.0.1.12:6379, opened at
    /// 100 s (problem since 70 s), still open.
    pub fn close_wait(subject: Workload) -> Finding {
        Finding {
            id: format!("close_wait/{}/10.0.1.12:6379/70000", subject.cgroup_id),
            kind: Kind::CloseWait,
            subject,
            destination: Some(Destination {
                addr: "10.0.1.12".parse().unwrap(),
                port: 6379,
                dns_name: None,
            }),
            since_ns: 70 * S,
            resolved_ns: None,
            updated_ns: 100 * S,
            severity: Severity::Critical,
            confidence: Confidence::High,
            signals: vec!["close_wait_state", "waited", "many"],
            summary: "shop/payments-7d9f8b/app holds 212 sockets in CLOSE_WAIT to 10.0.1.12:6379"
                .into(),
            evidence: vec![
                Evidence {
                    key: "close_wait_sockets",
                    fact: "212 sockets in CLOSE_WAIT".into(),
                    value: 212.0,
                    unit: "sockets",
                    at_ns: 100 * S,
                    about: None,
                },
                Evidence {
                    key: "longest_wait_s",
                    fact: "oldest waiting 31 min".into(),
                    value: 1860.0,
                    unit: "s",
                    at_ns: 70 * S,
                    about: None,
                },
            ],
            next_step: "check where payments closes its Redis connections".into(),
            affected: vec![],
        }
    }

    /// A DNS finding of `subject` about `name` at server 10.96.0.10:53.
    pub fn dns(subject: Workload, name: &str) -> Finding {
        Finding {
            id: format!("dns_degradation/{}/{name}", subject.cgroup_id),
            kind: Kind::DnsDegradation,
            destination: Some(Destination {
                addr: "10.96.0.10".parse().unwrap(),
                port: 53,
                dns_name: Some(name.into()),
            }),
            severity: Severity::Warning,
            confidence: Confidence::Medium,
            signals: vec!["slow", "several_clients"],
            summary: format!("DNS answers for {name} take 1.2 s (p90)"),
            next_step: "check the DNS server's upstream".into(),
            ..close_wait(subject)
        }
    }

    #[test]
    fn times_become_unix_ms_and_everything_is_carried() {
        let w = pod_workload(42, "shop", "payments-7d9f8b", "app");
        let mut f = close_wait(w);
        f.affected = vec![pod_workload(43, "shop", "checkout-5c4d", "app")];
        f.resolved_ns = Some(130 * S);
        // Unix time 1_700_000_000 s at monotonic 0.
        let clock = UnixClock {
            offset_ns: 1_700_000_000 * S as i64,
        };
        let m = finding(&f, "node-a", clock);
        assert_eq!(m.kind, "close_wait");
        assert_eq!(m.since_unix_ms, 1_700_000_070_000);
        assert_eq!(m.updated_unix_ms, 1_700_000_100_000);
        assert_eq!(m.resolved_unix_ms, 1_700_000_130_000);
        assert_eq!(
            (m.severity.as_str(), m.confidence.as_str()),
            ("critical", "high")
        );
        assert_eq!(m.corroborating_signals, 3);
        assert_eq!(m.node, "node-a");
        let subject = m.subject.as_ref().unwrap();
        assert_eq!(
            (
                subject.namespace.as_str(),
                subject.pod.as_str(),
                subject.node.as_str()
            ),
            ("shop", "payments-7d9f8b", "node-a")
        );
        assert_eq!(subject.owner_name, "payments");
        let dest = m.destination.as_ref().unwrap();
        assert_eq!((dest.ip.as_str(), dest.port), ("10.0.1.12", 6379));
        assert_eq!(m.dns_name, "");
        assert_eq!(m.evidence.len(), 2);
        assert_eq!(m.evidence[0].fact, "212 sockets in CLOSE_WAIT");
        assert_eq!(
            (m.evidence[0].value, m.evidence[0].unit.as_str()),
            (212.0, "sockets")
        );
        assert_eq!(m.evidence[1].at_unix_ms, 1_700_000_070_000);
        assert_eq!(m.affected.len(), 1);
        assert_eq!(m.affected[0].cgroup_id, 43);
        assert_eq!(m.next_step, f.next_step);
        assert_eq!(m.id, f.id);
    }

    #[test]
    fn open_findings_have_no_resolved_time_and_dns_ones_their_name() {
        let clock = UnixClock { offset_ns: 0 };
        let m = finding(
            &dns(pod_workload(7, "a", "b-1", "c"), "api.stripe.com"),
            "n",
            clock,
        );
        assert_eq!(m.resolved_unix_ms, 0);
        assert_eq!(m.dns_name, "api.stripe.com");
        assert_eq!(m.destination.unwrap().port, 53);
        let mut f = dns(pod_workload(7, "a", "b-1", "c"), "x.test");
        f.destination = None;
        assert!(finding(&f, "n", clock).destination.is_none());
    }
}
