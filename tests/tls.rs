//! TLS on the gRPC listener, with certificates made at run time (rcgen):
//! plaintext clients are refused, clients that trust the CA get in, and
//! with `client_ca` only clients with a certificate from that CA do.

mod support;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use std::path::Path;
use std::process::Command;
use support::*;
use switchyard_sdk::{Client, TlsOptions};

/// Writes a new CA as `{prefix}ca.pem`, a server certificate for
/// localhost as `{prefix}server.pem/.key` and a client certificate whose
/// subject common name is `order-service` as `{prefix}client.pem/.key`.
fn certificates_named(dir: &Path, prefix: &str) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    std::fs::write(dir.join(format!("{prefix}ca.pem")), ca.pem()).expect("write");
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
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, san);
        params.extended_key_usages = vec![purpose];
        let cert = params.signed_by(&key, &ca).expect("sign");
        std::fs::write(dir.join(format!("{prefix}{name}.pem")), cert.pem()).expect("write");
        std::fs::write(dir.join(format!("{prefix}{name}.key")), key.serialize_pem())
            .expect("write");
    }
}

/// A CA, a server and a client certificate, as `ca.pem`, `server.pem`...
fn certificates(dir: &Path) {
    certificates_named(dir, "");
}

/// A TLS broker (mutual when `mutual`); returns its https URL.
fn start_tls(dir: &Path, mutual: bool) -> (BrokerProcess, String) {
    start_tls_with(dir, mutual, "")
}

/// Like [`start_tls`], with more config.
fn start_tls_with(dir: &Path, mutual: bool, config: &str) -> (BrokerProcess, String) {
    certificates(dir);
    let client_ca = if mutual { "\n  client_ca: ca.pem" } else { "" };
    write_config(
        dir,
        &format!("tls:\n  cert: server.pem\n  key: server.key{client_ca}\n{config}"),
        ORDER_RULES,
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
    let (broker, url) = start_tls(dir.path(), true);
    let ca_pem = read(dir.path(), "ca.pem");
    let without = TlsOptions {
        ca_pem: ca_pem.clone(),
        identity: None,
    };
    assert!(
        !publishes(&url, Some(without)).await,
        "no client certificate: refused"
    );
    eventually("the refused handshake is audited", || async {
        broker.audit_records().iter().any(|r| {
            r["operation"] == "Authenticate"
                && r["detail"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("TLS handshake refused"))
        })
    })
    .await;
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
        ORDER_RULES,
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

fn trusting(dir: &Path, ca: &str) -> TlsOptions {
    TlsOptions {
        ca_pem: read(dir, ca),
        identity: None,
    }
}

/// `GET PATH` on the HTTP port (metrics, console) over HTTPS trusting
/// `ca`; the status, or the error.
async fn https_get(broker: &BrokerProcess, ca: &[u8], path: &str) -> Result<u16, String> {
    let addr = broker.http_addr();
    let port = addr.rsplit(':').next().expect("port");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca).map_err(|e| e.to_string())?)
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .get(format!("https://localhost:{port}{path}"))
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(response.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_the_console_are_served_over_tls_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, _url) = start_tls(dir.path(), false);
    let ca = read(dir.path(), "ca.pem");
    assert_eq!(https_get(&broker, &ca, "/metrics").await, Ok(200));
    assert_eq!(https_get(&broker, &ca, "/ui/").await, Ok(200));
    let plaintext = std::panic::catch_unwind(|| broker.metrics());
    assert!(
        plaintext.is_err(),
        "plain HTTP to the TLS metrics port fails"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_after_sighup_and_a_broken_one_is_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, url) = start_tls(dir.path(), false);
    let path = dir.path();
    assert!(publishes(&url, Some(trusting(path, "ca.pem"))).await);

    // A broken file: the reload fails and the old certificate stays.
    std::fs::write(path.join("server.key"), "not a key").expect("write");
    broker.signal("HUP");
    eventually("the failed reload is logged", || async {
        broker.log().contains("TLS reload failed")
    })
    .await;
    assert!(
        publishes(&url, Some(trusting(path, "ca.pem"))).await,
        "still serving the old certificate"
    );

    // A certificate from a new CA: new connections get it after SIGHUP.
    certificates_named(path, "next-");
    for name in ["server.pem", "server.key"] {
        std::fs::copy(path.join(format!("next-{name}")), path.join(name)).expect("copy");
    }
    broker.signal("HUP");
    eventually("clients of the new CA get in", || async {
        publishes(&url, Some(trusting(path, "next-ca.pem"))).await
    })
    .await;
    assert!(
        !publishes(&url, Some(trusting(path, "ca.pem"))).await,
        "the old CA no longer verifies the server"
    );
    assert_eq!(
        https_get(&broker, &read(path, "next-ca.pem"), "/metrics").await,
        Ok(200),
        "the metrics listener reloads too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_common_names_are_principals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let acl = "auth:\n  acl:\n    - {principal: order-service, allow: [publish:default]}\n";
    let (broker, url) = start_tls_with(dir.path(), true, acl);
    let options = TlsOptions {
        ca_pem: read(dir.path(), "ca.pem"),
        identity: Some((
            read(dir.path(), "client.pem"),
            read(dir.path(), "client.key"),
        )),
    };
    assert!(
        publishes(&url, Some(options.clone())).await,
        "order-service may publish"
    );
    let client = Client::connect_with(url, Some(options))
        .await
        .expect("connect");
    let denied = client
        .admin()
        .list_topics(switchyard_sdk::proto::ListTopicsRequest {})
        .await
        .expect_err("no view grant");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert!(
        denied.message().contains("\"order-service\""),
        "the certificate's common name is the principal: {}",
        denied.message()
    );
    let audit = std::fs::read_to_string(broker.dir.join("data/audit.log")).expect("audit");
    assert!(audit.contains("\"principal\":\"order-service\""), "{audit}");
}
