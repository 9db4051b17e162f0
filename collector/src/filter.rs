//! The API's filter applied to what agents pushed: the rows of windows'
//! aggregates and findings. What a filter means (its validation, how a
//! workload, an endpoint or a DNS name matches) is `sockeye_core::filter`,
//! read through `sockeye_proto::filter`, the same rules as the agent's, so
//! one query answers the same from a node and from the cluster. This is
//! only the walk over the API's messages.

use sockeye_proto::{filter as api, v1 as pb};

pub use sockeye_proto::filter::{Destination, FilterError};

/// A validated filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter(api::Filter);

impl Filter {
    /// Validates an API filter; `None` matches everything.
    pub fn parse(f: Option<&pb::Filter>) -> Result<Self, FilterError> {
        api::parse(f).map(Self)
    }

    pub fn destination(&self) -> &Destination {
        self.0.destination()
    }

    /// True when only the node (or nothing) is constrained: every row of a
    /// matching node passes.
    pub fn selects_all_rows(&self) -> bool {
        self.0.selects_all_rows()
    }

    pub fn matches_node(&self, node: &str) -> bool {
        self.0.matches_node(node)
    }

    pub fn matches_workload(&self, w: Option<&pb::Workload>) -> bool {
        self.0.matches_workload(w.map(api::names).as_ref())
    }

    /// For rows keyed by an endpoint (TCP remote, DNS server): a name
    /// destination never matches them.
    pub fn matches_endpoint(&self, e: Option<&pb::Endpoint>) -> bool {
        self.destination().matches(api::endpoint(e), None)
    }

    /// DNS rows match a name destination by their name, an address one by
    /// their server.
    pub fn matches_dns(&self, name: &str, server: Option<&pb::Endpoint>) -> bool {
        self.destination()
            .matches(api::endpoint(server), Some(name))
    }

    pub fn matches_finding(&self, f: &pb::Finding) -> bool {
        api::matches_finding(&self.0, f)
    }

    /// The rows of `agg` that match; node-level drop counters are kept
    /// because they affect every row.
    pub fn apply(&self, agg: &pb::Aggregates) -> pb::Aggregates {
        if self.selects_all_rows() {
            return agg.clone();
        }
        let wl = |w: Option<&pb::Workload>| self.matches_workload(w);
        pb::Aggregates {
            tcp_flows: agg
                .tcp_flows
                .iter()
                .filter(|f| wl(f.workload.as_ref()) && self.matches_endpoint(f.remote.as_ref()))
                .cloned()
                .collect(),
            listeners: agg
                .listeners
                .iter()
                .filter(|l| {
                    wl(l.workload.as_ref())
                        && self
                            .destination()
                            .matches_listener(api::endpoint(l.local.as_ref()))
                })
                .cloned()
                .collect(),
            dns_names: agg
                .dns_names
                .iter()
                .filter(|d| wl(d.workload.as_ref()) && self.matches_dns(&d.name, d.server.as_ref()))
                .cloned()
                .collect(),
            dns_totals: agg
                .dns_totals
                .iter()
                .filter(|d| wl(d.workload.as_ref()) && self.matches_endpoint(d.server.as_ref()))
                .cloned()
                .collect(),
            findings: agg
                .findings
                .iter()
                .filter(|f| self.matches_finding(f))
                .cloned()
                .collect(),
            drops: agg.drops.clone(),
        }
    }
}

/// True when `agg` has no rows at all (drop counters aside).
pub fn has_no_rows(agg: &pb::Aggregates) -> bool {
    agg.tcp_flows.is_empty()
        && agg.listeners.is_empty()
        && agg.dns_names.is_empty()
        && agg.dns_totals.is_empty()
        && agg.findings.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(ip: &str, port: u32) -> pb::Endpoint {
        pb::Endpoint {
            ip: ip.into(),
            port,
        }
    }

    /// The walk keeps the rows the core's rules select, row by row kind.
    #[test]
    fn apply_keeps_the_matching_rows_and_the_drops() {
        let f = Filter::parse(Some(&pb::Filter {
            namespace: "prod".into(),
            destination: "10.0.1.12:6379".into(),
            ..Default::default()
        }))
        .unwrap();
        let prod = pb::Workload {
            namespace: "prod".into(),
            ..Default::default()
        };
        let flow = |w: &pb::Workload, ip: &str| pb::TcpFlow {
            workload: Some(w.clone()),
            remote: Some(ep(ip, 6379)),
            ..Default::default()
        };
        let listener = |ip: &str| pb::Listener {
            workload: Some(prod.clone()),
            local: Some(ep(ip, 6379)),
            ..Default::default()
        };
        let agg = pb::Aggregates {
            tcp_flows: vec![
                flow(&prod, "10.0.1.12"),
                flow(&prod, "10.0.1.13"),
                flow(&pb::Workload::default(), "10.0.1.12"),
            ],
            listeners: vec![listener("0.0.0.0"), listener("127.0.0.1")],
            drops: Some(pb::Drops {
                counters: [("kernel_ringbuf_full".to_string(), 3)].into(),
                total: 3,
            }),
            ..Default::default()
        };
        let got = f.apply(&agg);
        assert_eq!(got.tcp_flows, vec![flow(&prod, "10.0.1.12")]);
        assert_eq!(
            got.listeners,
            vec![listener("0.0.0.0")],
            "the wildcard one accepts there"
        );
        assert_eq!(got.drops, agg.drops, "drop counters concern every row");
        assert!(!has_no_rows(&got));
        assert_eq!(Filter::default().apply(&agg), agg);
    }
}
