//! The API's `Filter` applied to this node's rows, traces and findings.
//! What a filter means is `sockeye_core::filter` (validated once per
//! request through `sockeye_proto::filter`, as the collector does): bad
//! values are a clear `InvalidArgument`, never a silent "matches nothing".

use std::net::SocketAddr;

use sockeye_proto::{filter as api, v1 as pb};
use tonic::Status;

use crate::{
    attribution::{filter::WorkloadFilter, Workload},
    dns::view::{DnsNameView, DnsTotalView},
    findings::Finding,
    snapshot::{FlowView, ListenerView, Snapshot},
};

#[derive(Debug, Clone, Default)]
pub struct ApiFilter {
    filter: api::Filter,
    /// False when the request asked for another node.
    this_node: bool,
}

impl ApiFilter {
    /// Everything of this node.
    pub fn everything() -> Self {
        Self {
            this_node: true,
            ..Self::default()
        }
    }

    pub fn parse(f: Option<&pb::Filter>, node: &str) -> Result<Self, Status> {
        let filter = api::parse(f).map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Self {
            this_node: filter.matches_node(node),
            filter,
        })
    }

    /// The workload part, for building only the rows asked for.
    pub fn workloads(&self) -> &WorkloadFilter {
        self.filter.workload()
    }

    pub fn workload(&self, w: &Workload) -> bool {
        self.this_node && self.filter.workload().matches(w)
    }

    pub fn flow(&self, f: &FlowView) -> bool {
        self.workload(&f.workload)
            && self.destination(Some(SocketAddr::new(f.remote, f.port)), None)
    }

    pub fn listener(&self, l: &ListenerView) -> bool {
        self.workload(&l.workload)
            && self
                .filter
                .destination()
                .matches_listener(Some(SocketAddr::new(l.addr, l.port)))
    }

    pub fn dns_name(&self, n: &DnsNameView) -> bool {
        self.workload(&n.workload) && self.destination(Some(n.server), Some(&n.name))
    }

    pub fn dns_total(&self, t: &DnsTotalView) -> bool {
        self.workload(&t.workload) && self.destination(t.server, None)
    }

    /// Whether a trace about `remote` (a peer or DNS server) and `name` (for
    /// DNS) passes the destination part.
    pub fn destination(&self, remote: Option<SocketAddr>, name: Option<&str>) -> bool {
        self.filter.destination().matches(remote, name)
    }

    /// Whether a finding passes: its subject or a workload that felt it
    /// matches, and the destination part names its endpoint or the DNS
    /// name it is about.
    pub fn finding(&self, f: &Finding) -> bool {
        let dest = f.destination.as_ref();
        self.this_node
            && self.filter.matches_finding(
                Some(&f.subject.names()),
                f.affected.iter().map(Workload::names),
                dest.map(|d| SocketAddr::new(d.addr, d.port)),
                dest.and_then(|d| d.dns_name.as_deref()),
            )
    }

    /// Keeps the matching parts of a snapshot.
    pub fn apply(&self, mut snap: Snapshot) -> Snapshot {
        snap.flows.retain(|f| self.flow(f));
        snap.listeners.retain(|l| self.listener(l));
        snap.dns_names.retain(|n| self.dns_name(n));
        snap.dns_totals.retain(|t| self.dns_total(t));
        snap.listener_changes.retain(|c| self.workload(&c.workload));
        snap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_fields_are_refused() {
        let f = pb::Filter {
            pod: "p".repeat(300),
            ..Default::default()
        };
        let e = ApiFilter::parse(Some(&f), "n1").unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }

    fn filter(container: &str, destination: &str) -> ApiFilter {
        let f = pb::Filter {
            container: container.into(),
            destination: destination.into(),
            ..Default::default()
        };
        ApiFilter::parse(Some(&f), "n1").unwrap()
    }

    #[test]
    fn findings_match_by_subject_or_affected_and_destination() {
        use crate::api::convert_findings::tests::{close_wait, dns, pod_workload};
        let payments = pod_workload(42, "shop", "payments-7d9f8b", "app");
        let checkout = pod_workload(43, "shop", "checkout-5c4d", "app");
        let mut f = close_wait(payments.clone());
        assert!(filter("", "").finding(&f));
        assert!(filter("payments", "").finding(&f));
        assert!(!filter("checkout", "").finding(&f), "not about checkout");
        f.affected = vec![checkout.clone()];
        assert!(filter("checkout", "").finding(&f), "checkout felt it");
        for (dest, want) in [
            ("10.0.1.12", true),
            ("10.0.1.12:6379", true),
            (":6379", true),
            ("10.0.1.13", false),
            ("10.0.1.12:6380", false),
            (":5432", false),
            ("redis.shop.svc", false),
        ] {
            assert_eq!(filter("payments", dest).finding(&f), want, "{dest}");
        }
        let mut nowhere = f.clone();
        nowhere.destination = None;
        assert!(filter("payments", "").finding(&nowhere));
        assert!(
            !filter("payments", ":6379").finding(&nowhere),
            "no destination"
        );

        let d = dns(payments, "api.stripe.com");
        assert!(filter("", "stripe.com").finding(&d), "a parent name");
        assert!(filter("", "api.stripe.com").finding(&d));
        assert!(filter("", "10.96.0.10:53").finding(&d), "its server");
        assert!(!filter("", "stripe.org").finding(&d));
        let other_node = pb::Filter {
            node: "n2".into(),
            ..Default::default()
        };
        assert!(!ApiFilter::parse(Some(&other_node), "n1")
            .unwrap()
            .finding(&d));
    }

    #[test]
    fn another_nodes_filter_matches_nothing_here() {
        let f = pb::Filter {
            node: "n2".into(),
            ..Default::default()
        };
        let w = Workload {
            cgroup_id: 1,
            cgroup_path: None,
            owner: None,
            pod: None,
        };
        assert!(!ApiFilter::parse(Some(&f), "n1").unwrap().workload(&w));
        assert!(ApiFilter::parse(None, "n1").unwrap().workload(&w));
    }
}
