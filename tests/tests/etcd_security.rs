//! Brokers and bookies reach an etcd that requires a password or TLS, and
//! nothing else gets through: a wrong password or a plain connection is
//! refused at startup, with the password never shown.

use magnetar_tests::clients::{client, receive_all, send, subscribe};
use magnetar_tests::{free_port, BookieProcess, Etcd, LaunchedBookie};

const PASSWORD: &str = "s3cret-pw";

fn launch(metadata: &str, env: &[(&str, &str)]) -> LaunchedBookie {
    let listen = format!("127.0.0.1:{}", free_port());
    LaunchedBookie::launch(tempfile::tempdir().unwrap(), metadata, &listen, &[], env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_with_auth_serves_magnetar_only_with_the_password() {
    let etcd = Etcd::start().await.unwrap();
    etcd.enable_auth(PASSWORD).unwrap();
    let port = etcd.client_port;
    let url = format!("etcd://root:{PASSWORD}@127.0.0.1:{port}/secured");
    let _bookie = BookieProcess::start(&url, &[]).await.unwrap();
    let single = [
        "--ensemble-size",
        "1",
        "--write-quorum",
        "1",
        "--ack-quorum",
        "1",
    ];
    let broker = BookieProcess::start_broker(&url, &single).await.unwrap();
    let pulsar = client(&broker.pulsar_url()).await;
    let topic = "persistent://public/default/behind-etcd-auth";
    let mut consumer = subscribe(&pulsar, topic).await;
    let acked = send(&pulsar, topic, 0..20).await;
    assert_eq!(receive_all(&mut consumer, 20).await, acked);

    // The password may also come from the environment.
    let from_env = launch(
        &format!("etcd://root@127.0.0.1:{port}/secured"),
        &[("MAGNETAR_ETCD_PASSWORD", PASSWORD)],
    );
    let line = from_env
        .outcome
        .as_ref()
        .expect("a password from the environment");
    assert!(line.contains("serving gRPC"), "{line}");

    let wrong = launch(
        &format!("etcd://root:guessed@127.0.0.1:{port}/secured"),
        &[],
    )
    .outcome
    .clone()
    .expect_err("a wrong password reached etcd");
    assert!(wrong.contains("root:***@"), "{wrong}");
    assert!(
        !wrong.contains("guessed"),
        "the password was printed: {wrong}"
    );
    let anonymous = launch(&format!("etcd://127.0.0.1:{port}/secured"), &[])
        .outcome
        .clone();
    assert!(anonymous.is_err(), "no user reached etcd: {anonymous:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_serving_tls_is_reached_with_its_ca() {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let certificate = dir.path().join("etcd.pem");
    let key = dir.path().join("etcd-key.pem");
    std::fs::write(&certificate, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let etcd = Etcd::start_tls(&certificate, &key).await.unwrap();
    let port = etcd.client_port;
    let ca = certificate.display().to_string();

    let served = launch(
        &format!("etcds://127.0.0.1:{port}/tls"),
        &[("MAGNETAR_ETCD_CA_FILE", &ca)],
    );
    let line = served.outcome.as_ref().expect("registered over TLS");
    assert!(line.contains("serving gRPC"), "{line}");

    let no_ca = launch(&format!("etcds://127.0.0.1:{port}/tls"), &[])
        .outcome
        .clone()
        .expect_err("TLS without a CA");
    assert!(no_ca.contains("MAGNETAR_ETCD_CA_FILE"), "{no_ca}");
    let plain = launch(&format!("etcd://127.0.0.1:{port}/tls"), &[])
        .outcome
        .clone();
    assert!(plain.is_err(), "a plain connection registered: {plain:?}");
}
