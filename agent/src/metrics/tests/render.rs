//! The rendered families and the workload labels.

use super::*;

#[test]
fn workload_labels_never_carry_uids_or_ids() {
    let l = WorkloadLabels::of(&pod(Some("app"), Some("checkout")));
    assert_eq!(
        (
            l.namespace.as_str(),
            l.workload.as_str(),
            l.container.as_str()
        ),
        ("shop", "checkout", "app")
    );
    let bare = WorkloadLabels::of(&pod(None, None));
    assert_eq!(
        (bare.workload.as_str(), bare.container.as_str()),
        ("checkout-7d9f8b6c5-x2x4q", ""),
        "no owner: the pod's name; the sandbox has no container"
    );
    let mut w = pod(None, None);
    w.pod = None;
    assert_eq!(WorkloadLabels::of(&w).workload, "unnamed_pod", "no uid");
    w.owner = Some(Owner::Pod {
        pod_uid: "1111-2222".into(),
    });
    assert_eq!(WorkloadLabels::of(&w).workload, "unnamed_pod");
    w.owner = Some(Owner::Container {
        runtime: Runtime::Podman,
        id: "4f2a9c1e0b7d4f2a".into(),
        pod_uid: None,
    });
    assert_eq!(WorkloadLabels::of(&w).workload, "podman:4f2a9c1e0b7d");
    w.owner = Some(Owner::Host);
    assert_eq!(
        WorkloadLabels::of(&w).workload,
        "host",
        "no unit in its path"
    );
    w.cgroup_path = Some("/system.slice/redis-server.service".into());
    assert_eq!(WorkloadLabels::of(&w).workload, "host/redis-server.service");
    w.owner = None;
    let gone = WorkloadLabels::of(&w);
    assert_eq!(
        (gone.namespace.as_str(), gone.workload.as_str()),
        ("", "unknown")
    );
}

#[test]
fn renders_every_family_from_a_fixed_state() {
    let mut agg = Aggregator::new(Limits::default());
    connect(&mut agg, 1, 6379, 2 * MS, true);
    connect(&mut agg, 2, 6379, 2 * MS, true);
    connect(&mut agg, 3, 6379, 300 * MS, true);
    connect(&mut agg, 4, 6379, 40_000, false);
    refused(&mut agg, 5, 6380);
    let mut accepted = ev(EventKind::Accepted, 6, 1000 * MS);
    accepted.raw.local_port = 8080;
    agg.handle(&accepted);

    let mut dns = DnsAggregates::new(10);
    let mut stats = DnsStats {
        queries: 4,
        timeouts: 1,
        ..Default::default()
    };
    stats.rcodes[0] = 2; // NOERROR
    stats.rcodes[3] = 1; // NXDOMAIN
    for ms in [3, 4, 30] {
        stats.latency.record(ms * MS);
    }
    let server: SocketAddr = "10.96.0.10:53".parse().unwrap();
    dns.rows.insert(
        RowKey {
            cgroup_id: 42,
            name: Arc::from("redis.shop.svc.cluster.local"),
            qtype: 1,
            server,
        },
        stats,
    );
    let mut health = Health {
        events_received: 11,
        tracked_sockets: 2,
        flows: 3,
        ..Default::default()
    };
    health.lost.insert("kernel_ringbuf_full", 2);
    health.lost.insert("user_flows_evicted", 0);
    health.dns.packets = 9;
    health.dns.parse_errors.insert("label_too_long", 1);
    health.push = Some(crate::snapshot::PushHealth {
        windows_sent: 5,
        windows_acked: 4,
        windows_buffered: 1,
        reconnects: 2,
    });

    let (mut m, handle) = metrics(200);
    m.fold(&mut agg, &dns, health, &mut checkout, 0);
    let t = text(&handle);
    println!("{t}");

    for (family, kind) in [
        ("sockeye_tcp_connect_duration_seconds", "histogram"),
        ("sockeye_tcp_connect_failures", "counter"),
        ("sockeye_tcp_syn_retransmits", "counter"),
        ("sockeye_tcp_connections", "counter"),
        ("sockeye_tcp_open_sockets", "gauge"),
        ("sockeye_dns_request_duration_seconds", "histogram"),
        ("sockeye_dns_queries", "counter"),
        ("sockeye_dns_responses", "counter"),
        ("sockeye_dns_timeouts", "counter"),
        ("sockeye_build", "info"),
        ("sockeye_events_received", "counter"),
        ("sockeye_kernel_events_emitted", "counter"),
        ("sockeye_dropped_events", "counter"),
        ("sockeye_untracked_socket_events", "counter"),
        ("sockeye_dns_malformed_messages", "counter"),
        ("sockeye_table_entries", "gauge"),
        ("sockeye_table_capacity", "gauge"),
        ("sockeye_metrics_overflow", "counter"),
        ("sockeye_process_resident_memory_bytes", "gauge"),
        ("sockeye_process_cpu_seconds", "counter"),
    ] {
        assert!(
            t.contains(&format!("\n# TYPE {family} {kind}\n")),
            "{family} {kind} missing"
        );
    }
    assert!(t.ends_with("# EOF\n"));

    // The encoder puts `le` first.
    let out = |le: &str| format!(r#"{{{le}{APP},destination="10.0.0.9:6379"}}"#);
    let h = "sockeye_tcp_connect_duration_seconds";
    assert_eq!(value(&t, &format!("{h}_count{}", out(""))), Some(4.0));
    assert_eq!(value(&t, &format!("{h}_sum{}", out(""))), Some(0.30404));
    for (le, n) in [
        ("0.0001", 1.0),
        ("0.0025", 3.0),
        ("0.25", 3.0),
        ("0.5", 4.0),
        ("+Inf", 4.0),
    ] {
        let bucket = format!("{h}_bucket{}", out(&format!(r#"le="{le}","#)));
        assert_eq!(value(&t, &bucket), Some(n), "{bucket}");
    }

    let refused_series = format!(
        r#"sockeye_tcp_connect_failures_total{{{APP},destination="10.0.0.9:6380",cause="refused"}}"#
    );
    assert_eq!(value(&t, &refused_series), Some(1.0));
    let timed_out = refused_series.replace("refused", "timed_out");
    assert_eq!(value(&t, &timed_out), Some(0.0), "every cause, zeros too");
    assert_eq!(
        value(
            &t,
            &format!(
                r#"sockeye_tcp_connections_total{{{APP},direction="inbound",destination=":8080"}}"#
            )
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &t,
            &format!(
                r#"sockeye_tcp_open_sockets{{{APP},direction="outbound",destination="10.0.0.9:6379",state="ESTABLISHED"}}"#
            )
        ),
        Some(1.0),
        "the connect left open"
    );
    assert!(
        !t.contains(r#"state="CLOSE_WAIT""#),
        "states with no socket are left out"
    );

    let srv = format!(r#"{APP},server="10.96.0.10:53""#);
    let d = "sockeye_dns_request_duration_seconds";
    assert_eq!(value(&t, &format!("{d}_count{{{srv}}}")), Some(3.0));
    assert_eq!(
        value(&t, &format!("{d}_bucket{{le=\"0.005\",{srv}}}")),
        Some(2.0)
    );
    assert_eq!(
        value(&t, &format!("sockeye_dns_queries_total{{{srv}}}")),
        Some(4.0)
    );
    for (rcode, n) in [("NOERROR", 2.0), ("NXDOMAIN", 1.0), ("SERVFAIL", 0.0)] {
        let s = format!("sockeye_dns_responses_total{{{srv},rcode=\"{rcode}\"}}");
        assert_eq!(value(&t, &s), Some(n), "{rcode}");
    }
    assert_eq!(
        value(&t, &format!("sockeye_dns_timeouts_total{{{srv}}}")),
        Some(1.0)
    );

    for (series, v) in [
        (r#"sockeye_events_received_total{ring="tcp"}"#, 11.0),
        (r#"sockeye_events_received_total{ring="dns"}"#, 9.0),
        (
            r#"sockeye_dropped_events_total{counter="kernel_ringbuf_full"}"#,
            2.0,
        ),
        (
            r#"sockeye_dropped_events_total{counter="user_flows_evicted"}"#,
            0.0,
        ),
        (
            r#"sockeye_dropped_events_total{counter="user_metrics_flows_lost"}"#,
            0.0,
        ),
        (
            r#"sockeye_dns_malformed_messages_total{reason="label_too_long"}"#,
            1.0,
        ),
        (r#"sockeye_table_entries{table="flows"}"#, 3.0),
        (r#"sockeye_table_capacity{table="flows"}"#, 16.0),
        (
            r#"sockeye_table_entries{table="metrics_tcp_label_sets"}"#,
            3.0,
        ),
        (
            r#"sockeye_table_capacity{table="metrics_tcp_label_sets"}"#,
            200.0,
        ),
        (r#"sockeye_table_entries{table="dns_names"}"#, 0.0),
        (r#"sockeye_metrics_overflow_total{group="tcp"}"#, 0.0),
        ("sockeye_process_resident_memory_bytes", 4096.0),
        ("sockeye_process_cpu_seconds_total", 0.5),
        ("sockeye_push_windows_sent_total", 5.0),
        ("sockeye_push_windows_acked_total", 4.0),
        ("sockeye_push_windows_buffered", 1.0),
        ("sockeye_push_reconnects_total", 2.0),
    ] {
        assert_eq!(value(&t, series), Some(v), "{series}");
    }
    let version = format!(
        r#"sockeye_build_info{{version="{}"}}"#,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&t, &version), Some(1.0));
}
