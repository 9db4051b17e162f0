//! One finding's change as an `events.k8s.io/v1` Event on its pod, and the
//! API calls that write it (create, or a merge patch of `series` for a
//! repeat).

use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    api::{Patch, PatchParams, PostParams},
    Api, Client,
};
use sockeye_proto::v1 as pb;

use super::{
    series::SeriesKey,
    track::{Change, Transition},
};

/// `reportingController` of every Event the collector writes.
pub const REPORTING_CONTROLLER: &str = "sockeye.dev/collector";
/// The API server refuses longer notes.
const NOTE_MAX_BYTES: usize = 1024;
/// Names are at most 253 characters; the suffix takes up to 17.
const NAME_POD_PART: usize = 230;

/// `SockeyeConnectionLeak` for `connection_leak`: CamelCase of the kind,
/// so `kubectl get events --field-selector reason=...` can pick one kind.
pub fn reason(kind: &str) -> String {
    let mut out = String::from("Sockeye");
    for part in kind.split(|c: char| !c.is_ascii_alphanumeric()) {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.push(first.to_ascii_uppercase());
            out.extend(chars);
        }
    }
    if out.len() == "Sockeye".len() {
        out.push_str("Finding");
    }
    out.truncate(128);
    out
}

/// What is written for one change: the Event, and the series it belongs to.
#[derive(Debug, Clone)]
pub struct Planned {
    pub key: SeriesKey,
    pub event: Event,
}

/// The Event for `t`, or `None` when the finding is not about a pod (a
/// host process, a node-wide DNS server): there is nothing to describe.
pub fn plan(t: &Transition, instance: &str, name: String) -> Option<Planned> {
    let f = &t.finding;
    let w = f.subject.as_ref()?;
    if w.namespace.is_empty() || w.pod.is_empty() {
        return None;
    }
    let (action, type_, prefix) = match t.change {
        Change::Opened => ("Opened", "Warning", ""),
        Change::Resolved { inferred: false } => ("Resolved", "Normal", "Resolved: "),
        Change::Resolved { inferred: true } => (
            "Resolved",
            "Normal",
            "Resolved (no longer reported by its node): ",
        ),
    };
    let key = SeriesKey {
        namespace: w.namespace.clone(),
        pod: w.pod.clone(),
        pod_uid: w.pod_uid.clone(),
        reason: reason(&f.kind),
        action: action.to_string(),
    };
    let event = Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(w.namespace.clone()),
            ..ObjectMeta::default()
        },
        event_time: Some(micro(t.at_unix_ms)),
        regarding: Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(w.namespace.clone()),
            name: Some(w.pod.clone()),
            uid: Some(w.pod_uid.clone()).filter(|u| !u.is_empty()),
            ..ObjectReference::default()
        }),
        reason: Some(key.reason.clone()),
        action: Some(action.into()),
        type_: Some(type_.into()),
        note: Some(note(prefix, f)),
        reporting_controller: Some(REPORTING_CONTROLLER.into()),
        reporting_instance: Some(instance.chars().take(128).collect()),
        ..Event::default()
    };
    Some(Planned { key, event })
}

/// The summary, escaped (it carries process and pod names that `kubectl`
/// prints to a terminal as they are), cut to what the API server takes.
fn note(prefix: &str, f: &pb::Finding) -> String {
    let mut s = format!("{prefix}{}", sockeye_proto::text::escape(&f.summary));
    if s.len() > NOTE_MAX_BYTES {
        let mut cut = NOTE_MAX_BYTES - 3;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// A unique Event name on the pod, as client-go makes them.
pub fn event_name(pod: &str, unique: u128) -> String {
    let pod: String = pod.chars().take(NAME_POD_PART).collect();
    format!("{pod}.{unique:x}")
}

pub fn micro(unix_ms: i64) -> MicroTime {
    MicroTime(Timestamp::from_millisecond(unix_ms).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// Writes Events with the collector's kube client.
#[derive(Clone)]
pub struct Writer {
    client: Client,
}

/// How a series update went.
pub enum Patched {
    Yes,
    /// The Event is gone (expired, deleted): write a new one.
    Gone,
}

impl Writer {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    pub async fn create(&self, e: &Event) -> Result<(), kube::Error> {
        let ns = e.metadata.namespace.as_deref().unwrap_or_default();
        Api::<Event>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), e)
            .await
            .map(drop)
    }

    pub async fn patch_series(
        &self,
        namespace: &str,
        name: &str,
        count: i32,
        last_unix_ms: i64,
    ) -> Result<Patched, kube::Error> {
        let patch = serde_json::json!({
            "series": {"count": count, "lastObservedTime": micro(last_unix_ms)},
        });
        let r = Api::<Event>::namespaced(self.client.clone(), namespace)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        match r {
            Ok(_) => Ok(Patched::Yes),
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(Patched::Gone),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_camel_case_kinds() {
        assert_eq!(reason("connection_leak"), "SockeyeConnectionLeak");
        assert_eq!(
            reason("connect_resource_exhaustion"),
            "SockeyeConnectResourceExhaustion"
        );
        assert_eq!(reason(""), "SockeyeFinding");
        assert_eq!(reason("weird kind!\u{1b}"), "SockeyeWeirdKind");
    }

    #[test]
    fn findings_without_a_pod_get_no_event_and_notes_are_bounded() {
        let mut f = pb::Finding {
            summary: "x\u{1b}[31m".repeat(400),
            subject: Some(pb::Workload {
                label: "host".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let t = |f: &pb::Finding| Transition {
            change: Change::Opened,
            finding: f.clone(),
            at_unix_ms: 1,
        };
        assert!(plan(&t(&f), "i", "n".into()).is_none());
        f.subject = Some(pb::Workload {
            namespace: "prod".into(),
            pod: "web-1".into(),
            ..Default::default()
        });
        let p = plan(&t(&f), "i", "n".into()).expect("a pod");
        let note = p.event.note.unwrap();
        assert!(note.len() <= NOTE_MAX_BYTES && note.ends_with("..."));
        assert!(!note.contains('\u{1b}'));
        assert_eq!(p.event.regarding.unwrap().uid, None);
    }
}
