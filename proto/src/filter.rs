//! The API's `Filter` and `Workload` messages read through
//! [`sockeye_core::filter`], the one meaning of a filter: the agent, the
//! collector and the CLI parse a request's filter here, and the collector
//! matches the messages it stores by the same rules the agent matches its
//! own rows.

use std::net::{IpAddr, SocketAddr};

pub use sockeye_core::filter::{Destination, Filter, FilterError};
use sockeye_core::{filter::FilterFields, workload::WorkloadNames};

use crate::v1;

/// Validates a request's filter; `None` matches everything.
pub fn parse(f: Option<&v1::Filter>) -> Result<Filter, FilterError> {
    let Some(f) = f else {
        return Ok(Filter::default());
    };
    Filter::parse(FilterFields {
        namespace: &f.namespace,
        pod: &f.pod,
        container: &f.container,
        destination: &f.destination,
        node: &f.node,
    })
}

/// A workload message's names, as [`Filter::matches_workload`] reads them.
pub fn names(w: &v1::Workload) -> WorkloadNames<'_> {
    fn some(s: &str) -> Option<&str> {
        (!s.is_empty()).then_some(s)
    }
    WorkloadNames {
        label: w.label.as_str().into(),
        container_id: some(&w.container_id),
        pod_uid: some(&w.pod_uid),
        cgroup_path: some(&w.cgroup_path),
        namespace: some(&w.namespace),
        pod: some(&w.pod),
        container: some(&w.container),
        owner: some(&w.owner_name),
    }
}

/// An endpoint message as an address; `None` when absent or not an IP
/// (an agent's window is input like any other).
pub fn endpoint(e: Option<&v1::Endpoint>) -> Option<SocketAddr> {
    let e = e?;
    let ip: IpAddr = e.ip.parse().ok()?;
    Some(SocketAddr::new(ip, u16::try_from(e.port).ok()?))
}

/// Whether `filter` selects a finding message: by its subject or a
/// workload that felt it, and its destination or DNS name.
pub fn matches_finding(filter: &Filter, f: &v1::Finding) -> bool {
    filter.matches_finding(
        f.subject.as_ref().map(names).as_ref(),
        f.affected.iter().map(names),
        endpoint(f.destination.as_ref()),
        (!f.dns_name.is_empty()).then_some(f.dns_name.as_str()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_matched_by_the_cores_rules() {
        let f = parse(Some(&v1::Filter {
            pod: "payments".into(),
            container: "php".into(),
            destination: "10.0.1.12".into(),
            ..Default::default()
        }))
        .unwrap();
        let w = v1::Workload {
            namespace: "prod".into(),
            pod: "payments-7d9f8b-x2x4q".into(),
            container: "php".into(),
            label: "prod/payments-7d9f8b-x2x4q/php".into(),
            ..Default::default()
        };
        assert!(
            f.matches_workload(Some(&names(&w))),
            "a controller's prefix"
        );
        let owned = v1::Workload {
            pod: "pay-0".into(),
            owner_name: "payments".into(),
            ..w.clone()
        };
        assert!(f.matches_workload(Some(&names(&owned))), "the owner's name");
        let ep = |ip: &str, port| {
            endpoint(Some(&v1::Endpoint {
                ip: ip.into(),
                port,
            }))
        };
        assert!(f.destination().matches(ep("::ffff:10.0.1.12", 80), None));
        assert_eq!(ep("not an ip", 80), None);
        assert_eq!(ep("10.0.1.12", 70000), None, "not a port");
        let finding = v1::Finding {
            subject: Some(v1::Workload::default()),
            affected: vec![w],
            destination: Some(v1::Endpoint {
                ip: "10.0.1.12".into(),
                port: 6379,
            }),
            ..Default::default()
        };
        assert!(matches_finding(&f, &finding), "payments felt it");
        let err = parse(Some(&v1::Filter {
            namespace: "Prod".into(),
            ..Default::default()
        }))
        .unwrap_err();
        assert!(err.to_string().contains("lowercase"), "{err}");
    }
}
