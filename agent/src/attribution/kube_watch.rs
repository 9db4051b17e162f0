//! Watches the pods of this node through the Kubernetes API (list + watch
//! on `pods`, field selector `spec.nodeName=<node>`), for labels, owners
//! and the names of containers whose runtime record is gone.
//!
//! It only runs in a cluster: outside one (no in-cluster service account)
//! the agent says so once and names pods from runtime records alone.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    runtime::{watcher, WatchStreamExt},
    Api, Client,
};

use super::pod_index::{PodIndex, PodInfo, WatchState};

/// How often deleted pods past their retention are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Default)]
pub struct WatchOptions {
    /// `--no-kube-api` turns it off.
    pub enabled: bool,
    /// From the downward API (`spec.nodeName`); required in a cluster.
    pub node_name: Option<String>,
    /// A kubeconfig to reach the API server with instead of the pod's
    /// service account (`--kubeconfig`: an agent run outside the cluster).
    pub kubeconfig: Option<std::path::PathBuf>,
}

/// Decides whether to watch (logging once why not) and returns the index
/// plus the watch to spawn on the runtime, if any.
pub fn start(opts: &WatchOptions) -> (PodIndex, Option<impl Future<Output = ()>>) {
    if !opts.enabled {
        log::info!("Kubernetes API watch disabled (--no-kube-api): pod names come from runtime records only");
        return (PodIndex::new(WatchState::Disabled), None);
    }
    if let Some(path) = opts.kubeconfig.clone() {
        let Some(node) = opts.node_name.clone().filter(|n| !n.is_empty()) else {
            log::warn!(
                "--kubeconfig needs the node name (--node-name or NODE_NAME): the API watch is off"
            );
            return (PodIndex::new(WatchState::Disabled), None);
        };
        let index = PodIndex::new(WatchState::Starting);
        let task = {
            let index = index.clone();
            async move {
                match client_from_kubeconfig(&path).await {
                    Ok(client) => watch(client, node, index).await,
                    Err(e) => {
                        log::warn!(
                            "cannot use the kubeconfig {}: {e}; the API watch is off",
                            path.display()
                        );
                        index.set_state(WatchState::Disabled);
                    }
                }
            }
        };
        return (index, Some(futures_util::future::Either::Left(task)));
    }
    let config = match kube::Config::incluster() {
        Ok(c) => c,
        Err(e) => {
            log::info!("not running in a Kubernetes pod ({e}): pod names come from runtime records only, without labels and owners");
            return (PodIndex::new(WatchState::NotInCluster), None);
        }
    };
    let Some(node) = opts.node_name.clone().filter(|n| !n.is_empty()) else {
        log::warn!("in a Kubernetes cluster but the node name is unknown: set --node-name (or NODE_NAME from the downward API, spec.nodeName); the API watch is off");
        return (PodIndex::new(WatchState::Disabled), None);
    };
    let client = match Client::try_from(config) {
        Ok(c) => c,
        Err(e) => {
            log::warn!("cannot build a Kubernetes client ({e}); the API watch is off");
            return (PodIndex::new(WatchState::Disabled), None);
        }
    };
    let index = PodIndex::new(WatchState::Starting);
    let task = watch(client, node, index.clone());
    (index, Some(futures_util::future::Either::Right(task)))
}

/// A client for the API server a kubeconfig names (its current context).
async fn client_from_kubeconfig(path: &std::path::Path) -> Result<Client, String> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| e.to_string())?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .map_err(|e| e.to_string())?;
    Client::try_from(config).map_err(|e| e.to_string())
}

/// Follows this node's pods into `index` until the process ends. Errors
/// (API server unreachable, RBAC denied) are counted and retried with
/// backoff; the first of a run of errors is logged.
pub async fn watch(client: Client, node: String, index: PodIndex) {
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut last_sweep = Instant::now();
    let mut failing = false;
    let mut listed_once = false;
    while let Some(event) = events.next().await {
        let now = Instant::now();
        match event {
            Ok(watcher::Event::Init) => index.relist_started(),
            Ok(watcher::Event::InitApply(pod) | watcher::Event::Apply(pod)) => {
                if let Some(info) = PodInfo::from_pod(&pod) {
                    index.apply(info, now);
                }
            }
            Ok(watcher::Event::InitDone) => {
                index.relist_done(now);
                if !listed_once || failing {
                    log::info!(
                        "watching the pods of node {node} through the Kubernetes API ({} pods)",
                        index.stats().pods
                    );
                }
                listed_once = true;
                failing = false;
            }
            Ok(watcher::Event::Delete(pod)) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    index.delete(uid, now);
                }
            }
            Err(e) => {
                index.watch_error();
                if !failing {
                    log::warn!("Kubernetes pod watch failed ({e}); retrying with backoff, errors are counted in stats (kube_api.watch_errors)");
                }
                failing = true;
            }
        }
        if now.duration_since(last_sweep) >= SWEEP_EVERY {
            index.sweep(now);
            last_sweep = now;
        }
    }
}

#[cfg(test)]
#[path = "kube_watch_tests.rs"]
mod tests;
