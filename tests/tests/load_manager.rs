//! The load manager over real processes (etcd, a bookie, several brokers):
//! a broker that joins gets bundles shed to it by the elected leader;
//! bundles are unloaded and split by hand through any broker's admin API
//! while clients keep producing; admin requests on a topic go to its owner.
//! Every test checks that no acknowledged message is lost or reordered.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use magnetar_metadata::keys;
use magnetar_tests::clients::{client, producer, receive_all, send, send_with, subscribe};
use magnetar_tests::cluster::Cluster;

const NS: (&str, &str) = ("public", "default");

fn broker_args(shedding: bool) -> Vec<&'static str> {
    vec![
        "--ensemble-size",
        "1",
        "--write-quorum",
        "1",
        "--ack-quorum",
        "1",
        "--lease-ttl",
        "3s",
        "--load-report-interval",
        "1s",
        "--load-shedding",
        if shedding { "true" } else { "false" },
    ]
}

/// Waits (bounded, for liveness only) until `check` holds.
async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    start.elapsed()
}

/// `got` holds every acknowledged number, and their first arrivals are in
/// the order they were acknowledged (a send whose receipt was lost may
/// arrive twice).
fn assert_delivered(acked: &[u32], got: &[u32]) {
    let got_set: HashSet<u32> = got.iter().copied().collect();
    let missing: Vec<u32> = acked
        .iter()
        .copied()
        .filter(|i| !got_set.contains(i))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged messages lost: {missing:?}"
    );
    let acked_set: HashSet<u32> = acked.iter().copied().collect();
    let mut seen = HashSet::new();
    let first_arrivals: Vec<u32> = got
        .iter()
        .copied()
        .filter(|i| acked_set.contains(i) && seen.insert(*i))
        .collect();
    assert_eq!(first_arrivals, acked, "acknowledged messages out of order");
}

async fn http(method: reqwest::Method, url: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(method, url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_broker_gets_bundles_from_the_leader() {
    let mut cluster = Cluster::start(1, 1, &broker_args(true)).await.unwrap();
    let pulsar = client(&cluster.brokers[0].pulsar_url()).await;
    let topics: Vec<String> = (0..12)
        .map(|i| format!("persistent://public/default/spread-{i}"))
        .collect();
    let mut acked = Vec::new();
    for topic in &topics {
        acked.push(send(&pulsar, topic, 0..20).await);
    }
    let first = cluster.brokers[0].broker_addr();
    let owners = cluster.owners(NS.0, NS.1).await.unwrap();
    assert_eq!(owners.len(), 4, "12 topics touch all 4 bundles: {owners:?}");
    assert!(owners.values().all(|o| *o == first), "{owners:?}");

    let second = cluster.add_broker(&broker_args(true)).await.unwrap();
    let second = cluster.brokers[second].broker_addr();
    let took = eventually(
        "the new broker owns a bundle",
        Duration::from_secs(60),
        || async {
            let owners = cluster.owners(NS.0, NS.1).await.unwrap();
            owners.values().any(|o| *o == second)
        },
    )
    .await;
    eprintln!(
        "the new broker owned its first bundle {took:?} after it started (report interval 1s)"
    );
    eventually(
        "bundles are spread 2 / 2",
        Duration::from_secs(60),
        || async {
            let owners = cluster.owners(NS.0, NS.1).await.unwrap();
            owners.values().filter(|o| **o == second).count() == 2 && owners.len() == 4
        },
    )
    .await;

    // Every topic is served, by whichever broker, with all its messages.
    for (topic, acked) in topics.iter().zip(&acked) {
        let mut consumer = subscribe(&pulsar, topic).await;
        let got = receive_all(&mut consumer, acked.len()).await;
        assert_delivered(acked, &got);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unloading_a_bundle_under_load_loses_nothing() {
    let cluster = Cluster::start(1, 2, &broker_args(false)).await.unwrap();
    let topic = "persistent://public/default/unload-under-load";
    let pulsar = client(&cluster.brokers[0].pulsar_url()).await;
    let mut producer = producer(&pulsar, topic).await;
    let mut acked = send_with(&mut producer, 0..100).await;
    let owners = cluster.owners(NS.0, NS.1).await.unwrap();
    let (bundle, owner) = owners.into_iter().next().expect("the bundle is owned");
    let key = keys::bundle_owner(NS.0, NS.1, &bundle);
    let before = cluster.metadata.get(&key).await.unwrap().unwrap();
    let other = 1 - cluster.broker_index(&owner).unwrap();

    // The producer keeps sending while another broker asks the owner to
    // unload the bundle.
    let sender = tokio::spawn(async move {
        let acked = send_with(&mut producer, 100..600).await;
        let _ = producer.close().await;
        acked
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let url = format!(
        "{}/admin/v2/namespaces/public/default/{bundle}/unload",
        cluster.brokers[other].broker_http_url()
    );
    let answer = http(reqwest::Method::PUT, &url).await;
    assert_eq!(answer.status(), 204, "{}", answer.text().await.unwrap());
    // Released: the key is gone or was created anew by the next owner.
    let after = cluster.metadata.get(&key).await.unwrap();
    assert!(
        after.is_none_or(|kv| kv.create_revision != before.create_revision),
        "the owner still holds the bundle under its old key"
    );
    // Moved by name: it is the other broker's when the call returns.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let destination = cluster.brokers[other].broker_addr();
    let answer = http(
        reqwest::Method::PUT,
        &format!("{url}?destinationBroker={destination}"),
    )
    .await;
    assert_eq!(answer.status(), 204, "{}", answer.text().await.unwrap());
    let owners = cluster.owners(NS.0, NS.1).await.unwrap();
    assert_eq!(owners.get(&bundle), Some(&destination), "{owners:?}");
    acked.extend(sender.await.unwrap());
    assert!(
        acked.len() >= 500,
        "the producer stalled: {} acknowledged",
        acked.len()
    );

    let mut consumer = subscribe(&pulsar, topic).await;
    let got = receive_all(&mut consumer, acked.len()).await;
    assert_delivered(&acked, &got);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_bundles_and_admin_requests_follow_the_owner() {
    let cluster = Cluster::start(1, 2, &broker_args(false)).await.unwrap();
    let topic = "persistent://public/default/split-me";
    let pulsar = client(&cluster.brokers[0].pulsar_url()).await;
    let mut acked = send(&pulsar, topic, 0..50).await;
    let owners = cluster.owners(NS.0, NS.1).await.unwrap();
    let (bundle, owner) = owners.into_iter().next().expect("the bundle is owned");
    let owner_index = cluster.broker_index(&owner).unwrap();
    let other = &cluster.brokers[1 - owner_index];

    // Admin requests on the topic made to the other broker are redirected
    // to the owner (307), and answered there.
    let stats = format!(
        "{}/admin/v2/persistent/public/default/split-me/stats",
        other.broker_http_url()
    );
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let answer = no_redirects.get(&stats).send().await.unwrap();
    assert_eq!(answer.status(), 307);
    let location = answer.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with(&format!(
            "{}/admin/v2/persistent/public/default/split-me/stats",
            cluster.brokers[owner_index].broker_http_url()
        )),
        "{location}"
    );
    let answer = http(reqwest::Method::GET, &stats).await;
    assert_eq!(answer.status(), 200);
    let body: serde_json::Value = serde_json::from_str(&answer.text().await.unwrap()).unwrap();
    assert_eq!(body["msgInCounter"], 50, "{body}");

    // Split through the other broker: the owner carries it out and owns
    // both halves; the topic keeps being served.
    let split = format!(
        "{}/admin/v2/namespaces/public/default/{bundle}/split",
        other.broker_http_url()
    );
    let answer = http(reqwest::Method::PUT, &split).await;
    assert_eq!(answer.status(), 204, "{}", answer.text().await.unwrap());
    let bundles = format!(
        "{}/admin/v2/namespaces/public/default/bundles",
        other.broker_http_url()
    );
    let layout: serde_json::Value = serde_json::from_str(
        &http(reqwest::Method::GET, &bundles)
            .await
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(layout["numBundles"], 5, "{layout}");
    let owners = cluster.owners(NS.0, NS.1).await.unwrap();
    assert!(!owners.contains_key(&bundle), "{owners:?}");
    assert_eq!(owners.len(), 2, "both halves owned: {owners:?}");
    assert!(owners.values().all(|o| *o == owner), "{owners:?}");
    // Splitting a bundle that no longer exists is refused.
    let answer = http(reqwest::Method::PUT, &split).await;
    assert_eq!(answer.status(), 404);

    acked.extend(send(&pulsar, topic, 50..100).await);
    let mut consumer = subscribe(&pulsar, topic).await;
    let got = receive_all(&mut consumer, acked.len()).await;
    assert_delivered(&acked, &got);
    consumer.close().await.ok();
    drop(pulsar);

    // Unloading the namespace releases every bundle.
    let unload = format!(
        "{}/admin/v2/namespaces/public/default/unload",
        other.broker_http_url()
    );
    let answer = http(reqwest::Method::PUT, &unload).await;
    assert_eq!(answer.status(), 204, "{}", answer.text().await.unwrap());
    let owners = cluster.owners(NS.0, NS.1).await.unwrap();
    assert!(owners.is_empty(), "still owned after unload: {owners:?}");
}

/// Runs `magnetar ARGS`; its stdout, or a panic with its stderr.
fn magnetar(args: &[&str]) -> String {
    let out = std::process::Command::new(magnetar_tests::magnetar_bin())
        .args(args)
        .output()
        .expect("runs magnetar");
    assert!(
        out.status.success(),
        "magnetar {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_cli_follows_redirects_with_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("secret.key");
    let key = key.to_str().unwrap();
    magnetar(&["tokens", "create-secret-key", "--output", key]);
    let token = magnetar(&[
        "tokens",
        "create",
        "--secret-key",
        key,
        "--subject",
        "admin",
    ]);
    let mut args = broker_args(false);
    args.extend([
        "--auth-enabled",
        "--token-secret-key",
        key,
        "--superuser-roles",
        "admin",
    ]);
    let cluster = Cluster::start(1, 2, &args).await.unwrap();
    let topic = "persistent://public/default/cli-redirects";
    let admin = |broker: usize, verb: &[&str]| {
        let url = cluster.brokers[broker].broker_http_url();
        let mut all = vec!["admin", "--admin-url", &url, "--auth-token", token.trim()];
        all.extend_from_slice(verb);
        magnetar(&all)
    };
    admin(0, &["topics", "create", topic]);
    let owners = cluster.owners(NS.0, NS.1).await.unwrap();
    assert_eq!(owners.len(), 1, "the topic's bundle is owned: {owners:?}");
    // Asked through either broker (one of them redirects to the owner),
    // the stats come back, so the token went along every hop.
    for broker in 0..2 {
        let stats: serde_json::Value =
            serde_json::from_str(&admin(broker, &["topics", "stats", topic])).unwrap();
        assert_eq!(stats["msgInCounter"], 0, "{stats}");
    }
    // Without a token: refused, not redirected.
    let refused = std::process::Command::new(magnetar_tests::magnetar_bin())
        .args([
            "admin",
            "--admin-url",
            &cluster.brokers[0].broker_http_url(),
            "topics",
            "stats",
            topic,
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}
