//! The API's `Filter`, parsed once and applied to windows and aggregates.
//!
//! Semantics (common.proto): empty fields match everything; `namespace`,
//! `pod` and `node` match by equality; `container` matches when the label,
//! container id, pod uid or cgroup path contains it; `destination` is an IP,
//! `IP:port`, `:port`, or a DNS name (DNS rows only). Values that can never
//! match because they are malformed are refused with a message that says
//! what is wrong, rather than silently matching nothing.

use std::net::{IpAddr, SocketAddr};

use sockeye_proto::v1 as pb;

/// Longest accepted filter value (a cgroup path is the longest real one).
const MAX_VALUE_LEN: usize = 1024;
/// Kubernetes limits: namespaces are DNS-1123 labels, pods and nodes
/// DNS-1123 subdomains.
const MAX_LABEL_LEN: usize = 63;
const MAX_SUBDOMAIN_LEN: usize = 253;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("filter.{field} is {len} bytes long; at most {max} are accepted")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("filter.{field} {value:?} is not a Kubernetes name: {why}")]
    NotAName {
        field: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("filter.container {value:?} contains control characters")]
    ControlChars { value: String },
    #[error("filter.destination {value:?}: {why}; expected an IP (10.0.1.12, fd00::1), IP:port (10.0.1.12:6379, [fd00::1]:6379), :port (:6379) or a DNS name")]
    Destination { value: String, why: String },
}

/// What `destination` selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Any,
    /// An address and/or port; `None` parts match anything.
    Addr {
        ip: Option<IpAddr>,
        port: Option<u16>,
    },
    /// A DNS name: lowercase, no trailing dot.
    Name(String),
}

/// A validated filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    namespace: String,
    pod: String,
    container: String,
    destination: Destination,
    node: String,
}

impl Default for Filter {
    fn default() -> Self {
        Self {
            namespace: String::new(),
            pod: String::new(),
            container: String::new(),
            destination: Destination::Any,
            node: String::new(),
        }
    }
}

fn check_len(field: &'static str, v: &str, max: usize) -> Result<(), FilterError> {
    if v.len() > max {
        return Err(FilterError::TooLong {
            field,
            len: v.len(),
            max,
        });
    }
    Ok(())
}

/// DNS-1123: lowercase alphanumerics and '-' (and '.' in a subdomain),
/// starting and ending with an alphanumeric.
fn check_k8s_name(field: &'static str, v: &str, max: usize, dots: bool) -> Result<(), FilterError> {
    if v.is_empty() {
        return Ok(());
    }
    check_len(field, v, max)?;
    let bad = |why| FilterError::NotAName {
        field,
        value: v.to_string(),
        why,
    };
    let allowed =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (dots && c == '.');
    if !v.chars().all(allowed) {
        return Err(bad(if dots {
            "only lowercase letters, digits, '-' and '.' are allowed"
        } else {
            "only lowercase letters, digits and '-' are allowed"
        }));
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge_ok(v.chars().next()) || !edge_ok(v.chars().last()) {
        return Err(bad("it must start and end with a letter or digit"));
    }
    Ok(())
}

fn parse_port(value: &str, port: &str) -> Result<u16, FilterError> {
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(FilterError::Destination {
            value: value.to_string(),
            why: format!("port {port:?} is not a number from 1 to 65535"),
        }),
        Ok(p) => Ok(p),
    }
}

fn parse_destination(value: &str) -> Result<Destination, FilterError> {
    let bad = |why: &str| FilterError::Destination {
        value: value.to_string(),
        why: why.to_string(),
    };
    if value.is_empty() {
        return Ok(Destination::Any);
    }
    // An IPv6 address may start with "::", so try addresses before ":port".
    if let Ok(ip) = value.parse::<IpAddr>() {
        return Ok(Destination::Addr {
            ip: Some(ip.to_canonical()),
            port: None,
        });
    }
    if let Some(port) = value.strip_prefix(':') {
        return Ok(Destination::Addr {
            ip: None,
            port: Some(parse_port(value, port)?),
        });
    }
    if let Ok(sa) = value.parse::<SocketAddr>() {
        if sa.port() == 0 {
            return Err(bad("port 0 is not a destination port"));
        }
        return Ok(Destination::Addr {
            ip: Some(sa.ip().to_canonical()),
            port: Some(sa.port()),
        });
    }
    if value.contains(':') || value.starts_with('[') {
        // Meant as an address but not one: say which part is wrong.
        if let Some((host, port)) = value.rsplit_once(':') {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.parse::<IpAddr>().is_ok() {
                parse_port(value, port)?;
            }
        }
        return Err(bad("not a valid IP address or IP:port"));
    }
    parse_dns_name(value).map(Destination::Name).map_err(bad)
}

fn parse_dns_name(value: &str) -> Result<String, &'static str> {
    let name = value
        .strip_suffix('.')
        .unwrap_or(value)
        .to_ascii_lowercase();
    if name.len() > MAX_SUBDOMAIN_LEN {
        return Err("a DNS name has at most 253 characters");
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels
        .iter()
        .any(|l| l.is_empty() || l.len() > MAX_LABEL_LEN)
    {
        return Err("every label of a DNS name has 1 to 63 characters");
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if !name.chars().all(|c| allowed(c) || c == '.') {
        return Err("a DNS name has only letters, digits, '-', '_' and '.'");
    }
    if labels.iter().all(|l| l.chars().all(|c| c.is_ascii_digit())) {
        return Err("looks like an IPv4 address but is not one");
    }
    Ok(name)
}

fn endpoint_matches(ip: Option<IpAddr>, port: Option<u16>, e: Option<&pb::Endpoint>) -> bool {
    let Some(e) = e else {
        return false;
    };
    if let Some(p) = port {
        if e.port != u32::from(p) {
            return false;
        }
    }
    match ip {
        None => true,
        Some(ip) => {
            e.ip.parse::<IpAddr>()
                .is_ok_and(|got| got.to_canonical() == ip)
        }
    }
}

impl Filter {
    /// Validates an API filter; `None` matches everything.
    pub fn parse(f: Option<&pb::Filter>) -> Result<Self, FilterError> {
        let Some(f) = f else {
            return Ok(Self::default());
        };
        check_k8s_name("namespace", &f.namespace, MAX_LABEL_LEN, false)?;
        check_k8s_name("pod", &f.pod, MAX_SUBDOMAIN_LEN, true)?;
        check_k8s_name("node", &f.node, MAX_SUBDOMAIN_LEN, true)?;
        check_len("container", &f.container, MAX_VALUE_LEN)?;
        if f.container.chars().any(char::is_control) {
            return Err(FilterError::ControlChars {
                value: f.container.clone(),
            });
        }
        check_len("destination", &f.destination, MAX_VALUE_LEN)?;
        Ok(Self {
            namespace: f.namespace.clone(),
            pod: f.pod.clone(),
            container: f.container.clone(),
            destination: parse_destination(f.destination.trim())?,
            node: f.node.clone(),
        })
    }

    pub fn destination(&self) -> &Destination {
        &self.destination
    }

    /// True when only the node (or nothing) is constrained: every row of a
    /// matching node passes.
    pub fn selects_all_rows(&self) -> bool {
        self.namespace.is_empty()
            && self.pod.is_empty()
            && self.container.is_empty()
            && self.destination == Destination::Any
    }

    pub fn matches_node(&self, node: &str) -> bool {
        self.node.is_empty() || self.node == node
    }

    pub fn matches_workload(&self, w: Option<&pb::Workload>) -> bool {
        if self.namespace.is_empty() && self.pod.is_empty() && self.container.is_empty() {
            return true;
        }
        let Some(w) = w else {
            return false;
        };
        (self.namespace.is_empty() || w.namespace == self.namespace)
            && (self.pod.is_empty() || w.pod == self.pod)
            && (self.container.is_empty()
                || [&w.label, &w.container_id, &w.pod_uid, &w.cgroup_path]
                    .iter()
                    .any(|s| s.contains(&self.container)))
    }

    /// For rows keyed by an endpoint (TCP remote, listener, DNS server):
    /// a name destination never matches them.
    pub fn matches_endpoint(&self, e: Option<&pb::Endpoint>) -> bool {
        match &self.destination {
            Destination::Any => true,
            Destination::Addr { ip, port } => endpoint_matches(*ip, *port, e),
            Destination::Name(_) => false,
        }
    }

    /// DNS rows match a name destination by their name, an address one by
    /// their server.
    pub fn matches_dns(&self, name: &str, server: Option<&pb::Endpoint>) -> bool {
        match &self.destination {
            Destination::Name(want) => name
                .strip_suffix('.')
                .unwrap_or(name)
                .eq_ignore_ascii_case(want),
            _ => self.matches_endpoint(server),
        }
    }

    /// A finding matches when its subject or any workload that felt it
    /// matches, and its destination does: an address by the finding's
    /// endpoint, a DNS name by the name a DNS finding is about.
    pub fn matches_finding(&self, f: &pb::Finding) -> bool {
        let workload = self.matches_workload(f.subject.as_ref())
            || f.affected.iter().any(|w| self.matches_workload(Some(w)));
        let destination = match &self.destination {
            Destination::Any => true,
            Destination::Addr { ip, port } => endpoint_matches(*ip, *port, f.destination.as_ref()),
            Destination::Name(_) => !f.dns_name.is_empty() && self.matches_dns(&f.dns_name, None),
        };
        workload && destination
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
                .filter(|l| wl(l.workload.as_ref()) && self.matches_endpoint(l.local.as_ref()))
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

    fn dest(s: &str) -> Result<Destination, FilterError> {
        Filter::parse(Some(&pb::Filter {
            destination: s.into(),
            ..Default::default()
        }))
        .map(|f| f.destination)
    }

    fn ep(ip: &str, port: u32) -> pb::Endpoint {
        pb::Endpoint {
            ip: ip.into(),
            port,
        }
    }

    #[test]
    fn destinations_parse() {
        let v4: IpAddr = "10.0.1.12".parse().unwrap();
        assert_eq!(dest("").unwrap(), Destination::Any);
        assert_eq!(
            dest("10.0.1.12").unwrap(),
            Destination::Addr {
                ip: Some(v4),
                port: None
            }
        );
        assert_eq!(
            dest("10.0.1.12:6379").unwrap(),
            Destination::Addr {
                ip: Some(v4),
                port: Some(6379)
            }
        );
        assert_eq!(
            dest(":6379").unwrap(),
            Destination::Addr {
                ip: None,
                port: Some(6379)
            }
        );
        assert_eq!(
            dest("[fd00::1]:53").unwrap(),
            Destination::Addr {
                ip: Some("fd00::1".parse().unwrap()),
                port: Some(53)
            }
        );
        // v4-mapped addresses compare as IPv4, like the agent reports them.
        assert_eq!(
            dest("::ffff:10.0.1.12").unwrap(),
            Destination::Addr {
                ip: Some(v4),
                port: None
            }
        );
        assert_eq!(
            dest("API.Stripe.com.").unwrap(),
            Destination::Name("api.stripe.com".into())
        );
    }

    #[test]
    fn malformed_destinations_say_why() {
        for (bad, why) in [
            ("10.0.1.12:99999", "port \"99999\""),
            (":0", "port \"0\""),
            (":http", "port \"http\""),
            ("10.0.1.300", "looks like an IPv4"),
            ("10.0.1.12:", "port \"\""),
            ("[fd00::1", "not a valid IP"),
            ("bad name!", "only letters"),
            ("a..b", "1 to 63"),
        ] {
            let err = dest(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
            assert!(err.contains("expected an IP"), "{bad}: {err}");
        }
    }

    #[test]
    fn names_are_checked() {
        let f = |ns: &str, pod: &str| {
            Filter::parse(Some(&pb::Filter {
                namespace: ns.into(),
                pod: pod.into(),
                ..Default::default()
            }))
        };
        assert!(f("prod", "payments-7d9f8b-x2x.a").is_ok());
        assert!(f("Prod", "").unwrap_err().to_string().contains("lowercase"));
        assert!(f("prod.eu", "").is_err());
        assert!(f("-prod", "")
            .unwrap_err()
            .to_string()
            .contains("start and end"));
        assert!(f("", "pay/ments").is_err());
        assert!(f(&"a".repeat(64), "")
            .unwrap_err()
            .to_string()
            .contains("at most 63"));
    }

    #[test]
    fn workload_and_endpoint_matching() {
        let f = Filter::parse(Some(&pb::Filter {
            namespace: "prod".into(),
            container: "php".into(),
            destination: "10.0.1.12".into(),
            ..Default::default()
        }))
        .unwrap();
        let w = pb::Workload {
            namespace: "prod".into(),
            pod: "payments-1".into(),
            label: "prod/payments-1/php".into(),
            ..Default::default()
        };
        assert!(f.matches_workload(Some(&w)));
        assert!(!f.matches_workload(None));
        let other_ns = pb::Workload {
            namespace: "staging".into(),
            ..w.clone()
        };
        assert!(!f.matches_workload(Some(&other_ns)));
        assert!(f.matches_endpoint(Some(&ep("10.0.1.12", 6379))));
        assert!(f.matches_endpoint(Some(&ep("::ffff:10.0.1.12", 80))));
        assert!(!f.matches_endpoint(Some(&ep("10.0.1.13", 6379))));
        assert!(!f.matches_endpoint(None));
        // A name destination never matches an endpoint row, only DNS names.
        let n = Filter::parse(Some(&pb::Filter {
            destination: "api.stripe.com".into(),
            ..Default::default()
        }))
        .unwrap();
        assert!(!n.matches_endpoint(Some(&ep("10.0.1.12", 443))));
        assert!(n.matches_dns("API.stripe.com.", None));
        assert!(!n.matches_dns("stripe.com", None));
    }

    #[test]
    fn findings_match_by_subject_or_affected_and_destination() {
        let parse = |ns: &str, dest: &str| {
            Filter::parse(Some(&pb::Filter {
                namespace: ns.into(),
                destination: dest.into(),
                ..Default::default()
            }))
            .unwrap()
        };
        let in_ns = |ns: &str| pb::Workload {
            namespace: ns.into(),
            ..Default::default()
        };
        let restart = pb::Finding {
            subject: Some(in_ns("data")),
            affected: vec![in_ns("shop"), in_ns("billing")],
            destination: Some(ep("10.0.1.12", 6379)),
            ..Default::default()
        };
        assert!(parse("data", "").matches_finding(&restart));
        assert!(parse("billing", ":6379").matches_finding(&restart));
        assert!(!parse("staging", "").matches_finding(&restart));
        assert!(!parse("shop", "10.0.1.13").matches_finding(&restart));
        // A name matches the DNS findings about it, nothing else.
        assert!(!parse("", "api.stripe.com").matches_finding(&restart));
        let dns = pb::Finding {
            dns_name: "api.stripe.com.".into(),
            destination: Some(ep("10.96.0.10", 53)),
            ..Default::default()
        };
        assert!(parse("", "API.stripe.com").matches_finding(&dns));
        assert!(parse("", "10.96.0.10:53").matches_finding(&dns));
        assert!(!parse("", "stripe.com").matches_finding(&dns));
    }
}
