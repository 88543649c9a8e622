//! The storage tier trusts no one by default: a bookie (and a monolithic
//! broker's replication service) given a token key serves only the
//! configured broker role; everyone else is refused on every RPC and
//! changes nothing. A bookie will not serve a non-loopback address without
//! authentication unless told `--insecure`. Mutual TLS (client certificates
//! naming a broker role) works in place of tokens.

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use magnetar_auth::PeerCredentials;
use magnetar_proto::bookie::{
    DeleteLedgerRequest, ErrorCode, FenceRequest, HealthRequest, ReadEntriesRequest, ReadLacRequest,
};
use magnetar_proto::replication::replication_client::ReplicationClient;
use magnetar_proto::replication::FetchRequest;
use magnetar_tests::clients::{client, receive_all, send, subscribe};
use magnetar_tests::wire::{self, entry, payload_for, BookieRpc, MASTER_KEY};
use magnetar_tests::{free_port, magnetar_bin, wait_until, BookieProcess, Etcd, LaunchedBookie};
use tonic::transport::Channel;

/// Runs `magnetar tokens …` and returns what it printed.
fn magnetar_tokens(args: &[&str]) -> String {
    let out = Command::new(magnetar_bin())
        .arg("tokens")
        .args(args)
        .output()
        .expect("runs magnetar tokens");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A fresh HS256 key as `--token-secret-key` takes it.
fn secret_key() -> String {
    format!("base64:{}", magnetar_tokens(&["create-secret-key"]))
}

fn token(key: &str, role: &str) -> String {
    magnetar_tokens(&["create", "--secret-key", key, "--subject", role])
}

fn credentials(token: &str) -> PeerCredentials {
    PeerCredentials::token(token).unwrap()
}

/// Every bookie RPC once, on ledger `ledger`: the status codes it got
/// (`Ok` where the call itself went through).
async fn every_rpc(client: &mut BookieRpc, ledger: u64) -> Vec<(&'static str, tonic::Code)> {
    fn code<T>(r: Result<T, tonic::Status>) -> tonic::Code {
        r.map(|_| tonic::Code::Ok).unwrap_or_else(|s| s.code())
    }
    let add = wire::add_batches(
        client,
        vec![vec![entry(ledger, 3, payload_for(ledger, 3, 16))]],
    )
    .await
    .map_err(|e| match e.downcast::<tonic::Status>() {
        Ok(status) => status,
        Err(other) => tonic::Status::unknown(other.to_string()),
    });
    vec![
        ("AddEntries", code(add)),
        (
            "ReadEntry",
            code(
                client
                    .read_entry(magnetar_proto::bookie::ReadEntryRequest {
                        ledger_id: ledger,
                        entry_id: 0,
                    })
                    .await,
            ),
        ),
        (
            "ReadEntries",
            code(
                client
                    .read_entries(ReadEntriesRequest {
                        ledger_id: ledger,
                        first_entry_id: 0,
                        last_entry_id: 2,
                        max_bytes: 1 << 20,
                    })
                    .await,
            ),
        ),
        (
            "ReadLac",
            code(
                client
                    .read_lac(ReadLacRequest {
                        ledger_id: ledger,
                        ..Default::default()
                    })
                    .await,
            ),
        ),
        (
            "Fence",
            code(
                client
                    .fence(FenceRequest {
                        ledger_id: ledger,
                        master_key: Bytes::from_static(MASTER_KEY),
                    })
                    .await,
            ),
        ),
        (
            // A ledger the bookie has never seen, under a key of the
            // caller's choosing: planting it would lock the real writer out.
            "Fence (unknown ledger)",
            code(
                client
                    .fence(FenceRequest {
                        ledger_id: ledger + 1,
                        master_key: Bytes::from_static(b"planted"),
                    })
                    .await,
            ),
        ),
        (
            "DeleteLedger",
            code(
                client
                    .delete_ledger(DeleteLedgerRequest {
                        ledger_id: ledger,
                        master_key: Bytes::from_static(MASTER_KEY),
                    })
                    .await,
            ),
        ),
        ("Health", code(client.health(HealthRequest {}).await)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_brokers_tokens_reach_a_bookie_and_nothing_else_changes_its_data() {
    let etcd = Etcd::start().await.unwrap();
    let key = secret_key();
    let bookie = BookieProcess::start(
        &etcd.metadata_url("storage-auth"),
        &["--token-secret-key", &key],
    )
    .await
    .unwrap();
    let mut broker = bookie
        .client_with(credentials(&token(&key, "broker")))
        .await
        .unwrap();
    let ledger = 7;
    let stored: Vec<_> = (0..3)
        .map(|e| entry(ledger, e, payload_for(ledger, e, 64)))
        .collect();
    let results = wire::add_batches(&mut broker, vec![stored]).await.unwrap();
    assert!(results[0]
        .results
        .iter()
        .all(|r| r.code == ErrorCode::Ok as i32));

    let other_key = secret_key();
    let strangers = [
        (
            "no token",
            PeerCredentials::none(),
            tonic::Code::Unauthenticated,
        ),
        (
            "a token signed with another key",
            credentials(&token(&other_key, "broker")),
            tonic::Code::Unauthenticated,
        ),
        (
            "a client role's token",
            credentials(&token(&key, "app")),
            tonic::Code::PermissionDenied,
        ),
    ];
    for (who, creds, expected) in strangers {
        let mut stranger = bookie.client_with(creds).await.unwrap();
        for (rpc, got) in every_rpc(&mut stranger, ledger).await {
            assert_eq!(got, expected, "{rpc} from {who}");
        }
    }

    // Nothing the strangers sent took effect: the entries are all there,
    // the ledger is neither fenced nor deleted, no key was planted, and the
    // writer goes on.
    for e in 0..3 {
        let (code, payload) = wire::read_entry(&mut broker, ledger, e).await.unwrap();
        assert_eq!((code, payload), (ErrorCode::Ok, payload_for(ledger, e, 64)));
    }
    let lac = broker
        .read_lac(ReadLacRequest {
            ledger_id: ledger,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!lac.fenced, "a stranger fenced the ledger");
    let more = vec![vec![
        entry(ledger, 3, payload_for(ledger, 3, 64)),
        entry(ledger + 1, 0, payload_for(ledger + 1, 0, 64)),
    ]];
    let results = wire::add_batches(&mut broker, more).await.unwrap();
    let codes: Vec<i32> = results[0].results.iter().map(|r| r.code).collect();
    assert_eq!(
        codes,
        vec![ErrorCode::Ok as i32; 2],
        "the writer was locked out"
    );

    // Even a broker deletes a ledger only with its master key.
    let wrong = broker
        .delete_ledger(DeleteLedgerRequest {
            ledger_id: ledger,
            master_key: Bytes::from_static(b"guessed"),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        wrong.code,
        ErrorCode::BadMasterKey as i32,
        "{}",
        wrong.message
    );
    assert_eq!(
        wire::read_entry(&mut broker, ledger, 0).await.unwrap().0,
        ErrorCode::Ok
    );
    let right = broker
        .delete_ledger(DeleteLedgerRequest {
            ledger_id: ledger,
            master_key: Bytes::from_static(MASTER_KEY),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(right.code, ErrorCode::Ok as i32, "{}", right.message);
    assert_eq!(
        wire::read_entry(&mut broker, ledger, 0).await.unwrap().0,
        ErrorCode::NoSuchLedger
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_store_on_authenticated_bookies_only_with_their_token() {
    let etcd = Etcd::start().await.unwrap();
    let url = etcd.metadata_url("storage-auth-e2e");
    let key = secret_key();
    let mut bookies = Vec::new();
    for _ in 0..2 {
        bookies.push(
            BookieProcess::start(&url, &["--token-secret-key", &key])
                .await
                .unwrap(),
        );
    }
    let replicated = [
        "--ensemble-size",
        "2",
        "--write-quorum",
        "2",
        "--ack-quorum",
        "2",
    ];
    let broker_token = token(&key, "broker");
    let mut args = vec!["--storage-token", broker_token.as_str()];
    args.extend(replicated);
    let broker = BookieProcess::start_broker(&url, &args).await.unwrap();
    let pulsar = client(&broker.pulsar_url()).await;
    let topic = "persistent://public/default/stored-with-a-token";
    let mut consumer = subscribe(&pulsar, topic).await;
    let acked = send(&pulsar, topic, 0..50).await;
    assert_eq!(acked, (0..50).collect::<Vec<_>>());
    assert_eq!(receive_all(&mut consumer, 50).await, acked);

    // A broker without the token gets nothing stored; it says why.
    let tokenless = BookieProcess::start_broker(&url, &replicated)
        .await
        .unwrap();
    let pulsar = client(&tokenless.pulsar_url()).await;
    let attempt = tokio::spawn(async move {
        let mut producer = pulsar
            .producer()
            .with_topic("persistent://public/default/no-token")
            .build()
            .await?;
        producer.send_non_blocking(b"x".to_vec()).await?.await?;
        Ok::<_, pulsar::Error>(())
    });
    let log = tokenless.log_path();
    wait_until(
        "the tokenless broker to log the refusal",
        Duration::from_secs(30),
        || {
            let log = log.clone();
            async move {
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains("refused this broker's credentials")
            }
        },
    )
    .await;
    if attempt.is_finished() {
        let outcome = attempt.await.unwrap();
        assert!(
            outcome.is_err(),
            "a broker without a storage token stored a message"
        );
    } else {
        attempt.abort();
    }
}

fn start_bookie_on(listen: &str, extra: &[&str]) -> LaunchedBookie {
    let dir = tempfile::tempdir().unwrap();
    let metadata = format!("embedded://{}", dir.path().join("meta").display());
    LaunchedBookie::launch(dir, &metadata, listen, extra, &[])
}

#[test]
fn a_bookie_refuses_a_public_address_without_auth_unless_insecure() {
    let public = format!("0.0.0.0:{}", free_port());
    let why = start_bookie_on(&public, &[])
        .outcome
        .clone()
        .expect_err("served a public address without authentication");
    assert!(why.contains("refusing to serve"), "{why}");
    assert!(why.contains("--insecure"), "{why}");

    let insecure = start_bookie_on(&public, &["--insecure"]);
    let line = insecure.outcome.as_ref().expect("--insecure serves");
    assert!(line.contains("serving gRPC"), "{line}");
    drop(insecure);

    let key = secret_key();
    let keyed = start_bookie_on(&public, &["--token-secret-key", &key]);
    let line = keyed.outcome.as_ref().expect("a token key is enough");
    assert!(line.contains("serving gRPC"), "{line}");
}

/// A replication fetch of a partition nobody leads, as `creds`: `Ok` when
/// the service admitted the caller (it answers such a fetch in-band).
async fn fetch_unknown_partition(channel: Channel, creds: PeerCredentials) -> tonic::Code {
    ReplicationClient::with_interceptor(channel, creds)
        .fetch(FetchRequest {
            partition: "/nonexistent".into(),
            log_id: 1,
            replica_id: "me".into(),
            leader_epoch: 1,
            fetch_offset: 0,
            max_bytes: 1 << 20,
            max_wait_ms: 0,
        })
        .await
        .map(|_| tonic::Code::Ok)
        .unwrap_or_else(|s| s.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monolithic_brokers_replication_service_serves_only_broker_tokens() {
    let etcd = Etcd::start().await.unwrap();
    let key = secret_key();
    let data = tempfile::tempdir().unwrap();
    let replication = format!("127.0.0.1:{}", free_port());
    let data_dir = data.path().display().to_string();
    let _broker = BookieProcess::start_broker(
        &etcd.metadata_url("replication-auth"),
        &[
            "--architecture",
            "monolithic",
            "--data-dir",
            &data_dir,
            "--replication-listen",
            &replication,
            "--auth-enabled",
            "--token-secret-key",
            &key,
            "--superuser-roles",
            "admin",
        ],
    )
    .await
    .unwrap();
    let endpoint = Channel::from_shared(format!("http://{replication}")).unwrap();
    // The Pulsar port accepts before the replication service is bound.
    wait_until(
        "the replication service to accept",
        Duration::from_secs(30),
        || {
            let endpoint = endpoint.clone();
            async move { endpoint.connect().await.is_ok() }
        },
    )
    .await;
    let fetch = |creds: PeerCredentials| {
        let endpoint = endpoint.clone();
        async move {
            let channel = endpoint.connect().await.unwrap();
            fetch_unknown_partition(channel, creds).await
        }
    };
    assert_eq!(
        fetch(PeerCredentials::none()).await,
        tonic::Code::Unauthenticated
    );
    assert_eq!(
        fetch(credentials(&token(&key, "app"))).await,
        tonic::Code::PermissionDenied
    );
    // A broker's token gets through to the service itself, which answers
    // in-band (this broker leads no such partition).
    assert_eq!(
        fetch(credentials(&token(&key, "broker"))).await,
        tonic::Code::Ok
    );
}

/// Writes `text` to `name` in `dir`; returns the path as a flag value.
fn pem_file(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// A broker's flags for mutual TLS with the storage tier: `certificate`
/// written under `dir`, and the CA file peers' certificates must chain to.
fn broker_tls_flags(
    dir: &std::path::Path,
    certificate: &magnetar_tests::certs::Issued,
    ca_file: String,
) -> [String; 6] {
    [
        "--storage-tls-cert".to_string(),
        pem_file(dir, "broker.pem", &certificate.cert_pem),
        "--storage-tls-key".to_string(),
        pem_file(dir, "broker.key", &certificate.key_pem),
        "--storage-tls-trust-certs".to_string(),
        ca_file,
    ]
}

/// Mutual TLS instead of tokens: a bookie given trust roots admits only
/// peers whose client certificate they verify and whose common name is a
/// broker role; a plain-TCP client, a TLS client without a certificate,
/// one with a certificate from another CA and one naming another role get
/// nothing, and a broker with its certificate stores and reads through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_only_broker_certificates_to_a_bookie() {
    use magnetar_tests::certs::TestCa;

    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("storage-ca").unwrap();
    let bookie_cert = ca.issue("bookie").unwrap();
    let broker_cert = ca.issue("broker").unwrap();
    let app_cert = ca.issue("app").unwrap();
    let rogue = TestCa::new("rogue-ca").unwrap().issue("broker").unwrap();
    let ca_file = pem_file(dir.path(), "ca.pem", &ca.pem());
    let bookie_files = [
        "--tls-cert".to_string(),
        pem_file(dir.path(), "bookie.pem", &bookie_cert.cert_pem),
        "--tls-key".to_string(),
        pem_file(dir.path(), "bookie.key", &bookie_cert.key_pem),
        "--tls-trust-certs".to_string(),
        ca_file.clone(),
    ];
    let bookie_args: Vec<&str> = bookie_files.iter().map(String::as_str).collect();

    let etcd = Etcd::start().await.unwrap();
    let url = etcd.metadata_url("storage-mtls");
    let mut bookies = Vec::new();
    for _ in 0..2 {
        bookies.push(BookieProcess::start(&url, &bookie_args).await.unwrap());
    }
    let bookie = &bookies[0];
    let trust = ca.pem();
    let mut broker = bookie
        .client_tls(
            trust.as_bytes(),
            Some((
                broker_cert.cert_pem.as_bytes(),
                broker_cert.key_pem.as_bytes(),
            )),
        )
        .await
        .unwrap();
    let ledger = 11;
    let stored = vec![entry(ledger, 0, payload_for(ledger, 0, 64))];
    let results = wire::add_batches(&mut broker, vec![stored]).await.unwrap();
    assert_eq!(results[0].results[0].code, ErrorCode::Ok as i32);

    // Another role's certificate from the right CA: refused on every RPC.
    let mut app = bookie
        .client_tls(
            trust.as_bytes(),
            Some((app_cert.cert_pem.as_bytes(), app_cert.key_pem.as_bytes())),
        )
        .await
        .unwrap();
    for (rpc, got) in every_rpc(&mut app, ledger).await {
        assert_eq!(
            got,
            tonic::Code::PermissionDenied,
            "{rpc} from an app certificate"
        );
    }
    // No certificate, a certificate of another CA, or no TLS at all: no
    // connection, or every call fails.
    let strangers = [
        ("no client certificate", None),
        (
            "a certificate from another CA",
            Some((rogue.cert_pem.as_bytes(), rogue.key_pem.as_bytes())),
        ),
    ];
    for (who, identity) in strangers {
        if let Ok(mut stranger) = bookie.client_tls(trust.as_bytes(), identity).await {
            for (rpc, got) in every_rpc(&mut stranger, ledger).await {
                assert_ne!(got, tonic::Code::Ok, "{rpc} from {who} went through");
            }
        }
    }
    if let Ok(mut plain) = bookie.client().await {
        for (rpc, got) in every_rpc(&mut plain, ledger).await {
            assert_ne!(got, tonic::Code::Ok, "{rpc} over plain TCP went through");
        }
    }
    // Nothing of theirs took effect.
    let (code, payload) = wire::read_entry(&mut broker, ledger, 0).await.unwrap();
    assert_eq!((code, payload), (ErrorCode::Ok, payload_for(ledger, 0, 64)));
    let lac = broker
        .read_lac(ReadLacRequest {
            ledger_id: ledger,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!lac.fenced, "a stranger fenced the ledger");

    // A broker with its certificate stores through both bookies.
    let broker_files = broker_tls_flags(dir.path(), &broker_cert, ca_file);
    let mut args: Vec<&str> = broker_files.iter().map(String::as_str).collect();
    args.extend([
        "--ensemble-size",
        "2",
        "--write-quorum",
        "2",
        "--ack-quorum",
        "2",
    ]);
    let process = BookieProcess::start_broker(&url, &args).await.unwrap();
    let pulsar = client(&process.pulsar_url()).await;
    let topic = "persistent://public/default/stored-over-mtls";
    let mut consumer = subscribe(&pulsar, topic).await;
    let acked = send(&pulsar, topic, 0..50).await;
    assert_eq!(acked, (0..50).collect::<Vec<_>>());
    assert_eq!(receive_all(&mut consumer, 50).await, acked);
}

#[test]
fn mutual_tls_is_enough_for_a_bookie_to_serve_a_public_address() {
    use magnetar_tests::certs::TestCa;

    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("storage-ca").unwrap();
    let cert = ca.issue("bookie").unwrap();
    let cert_file = pem_file(dir.path(), "bookie.pem", &cert.cert_pem);
    let key_file = pem_file(dir.path(), "bookie.key", &cert.key_pem);
    let ca_file = pem_file(dir.path(), "ca.pem", &ca.pem());
    let public = format!("0.0.0.0:{}", free_port());
    // TLS without client certificates authenticates nobody.
    let server_only = start_bookie_on(&public, &["--tls-cert", &cert_file, "--tls-key", &key_file]);
    let why = server_only
        .outcome
        .clone()
        .expect_err("served a public address with server-only TLS");
    assert!(why.contains("refusing to serve"), "{why}");
    drop(server_only);
    let mutual = start_bookie_on(
        &public,
        &[
            "--tls-cert",
            &cert_file,
            "--tls-key",
            &key_file,
            "--tls-trust-certs",
            &ca_file,
        ],
    );
    let line = mutual.outcome.as_ref().expect("mutual TLS is enough");
    assert!(line.contains("serving gRPC"), "{line}");
}

/// Mutual TLS on the monolithic replication port: two brokers with broker
/// certificates replicate every partition to each other (replication
/// factor 2, min.insync 2, so a receipt means both hold the entry), while
/// a fetch with another role's certificate, with none, or over plain TCP
/// gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monolithic_brokers_replicate_over_mutual_tls_only() {
    use magnetar_tests::certs::TestCa;

    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("replication-ca").unwrap();
    let broker_cert = ca.issue("broker").unwrap();
    let app_cert = ca.issue("app").unwrap();
    let tls_files = broker_tls_flags(
        dir.path(),
        &broker_cert,
        pem_file(dir.path(), "ca.pem", &ca.pem()),
    );
    let etcd = Etcd::start().await.unwrap();
    let url = etcd.metadata_url("replication-mtls");
    let mut brokers = Vec::new();
    let mut replication_addrs = Vec::new();
    for i in 0..2 {
        let data_dir = dir.path().join(format!("broker{i}")).display().to_string();
        let replication = format!("127.0.0.1:{}", free_port());
        let mut args: Vec<&str> = tls_files.iter().map(String::as_str).collect();
        args.extend([
            "--architecture",
            "monolithic",
            "--data-dir",
            &data_dir,
            "--replication-listen",
            &replication,
            "--ensemble-size",
            "2",
            "--write-quorum",
            "2",
            "--ack-quorum",
            "2",
        ]);
        brokers.push(BookieProcess::start_broker(&url, &args).await.unwrap());
        replication_addrs.push(replication);
    }
    let metadata = magnetar_metadata::connect(&url).await.unwrap();
    wait_until("both brokers registered", Duration::from_secs(30), || {
        let metadata = metadata.clone();
        async move {
            metadata
                .list(&magnetar_metadata::keys::brokers_available_prefix())
                .await
                .is_ok_and(|brokers| brokers.len() == 2)
        }
    })
    .await;
    let pulsar = client(&brokers[0].pulsar_url()).await;
    let topic = "persistent://public/default/replicated-over-mtls";
    let mut consumer = subscribe(&pulsar, topic).await;
    let acked = send(&pulsar, topic, 0..50).await;
    assert_eq!(acked, (0..50).collect::<Vec<_>>());
    assert_eq!(receive_all(&mut consumer, 50).await, acked);

    let trust = tonic::transport::Certificate::from_pem(ca.pem());
    let fetch_from = |addr: String, identity: Option<(String, String)>, tls: bool| {
        let trust = trust.clone();
        async move {
            let scheme = if tls { "https" } else { "http" };
            let mut endpoint = Channel::from_shared(format!("{scheme}://{addr}"))
                .unwrap()
                .connect_timeout(Duration::from_secs(2));
            if tls {
                let mut config = tonic::transport::ClientTlsConfig::new().ca_certificate(trust);
                if let Some((cert, key)) = identity {
                    config = config.identity(tonic::transport::Identity::from_pem(cert, key));
                }
                endpoint = endpoint.tls_config(config).unwrap();
            }
            let Ok(channel) = endpoint.connect().await else {
                return tonic::Code::Unavailable;
            };
            fetch_unknown_partition(channel, PeerCredentials::none()).await
        }
    };
    for addr in &replication_addrs {
        let broker = Some((broker_cert.cert_pem.clone(), broker_cert.key_pem.clone()));
        assert_eq!(
            fetch_from(addr.clone(), broker, true).await,
            tonic::Code::Ok
        );
        let app = Some((app_cert.cert_pem.clone(), app_cert.key_pem.clone()));
        assert_eq!(
            fetch_from(addr.clone(), app, true).await,
            tonic::Code::PermissionDenied,
            "an app certificate fetched from {addr}"
        );
        assert_ne!(
            fetch_from(addr.clone(), None, true).await,
            tonic::Code::Ok,
            "a fetch without a certificate from {addr}"
        );
        assert_ne!(
            fetch_from(addr.clone(), None, false).await,
            tonic::Code::Ok,
            "a plain-TCP fetch from {addr}"
        );
    }
}
