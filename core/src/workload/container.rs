//! Classifies a cgroup v2 path as host, Kubernetes pod or container (pure parsing, no I/O).

use std::fmt;

/// Container runtime that owns a cgroup, as far as the path tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Containerd,
    Crio,
    Docker,
    Podman,
}

impl Runtime {
    /// Same spelling as the serde form, so labels and JSON agree.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd",
            Runtime::Crio => "crio",
            Runtime::Docker => "docker",
            Runtime::Podman => "podman",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a cgroup belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Owner {
    /// A process that is in no container or pod cgroup (system services, ssh sessions, the root cgroup).
    Host,
    /// A container; pod_uid is set when the container belongs to a Kubernetes pod.
    Container {
        runtime: Runtime,
        id: String,
        pod_uid: Option<String>,
    },
    /// Inside a pod's cgroup but not in a recognised container leaf (e.g. the pod slice itself).
    Pod { pod_uid: String },
}

impl Owner {
    /// Short human label: "host", "containerd:0123456789ab" (first 12 chars of id), "pod:<uid>".
    pub fn label(&self) -> String {
        match self {
            Owner::Host => "host".to_string(),
            Owner::Container { runtime, id, .. } => {
                let short: String = id.chars().take(12).collect();
                format!("{runtime}:{short}")
            }
            Owner::Pod { pod_uid } => format!("pod:{pod_uid}"),
        }
    }

    /// "containerd", "crio", "docker", "podman"; "host" for the host and
    /// "" for a pod's own cgroup (no container runtime is named there).
    pub fn runtime_name(&self) -> &'static str {
        match self {
            Owner::Host => "host",
            Owner::Container { runtime, .. } => runtime.as_str(),
            Owner::Pod { .. } => "",
        }
    }

    pub fn container_id(&self) -> Option<&str> {
        match self {
            Owner::Container { id, .. } => Some(id),
            _ => None,
        }
    }

    pub fn pod_uid(&self) -> Option<&str> {
        match self {
            Owner::Container { pod_uid, .. } => pod_uid.as_deref(),
            Owner::Pod { pod_uid } => Some(pod_uid),
            Owner::Host => None,
        }
    }
}

/// Longest host cgroup name shown (a path set by hand can be long).
const HOST_NAME_MAX: usize = 64;

/// A host cgroup's systemd unit or slice ("postgresql@15-main.service",
/// "session-3.scope", "user-1000.slice"), if systemd made it. Metrics name
/// host series by this alone: a path some other manager made may carry
/// ids, which are no label.
pub fn systemd_unit(path: &str) -> Option<&str> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    components
        .iter()
        .rev()
        .find(|c| c.ends_with(".service") || c.ends_with(".scope"))
        .or_else(|| components.last().filter(|c| c.ends_with(".slice")))
        .copied()
}

/// What names a cgroup that is no container or pod: its systemd unit
/// ("postgresql@15-main.service", "session-3.scope"), else its slice
/// ("user-1000.slice"), else the path itself for cgroups other managers
/// made ("sockeye-test/redis"); None for the root cgroup.
pub fn host_name(path: &str) -> Option<String> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let name = match systemd_unit(path) {
        Some(u) => u.to_string(),
        None if components.is_empty() => return None,
        None => components.join("/"),
    };
    Some(name.chars().take(HOST_NAME_MAX).collect())
}

/// Prefixes of runtime-named cgroups. Conmon prefixes come before the plain ones because
/// "crio-" would otherwise swallow "crio-conmon-<id>" and then fail the hex check.
const PREFIXES: &[(&str, Runtime)] = &[
    ("cri-containerd-", Runtime::Containerd),
    ("crio-conmon-", Runtime::Crio),
    ("crio-", Runtime::Crio),
    ("docker-", Runtime::Docker),
    ("libpod-conmon-", Runtime::Podman),
    ("libpod-", Runtime::Podman),
];

/// `path` is relative to the cgroup v2 mount and starts with '/', e.g. "/kubepods.slice/...".
pub fn classify(path: &str) -> Owner {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    // A ".." can only come from a forged or mangled path; trusting it could attribute
    // traffic to a pod the process is not in.
    if components.contains(&"..") {
        return Owner::Host;
    }

    // Walk outermost to innermost so nested setups (kind nodes, docker-in-docker, systemd
    // inside a container) end up attributed to the innermost recognised component.
    let mut in_kubepods = false;
    let mut pod: Option<String> = None;
    let mut container: Option<(Runtime, String, Option<String>)> = None;
    let mut parent_is_pod = false;
    let mut parent = "";
    for &comp in &components {
        let mut this_is_pod = false;
        if comp == "kubepods" || is_kubepods_slice(comp) {
            in_kubepods = true;
        }
        if let Some(uid) =
            pod_slice_uid(comp).or_else(|| in_kubepods.then(|| cgroupfs_pod_uid(comp)).flatten())
        {
            pod = Some(uid);
            // A pod below a container (kind node) supersedes that outer container.
            container = None;
            this_is_pod = true;
        } else if let Some((runtime, id)) = prefixed_container(comp) {
            container = Some((runtime, id.to_string(), pod.clone()));
        } else if is_container_id(comp) && (parent_is_pod || parent == "docker") {
            // The cgroupfs driver names the leaf by bare id whatever the runtime, so the path
            // cannot tell containerd, CRI-O and docker apart under kubepods. Containerd is the
            // common case; the runtime is refined later from the runtimes' own state.
            let runtime = if parent_is_pod {
                Runtime::Containerd
            } else {
                Runtime::Docker
            };
            container = Some((runtime, comp.to_string(), pod.clone()));
        }
        parent_is_pod = this_is_pod;
        parent = comp;
    }

    match (container, pod) {
        (Some((runtime, id, pod_uid)), _) => Owner::Container {
            runtime,
            id,
            pod_uid,
        },
        (None, Some(pod_uid)) => Owner::Pod { pod_uid },
        (None, None) => Owner::Host,
    }
}

/// `kubepods.slice`, `kubepods-burstable.slice`, and kind's `kubelet-kubepods.slice`.
fn is_kubepods_slice(comp: &str) -> bool {
    comp.strip_suffix(".slice")
        .is_some_and(|stem| stem.split('-').any(|s| s == "kubepods"))
}

/// Systemd driver: `kubepods[-<qos>]-pod<uid>.slice`, with the uid's '-' escaped as '_'
/// because systemd treats '-' in slice names as the hierarchy separator.
fn pod_slice_uid(comp: &str) -> Option<String> {
    let stem = comp.strip_suffix(".slice")?;
    let (prefix, last) = stem.rsplit_once('-')?;
    if !prefix.split('-').any(|s| s == "kubepods") {
        return None;
    }
    let uid = last.strip_prefix("pod")?;
    valid_uid(uid, '_').then(|| uid.replace('_', "-"))
}

/// Cgroupfs driver: `pod<uid>` with the uid verbatim.
fn cgroupfs_pod_uid(comp: &str) -> Option<String> {
    let uid = comp.strip_prefix("pod")?;
    valid_uid(uid, '-').then(|| uid.to_string())
}

/// Regular pods have UUIDs, but static pods use a 32-hex config hash, so only the alphabet
/// and a sane length are checked.
fn valid_uid(uid: &str, sep: char) -> bool {
    (8..=64).contains(&uid.len())
        && uid.chars().any(|c| c.is_ascii_hexdigit())
        && uid.chars().all(|c| c.is_ascii_hexdigit() || c == sep)
}

/// `<prefix><id>` with an optional `.scope`: systemd adds the suffix, cgroupfs-driven
/// runtimes (podman's libpod_parent, CRI-O) do not.
fn prefixed_container(comp: &str) -> Option<(Runtime, &str)> {
    let name = comp.strip_suffix(".scope").unwrap_or(comp);
    PREFIXES.iter().find_map(|&(prefix, runtime)| {
        name.strip_prefix(prefix)
            .filter(|id| is_container_id(id))
            .map(|id| (runtime, id))
    })
}

/// Ids are 64 hex chars; shorter ones (>= 12) are accepted because some tools truncate.
fn is_container_id(s: &str) -> bool {
    (12..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {

    #[test]
    fn host_cgroups_are_named_by_unit_slice_or_path() {
        let n = |p: &str| host_name(p);
        assert_eq!(n("/"), None);
        assert_eq!(
            n("/system.slice/postgresql@15-main.service").as_deref(),
            Some("postgresql@15-main.service")
        );
        assert_eq!(
            n("/user.slice/user-1000.slice/session-3.scope").as_deref(),
            Some("session-3.scope")
        );
        assert_eq!(
            n("/system.slice/docker.service/extra").as_deref(),
            Some("docker.service")
        );
        assert_eq!(n("/user.slice").as_deref(), Some("user.slice"));
        assert_eq!(
            n("/sockeye-test-redis-7-0/client").as_deref(),
            Some("sockeye-test-redis-7-0/client")
        );
        assert_eq!(
            n(&format!("/{}", "x".repeat(100))).map(|s| s.len()),
            Some(64)
        );
    }

    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "5f2b1c3d-aaaa-4bbb-8ccc-0123456789ab";
    const UID_SD: &str = "5f2b1c3d_aaaa_4bbb_8ccc_0123456789ab";

    fn ctr(runtime: Runtime, pod: Option<&str>) -> Owner {
        Owner::Container {
            runtime,
            id: ID.to_string(),
            pod_uid: pod.map(str::to_string),
        }
    }

    #[test]
    fn containerd_systemd() {
        for qos in ["burstable", "besteffort"] {
            let p = format!(
                "/kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{UID_SD}.slice/cri-containerd-{ID}.scope"
            );
            assert_eq!(classify(&p), ctr(Runtime::Containerd, Some(UID)), "{p}");
        }
        let guaranteed =
            format!("/kubepods.slice/kubepods-pod{UID_SD}.slice/cri-containerd-{ID}.scope");
        assert_eq!(classify(&guaranteed), ctr(Runtime::Containerd, Some(UID)));
    }

    #[test]
    fn crio_systemd_and_conmon() {
        let base = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SD}.slice"
        );
        for leaf in [
            format!("crio-{ID}.scope"),
            format!("crio-conmon-{ID}.scope"),
        ] {
            assert_eq!(
                classify(&format!("{base}/{leaf}")),
                ctr(Runtime::Crio, Some(UID))
            );
        }
    }

    #[test]
    fn cgroupfs_driver() {
        for qos in ["/burstable", "/besteffort", ""] {
            let p = format!("/kubepods{qos}/pod{UID}/{ID}");
            // Bare ids are attributed to containerd until the runtime's state says otherwise.
            assert_eq!(classify(&p), ctr(Runtime::Containerd, Some(UID)), "{p}");
        }
        let crio = format!("/kubepods/burstable/pod{UID}/crio-{ID}");
        assert_eq!(classify(&crio), ctr(Runtime::Crio, Some(UID)));
    }

    #[test]
    fn docker_and_podman() {
        let cases = [
            (format!("/system.slice/docker-{ID}.scope"), Runtime::Docker),
            (format!("/docker/{ID}"), Runtime::Docker),
            (format!("/machine.slice/libpod-{ID}.scope"), Runtime::Podman),
            (format!("/libpod_parent/libpod-{ID}"), Runtime::Podman),
            (
                format!("/libpod_parent/libpod-conmon-{ID}"),
                Runtime::Podman,
            ),
            (
                format!("/machine.slice/libpod-conmon-{ID}.scope"),
                Runtime::Podman,
            ),
            (
                format!(
                    "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"
                ),
                Runtime::Podman,
            ),
        ];
        for (p, rt) in cases {
            assert_eq!(classify(&p), ctr(rt, None), "{p}");
        }
    }

    #[test]
    fn nested_paths_use_innermost() {
        let init =
            format!("/kubepods.slice/kubepods-pod{UID_SD}.slice/cri-containerd-{ID}.scope/init");
        assert_eq!(classify(&init), ctr(Runtime::Containerd, Some(UID)));
        let systemd = format!("/system.slice/docker-{ID}.scope/system.slice/nginx.service");
        assert_eq!(classify(&systemd), ctr(Runtime::Docker, None));
        // kind: a pod inside a docker container that is the node.
        let outer = "abcdefabcdefabcdefabcdef";
        let kind = format!(
            "/system.slice/docker-{outer}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_SD}.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(classify(&kind), ctr(Runtime::Containerd, Some(UID)));
        let dind = format!("/docker/{outer}/docker/{ID}");
        assert_eq!(classify(&dind), ctr(Runtime::Docker, None));
    }

    #[test]
    fn pod_without_container() {
        let p = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SD}.slice"
        );
        assert_eq!(
            classify(&p),
            Owner::Pod {
                pod_uid: UID.to_string()
            }
        );
        let static_pod = "/kubepods/burstable/pod0123456789abcdef0123456789abcdef";
        assert_eq!(
            classify(static_pod).pod_uid(),
            Some("0123456789abcdef0123456789abcdef")
        );
    }

    #[test]
    fn host_and_negative_cases() {
        let cases = [
            String::new(),
            "/".to_string(),
            "/system.slice/sshd.service".to_string(),
            "/user.slice/user-0.slice/session-1.scope".to_string(),
            "/init.scope".to_string(),
            "/kubepods.slice/kubepods-burstable.slice".to_string(),
            // non-hex, too short, and a bare id outside any known parent
            "/system.slice/docker-not-a-hex-id-at-all.scope".to_string(),
            "/system.slice/docker-0123abc.scope".to_string(),
            format!("/system.slice/{ID}"),
            // "pod<uid>" means nothing outside kubepods
            format!("/pod{UID}/{ID}"),
            format!("/kubepods/burstable/pod{UID}/../../../system.slice/docker-{ID}.scope"),
        ];
        for p in cases {
            assert_eq!(classify(&p), Owner::Host, "{p:?}");
        }
    }

    #[test]
    fn accessors_and_labels() {
        let c = ctr(Runtime::Containerd, Some(UID));
        assert_eq!(c.label(), "containerd:0123456789ab");
        assert_eq!(c.container_id(), Some(ID));
        assert_eq!(c.pod_uid(), Some(UID));
        let p = Owner::Pod {
            pod_uid: UID.to_string(),
        };
        assert_eq!(p.label(), format!("pod:{UID}"));
        assert_eq!(p.container_id(), None);
        assert_eq!(Owner::Host.label(), "host");
        assert_eq!(Owner::Host.pod_uid(), None);
        assert_eq!(Runtime::Crio.to_string(), "crio");
    }
}
