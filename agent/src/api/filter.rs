//! The API's `Filter`, checked once per request: bad values are a clear
//! `InvalidArgument`, never a silent "matches nothing".

use std::net::{IpAddr, SocketAddr};

use sockeye_proto::v1 as pb;
use tonic::Status;

use crate::{
    attribution::{filter::WorkloadFilter, Workload},
    dns::view::{DnsNameView, DnsTotalView},
    findings::Finding,
    snapshot::{FlowView, ListenerView, Snapshot},
};

/// Longest value accepted in a filter field.
const MAX_FIELD: usize = 256;

/// What a `destination` filter names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Ip(IpAddr),
    Socket(SocketAddr),
    Port(u16),
    /// A DNS name: matches DNS rows for it and its subdomains.
    Name(String),
}

impl Destination {
    pub fn parse(s: &str) -> Result<Self, Status> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Self::Ip(ip));
        }
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Ok(Self::Socket(sa));
        }
        if let Some(port) = s.strip_prefix(':') {
            return port.parse().map(Self::Port).map_err(|_| {
                Status::invalid_argument(format!("destination {s:?}: {port:?} is not a port"))
            });
        }
        let name = s.trim_end_matches('.').to_ascii_lowercase();
        let valid = !name.is_empty()
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            });
        if valid {
            Ok(Self::Name(name))
        } else {
            Err(Status::invalid_argument(format!(
                "destination {s:?} is not an IP address, IP:port, :port or DNS name"
            )))
        }
    }

    fn matches(&self, ip: IpAddr, port: u16) -> bool {
        match self {
            Self::Ip(want) => *want == ip,
            Self::Socket(want) => want.ip() == ip && want.port() == port,
            Self::Port(want) => *want == port,
            Self::Name(_) => false,
        }
    }

    fn matches_name(&self, name: &str) -> bool {
        match self {
            Self::Name(want) => {
                name == want
                    || name
                        .strip_suffix(want.as_str())
                        .is_some_and(|rest| rest.ends_with('.'))
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ApiFilter {
    pub workload: WorkloadFilter,
    pub destination: Option<Destination>,
    /// False when the request asked for another node.
    pub this_node: bool,
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
        let Some(f) = f else {
            return Ok(Self {
                this_node: true,
                ..Self::default()
            });
        };
        for (name, value) in [
            ("namespace", &f.namespace),
            ("pod", &f.pod),
            ("container", &f.container),
            ("destination", &f.destination),
            ("node", &f.node),
        ] {
            if value.len() > MAX_FIELD {
                return Err(Status::invalid_argument(format!(
                    "filter {name} is {} bytes long; at most {MAX_FIELD}",
                    value.len()
                )));
            }
        }
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Ok(Self {
            workload: WorkloadFilter {
                text: some(&f.container),
                namespace: some(&f.namespace),
                pod: some(&f.pod),
            },
            destination: some(&f.destination)
                .map(|d| Destination::parse(&d))
                .transpose()?,
            this_node: f.node.is_empty() || f.node == node,
        })
    }

    pub fn workload(&self, w: &Workload) -> bool {
        self.this_node && self.workload.matches(w)
    }

    pub fn flow(&self, f: &FlowView) -> bool {
        self.workload(&f.workload)
            && self
                .destination
                .as_ref()
                .is_none_or(|d| d.matches(f.remote, f.port))
    }

    pub fn listener(&self, l: &ListenerView) -> bool {
        self.workload(&l.workload)
            && self
                .destination
                .as_ref()
                .is_none_or(|d| matches!(d, Destination::Port(p) if *p == l.port))
    }

    pub fn dns_name(&self, n: &DnsNameView) -> bool {
        self.workload(&n.workload)
            && self.destination.as_ref().is_none_or(|d| {
                d.matches(n.server.ip(), n.server.port()) || d.matches_name(&n.name)
            })
    }

    pub fn dns_total(&self, t: &DnsTotalView) -> bool {
        self.workload(&t.workload)
            && self
                .destination
                .as_ref()
                .is_none_or(|d| t.server.is_some_and(|s| d.matches(s.ip(), s.port())))
    }

    /// Whether a trace about `remote` (a peer or DNS server) and `name` (for
    /// DNS) passes the destination part.
    pub fn destination(&self, remote: Option<SocketAddr>, name: Option<&str>) -> bool {
        self.destination.as_ref().is_none_or(|d| {
            remote.is_some_and(|r| d.matches(r.ip(), r.port()))
                || name.is_some_and(|n| d.matches_name(n))
        })
    }

    /// Whether a finding passes: its subject or a workload that felt it
    /// matches, and the destination part names its endpoint (a DNS name
    /// also matches a DNS finding about that name or a subdomain). A
    /// destination filter leaves out findings without a destination.
    pub fn finding(&self, f: &Finding) -> bool {
        let workload = self.workload(&f.subject) || f.affected.iter().any(|w| self.workload(w));
        workload
            && self.destination.as_ref().is_none_or(|want| {
                f.destination.as_ref().is_some_and(|d| {
                    want.matches(d.addr, d.port)
                        || d.dns_name.as_deref().is_some_and(|n| want.matches_name(n))
                })
            })
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
    fn destinations_parse_or_say_why_not() {
        assert_eq!(
            Destination::parse("10.0.1.12").unwrap(),
            Destination::Ip("10.0.1.12".parse().unwrap())
        );
        assert_eq!(
            Destination::parse("10.0.1.12:6379").unwrap(),
            Destination::Socket("10.0.1.12:6379".parse().unwrap())
        );
        assert_eq!(
            Destination::parse("[fd77::1]:53").unwrap(),
            Destination::Socket("[fd77::1]:53".parse().unwrap())
        );
        assert_eq!(
            Destination::parse(":6379").unwrap(),
            Destination::Port(6379)
        );
        assert_eq!(
            Destination::parse("API.Stripe.com.").unwrap(),
            Destination::Name("api.stripe.com".into())
        );
        for bad in [":99999", ":x", "a b", "10.0.0.1:", "a..b", ""] {
            let e = Destination::parse(bad).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn names_match_themselves_and_subdomains() {
        let d = Destination::parse("stripe.com").unwrap();
        assert!(d.matches_name("stripe.com"));
        assert!(d.matches_name("api.stripe.com"));
        assert!(!d.matches_name("notstripe.com"));
    }

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
