//! TLS and mutual TLS on the TCP listener, with certificates made for the
//! test (rcgen): a CA, a server certificate for localhost/127.0.0.1, client
//! certificates from that CA and from a stranger's CA.

mod common;

use std::net::SocketAddr;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use sockeye_collector::{Collector, TlsConfig};
use sockeye_proto::v1::{self as pb, collector_service_client::CollectorServiceClient};
use tokio::net::TcpListener;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn new_ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).unwrap();
    Ca {
        cert_pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// (certificate PEM, key PEM) signed by `ca`.
fn leaf(ca: &Ca, names: &[&str]) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let cert = CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &ca.issuer)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

struct TlsCollector {
    collector: Collector,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

async fn start(tls: TlsConfig) -> TlsCollector {
    sockeye_collector::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::open(config(dir.path())).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let c = collector.clone();
    tokio::spawn(async move { c.serve_tcp(listener, Some(tls)).await.unwrap() });
    TlsCollector {
        collector,
        addr,
        _dir: dir,
    }
}

/// One QueryTop over a fresh connection; `Err` with the reason when the
/// connection or the call fails.
async fn try_query(
    addr: SocketAddr,
    ca_pem: Option<&str>,
    identity: Option<&(String, String)>,
) -> Result<pb::QueryTopResponse, String> {
    let scheme = if ca_pem.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}")).unwrap();
    if let Some(ca) = ca_pem {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .domain_name("localhost");
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| e.to_string())?;
    }
    let channel = within("connect", endpoint.connect())
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    within(
        "QueryTop",
        CollectorServiceClient::new(channel).query_top(pb::QueryTopRequest::default()),
    )
    .await
    .map(|r| r.into_inner())
    .map_err(|s| format!("call: {s:?}"))
}

#[tokio::test]
async fn tls_serves_clients_that_trust_its_ca() {
    let ca = new_ca("sockeye test CA");
    let (cert, key) = leaf(&ca, &["localhost", "127.0.0.1"]);
    let tls = TlsConfig::from_pem(cert.into_bytes(), key.into_bytes(), None).unwrap();
    assert!(!tls.is_mutual());
    let s = start(tls).await;
    let ok = try_query(s.addr, Some(&ca.cert_pem), None).await;
    assert_eq!(ok.map(|r| r.windows), Ok(0));
    // Plaintext to a TLS port fails.
    assert!(try_query(s.addr, None, None).await.is_err());
    // A client that trusts another CA refuses the server.
    let other = new_ca("someone else");
    assert!(try_query(s.addr, Some(&other.cert_pem), None)
        .await
        .is_err());
    s.collector.close().await.unwrap();
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_from_its_ca() {
    let ca = new_ca("sockeye test CA");
    let (cert, key) = leaf(&ca, &["localhost", "127.0.0.1"]);
    let tls = TlsConfig::from_pem(
        cert.into_bytes(),
        key.into_bytes(),
        Some(ca.cert_pem.clone().into_bytes()),
    )
    .unwrap();
    assert!(tls.is_mutual());
    let s = start(tls).await;

    let agent = leaf(&ca, &["agent-node-a"]);
    let ok = try_query(s.addr, Some(&ca.cert_pem), Some(&agent)).await;
    assert_eq!(
        ok.map(|r| r.windows),
        Ok(0),
        "a client with a certificate from the CA"
    );

    let no_cert = try_query(s.addr, Some(&ca.cert_pem), None).await;
    let why = no_cert.expect_err("a client without a certificate is refused");
    assert!(why.contains("CertificateRequired"), "{why}");

    let stranger = new_ca("someone else");
    let forged = leaf(&stranger, &["agent-node-a"]);
    let refused = try_query(s.addr, Some(&ca.cert_pem), Some(&forged)).await;
    let why = refused.expect_err("a certificate from another CA is refused");
    assert!(why.contains("UnknownCA"), "{why}");

    // Push works end to end under mTLS too.
    let endpoint = Endpoint::from_shared(format!("https://{}", s.addr))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&ca.cert_pem))
                .domain_name("localhost")
                .identity(Identity::from_pem(&agent.0, &agent.1)),
        )
        .unwrap();
    let mut client = CollectorServiceClient::new(endpoint.connect().await.unwrap());
    let mut p = Pusher::open(&mut client, "node-a", "agent-1").await;
    p.send(busy_window("node-a", "agent-1", 1, now_ms())).await;
    assert_eq!(p.next_ack().await.acked_seq, 1);
    drop(p);
    s.collector.close().await.unwrap();
}

#[test]
fn bad_tls_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let e = TlsConfig::from_files(&missing, &missing, None).unwrap_err();
    assert!(e.to_string().starts_with("cannot read --tls-cert"), "{e}");

    let ca = new_ca("sockeye test CA");
    let (cert, key) = leaf(&ca, &["localhost"]);
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    assert!(TlsConfig::from_files(&cert_path, &key_path, None).is_ok());
    // Key and certificate swapped.
    let e = TlsConfig::from_files(&key_path, &cert_path, None).unwrap_err();
    assert!(e.to_string().contains("has no PEM certificate"), "{e}");
    let e = TlsConfig::from_files(&cert_path, &cert_path, None).unwrap_err();
    assert!(e.to_string().contains("has no PEM private key"), "{e}");
    let e = TlsConfig::from_files(&cert_path, &key_path, Some(&key_path)).unwrap_err();
    assert!(e.to_string().contains("--tls-client-ca"), "{e}");
}

/// Puts `cert` and `key` in place the way the kubelet updates a mounted
/// Secret: a new directory, then one atomic rename of the `..data` symlink
/// that `tls.crt` and `tls.key` point through.
fn publish(dir: &std::path::Path, version: &str, cert: &str, key: &str) {
    let v = dir.join(format!("..{version}"));
    std::fs::create_dir_all(&v).unwrap();
    std::fs::write(v.join("tls.crt"), cert).unwrap();
    std::fs::write(v.join("tls.key"), key).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for f in ["tls.crt", "tls.key"] {
        if !dir.join(f).exists() {
            std::os::unix::fs::symlink(format!("..data/{f}"), dir.join(f)).unwrap();
        }
    }
}

async fn query_as(addr: SocketAddr, ca: &str, name: &str) -> Result<u64, String> {
    let endpoint = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .domain_name(name),
        )
        .map_err(|e| e.to_string())?;
    let channel = within("connect", endpoint.connect())
        .await
        .map_err(|e| format!("{e:?}"))?;
    CollectorServiceClient::new(channel)
        .query_top(pb::QueryTopRequest::default())
        .await
        .map(|r| r.into_inner().windows)
        .map_err(|s| format!("{s:?}"))
}

#[tokio::test]
async fn a_renewed_certificate_is_served_to_new_connections_while_open_streams_go_on() {
    sockeye_collector::install_crypto_provider();
    let ca = new_ca("sockeye test CA");
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::create_dir_all(&secret).unwrap();
    let (old_cert, old_key) = leaf(&ca, &["old.sockeye.test", "127.0.0.1"]);
    publish(&secret, "v1", &old_cert, &old_key);
    let tls =
        TlsConfig::from_files(&secret.join("tls.crt"), &secret.join("tls.key"), None).unwrap();
    let mut cfg = config(dir.path());
    cfg.tls_reload_every = std::time::Duration::from_millis(100);
    let collector = Collector::open(cfg).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let c = collector.clone();
    tokio::spawn(async move { c.serve_tcp(listener, Some(tls)).await.unwrap() });

    assert_eq!(
        query_as(addr, &ca.cert_pem, "old.sockeye.test").await,
        Ok(0)
    );
    assert!(query_as(addr, &ca.cert_pem, "new.sockeye.test")
        .await
        .is_err());
    // A Push stream and a watcher, open across the renewal.
    let endpoint = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&ca.cert_pem))
                .domain_name("old.sockeye.test"),
        )
        .unwrap();
    let mut client = CollectorServiceClient::new(endpoint.connect().await.unwrap());
    let mut watch = client
        .watch_windows(pb::WatchWindowsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut p = Pusher::open(&mut client, "node-a", "agent-1").await;
    let t = now_ms();
    p.send(busy_window("node-a", "agent-1", 1, t)).await;
    assert_eq!(p.ack_through(1).await.acked_seq, 1);

    let (new_cert, new_key) = leaf(&ca, &["new.sockeye.test", "127.0.0.1"]);
    publish(&secret, "v2", &new_cert, &new_key);
    within("the reload", async {
        while collector.stats().tls_reloads < 1 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(
        query_as(addr, &ca.cert_pem, "new.sockeye.test").await,
        Ok(1)
    );
    assert!(query_as(addr, &ca.cert_pem, "old.sockeye.test")
        .await
        .is_err());
    // The streams opened before are the same streams, still working.
    p.send(busy_window("node-a", "agent-1", 2, t + 1)).await;
    assert_eq!(p.ack_through(2).await.acked_seq, 2);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let w = within("a watched window", watch.message())
            .await
            .unwrap()
            .unwrap();
        seen.push(w.seq);
    }
    assert_eq!(seen, vec![1, 2]);

    // A half-done renewal (a key that is not the certificate's) is refused,
    // counted, and the current certificate stays.
    let (other_cert, _) = leaf(&ca, &["broken.sockeye.test"]);
    publish(&secret, "v3", &other_cert, &new_key);
    within("the refused reload", async {
        while collector.stats().tls_reload_errors < 1 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(
        query_as(addr, &ca.cert_pem, "new.sockeye.test").await,
        Ok(2)
    );
    assert_eq!(collector.stats().tls_reloads, 1);
    drop(p);
    collector.close().await.unwrap();
}

#[tokio::test]
async fn the_certificate_script_makes_what_the_collector_serves_and_renews_under_the_same_ca() {
    sockeye_collector::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/make-collector-cert.sh"
    );
    let run = || {
        let out = std::process::Command::new("bash")
            .arg(script)
            .arg(&pki)
            .output()
            .expect("run make-collector-cert.sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run();
    let ca = std::fs::read_to_string(pki.join("ca.crt")).unwrap();
    let first = std::fs::read(pki.join("tls.crt")).unwrap();
    let tls = TlsConfig::from_files(&pki.join("tls.crt"), &pki.join("tls.key"), None).unwrap();
    let s = start(tls).await;
    assert_eq!(
        query_as(s.addr, &ca, "sockeye-collector.sockeye.svc").await,
        Ok(0)
    );
    // A renewal: a new certificate, the same CA.
    run();
    assert_ne!(std::fs::read(pki.join("tls.crt")).unwrap(), first);
    assert_eq!(std::fs::read_to_string(pki.join("ca.crt")).unwrap(), ca);
    let tls = TlsConfig::from_files(&pki.join("tls.crt"), &pki.join("tls.key"), None).unwrap();
    let t = start(tls).await;
    assert_eq!(
        query_as(t.addr, &ca, "sockeye-collector.sockeye.svc.cluster.local").await,
        Ok(0)
    );
    s.collector.close().await.unwrap();
    t.collector.close().await.unwrap();
}
