//! ListFindings over real gRPC, from windows pushed like agents push them:
//! each node's latest version of a finding, resolutions (seen and not
//! seen), merging across nodes, filters, the time range, bad requests and
//! the dropped windows that may hide a finding.

mod common;

use common::*;
use sockeye_proto::v1 as pb;
use tonic::Code;

fn redis() -> pb::Endpoint {
    ep("10.77.0.3", 6379)
}

fn request(since: i64, until: i64, include_resolved: bool) -> pb::ClusterFindingsRequest {
    pb::ClusterFindingsRequest {
        filter: None,
        since_unix_ms: since,
        until_unix_ms: until,
        include_resolved,
    }
}

fn with_filter(f: pb::Filter, since: i64) -> pb::ClusterFindingsRequest {
    pb::ClusterFindingsRequest {
        filter: Some(f),
        ..request(since, 0, false)
    }
}

fn resolved(mut f: pb::Finding, at: i64) -> pb::Finding {
    f.resolved_unix_ms = at;
    f.updated_unix_ms = at;
    f
}

on_both_stores! {
    async fn each_nodes_latest_version_of_a_finding_counts(backend) {
        let tc = TestCollector::start_on(backend).await;
        let mut client = tc.client().await;
        let t = now_ms() - 120_000;
        let pay = pod("prod", "payments-1", "php", "node-a");
        let leak = |severity: &str, updated: i64| {
            finding(
                "leak-1",
                "node-a",
                "connection_leak",
                &pay,
                Some(redis()),
                severity,
                updated,
            )
        };
        let mut a = Pusher::open(&mut client, "node-a", "agent-a").await;
        // Opened as a warning, escalated to critical; the third window carries
        // a stale copy (a version older than the one before): it does not win.
        a.send(findings_window(
            "node-a",
            "agent-a",
            1,
            t,
            vec![leak("warning", t - 5_000)],
        ))
        .await;
        a.send(findings_window(
            "node-a",
            "agent-a",
            2,
            t + 10_000,
            vec![leak("critical", t + 8_000)],
        ))
        .await;
        a.send(findings_window(
            "node-a",
            "agent-a",
            3,
            t + 20_000,
            vec![leak("warning", t - 5_000)],
        ))
        .await;
        a.ack_through(3).await;

        let reply = list_findings(&mut client, request(0, 0, false))
            .await
            .expect("ListFindings");
        assert_eq!((reply.windows, reply.dropped_windows), (3, 0));
        assert_eq!(reply.findings.len(), 1, "{reply:?}");
        let m = &reply.findings[0];
        assert_eq!(m.severity, "critical");
        assert_eq!(m.findings.len(), 1, "one version per (node, id)");
        let f = &m.findings[0];
        assert_eq!(f.updated_unix_ms, t + 8_000);
        assert_eq!(f.evidence[0].fact, format!("critical at {}", t + 8_000));
        assert_eq!(
            (m.kind.as_str(), m.nodes.as_slice(), m.resolved_unix_ms),
            ("connection_leak", &["node-a".to_string()][..], 0)
        );
        assert_eq!(
            m.summary,
            "prod/payments-1/php has connection_leak to 10.77.0.3:6379"
        );
        assert_eq!(m.destination, Some(redis()));
        tc.stop().await;
    }

    async fn resolved_findings_only_when_asked_and_a_missed_resolution_is_inferred(backend) {
        let tc = TestCollector::start_on(backend).await;
        let mut client = tc.client().await;
        let t = now_ms() - 120_000;
        let pay = pod("prod", "payments-1", "php", "node-a");
        let cw = finding(
            "cw-1",
            "node-a",
            "close_wait",
            &pay,
            Some(redis()),
            "warning",
            t - 1_000,
        );
        let pool = finding(
            "pool-1",
            "node-a",
            "pool_exhaustion",
            &pay,
            Some(ep("10.77.0.9", 5432)),
            "critical",
            t - 1_000,
        );
        let mut a = Pusher::open(&mut client, "node-a", "agent-a").await;
        a.send(findings_window(
            "node-a",
            "agent-a",
            1,
            t,
            vec![cw.clone(), pool.clone()],
        ))
        .await;
        // cw resolves (the window says so); pool vanishes: the window with its
        // resolution is not there (seq 3 was dropped), and it is not carried.
        a.send(findings_window(
            "node-a",
            "agent-a",
            2,
            t + 10_000,
            vec![resolved(cw, t + 6_000), pool],
        ))
        .await;
        let mut w4 = findings_window("node-a", "agent-a", 4, t + 30_000, vec![]);
        w4.dropped_windows_before = 1;
        a.send(w4).await;
        a.ack_through(4).await;

        let open = list_findings(&mut client, request(0, 0, false))
            .await
            .expect("ListFindings");
        assert!(open.findings.is_empty(), "nothing holds now: {open:?}");
        assert_eq!((open.windows, open.dropped_windows), (3, 1));

        let all = list_findings(&mut client, request(0, 0, true))
            .await
            .expect("ListFindings");
        let by_kind = |k: &str| {
            all.findings
                .iter()
                .find(|m| m.kind == k)
                .unwrap_or_else(|| panic!("no {k} in {all:?}"))
        };
        let cw = by_kind("close_wait");
        assert_eq!(cw.resolved_unix_ms, t + 6_000);
        assert_eq!(cw.findings[0].evidence.len(), 1, "as the agent sent it");
        let pool = by_kind("pool_exhaustion");
        assert_eq!(
            pool.resolved_unix_ms,
            t + 30_000,
            "the first window without it"
        );
        let last = pool.findings[0].evidence.last().unwrap();
        assert!(
            last.fact
                .starts_with("resolution not seen: open in node-a's window ending "),
            "{last:?}"
        );
        assert_eq!((last.value, last.unit.as_str()), (20.0, "s"));
        // Resolved ones come after open ones and among themselves by severity:
        // both resolved here, the critical one first.
        assert_eq!(all.findings[0].kind, "pool_exhaustion");

        // Before the resolution, the same range end shows both open.
        let then = list_findings(&mut client, request(t - 1, t + 10_000, false))
            .await
            .expect("ListFindings");
        assert_eq!(
            then.findings.len(),
            1,
            "cw resolved in the window at t+10s: {then:?}"
        );
        assert_eq!(then.findings[0].kind, "pool_exhaustion");
        let first = list_findings(&mut client, request(t - 1, t + 1, false))
            .await
            .expect("ListFindings");
        assert_eq!(first.findings.len(), 2);
        assert_eq!(first.windows, 1);
        tc.stop().await;
    }

    async fn findings_about_one_destination_merge_across_nodes(backend) {
        let tc = TestCollector::start_on(backend).await;
        let mut client = tc.client().await;
        let t = now_ms() - 60_000;
        let pay_a = pod("prod", "payments-1", "php", "node-a");
        let pay_b = pod("prod", "payments-2", "php", "node-b");
        let chk_b = pod("prod", "checkout-1", "app", "node-b");
        let leak_a = pb::Finding {
            since_unix_ms: t - 600_000,
            confidence: "low".into(),
            ..finding(
                "leak-a",
                "node-a",
                "connection_leak",
                &pay_a,
                Some(redis()),
                "warning",
                t,
            )
        };
        let leak_b = pb::Finding {
            confidence: "high".into(),
            corroborating_signals: 3,
            ..finding(
                "leak-b",
                "node-b",
                "connection_leak",
                &chk_b,
                // The same address, as an IPv4-mapped IPv6 address.
                Some(ep("::ffff:10.77.0.3", 6379)),
                "critical",
                t,
            )
        };
        let dns = |id: &str, node: &str, w: &pb::Workload, name: &str| pb::Finding {
            dns_name: name.into(),
            ..finding(
                id,
                node,
                "dns_degradation",
                w,
                Some(ep("10.96.0.10", 53)),
                "warning",
                t,
            )
        };
        // Without a destination, pods of one Deployment are one subject.
        let exhaustion = |id: &str, node: &str, w: &pb::Workload| {
            finding(
                id,
                node,
                "connect_resource_exhaustion",
                w,
                None,
                "critical",
                t,
            )
        };
        let mut a = Pusher::open(&mut client, "node-a", "agent-a").await;
        a.send(findings_window(
            "node-a",
            "agent-a",
            1,
            t,
            vec![
                leak_a,
                dns("dns-a", "node-a", &pay_a, "api.stripe.com"),
                exhaustion("ex-a", "node-a", &pay_a),
            ],
        ))
        .await;
        a.ack_through(1).await;
        let mut b = Pusher::open(&mut client, "node-b", "agent-b").await;
        b.send(findings_window(
            "node-b",
            "agent-b",
            1,
            t + 1,
            vec![
                leak_b,
                dns("dns-b", "node-b", &pay_b, "API.Stripe.com."),
                dns("dns-b2", "node-b", &pay_b, "redis.prod.svc.cluster.local"),
                exhaustion("ex-b", "node-b", &pay_b),
                exhaustion("ex-b2", "node-b", &chk_b),
            ],
        ))
        .await;
        b.ack_through(1).await;

        let reply = list_findings(&mut client, request(0, 0, false))
            .await
            .expect("ListFindings");
        let shape: Vec<(String, Vec<String>)> = reply
            .findings
            .iter()
            .map(|m| (m.kind.clone(), m.nodes.clone()))
            .collect();
        let both = || vec!["node-a".to_string(), "node-b".to_string()];
        // Critical first (oldest first among them), then the warnings.
        assert_eq!(
            shape,
            [
                ("connection_leak".to_string(), both()),
                // Equal otherwise: by summary, checkout before payments.
                (
                    "connect_resource_exhaustion".to_string(),
                    vec!["node-b".to_string()]
                ),
                ("connect_resource_exhaustion".to_string(), both()),
                ("dns_degradation".to_string(), both()),
                ("dns_degradation".to_string(), vec!["node-b".to_string()]),
            ],
            "{reply:#?}"
        );
        let leak = &reply.findings[0];
        assert_eq!(
            (
                leak.severity.as_str(),
                leak.confidence.as_str(),
                leak.since_unix_ms
            ),
            ("critical", "high", t - 600_000)
        );
        assert_eq!(
            leak.summary, "prod/checkout-1/app has connection_leak to ::ffff:10.77.0.3:6379 (2 nodes)",
            "the worst finding's summary"
        );
        assert_eq!(leak.destination, Some(redis()));
        let ids: Vec<&str> = leak.findings.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, ["leak-a", "leak-b"], "by node");
        tc.stop().await;
    }

    async fn filters_select_by_subject_affected_destination_and_node(backend) {
        let tc = TestCollector::start_on(backend).await;
        let mut client = tc.client().await;
        let t = now_ms() - 60_000;
        let redis_pod = pod("data", "redis-0", "redis", "node-a");
        let restart = pb::Finding {
            affected: vec![pod("shop", "web-1", "app", "node-a")],
            ..finding(
                "restart",
                "node-a",
                "dependency_restart",
                &redis_pod,
                Some(redis()),
                "warning",
                t,
            )
        };
        let dns = pb::Finding {
            dns_name: "api.stripe.com".into(),
            ..finding(
                "dns",
                "node-b",
                "dns_degradation",
                &pod("pay", "api-1", "app", "node-b"),
                Some(ep("10.96.0.10", 53)),
                "warning",
                t,
            )
        };
        let mut a = Pusher::open(&mut client, "node-a", "agent-a").await;
        a.send(findings_window("node-a", "agent-a", 1, t, vec![restart]))
            .await;
        a.ack_through(1).await;
        let mut b = Pusher::open(&mut client, "node-b", "agent-b").await;
        b.send(findings_window("node-b", "agent-b", 1, t, vec![dns]))
            .await;
        b.ack_through(1).await;

        let kinds = |r: &pb::ClusterFindingsReply| -> Vec<String> {
            r.findings.iter().map(|m| m.kind.clone()).collect()
        };
        let ask = |f: pb::Filter| with_filter(f, 0);
        for (filter, want, windows) in [
            (
                pb::Filter {
                    namespace: "data".into(),
                    ..Default::default()
                },
                vec!["dependency_restart"],
                2,
            ),
            // A workload that felt it selects it too.
            (
                pb::Filter {
                    namespace: "shop".into(),
                    ..Default::default()
                },
                vec!["dependency_restart"],
                2,
            ),
            (
                pb::Filter {
                    container: "web-1".into(),
                    ..Default::default()
                },
                vec!["dependency_restart"],
                2,
            ),
            (
                pb::Filter {
                    namespace: "billing".into(),
                    ..Default::default()
                },
                vec![],
                2,
            ),
            (
                pb::Filter {
                    destination: ":6379".into(),
                    ..Default::default()
                },
                vec!["dependency_restart"],
                2,
            ),
            (
                pb::Filter {
                    destination: "10.96.0.10".into(),
                    ..Default::default()
                },
                vec!["dns_degradation"],
                2,
            ),
            (
                pb::Filter {
                    destination: "API.stripe.com".into(),
                    ..Default::default()
                },
                vec!["dns_degradation"],
                2,
            ),
            (
                pb::Filter {
                    destination: "example.com".into(),
                    ..Default::default()
                },
                vec![],
                2,
            ),
            (
                pb::Filter {
                    node: "node-b".into(),
                    ..Default::default()
                },
                vec!["dns_degradation"],
                1,
            ),
        ] {
            let r = list_findings(&mut client, ask(filter.clone()))
                .await
                .expect("ListFindings");
            assert_eq!(kinds(&r), want, "{filter:?}");
            assert_eq!(
                r.windows, windows,
                "{filter:?}: the node filter picks windows"
            );
        }
        tc.stop().await;
    }

    async fn the_range_picks_windows_and_bad_requests_say_why(backend) {
        let tc = TestCollector::start_on(backend).await;
        let mut client = tc.client().await;
        let now = now_ms();
        let pay = pod("prod", "payments-1", "php", "node-a");
        let old = finding(
            "old",
            "node-a",
            "close_wait",
            &pay,
            Some(redis()),
            "warning",
            now - 3_600_000,
        );
        let mut a = Pusher::open(&mut client, "node-a", "agent-a").await;
        let mut w = findings_window("node-a", "agent-a", 5, now - 3_600_000, vec![old]);
        w.dropped_windows_before = 3;
        a.send(w).await;
        a.ack_through(5).await;

        // The default range is the last 15 minutes: the hour-old window is out.
        let r = list_findings(&mut client, request(0, 0, false))
            .await
            .expect("ListFindings");
        assert_eq!((r.findings.len(), r.windows, r.dropped_windows), (0, 0, 0));
        let r = list_findings(&mut client, request(now - 7_200_000, 0, false))
            .await
            .expect("ListFindings");
        assert_eq!((r.findings.len(), r.windows, r.dropped_windows), (1, 1, 3));

        for (req, want) in [
            (
                request(now, now, false),
                format!("since_unix_ms {now} is not before until_unix_ms {now}"),
            ),
            (
                request(now + 60_000, 0, false),
                format!(
                    "since_unix_ms {} is not before until_unix_ms ",
                    now + 60_000
                ),
            ),
            (
                request(-1, 0, false),
                "since_unix_ms is -1; times are Unix milliseconds".to_string(),
            ),
            (request(0, -2, false), "until_unix_ms is -2".to_string()),
            (
                with_filter(
                    pb::Filter {
                        namespace: "Prod".into(),
                        ..Default::default()
                    },
                    0,
                ),
                "filter.namespace \"Prod\" is not a Kubernetes name".to_string(),
            ),
            (
                with_filter(
                    pb::Filter {
                        destination: "10.0.0.1:99999".into(),
                        ..Default::default()
                    },
                    0,
                ),
                "filter.destination \"10.0.0.1:99999\"".to_string(),
            ),
        ] {
            let e = list_findings(&mut client, req.clone()).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{req:?}: {e:?}");
            assert!(e.message().starts_with(&want), "{req:?}: {}", e.message());
        }
        tc.stop().await;
    }

    async fn findings_without_an_id_are_stored_counted_and_left_out(backend) {
        let tc = TestCollector::start_on(backend).await;
        let mut client = tc.client().await;
        let t = now_ms() - 60_000;
        let pay = pod("prod", "payments-1", "php", "node-a");
        let nameless = finding(
            "",
            "node-a",
            "close_wait",
            &pay,
            Some(redis()),
            "warning",
            t,
        );
        let named = finding(
            "cw",
            "node-a",
            "close_wait",
            &pay,
            Some(ep("10.77.0.4", 80)),
            "warning",
            t,
        );
        let mut a = Pusher::open(&mut client, "node-a", "agent-a").await;
        a.send(findings_window(
            "node-a",
            "agent-a",
            1,
            t,
            vec![nameless, named],
        ))
        .await;
        a.ack_through(1).await;
        assert_eq!(tc.collector.stats().findings_without_id, 1);
        let r = list_findings(&mut client, request(0, 0, false))
            .await
            .expect("ListFindings");
        let ids: Vec<&str> = r
            .findings
            .iter()
            .flat_map(|m| &m.findings)
            .map(|f| f.id.as_str())
            .collect();
        assert_eq!(ids, ["cw"]);
        tc.stop().await;
    }
}
