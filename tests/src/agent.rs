//! The real agent, in-process, and helpers to wait for what it sees.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use sockeye_agent::{
    aggregate::flows::Direction,
    snapshot::{FlowView, Snapshot},
    Agent, Config,
};

pub fn start() -> Agent {
    start_with(&Config::default())
}

pub fn start_with(config: &Config) -> Agent {
    Agent::start(config).unwrap_or_else(|e| {
        let mut msg = format!("agent failed to start: {e}");
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(&format!("\n  caused by: {s}"));
            src = s.source();
        }
        panic!("{msg}")
    })
}

/// Drains events until `done(snapshot)` holds; panics with the flows of
/// `cgroups` if it does not within `timeout`.
pub fn wait_for(
    agent: &mut Agent,
    cgroups: &[u64],
    timeout: Duration,
    done: impl Fn(&Snapshot) -> bool,
) -> Snapshot {
    wait_until(agent, timeout, done, |snap| {
        let flows: Vec<&FlowView> = snap
            .flows
            .iter()
            .filter(|f| cgroups.contains(&f.workload.cgroup_id))
            .collect();
        format!("flows of the test pods: {flows:#?}")
    })
}

/// Drains events until `done(snapshot)` holds; if it does not within
/// `timeout`, panics with `explain(last snapshot)` and the agent's health.
pub fn wait_until(
    agent: &mut Agent,
    timeout: Duration,
    done: impl Fn(&Snapshot) -> bool,
    explain: impl Fn(&Snapshot) -> String,
) -> Snapshot {
    let deadline = Instant::now() + timeout;
    loop {
        agent.drain();
        agent.housekeeping();
        let snap = agent.snapshot(None);
        if done(&snap) {
            return snap;
        }
        if Instant::now() > deadline {
            panic!(
                "condition not met within {timeout:?}; {}\nhealth: {:#?}",
                explain(&snap),
                agent.health()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The flow of `cgroup` to/from `remote`:`port` in `direction`, if any.
pub fn flow(
    snap: &Snapshot,
    cgroup: u64,
    direction: Direction,
    remote: IpAddr,
    port: u16,
) -> Option<&FlowView> {
    snap.flows.iter().find(|f| {
        f.workload.cgroup_id == cgroup
            && f.direction == direction
            && f.remote == remote
            && f.port == port
    })
}

/// Waits until the flow exists and satisfies `done`, then returns a copy.
pub fn wait_for_flow(
    agent: &mut Agent,
    cgroup: u64,
    direction: Direction,
    remote: IpAddr,
    port: u16,
    done: impl Fn(&FlowView) -> bool,
) -> FlowView {
    let snap = wait_for(agent, &[cgroup], Duration::from_secs(15), |s| {
        flow(s, cgroup, direction, remote, port).is_some_and(&done)
    });
    flow(&snap, cgroup, direction, remote, port)
        .cloned()
        .expect("present: the condition held")
}
