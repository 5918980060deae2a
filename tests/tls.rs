//! TLS on the gRPC listener, with certificates made at run time (rcgen):
//! plaintext clients are refused, clients that trust the CA get in, and
//! with `client_ca` only clients with a certificate from that CA do.

mod support;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use std::path::Path;
use std::process::Command;
use support::*;
use switchyard_sdk::{Client, TlsOptions};

/// A CA, a server certificate for localhost and a client certificate,
/// written as PEM files into `dir`.
fn certificates(dir: &Path) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    for (name, san, purpose) in [
        ("server", "localhost", ExtendedKeyUsagePurpose::ServerAuth),
        (
            "client",
            "order-service",
            ExtendedKeyUsagePurpose::ClientAuth,
        ),
    ] {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec![san.to_string()]).expect("params");
        params.extended_key_usages = vec![purpose];
        let cert = params.signed_by(&key, &ca).expect("sign");
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).expect("write");
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).expect("write");
    }
}

const RULES: &str = "
rules:
  - name: orders
    pattern:
      type: [order.placed]
    targets:
      - topic: orders
";

/// A TLS broker (mutual when `mutual`); returns its https URL.
fn start_tls(dir: &Path, mutual: bool) -> (BrokerProcess, String) {
    certificates(dir);
    let client_ca = if mutual { "\n  client_ca: ca.pem" } else { "" };
    write_config(
        dir,
        &format!("tls:\n  cert: server.pem\n  key: server.key{client_ca}\n"),
        RULES,
    );
    let broker = BrokerProcess::start(dir);
    let port = broker.url.rsplit(':').next().expect("port").to_string();
    (broker, format!("https://localhost:{port}"))
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).expect("read")
}

async fn publishes(url: &str, tls: Option<TlsOptions>) -> bool {
    let Ok(client) = Client::connect_with(url.to_string(), tls).await else {
        return false;
    };
    client
        .publish(
            "default",
            event("o1", "order.placed", "k", serde_json::json!({})),
        )
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clients_that_trust_the_ca_get_in_and_plaintext_does_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, url) = start_tls(dir.path(), false);
    let trusted = TlsOptions {
        ca_pem: read(dir.path(), "ca.pem"),
        identity: None,
    };
    assert!(
        publishes(&url, Some(trusted)).await,
        "TLS with the CA works"
    );
    assert!(
        !publishes(&broker.url, None).await,
        "plaintext to a TLS listener fails"
    );
    let stranger = TlsOptions {
        ca_pem: read(dir.path(), "server.pem"),
        identity: None,
    };
    assert!(
        !publishes(&url, Some(stranger)).await,
        "an untrusted certificate fails"
    );
    let output = Command::new(binary())
        .args(["topics", "list", "--url", &url])
        .env("SWITCHYARD_CA_FILE", dir.path().join("ca.pem"))
        .output()
        .expect("cli");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("orders"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_wants_a_client_certificate_from_the_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, url) = start_tls(dir.path(), true);
    let ca_pem = read(dir.path(), "ca.pem");
    let without = TlsOptions {
        ca_pem: ca_pem.clone(),
        identity: None,
    };
    assert!(
        !publishes(&url, Some(without)).await,
        "no client certificate: refused"
    );
    let with = TlsOptions {
        ca_pem,
        identity: Some((
            read(dir.path(), "client.pem"),
            read(dir.path(), "client.key"),
        )),
    };
    assert!(
        publishes(&url, Some(with)).await,
        "a client certificate from the CA: allowed"
    );
}

#[test]
fn a_missing_certificate_file_stops_the_start_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(
        dir.path(),
        "tls:\n  cert: nope.pem\n  key: nope.key\n",
        RULES,
    );
    let output = Command::new(binary())
        .args(["serve", "--config"])
        .arg(dir.path().join("config.yaml"))
        .output()
        .expect("serve");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("nope.pem"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
