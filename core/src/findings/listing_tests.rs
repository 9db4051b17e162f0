//! Listing findings for the outputs: what a pushed window takes as resolved
//! since the previous one.

use super::*;

const S: u64 = 1_000_000_000;

fn candidate(subject: u64, port: u16) -> Verdict {
    Verdict {
        kind: Kind::CloseWait,
        key_subject: subject,
        subject,
        destination: Some(Destination {
            addr: "10.0.1.12".parse().unwrap(),
            port,
            dns_name: None,
        }),
        since_ns: S,
        ended_ns: None,
        severity: Severity::Warning,
        signals: vec!["close_wait_state"],
        facts: vec![],
        affected: vec![],
    }
}

#[test]
fn resolved_since_takes_those_resolved_after_a_cut_newest_first() {
    let mut attributor = crate::workload::Table::default();
    let mut f = Findings::new(FindingsConfig::default());
    f.apply(
        vec![candidate(1, 6379), candidate(2, 5432)],
        2 * S,
        &mut attributor,
    );
    // Subject 2 stops holding at 2 s; CLOSE_WAIT resolves 10 s later.
    f.apply(vec![candidate(1, 6379)], 5 * S, &mut attributor);
    let cut = 6 * S;
    assert_eq!(f.resolved_since(0).count(), 0, "none resolved yet");
    f.apply(vec![candidate(1, 6379)], 12 * S, &mut attributor);
    let resolved: Vec<&Finding> = f.resolved_since(cut).collect();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].subject.cgroup_id, 2);
    assert_eq!(resolved[0].resolved_ns, Some(2 * S), "when it last held");
    // Subject 1 stops at 12 s and resolves at 22 s, after a second cut.
    let cut2 = 13 * S;
    f.apply(vec![], 22 * S, &mut attributor);
    let ids: Vec<u64> = f.resolved_since(cut).map(|r| r.subject.cgroup_id).collect();
    assert_eq!(ids, [1, 2], "newest first");
    let ids: Vec<u64> = f
        .resolved_since(cut2)
        .map(|r| r.subject.cgroup_id)
        .collect();
    assert_eq!(ids, [1], "the earlier one went in the previous window");
    assert!(f.open().is_empty());
    assert_eq!(f.take_changes().len(), 4, "two opened, two resolved");
}
