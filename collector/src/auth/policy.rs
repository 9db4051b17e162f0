//! Who may do what: pushing (only as the node a token was issued on) and
//! querying are separate permissions; an anonymous caller gets what its
//! listener allows. Pure decisions, no I/O: the token has already been
//! reviewed when these run.

use std::{fmt, net::IpAddr};

/// The user a bearer token belongs to, as the TokenReview API answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `system:serviceaccount:<namespace>:<name>` for a ServiceAccount.
    pub username: String,
    pub groups: Vec<String>,
    /// The node the pod holding the token runs on, for a token bound to a
    /// pod (`user.extra["authentication.kubernetes.io/node-name"]`, set by
    /// Kubernetes 1.30 and later).
    pub node: Option<String>,
}

/// Which listener a call came in on: the unix socket is guarded by its
/// file mode, TCP by nothing but credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Tcp,
    Unix,
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Anonymous {
        listener: Listener,
        /// The peer's address (TCP only).
        ip: Option<IpAddr>,
    },
    Authenticated(Identity),
}

impl Caller {
    /// The key that limits and logs count a caller by: a user and its node,
    /// or an anonymous peer by address.
    pub fn key(&self) -> String {
        match self {
            Caller::Anonymous {
                ip: Some(ip),
                listener: _,
            } => format!("anonymous@{ip}"),
            Caller::Anonymous { ip: None, .. } => "anonymous@unix".to_string(),
            Caller::Authenticated(Identity {
                username,
                node: Some(n),
                ..
            }) => format!("{username}@{n}"),
            Caller::Authenticated(id) => id.username.clone(),
        }
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&sockeye_proto::text::escape(&self.key()))
    }
}

/// What a caller without credentials may do on one kind of listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Perms {
    pub push: bool,
    pub read: bool,
}

impl Perms {
    pub const NONE: Perms = Perms {
        push: false,
        read: false,
    };
    pub const ALL: Perms = Perms {
        push: true,
        read: true,
    };

    /// `none`, `read`, `push`, or `read,push`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut p = Perms::NONE;
        for part in s.split(',').map(str::trim) {
            match part {
                "none" if s.trim() == "none" => {}
                "read" => p.read = true,
                "push" => p.push = true,
                _ => return Err(format!("{s:?}: expected none, read, push or read,push")),
            }
        }
        Ok(p)
    }
}

/// A reader: a user name, or every member of a group (`group:NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    User(String),
    Group(String),
}

impl Subject {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s.strip_prefix("group:") {
            Some("") => Err("group: needs a group name, e.g. group:sockeye-readers".into()),
            Some(g) => Ok(Subject::Group(g.to_string())),
            None if s.is_empty() => Err("an empty reader name".into()),
            None => Ok(Subject::User(s.to_string())),
        }
    }

    fn matches(&self, id: &Identity) -> bool {
        match self {
            Subject::User(u) => *u == id.username,
            Subject::Group(g) => id.groups.iter().any(|x| x == g),
        }
    }
}

/// The access rules of a collector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Users whose tokens may push, each only as the node its token was
    /// issued on (the agents' ServiceAccount).
    pub pushers: Vec<String>,
    /// Who may query.
    pub readers: Vec<Subject>,
    /// What callers without a token may do on TCP (default: nothing).
    pub anonymous_tcp: Perms,
    /// ... and on the unix socket, whose file mode (0600) decides who can
    /// connect at all (default: everything).
    pub anonymous_unix: Perms,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            pushers: Vec::new(),
            readers: Vec::new(),
            anonymous_tcp: Perms::NONE,
            anonymous_unix: Perms::ALL,
        }
    }
}

/// A refusal, in words the caller can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied(pub String);

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Policy {
    fn anonymous(&self, listener: Listener) -> Perms {
        match listener {
            Listener::Tcp => self.anonymous_tcp,
            Listener::Unix => self.anonymous_unix,
        }
    }

    /// Whether `caller` may query (QueryTop, ListFindings, GetClusterSnapshot,
    /// WatchWindows).
    pub fn may_read(&self, caller: &Caller) -> Result<(), Denied> {
        match caller {
            Caller::Anonymous { listener, .. } if self.anonymous(*listener).read => Ok(()),
            Caller::Anonymous { .. } => Err(Denied(
                "anonymous queries are refused: present a reader's token (metadata \
                 `authorization: Bearer <token>`; sockeye --token-file, grpcurl -H)"
                    .into(),
            )),
            Caller::Authenticated(id) if self.readers.iter().any(|r| r.matches(id)) => Ok(()),
            Caller::Authenticated(id) => Err(Denied(format!(
                "{} may not query this collector (it is not one of its --reader users or groups)",
                sockeye_proto::text::escape(&id.username)
            ))),
        }
    }

    /// Whether `caller` may open a Push stream at all (before its Hello).
    pub fn may_push(&self, caller: &Caller) -> Result<(), Denied> {
        match caller {
            Caller::Anonymous { listener, .. } if self.anonymous(*listener).push => Ok(()),
            Caller::Anonymous { .. } => Err(Denied(
                "anonymous pushes are refused: an agent presents its ServiceAccount token \
                 (sockeye-agent --collector-token-file)"
                    .into(),
            )),
            Caller::Authenticated(id) if self.pushers.contains(&id.username) => Ok(()),
            Caller::Authenticated(id) => Err(Denied(format!(
                "{} may not push to this collector (it is not one of its --agent-identity users)",
                sockeye_proto::text::escape(&id.username)
            ))),
        }
    }

    /// Whether `caller`, allowed to push, may push as `node` (the node its
    /// Hello names): a token pushes only for the node it was issued on.
    pub fn may_push_as(&self, caller: &Caller, node: &str) -> Result<(), Denied> {
        self.may_push(caller)?;
        let Caller::Authenticated(id) = caller else {
            // Anonymous pushes are trusted by configuration (the unix socket).
            return Ok(());
        };
        match &id.node {
            Some(n) if n == node => Ok(()),
            Some(n) => Err(Denied(format!(
                "a push as node {:?} refused: the token of {} was issued on node {:?}",
                sockeye_proto::text::escape(node),
                sockeye_proto::text::escape(&id.username),
                sockeye_proto::text::escape(n)
            ))),
            None => Err(Denied(format!(
                "a push as node {:?} refused: the token of {} names no node (a token bound to \
                 the agent's pod carries one on Kubernetes 1.30 and later; use a projected \
                 serviceAccountToken volume)",
                sockeye_proto::text::escape(node),
                sockeye_proto::text::escape(&id.username)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENT: &str = "system:serviceaccount:sockeye:sockeye-agent";

    fn agent_on(node: &str) -> Caller {
        Caller::Authenticated(Identity {
            username: AGENT.into(),
            groups: vec!["system:serviceaccounts".into()],
            node: Some(node.into()),
        })
    }

    fn user(name: &str, groups: &[&str]) -> Caller {
        Caller::Authenticated(Identity {
            username: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            node: None,
        })
    }

    fn policy() -> Policy {
        Policy {
            pushers: vec![AGENT.into()],
            readers: vec![
                Subject::parse("system:serviceaccount:ops:reader").unwrap(),
                Subject::parse("group:sre").unwrap(),
            ],
            ..Policy::default()
        }
    }

    #[test]
    fn an_agent_pushes_only_as_its_own_node_and_cannot_read() {
        let p = policy();
        assert!(p.may_push_as(&agent_on("node-a"), "node-a").is_ok());
        let e = p
            .may_push_as(&agent_on("node-a"), "ip-10-0-1-12")
            .unwrap_err();
        assert!(e.0.contains("issued on node \"node-a\""), "{e}");
        assert!(p.may_read(&agent_on("node-a")).is_err());
        // A token without a node (an old cluster, a non-pod token) cannot push.
        let e = p.may_push_as(&user(AGENT, &[]), "node-a").unwrap_err();
        assert!(e.0.contains("names no node"), "{e}");
    }

    #[test]
    fn readers_by_name_or_group_cannot_push() {
        let p = policy();
        assert!(p
            .may_read(&user("system:serviceaccount:ops:reader", &[]))
            .is_ok());
        assert!(p.may_read(&user("alice", &["sre"])).is_ok());
        assert!(p.may_read(&user("mallory", &["dev"])).is_err());
        assert!(p.may_push(&user("alice", &["sre"])).is_err());
    }

    #[test]
    fn anonymous_callers_get_what_their_listener_allows() {
        let p = policy();
        let tcp = Caller::Anonymous {
            listener: Listener::Tcp,
            ip: Some("10.0.0.9".parse().unwrap()),
        };
        let unix = Caller::Anonymous {
            listener: Listener::Unix,
            ip: None,
        };
        assert!(p.may_read(&tcp).is_err());
        assert!(p.may_push_as(&tcp, "node-a").is_err());
        assert!(p.may_read(&unix).is_ok());
        assert!(p.may_push_as(&unix, "any-node").is_ok());
        let open = Policy {
            anonymous_tcp: Perms::parse("read").unwrap(),
            ..policy()
        };
        assert!(open.may_read(&tcp).is_ok());
        assert!(open.may_push(&tcp).is_err());
        assert_eq!(tcp.key(), "anonymous@10.0.0.9");
        assert_eq!(agent_on("n1").key(), format!("{AGENT}@n1"));
    }

    #[test]
    fn perms_and_subjects_parse() {
        assert_eq!(Perms::parse("none").unwrap(), Perms::NONE);
        assert_eq!(Perms::parse("read,push").unwrap(), Perms::ALL);
        assert!(Perms::parse("write").is_err());
        assert!(Perms::parse("none,read").is_err());
        assert_eq!(
            Subject::parse("group:sre").unwrap(),
            Subject::Group("sre".into())
        );
        assert!(Subject::parse("group:").is_err());
    }
}
