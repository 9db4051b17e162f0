//! A throwaway PKI for TLS tests: a CA, a server certificate for
//! "localhost" and 127.0.0.1, and a client certificate, as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

pub struct TestPki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A client certificate from another CA: must be refused under mTLS.
    pub stranger_cert: PathBuf,
    pub stranger_key: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA")
}

fn leaf(
    names: &[&str],
    issuer: &CertifiedIssuer<'static, KeyPair>,
    dir: &Path,
    stem: &str,
) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().expect("key");
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let cert = CertificateParams::new(names)
        .expect("params")
        .signed_by(&key, issuer)
        .expect("signed");
    let (c, k) = (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
    );
    std::fs::write(&c, cert.pem()).expect("write cert");
    std::fs::write(&k, key.serialize_pem()).expect("write key");
    (c, k)
}

impl TestPki {
    pub fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("pki dir");
        let ca1 = ca("sockeye test CA");
        let ca_path = dir.join("ca.crt");
        std::fs::write(&ca_path, ca1.pem()).expect("write CA");
        let (server_cert, server_key) = leaf(&["localhost", "127.0.0.1"], &ca1, dir, "server");
        let (client_cert, client_key) = leaf(&["sockeye-cli"], &ca1, dir, "client");
        let other = ca("somebody else's CA");
        let (stranger_cert, stranger_key) = leaf(&["stranger"], &other, dir, "stranger");
        Self {
            ca: ca_path,
            server_cert,
            server_key,
            client_cert,
            client_key,
            stranger_cert,
            stranger_key,
            issuer: ca1,
            dir: dir.to_path_buf(),
        }
    }

    /// Another certificate for `names` from the same CA (a renewal), as
    /// `<stem>.crt` and `<stem>.key`.
    pub fn leaf(&self, names: &[&str], stem: &str) -> (PathBuf, PathBuf) {
        leaf(names, &self.issuer, &self.dir, stem)
    }
}
