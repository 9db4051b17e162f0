//! The background job that leaks PostgreSQL connections until the server
//! runs out: real postgres (Debian's) in a pod with `max_connections`, a
//! job that opens a session a second and never closes it, and an api that
//! opens a session per request, which postgres then accepts and closes at
//! once ("sorry, too many clients already"). One root cause: the job's
//! leak, with the server at its limit as its evidence and the api and
//! postgres as the affected; not a second "leak" at postgres, and no
//! unexplained failures at the api.

use std::time::Duration;

use sockeye_agent::findings::{Finding, FindingsConfig, Kind};
use sockeye_tests::{
    findings::{report_fault_to_finding, Watch},
    net::TestNet,
    postgres::{ApiClient, JobClient, PostgresServer},
    require_root,
};

const MAX_CONNECTIONS: u32 = 30;
const FIND_WITHIN: Duration = Duration::from_secs(30);

fn value(f: &Finding, key: &str) -> f64 {
    f.evidence
        .iter()
        .find(|e| e.key == key)
        .unwrap_or_else(|| panic!("no {key} in {f:#?}"))
        .value
}

#[test]
fn a_job_leaking_sessions_exhausts_postgres_and_the_api_is_refused() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("pgpool", &["pg", "job", "api"]);
    let (pg_pod, job_pod, api_pod) = (net.pod(0), net.pod(1), net.pod(2));
    let pg = PostgresServer::start(pg_pod, MAX_CONNECTIONS);
    let cgroups = [pg_pod.cgroup_id, job_pod.cgroup_id, api_pod.cgroup_id];
    let mut watch = Watch::start(FindingsConfig::default(), &cgroups);
    let mut api = ApiClient::start(api_pod, pg.addr, 200);
    let mut job = JobClient::start(job_pod, pg.addr, 2);
    let read = |api: &mut ApiClient, job: &mut JobClient| {
        api.read();
        job.read();
    };

    // Healthy for a while: the job's pool and the api's sessions.
    watch.run_for(Duration::from_secs(8), |_| read(&mut api, &mut job));
    assert!(api.failed.is_empty(), "{:?}", api.failed);
    assert!(watch.open().is_empty(), "healthy: {}", watch.describe());

    // The job starts forgetting to release its sessions.
    job.start_leaking(1000);
    let leak = watch.wait_open(
        Kind::ConnectionLeak,
        FIND_WITHIN,
        |f| f.subject.cgroup_id == job_pod.cgroup_id,
        |_| read(&mut api, &mut job),
    );
    let fault = job.leaks.first().expect("the job leaked").1;
    report_fault_to_finding("postgres leak", fault, watch.first_seen(&leak.id), &leak);
    let d = leak.destination.as_ref().expect("postgres");
    assert_eq!((d.addr, d.port), (pg.addr.ip(), pg.addr.port()));
    assert!(
        value(&leak, "held_at_server") >= 10.0,
        "postgres holds what the job leaked: {leak:#?}"
    );

    // Until postgres is full and refuses the api: the limit is the leak's,
    // and explains the api's failures. (The job, whose pool asks for one
    // more, is refused first; the api's short sessions count as refused
    // once they have turned from served, a few seconds later.)
    let f = watch.wait_open(
        Kind::ConnectionLeak,
        FIND_WITHIN + Duration::from_secs(30),
        |f| {
            f.subject.cgroup_id == job_pod.cgroup_id
                && f.signals.contains(&"server_at_limit")
                && f.affected.iter().any(|w| w.cgroup_id == api_pod.cgroup_id)
        },
        |_| read(&mut api, &mut job),
    );
    let full = api
        .failed
        .first()
        .map(|(t, _)| *t)
        .expect("the api was refused");
    let seen = sockeye_agent::clock::monotonic_ns();
    report_fault_to_finding("postgres at max_connections", full, seen, &f);
    eprintln!("{}\n{:#?}", f.summary, f.evidence);
    assert!(
        api.failed
            .iter()
            .all(|(_, why)| why.contains("too many clients")),
        "{:?}",
        api.failed
    );
    assert_eq!(
        value(&f, "limit_held"),
        f64::from(MAX_CONNECTIONS),
        "{f:#?}"
    );
    assert!(value(&f, "limit_refused") >= 5.0, "{f:#?}");
    assert!(
        f.summary
            .contains("is at its connection limit and refuses new ones"),
        "{}",
        f.summary
    );
    let affected: Vec<u64> = f.affected.iter().map(|w| w.cgroup_id).collect();
    assert!(
        affected.contains(&api_pod.cgroup_id) && affected.contains(&pg_pod.cgroup_id),
        "the refused api and postgres are affected: {affected:?}\n{f:#?}"
    );
    // One root cause, and nothing about postgres or the api on their own.
    let open: Vec<(Kind, u64)> = watch
        .open()
        .iter()
        .map(|f| (f.kind, f.subject.cgroup_id))
        .collect();
    assert_eq!(
        open,
        [(Kind::ConnectionLeak, job_pod.cgroup_id)],
        "{}",
        watch.describe()
    );
}
