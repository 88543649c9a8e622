//! The load manager over real processes (etcd, a bookie, several brokers):
//! a broker that joins gets bundles shed to it by the elected leader;
//! bundles are unloaded and split by hand through any broker's admin API
//! while clients keep producing; admin requests on a topic go to its owner.
//! Every test checks that no acknowledged message is lost or reordered.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use magnetar_metadata::keys;
use magnetar_tests::clients::{
    client, producer, receive_all_stored, send_stored, send_with_receipts, subscribe, StoredAt,
};
use magnetar_tests::cluster::Cluster;
use magnetar_tests::wait_until;

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

/// Checks what a fresh subscription from the earliest message got
/// (`got`, in delivery order) against the receipts (`acked`, in the order
/// they came): every acknowledged message is delivered exactly where its
/// receipt put it, in the order of receipts, and nothing else is delivered
/// except at most `resends` extra copies of acknowledged messages. (No send
/// here failed, so nothing of unknown fate may appear. A copy can only come
/// from the client resending a message that was in flight when the bundle
/// moved: the broker closes the producer on unload, the client re-creates
/// it at the new owner and resends what is pending; if the old owner had
/// stored it, there are two copies, and the receipt the client keeps may be
/// either one's (the old owner's can arrive after the resend). Sends go one
/// at a time, so a move leaves at most one such copy.)
fn assert_delivered(acked: &[(u32, StoredAt)], got: &[(u32, StoredAt)], resends: usize) {
    let at: HashMap<StoredAt, u32> = got.iter().map(|(i, at)| (*at, *i)).collect();
    assert_eq!(at.len(), got.len(), "one position delivered twice: {got:?}");
    let missing: Vec<_> = acked
        .iter()
        .filter(|(i, stored)| at.get(stored) != Some(i))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged messages lost (not where their receipts put them): {missing:?}"
    );
    let receipt_positions: HashSet<StoredAt> = acked.iter().map(|(_, at)| *at).collect();
    let in_receipt_order: Vec<(u32, StoredAt)> = got
        .iter()
        .copied()
        .filter(|(_, at)| receipt_positions.contains(at))
        .collect();
    assert_eq!(
        in_receipt_order, acked,
        "acknowledged messages out of the order of receipts"
    );
    let receipt_of: HashMap<u32, StoredAt> = acked.iter().copied().collect();
    let extra: Vec<&(u32, StoredAt)> = got
        .iter()
        .filter(|(_, at)| !receipt_positions.contains(at))
        .collect();
    for (i, stored) in &extra {
        assert!(
            receipt_of.contains_key(i),
            "message {i} at {stored:?} was never acknowledged"
        );
    }
    assert!(
        extra.len() <= resends,
        "{} extra copies, at most {resends} resends possible: {extra:?}",
        extra.len()
    );
    if !extra.is_empty() {
        eprintln!("copies of resent messages: {extra:?}");
    }
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
        acked.push(send_stored(&pulsar, topic, 0..20).await);
    }
    let first = cluster.brokers[0].broker_addr();
    let owners = cluster.owners(NS.0, NS.1).await.unwrap();
    assert_eq!(owners.len(), 4, "12 topics touch all 4 bundles: {owners:?}");
    assert!(owners.values().all(|o| *o == first), "{owners:?}");

    let second = cluster.add_broker(&broker_args(true)).await.unwrap();
    let second = cluster.brokers[second].broker_addr();
    let took = wait_until(
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
    wait_until(
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
        assert_eq!(acked.len(), 20, "{topic}: sends failed");
        let mut consumer = subscribe(&pulsar, topic).await;
        let got = receive_all_stored(&mut consumer, acked.len()).await;
        // Bundles moved only after every send was answered: no resends.
        assert_delivered(acked, &got, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unloading_a_bundle_under_load_loses_nothing() {
    let cluster = Cluster::start(1, 2, &broker_args(false)).await.unwrap();
    let topic = "persistent://public/default/unload-under-load";
    let pulsar = client(&cluster.brokers[0].pulsar_url()).await;
    let mut producer = producer(&pulsar, topic).await;
    let mut acked = send_with_receipts(&mut producer, 0..100).await;
    let owners = cluster.owners(NS.0, NS.1).await.unwrap();
    let (bundle, owner) = owners.into_iter().next().expect("the bundle is owned");
    let key = keys::bundle_owner(NS.0, NS.1, &bundle);
    let before = cluster.metadata.get(&key).await.unwrap().unwrap();
    let other = 1 - cluster.broker_index(&owner).unwrap();

    // The producer keeps sending while another broker asks the owner to
    // unload the bundle; `answered` counts its sends answered so far.
    let answered = Arc::new(AtomicUsize::new(0));
    let progress = answered.clone();
    let sender = tokio::spawn(async move {
        let mut acked = Vec::new();
        for i in 100..600 {
            acked.extend(send_with_receipts(&mut producer, i..i + 1).await);
            progress.fetch_add(1, Ordering::SeqCst);
        }
        let _ = producer.close().await;
        acked
    });
    let sent_after = |n: usize| {
        let answered = answered.clone();
        move || {
            let answered = answered.clone();
            async move { answered.load(Ordering::SeqCst) >= n }
        }
    };
    wait_until(
        "the producer has sends answered",
        Duration::from_secs(30),
        sent_after(50),
    )
    .await;
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
    // The producer is served again (by whichever broker took the bundle)...
    let resumed_at = answered.load(Ordering::SeqCst);
    wait_until(
        "the producer has sends answered after the unload",
        Duration::from_secs(40),
        sent_after(resumed_at + 50),
    )
    .await;
    // ...then the bundle is moved by name: it is the other broker's when
    // the call returns.
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
    // The client re-creates its producer at the new owner and resends what
    // is pending, failing a send only after its 30 s operation timeout; a
    // move takes far less, so every send must be acknowledged.
    let numbers: Vec<u32> = acked.iter().map(|(i, _)| *i).collect();
    assert_eq!(
        numbers,
        (0..600).collect::<Vec<_>>(),
        "sends failed while the bundle moved"
    );

    let mut consumer = subscribe(&pulsar, topic).await;
    let got = receive_all_stored(&mut consumer, acked.len()).await;
    // Two moves, one send in flight at each: at most two resent copies.
    assert_delivered(&acked, &got, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_bundles_and_admin_requests_follow_the_owner() {
    let cluster = Cluster::start(1, 2, &broker_args(false)).await.unwrap();
    let topic = "persistent://public/default/split-me";
    let pulsar = client(&cluster.brokers[0].pulsar_url()).await;
    let mut acked = send_stored(&pulsar, topic, 0..50).await;
    assert_eq!(acked.len(), 50);
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

    acked.extend(send_stored(&pulsar, topic, 50..100).await);
    assert_eq!(acked.len(), 100);
    let mut consumer = subscribe(&pulsar, topic).await;
    let got = receive_all_stored(&mut consumer, acked.len()).await;
    // The split happened between two rounds of sends: no resends.
    assert_delivered(&acked, &got, 0);
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
