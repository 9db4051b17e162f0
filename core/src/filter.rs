//! The API's filter: what `namespace`, `pod`, `container`, `destination`
//! and `node` mean, validated and matched in this one place for the agent,
//! the collector and the CLI, so that one query answers the same from a
//! node and from the cluster.
//!
//! Semantics: empty fields match everything; `namespace` and `node` match
//! by equality; `pod` matches a pod's name, the prefix its controller gives
//! its pods ("web" selects "web-7d9f8b6c5-x2x4q") or the owner's name;
//! `container` matches when the label, container id, pod uid, cgroup path
//! or namespace, pod or container name contains it; `destination` is an
//! IP, `IP:port`, `:port`, or a DNS name (which matches its subdomains:
//! "stripe.com" selects "api.stripe.com"). Values that can never match
//! because they are malformed are refused with a message that says what
//! is wrong, rather than silently matching nothing.

use std::net::{IpAddr, SocketAddr};

use crate::workload::{filter::WorkloadFilter, WorkloadNames};

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

/// The filter's fields as a request carries them ("" for not given).
#[derive(Debug, Clone, Copy, Default)]
pub struct FilterFields<'a> {
    pub namespace: &'a str,
    pub pod: &'a str,
    pub container: &'a str,
    pub destination: &'a str,
    pub node: &'a str,
}

/// What `destination` selects.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Destination {
    #[default]
    Any,
    /// An address and/or port; `None` parts match anything. Addresses are
    /// canonical (a v4-mapped IPv6 address is its IPv4 address), as the
    /// agent reports them.
    Addr {
        ip: Option<IpAddr>,
        port: Option<u16>,
    },
    /// A DNS name: lowercase, no trailing dot.
    Name(String),
}

impl Destination {
    pub fn parse(value: &str) -> Result<Self, FilterError> {
        let bad = |why: &str| FilterError::Destination {
            value: value.to_string(),
            why: why.to_string(),
        };
        if value.is_empty() {
            return Ok(Self::Any);
        }
        // An IPv6 address may start with "::", so try addresses before ":port".
        if let Ok(ip) = value.parse::<IpAddr>() {
            return Ok(Self::Addr {
                ip: Some(ip.to_canonical()),
                port: None,
            });
        }
        if let Some(port) = value.strip_prefix(':') {
            return Ok(Self::Addr {
                ip: None,
                port: Some(parse_port(value, port)?),
            });
        }
        if let Ok(sa) = value.parse::<SocketAddr>() {
            if sa.port() == 0 {
                return Err(bad("port 0 is not a destination port"));
            }
            return Ok(Self::Addr {
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
        parse_dns_name(value).map(Self::Name).map_err(bad)
    }

    fn matches_addr(ip: Option<IpAddr>, port: Option<u16>, got: SocketAddr) -> bool {
        port.is_none_or(|p| p == got.port()) && ip.is_none_or(|ip| ip == got.ip().to_canonical())
    }

    /// A name or one of its subdomains; case and a trailing dot aside.
    fn matches_dns_name(want: &str, name: &str) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name);
        name.eq_ignore_ascii_case(want)
            || name.len() > want.len()
                && name.as_bytes()[name.len() - want.len() - 1] == b'.'
                && name[name.len() - want.len()..].eq_ignore_ascii_case(want)
    }

    /// For rows and traces about a peer (`endpoint`: a TCP remote, a DNS
    /// server, a finding's destination) and, for DNS, the `name` asked: an
    /// address matches the endpoint, a name the name. A row without the
    /// part asked for does not match.
    pub fn matches(&self, endpoint: Option<SocketAddr>, name: Option<&str>) -> bool {
        match self {
            Self::Any => true,
            Self::Addr { ip, port } => endpoint.is_some_and(|e| Self::matches_addr(*ip, *port, e)),
            Self::Name(want) => name.is_some_and(|n| Self::matches_dns_name(want, n)),
        }
    }

    /// For a listener on `local`: the listener that would accept a connect
    /// to the destination, so one on the wildcard address matches any IP.
    pub fn matches_listener(&self, local: Option<SocketAddr>) -> bool {
        match self {
            Self::Addr { ip, port } => local.is_some_and(|l| {
                let ip = if l.ip().is_unspecified() { None } else { *ip };
                Self::matches_addr(ip, *port, l)
            }),
            _ => self.matches(local, None),
        }
    }
}

/// A validated filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    workload: WorkloadFilter,
    destination: Destination,
    node: Option<String>,
}

impl Filter {
    /// Validates a request's filter.
    pub fn parse(f: FilterFields<'_>) -> Result<Self, FilterError> {
        check_k8s_name("namespace", f.namespace, MAX_LABEL_LEN, false)?;
        check_k8s_name("pod", f.pod, MAX_SUBDOMAIN_LEN, true)?;
        check_k8s_name("node", f.node, MAX_SUBDOMAIN_LEN, true)?;
        check_len("container", f.container, MAX_VALUE_LEN)?;
        if f.container.chars().any(char::is_control) {
            return Err(FilterError::ControlChars {
                value: f.container.to_string(),
            });
        }
        check_len("destination", f.destination, MAX_VALUE_LEN)?;
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Ok(Self {
            workload: WorkloadFilter {
                text: some(f.container),
                namespace: some(f.namespace),
                pod: some(f.pod),
            },
            destination: Destination::parse(f.destination.trim())?,
            node: some(f.node),
        })
    }

    pub fn workload(&self) -> &WorkloadFilter {
        &self.workload
    }

    pub fn destination(&self) -> &Destination {
        &self.destination
    }

    pub fn matches_node(&self, node: &str) -> bool {
        self.node.as_deref().is_none_or(|n| n == node)
    }

    /// True when only the node (or nothing) is constrained: every row of a
    /// matching node passes.
    pub fn selects_all_rows(&self) -> bool {
        self.workload == WorkloadFilter::default() && self.destination == Destination::Any
    }

    /// A row without a workload matches only when no workload part is set.
    pub fn matches_workload(&self, w: Option<&WorkloadNames<'_>>) -> bool {
        match w {
            Some(w) => self.workload.matches_names(w),
            None => self.workload == WorkloadFilter::default(),
        }
    }

    /// A finding matches when its subject or any workload that felt it
    /// matches, and the destination part matches its endpoint or the DNS
    /// name it is about; a finding without either does not match a
    /// destination filter.
    pub fn matches_finding<'a>(
        &self,
        subject: Option<&WorkloadNames<'_>>,
        mut affected: impl Iterator<Item = WorkloadNames<'a>>,
        destination: Option<SocketAddr>,
        dns_name: Option<&str>,
    ) -> bool {
        self.destination.matches(destination, dns_name)
            && (self.matches_workload(subject) || affected.any(|w| self.matches_workload(Some(&w))))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(s: &str) -> Result<Destination, FilterError> {
        Filter::parse(FilterFields {
            destination: s,
            ..Default::default()
        })
        .map(|f| f.destination)
    }

    fn sa(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    fn names<'a>(ns: &'a str, pod: &'a str, owner: Option<&'a str>) -> WorkloadNames<'a> {
        WorkloadNames {
            label: format!("{ns}/{pod}/php").into(),
            namespace: Some(ns),
            pod: Some(pod),
            container: Some("php"),
            owner,
            ..Default::default()
        }
    }

    #[test]
    fn destinations_parse() {
        let v4: IpAddr = "10.0.1.12".parse().unwrap();
        let addr = |ip: Option<IpAddr>, port| Destination::Addr { ip, port };
        assert_eq!(dest("").unwrap(), Destination::Any);
        assert_eq!(dest("10.0.1.12").unwrap(), addr(Some(v4), None));
        assert_eq!(dest("10.0.1.12:6379").unwrap(), addr(Some(v4), Some(6379)));
        assert_eq!(dest(" :6379 ").unwrap(), addr(None, Some(6379)));
        assert_eq!(
            dest("[fd00::1]:53").unwrap(),
            addr(Some("fd00::1".parse().unwrap()), Some(53))
        );
        // v4-mapped addresses compare as IPv4, like the agent reports them.
        assert_eq!(dest("::ffff:10.0.1.12").unwrap(), addr(Some(v4), None));
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
    fn names_and_sizes_are_checked() {
        let f = |namespace: &str, pod: &str| {
            Filter::parse(FilterFields {
                namespace,
                pod,
                ..Default::default()
            })
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
        let long = "c".repeat(MAX_VALUE_LEN + 1);
        let e = Filter::parse(FilterFields {
            container: &long,
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            matches!(
                e,
                FilterError::TooLong {
                    field: "container",
                    ..
                }
            ),
            "{e}"
        );
        let e = Filter::parse(FilterFields {
            container: "php\n",
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(
            e,
            FilterError::ControlChars {
                value: "php\n".into()
            }
        );
    }

    #[test]
    fn endpoints_names_and_listeners() {
        let d = dest("10.0.1.12").unwrap();
        assert!(d.matches(sa("10.0.1.12:6379"), None));
        assert!(d.matches(sa("[::ffff:10.0.1.12]:80"), None));
        assert!(!d.matches(sa("10.0.1.13:6379"), None));
        assert!(!d.matches(None, Some("10.0.1.12")), "an address is no name");
        let port = dest(":6379").unwrap();
        assert!(port.matches(sa("10.9.9.9:6379"), None));
        assert!(!port.matches(sa("10.9.9.9:6380"), None));
        // A name matches itself and its subdomains, never an endpoint.
        let n = dest("stripe.com").unwrap();
        assert!(!n.matches(sa("10.0.1.12:443"), None));
        for (name, want) in [
            ("stripe.com", true),
            ("API.stripe.com.", true),
            ("notstripe.com", false),
            ("stripe.com.evil", false),
            ("com", false),
        ] {
            assert_eq!(n.matches(None, Some(name)), want, "{name}");
        }
        // Listeners: the one that would accept a connect there.
        let d = dest("10.0.1.12:6379").unwrap();
        assert!(d.matches_listener(sa("0.0.0.0:6379")));
        assert!(d.matches_listener(sa("[::]:6379")));
        assert!(d.matches_listener(sa("10.0.1.12:6379")));
        assert!(!d.matches_listener(sa("127.0.0.1:6379")));
        assert!(!d.matches_listener(sa("0.0.0.0:6380")));
        assert!(Destination::Any.matches_listener(None));
        assert!(!n.matches_listener(sa("0.0.0.0:443")));
    }

    #[test]
    fn workloads_nodes_and_rows_without_a_workload() {
        let f = Filter::parse(FilterFields {
            namespace: "prod",
            pod: "payments",
            container: "php",
            node: "n1",
            ..Default::default()
        })
        .unwrap();
        assert!(!f.selects_all_rows());
        assert!(f.matches_node("n1") && !f.matches_node("n2"));
        assert!(f.matches_workload(Some(&names("prod", "payments-7d9f8b-x2x4q", None))));
        assert!(f.matches_workload(Some(&names("prod", "pay-0", Some("payments")))));
        assert!(!f.matches_workload(Some(&names("prod", "paymentsx-1", None))));
        assert!(!f.matches_workload(Some(&names("staging", "payments-1", None))));
        assert!(!f.matches_workload(None));
        let node_only = Filter::parse(FilterFields {
            node: "n1",
            ..Default::default()
        })
        .unwrap();
        assert!(node_only.selects_all_rows());
        assert!(node_only.matches_workload(None));
        assert!(Filter::default().matches_node("anything"));
    }

    #[test]
    fn findings_match_by_subject_or_affected_and_destination() {
        let parse = |namespace: &str, destination: &str| {
            Filter::parse(FilterFields {
                namespace,
                destination,
                ..Default::default()
            })
            .unwrap()
        };
        let data = names("data", "redis-0", None);
        let felt = || {
            [
                names("shop", "web-1", None),
                names("billing", "job-1", None),
            ]
            .into_iter()
        };
        let restart =
            |f: &Filter| f.matches_finding(Some(&data), felt(), sa("10.0.1.12:6379"), None);
        assert!(restart(&parse("data", "")));
        assert!(restart(&parse("billing", ":6379")), "billing felt it");
        assert!(!restart(&parse("staging", "")));
        assert!(!restart(&parse("shop", "10.0.1.13")));
        assert!(
            !restart(&parse("", "redis.data.svc")),
            "a name: DNS findings only"
        );
        let nowhere = |f: &Filter| f.matches_finding(Some(&data), felt(), None, None);
        assert!(nowhere(&parse("data", "")));
        assert!(!nowhere(&parse("data", ":6379")), "no destination");
        let dns = |f: &Filter| {
            f.matches_finding(
                Some(&data),
                felt(),
                sa("10.96.0.10:53"),
                Some("api.stripe.com."),
            )
        };
        assert!(dns(&parse("", "API.stripe.com")));
        assert!(dns(&parse("", "stripe.com")), "a parent name");
        assert!(dns(&parse("", "10.96.0.10:53")), "its server");
        assert!(!dns(&parse("", "stripe.org")));
    }
}
