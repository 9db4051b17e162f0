//! QueryTop and GetClusterSnapshot over real gRPC: ranking by failures,
//! latency and open sockets across windows and nodes, time ranges, filters,
//! and InvalidArgument for requests that cannot mean anything.

mod common;

use common::*;
use sockeye_proto::v1 as pb;
use tonic::Code;

const MS: u64 = 1_000_000;
const US: u64 = 1_000;

struct Cluster {
    tc: TestCollector,
    client: Client,
    /// Start of the range that holds the windows.
    t: i64,
}

fn label(r: &pb::TopRow) -> String {
    let w = r.workload.as_ref().unwrap();
    let d = r.destination.as_ref().unwrap();
    format!("{}/{}->{}:{}", w.namespace, w.pod, d.ip, d.port)
}

fn labels(resp: &pb::QueryTopResponse) -> Vec<String> {
    resp.rows.iter().map(label).collect()
}

fn row<'a>(resp: &'a pb::QueryTopResponse, l: &str) -> &'a pb::TopRow {
    resp.rows
        .iter()
        .find(|r| label(r) == l)
        .unwrap_or_else(|| panic!("no row {l} in {:?}", labels(resp)))
}

/// Two nodes, five windows in [t, t+30 s] and one an hour before:
/// - payments -> redis (node-a): 10 ok + 5 refused per window, open 3, 5, 2
/// - payments -> postgres (node-a): 50 connects per window, 5 of them 800 ms
///   in the second window, the rest 1 ms
/// - checkout -> redis (node-b): 20 ok at 300 µs per window, 1 timeout,
///   open 40 then 50
/// - staging payments -> redis (node-b): 30 refused in the second window
/// - an inbound flow with many failures (not a destination: never ranked)
/// - the host -> 1.1.1.1:443 (node-a)
async fn cluster(backend: Backend) -> Cluster {
    let tc = TestCollector::start_on(backend).await;
    let mut client = tc.client().await;
    let t = now_ms() - 3_600_000;
    let pay = pod("prod", "payments-1", "php", "node-a");
    let chk = pod("prod", "checkout-2", "app", "node-b");
    let stg = pod("staging", "payments-1", "php", "node-b");
    let host = pb::Workload {
        runtime: "host".into(),
        label: "host".into(),
        node: "node-a".into(),
        ..Default::default()
    };
    let redis = || ep("10.77.0.3", 6379);
    let pg = || ep("10.77.0.9", 5432);

    let mut a = Pusher::open(&mut client, "node-a", "agent-a").await;
    let old = window(
        "node-a",
        "agent-a",
        1,
        t - 3_600_000,
        vec![flow(&pay, redis(), &[], &[("refused", 1000)], 9)],
        vec![],
    );
    a.send(old).await;
    for (i, open) in [3u64, 5, 2].into_iter().enumerate() {
        let i = i as i64;
        let mut pg_lat = vec![MS; 50];
        if i == 1 {
            pg_lat[..5].fill(800 * MS);
        }
        let mut inbound = flow(&pay, ep("10.77.1.1", 80), &[], &[("refused", 500)], 0);
        inbound.direction = pb::Direction::Inbound as i32;
        let w = window(
            "node-a",
            "agent-a",
            2 + i as u64,
            t + 10_000 * (i + 1),
            vec![
                flow(&pay, redis(), &[200 * US; 10], &[("refused", 5)], open),
                flow(&pay, pg(), &pg_lat, &[], 0),
                inbound,
                flow(&host, ep("1.1.1.1", 443), &[20 * MS], &[], 0),
            ],
            vec![dns_name(
                &pay,
                "redis.prod.svc.cluster.local",
                ep("10.96.0.10", 53),
                4,
                0,
            )],
        );
        a.send(w).await;
    }
    a.ack_through(4).await;

    let mut b = Pusher::open(&mut client, "node-b", "agent-b").await;
    for (i, open) in [40u64, 50].into_iter().enumerate() {
        let i = i as i64;
        let failed: &[(&str, u64)] = if i == 0 { &[("timed_out", 1)] } else { &[] };
        let mut flows = vec![flow(&chk, redis(), &[300 * US; 20], failed, open)];
        if i == 1 {
            flows.push(flow(&stg, redis(), &[], &[("refused", 30)], 0));
        }
        b.send(window(
            "node-b",
            "agent-b",
            1 + i as u64,
            t + 10_000 * (i + 1),
            flows,
            vec![],
        ))
        .await;
    }
    b.ack_through(2).await;
    Cluster { tc, client, t }
}

fn top(t: i64, by: &str, filter: pb::Filter) -> pb::QueryTopRequest {
    pb::QueryTopRequest {
        filter: Some(filter),
        from_unix_ms: t,
        to_unix_ms: t + 30_000,
        by: by.into(),
        limit: 0,
    }
}

on_both_stores! {
    async fn ranks_by_failures_latency_and_open(backend) {
        let mut c = cluster(backend).await;
        let by_failures = query(&mut c.client, top(c.t, "failures", Default::default()))
            .await
            .unwrap();
        assert_eq!(
            labels(&by_failures),
            [
                "staging/payments-1->10.77.0.3:6379",
                "prod/payments-1->10.77.0.3:6379",
                "prod/checkout-2->10.77.0.3:6379",
                // No failures: most connects first.
                "prod/payments-1->10.77.0.9:5432",
                "/->1.1.1.1:443",
            ],
            "the inbound flow is not a destination and the old window is out of range"
        );
        assert_eq!((by_failures.windows, by_failures.dropped_windows), (5, 0));
        let r = row(&by_failures, "prod/payments-1->10.77.0.3:6379");
        assert_eq!((r.connects_ok, r.connects_failed), (30, 15));
        assert_eq!(r.nodes, ["node-a"]);
        assert_eq!(r.workload.as_ref().unwrap().container, "php");
        // The default ranking is by failures.
        let default = query(&mut c.client, top(c.t, "", Default::default()))
            .await
            .unwrap();
        assert_eq!(labels(&default), labels(&by_failures));

        let by_latency = query(&mut c.client, top(c.t, "latency", Default::default()))
            .await
            .unwrap();
        assert_eq!(
            labels(&by_latency)[..4],
            [
                "prod/payments-1->10.77.0.9:5432",
                "/->1.1.1.1:443",
                "prod/checkout-2->10.77.0.3:6379",
                "prod/payments-1->10.77.0.3:6379",
            ]
        );
        // 5 slow connects out of 150 put p99 in the 800 ms bin; p50 stays at 1 ms.
        let p = row(&by_latency, "prod/payments-1->10.77.0.9:5432")
            .connect_percentiles
            .unwrap();
        assert_eq!(p.count, 150);
        assert!((800 * MS..=810 * MS).contains(&p.p99_ns), "{p:?}");
        assert!((MS..=1_100 * US).contains(&p.p50_ns), "{p:?}");
        assert_eq!(p.max_ns, 800 * MS);
        // A destination with no connect latency at all ranks last.
        assert_eq!(
            by_latency.rows.last().map(label).unwrap(),
            "staging/payments-1->10.77.0.3:6379"
        );

        let by_open = query(&mut c.client, top(c.t, "open", Default::default()))
            .await
            .unwrap();
        assert_eq!(
            labels(&by_open)[..2],
            [
                "prod/checkout-2->10.77.0.3:6379",
                "prod/payments-1->10.77.0.3:6379"
            ]
        );
        // Latest gauge of the range: neither the peak (5) nor the sum (10).
        assert_eq!(by_open.rows[0].open, 50);
        let drops = by_open.rows[0]
            .drops
            .as_ref()
            .expect("rows carry drop counters");
        assert!(
            drops.counters.contains_key("kernel_ringbuf_full"),
            "{drops:?}"
        );
        assert_eq!(by_open.rows[1].open, 2);
        c.tc.stop().await;
    }

    async fn time_range_selects_windows_by_their_end(backend) {
        let mut c = cluster(backend).await;
        let mut req = top(c.t, "failures", Default::default());
        req.from_unix_ms = c.t + 15_000;
        req.to_unix_ms = c.t + 25_000;
        let mid = query(&mut c.client, req).await.unwrap();
        assert_eq!(mid.windows, 2, "the second window of each node");
        assert_eq!(
            row(&mid, "staging/payments-1->10.77.0.3:6379").connects_failed,
            30
        );
        let r = row(&mid, "prod/payments-1->10.77.0.3:6379");
        assert_eq!((r.connects_failed, r.open), (5, 5));

        // 0 means unbounded: every window, including the old one.
        let all = query(
            &mut c.client,
            pb::QueryTopRequest {
                limit: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(all.windows, 6);
        assert_eq!(labels(&all), ["prod/payments-1->10.77.0.3:6379"]);
        assert_eq!(all.rows[0].connects_failed, 1015);
        c.tc.stop().await;
    }

    async fn filters_narrow_the_ranking(backend) {
        let mut c = cluster(backend).await;
        let cases: Vec<(pb::Filter, Vec<&str>)> = vec![
            (
                pb::Filter {
                    namespace: "prod".into(),
                    ..Default::default()
                },
                vec![
                    "prod/payments-1->10.77.0.3:6379",
                    "prod/checkout-2->10.77.0.3:6379",
                    "prod/payments-1->10.77.0.9:5432",
                ],
            ),
            (
                pb::Filter {
                    pod: "checkout-2".into(),
                    ..Default::default()
                },
                vec!["prod/checkout-2->10.77.0.3:6379"],
            ),
            (
                pb::Filter {
                    destination: ":5432".into(),
                    ..Default::default()
                },
                vec!["prod/payments-1->10.77.0.9:5432"],
            ),
            (
                pb::Filter {
                    destination: "10.77.0.3".into(),
                    ..Default::default()
                },
                vec![
                    "staging/payments-1->10.77.0.3:6379",
                    "prod/payments-1->10.77.0.3:6379",
                    "prod/checkout-2->10.77.0.3:6379",
                ],
            ),
            (
                pb::Filter {
                    node: "node-b".into(),
                    ..Default::default()
                },
                vec![
                    "staging/payments-1->10.77.0.3:6379",
                    "prod/checkout-2->10.77.0.3:6379",
                ],
            ),
            (
                pb::Filter {
                    container: "php".into(),
                    destination: "10.77.0.3:6379".into(),
                    ..Default::default()
                },
                vec![
                    "staging/payments-1->10.77.0.3:6379",
                    "prod/payments-1->10.77.0.3:6379",
                ],
            ),
            (
                pb::Filter {
                    namespace: "nothing-here".into(),
                    ..Default::default()
                },
                vec![],
            ),
        ];
        for (filter, want) in cases {
            let got = query(&mut c.client, top(c.t, "failures", filter.clone()))
                .await
                .unwrap();
            assert_eq!(labels(&got), want, "{filter:?}");
        }
        let node_b = query(
            &mut c.client,
            top(
                c.t,
                "failures",
                pb::Filter {
                    node: "node-b".into(),
                    ..Default::default()
                },
            ),
        )
        .await
        .unwrap();
        assert_eq!(node_b.windows, 2, "windows count only the filtered nodes");
        let mut limited = top(c.t, "failures", Default::default());
        limited.limit = 2;
        assert_eq!(query(&mut c.client, limited).await.unwrap().rows.len(), 2);
        c.tc.stop().await;
    }

    async fn cluster_snapshot_is_the_latest_window_of_each_node(backend) {
        let c = cluster(backend).await;
        let snapshot = |filter: pb::Filter| {
            let mut client = c.client.clone();
            async move {
                within(
                    "snapshot",
                    client.get_cluster_snapshot(pb::GetClusterSnapshotRequest {
                        filter: Some(filter),
                    }),
                )
                .await
                .map(|r| r.into_inner())
            }
        };
        let all = snapshot(Default::default()).await.unwrap();
        let nodes: Vec<(&str, i64)> = all
            .nodes
            .iter()
            .map(|s| (s.node.as_str(), s.taken_unix_ms - c.t))
            .collect();
        assert_eq!(nodes, [("node-a", 30_000), ("node-b", 20_000)]);
        let a = all.nodes[0].aggregates.as_ref().unwrap();
        assert_eq!(a.tcp_flows.len(), 4);
        assert_eq!(
            a.drops.as_ref().unwrap().counters["kernel_ringbuf_full"],
            3,
            "drop counters kept"
        );

        let staging = snapshot(pb::Filter {
            namespace: "staging".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        assert_eq!(staging.nodes.len(), 1, "node-a has nothing in staging");
        assert_eq!(staging.nodes[0].node, "node-b");
        assert_eq!(
            staging.nodes[0]
                .aggregates
                .as_ref()
                .unwrap()
                .tcp_flows
                .len(),
            1
        );

        // A DNS name selects DNS rows only.
        let dns = snapshot(pb::Filter {
            destination: "Redis.prod.svc.cluster.local.".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        assert_eq!(dns.nodes.len(), 1);
        let agg = dns.nodes[0].aggregates.as_ref().unwrap();
        assert!(agg.tcp_flows.is_empty());
        assert_eq!(agg.dns_names.len(), 1);
        assert_eq!(agg.dns_names[0].counts.as_ref().unwrap().queries, 4);

        let node_b = snapshot(pb::Filter {
            node: "node-b".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        assert_eq!(node_b.nodes.len(), 1);
        assert_eq!(
            node_b.nodes[0].aggregates.as_ref().unwrap().tcp_flows.len(),
            2
        );

        let err = snapshot(pb::Filter {
            destination: "10.0.0.1:99999".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        c.tc.stop().await;
    }

    async fn invalid_requests_get_invalid_argument_with_a_reason(backend) {
        let tc = TestCollector::start_on(backend).await;
        let mut client = tc.client().await;
        let f = |destination: &str, namespace: &str| pb::Filter {
            destination: destination.into(),
            namespace: namespace.into(),
            ..Default::default()
        };
        let cases: Vec<(pb::QueryTopRequest, &str)> = vec![
            (
                pb::QueryTopRequest {
                    by: "slowest".into(),
                    ..Default::default()
                },
                "by \"slowest\" is not a ranking; use \"failures\", \"latency\" or \"open\"",
            ),
            (
                pb::QueryTopRequest {
                    filter: Some(f("10.0.0.1:99999", "")),
                    ..Default::default()
                },
                "port \"99999\" is not a number from 1 to 65535",
            ),
            (
                pb::QueryTopRequest {
                    filter: Some(f("not an address", "")),
                    ..Default::default()
                },
                "filter.destination \"not an address\"",
            ),
            (
                pb::QueryTopRequest {
                    filter: Some(f("api.stripe.com", "")),
                    ..Default::default()
                },
                "is a DNS name; QueryTop ranks TCP destinations",
            ),
            (
                pb::QueryTopRequest {
                    filter: Some(f("", "Prod")),
                    ..Default::default()
                },
                "filter.namespace \"Prod\" is not a Kubernetes name",
            ),
            (
                pb::QueryTopRequest {
                    from_unix_ms: 2_000,
                    to_unix_ms: 1_000,
                    ..Default::default()
                },
                "from_unix_ms 2000 is after to_unix_ms 1000",
            ),
            (
                pb::QueryTopRequest {
                    from_unix_ms: -1,
                    ..Default::default()
                },
                "from_unix_ms is -1",
            ),
            (
                pb::QueryTopRequest {
                    limit: 5000,
                    ..Default::default()
                },
                "limit 5000 is above the maximum of 1000",
            ),
        ];
        for (req, why) in cases {
            let err = query(&mut client, req).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{why}: {err:?}");
            assert!(
                err.message().contains(why),
                "want {why:?} in {:?}",
                err.message()
            );
        }
        let err = within(
            "watch",
            client.watch_windows(pb::WatchWindowsRequest {
                filter: Some(f("", "-bad")),
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message()
                .contains("start and end with a letter or digit"),
            "{err:?}"
        );
        // Still serving.
        assert_eq!(stored_windows(&mut client).await, 0);
        tc.stop().await;
    }
}
