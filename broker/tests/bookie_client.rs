//! The broker's bookie client against real `magnetar bookie` processes (and a
//! real etcd): batching across ledgers on one add stream, typed refusals,
//! kill -9 and SIGSTOP with adds in flight, reconnection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use magnetar_broker::ledger::bookie_client::{
    BookieClientConfig, BookieClientError, BookieClients, BookieHandle, FenceInfo,
};
use magnetar_proto::bookie::AddEntry;
use magnetar_tests::wire::{entry, payload_for, MASTER_KEY as KEY};
use magnetar_tests::{BookieProcess, Etcd};

/// Only catches hangs; every wait in these tests should end far sooner.
const HANG: Duration = Duration::from_secs(30);

async fn bookie(etcd: &Etcd, prefix: &str, extra_args: &[&str]) -> Result<BookieProcess> {
    BookieProcess::start(&etcd.metadata_url(prefix), extra_args).await
}

async fn no_hang<T>(what: &str, future: impl std::future::Future<Output = T>) -> Result<T> {
    tokio::time::timeout(HANG, future)
        .await
        .with_context(|| format!("{what} hung for {HANG:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_adds_across_ledgers_share_one_stream_and_read_back() -> Result<()> {
    let etcd = Etcd::start().await?;
    let bookie = bookie(&etcd, "/concurrent", &[]).await?;
    // Small batches, so draining, carrying over and lone oversized entries
    // all happen.
    let clients = BookieClients::new(BookieClientConfig {
        max_batch_bytes: 16 << 10,
        ..BookieClientConfig::default()
    });
    let addr = bookie.grpc_addr();

    const LEDGERS: u64 = 8;
    const ENTRIES: i64 = 300;
    let size = |l: u64, e: i64| {
        if e == 150 {
            40 << 10 // larger than a whole batch
        } else {
            64 + ((l as usize * 131 + e as usize * 977) % 4000)
        }
    };
    // Four writers, two ledgers each, interleaving their adds on one handle.
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let handle = clients.get(&addr);
        writers.push(tokio::spawn(async move {
            let mut adds = Vec::new();
            for e in 0..ENTRIES {
                for l in [1 + 2 * w, 2 + 2 * w] {
                    adds.push(handle.add(entry(l, e, payload_for(l, e, size(l, e)))));
                }
                if e % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            futures::future::join_all(adds).await
        }));
    }
    for writer in writers {
        let results = no_hang("adds", writer).await??;
        for (i, r) in results.into_iter().enumerate() {
            ensure!(r.is_ok(), "add #{i} failed: {r:?}");
        }
    }

    let handle = clients.get(&addr);
    for l in 1..=LEDGERS {
        let mut read = Vec::new();
        while (read.len() as i64) < ENTRIES {
            let first = read.len() as i64;
            let chunk = handle.read_entries(l, first, ENTRIES - 1, 64 << 10).await?;
            ensure!(!chunk.is_empty(), "empty read of ledger {l} from {first}");
            read.extend(chunk);
        }
        for (e, (id, payload)) in read.into_iter().enumerate() {
            let e = e as i64;
            ensure!(id == e, "ledger {l}: entry {id} where {e} was expected");
            ensure!(
                payload == payload_for(l, e, size(l, e)),
                "ledger {l} entry {e}: wrong payload"
            );
        }
        let lac = handle.read_lac(l, None, Duration::ZERO).await?;
        ensure!(
            lac.lac == ENTRIES - 2 && lac.last_entry_id == ENTRIES - 1 && !lac.fenced,
            "ledger {l}: {lac:?}"
        );
    }
    ensure!(handle.read_entry(3, 7).await? == payload_for(3, 7, size(3, 7)));

    // A forgotten bookie is reconnected by the next handle.
    clients.forget(&addr);
    clients
        .get(&addr)
        .add(entry(1, ENTRIES, Bytes::from_static(b"after forget")))
        .await?;
    ensure!(clients.get(&addr).read_entry(1, ENTRIES).await? == "after forget");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_come_back_typed_and_leave_the_stream_usable() -> Result<()> {
    let etcd = Etcd::start().await?;
    let bookie = bookie(&etcd, "/typed", &["--max-entry-bytes", "65536"]).await?;
    let clients = BookieClients::new(BookieClientConfig::default());
    let handle = clients.get(&bookie.grpc_addr());
    let small = |l, e| payload_for(l, e, 100);

    // Fence, then the writer's next add is refused; a recovery add passes.
    for e in 0..3 {
        handle.add(entry(1, e, small(1, e))).await?;
    }
    let fenced = handle.fence(1, Bytes::from_static(KEY)).await?;
    ensure!(
        fenced
            == FenceInfo {
                lac: 1,
                last_entry_id: 2
            },
        "{fenced:?}"
    );
    let refused = handle.add(entry(1, 3, small(1, 3))).await;
    ensure!(
        refused == Err(BookieClientError::Fenced),
        "add after fence: {refused:?}"
    );
    let recovery = AddEntry {
        recovery: true,
        ..entry(1, 3, small(1, 3))
    };
    handle.add(recovery).await?;
    ensure!(handle.read_lac(1, None, Duration::ZERO).await?.fenced);

    // Another writer's key.
    handle.add(entry(2, 0, small(2, 0))).await?;
    let wrong_key = AddEntry {
        master_key: Bytes::from_static(b"not-the-key"),
        ..entry(2, 1, small(2, 1))
    };
    let refused = handle.add(wrong_key).await;
    ensure!(
        refused == Err(BookieClientError::BadMasterKey),
        "{refused:?}"
    );
    let refused = handle.fence(2, Bytes::from_static(b"not-the-key")).await;
    ensure!(
        refused == Err(BookieClientError::BadMasterKey),
        "{refused:?}"
    );

    // Refusals are per entry: the neighbours of an oversized entry, likely in
    // the same batch, are stored.
    let adds = [
        handle.add(entry(3, 0, small(3, 0))),
        handle.add(entry(3, 1, payload_for(3, 1, 100_000))),
        handle.add(entry(3, 2, small(3, 2))),
    ];
    let results = futures::future::join_all(adds).await;
    ensure!(
        results == [Ok(()), Err(BookieClientError::TooLarge), Ok(())],
        "{results:?}"
    );
    let empty_key = AddEntry {
        master_key: Bytes::new(),
        ..entry(3, 3, small(3, 3))
    };
    let refused = handle.add(empty_key).await;
    ensure!(
        matches!(refused, Err(BookieClientError::InvalidRequest(_))),
        "{refused:?}"
    );

    // Reads.
    let missing = handle.read_entry(999, 0).await;
    ensure!(
        missing == Err(BookieClientError::NoSuchLedger),
        "{missing:?}"
    );
    let missing = handle.read_entries(999, 0, 10, 0).await;
    ensure!(
        missing == Err(BookieClientError::NoSuchLedger),
        "{missing:?}"
    );
    let missing = handle.read_lac(999, None, Duration::ZERO).await;
    ensure!(
        missing == Err(BookieClientError::NoSuchLedger),
        "{missing:?}"
    );
    let missing = handle.read_entry(3, 1).await;
    ensure!(
        missing == Err(BookieClientError::NoSuchEntry),
        "{missing:?}"
    );
    // The range read stops at the gap left by the refused entry.
    let read = handle.read_entries(3, 0, 2, 0).await?;
    ensure!(read == vec![(0, small(3, 0))], "{read:?}");

    let guessed = handle
        .delete_ledger(2, Bytes::from_static(b"guessed"))
        .await;
    ensure!(
        guessed == Err(BookieClientError::BadMasterKey),
        "{guessed:?}"
    );
    ensure!(
        handle.read_entry(2, 0).await.is_ok(),
        "deleted without its key"
    );
    handle.delete_ledger(2, Bytes::from_static(KEY)).await?;
    let gone = handle.read_entry(2, 0).await;
    ensure!(gone == Err(BookieClientError::NoSuchLedger), "{gone:?}");

    // An entry that could never be encoded is refused before the wire.
    let tight = BookieClients::new(BookieClientConfig {
        max_message_bytes: 1 << 20,
        ..BookieClientConfig::default()
    });
    let refused = tight
        .get(&bookie.grpc_addr())
        .add(entry(4, 0, payload_for(4, 0, 2 << 20)))
        .await;
    ensure!(refused == Err(BookieClientError::TooLarge), "{refused:?}");

    // After all that, the same stream still carries adds.
    handle.add(entry(5, 0, small(5, 0))).await?;
    ensure!(handle.read_entry(5, 0).await? == small(5, 0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lac_long_poll_wakes_on_a_later_add() -> Result<()> {
    let etcd = Etcd::start().await?;
    let bookie = bookie(&etcd, "/lac", &[]).await?;
    let clients = BookieClients::new(BookieClientConfig::default());
    let handle = clients.get(&bookie.grpc_addr());
    for e in 0..3 {
        handle.add(entry(1, e, payload_for(1, e, 10))).await?;
    }
    let poll = {
        let handle = handle.clone();
        tokio::spawn(async move { handle.read_lac(1, Some(1), Duration::from_secs(20)).await })
    };
    // The subject: for a while the long-poll must not answer.
    tokio::time::sleep(Duration::from_millis(300)).await;
    ensure!(!poll.is_finished(), "long-poll answered before LAC moved");
    handle.add(entry(1, 3, payload_for(1, 3, 10))).await?;
    let started = Instant::now();
    let lac = no_hang("long-poll", poll).await???;
    ensure!(lac.lac == 2 && lac.last_entry_id == 3, "{lac:?}");
    ensure!(
        started.elapsed() < Duration::from_secs(10),
        "long-poll woke only at its time-out"
    );
    Ok(())
}

/// Adds to `ledger` with 64 in flight until one fails; returns every result.
async fn add_until_failure(
    handle: BookieHandle,
    ledger: u64,
    acked: Arc<AtomicUsize>,
) -> Vec<(i64, Result<(), BookieClientError>)> {
    let mut outstanding = FuturesUnordered::new();
    let mut results = Vec::new();
    let mut next = 0i64;
    let mut failed = false;
    loop {
        while !failed && outstanding.len() < 64 {
            let id = next;
            let add = handle.add(entry(ledger, id, payload_for(ledger, id, 512)));
            outstanding.push(async move { (id, add.await) });
            next += 1;
        }
        let Some((id, result)) = outstanding.next().await else {
            return results;
        };
        match &result {
            Ok(()) => {
                acked.fetch_add(1, Ordering::SeqCst);
            }
            Err(_) => failed = true,
        }
        results.push((id, result));
    }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + HANG;
    while !done() {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_fails_pending_adds_and_the_handle_reconnects() -> Result<()> {
    let etcd = Etcd::start().await?;
    let mut bookie = bookie(&etcd, "/kill9", &[]).await?;
    let addr = bookie.grpc_addr();
    let clients = BookieClients::new(BookieClientConfig::default());
    let handle = clients.get(&addr);

    let acked = Arc::new(AtomicUsize::new(0));
    let producer = tokio::spawn(add_until_failure(handle.clone(), 1, acked.clone()));
    wait_for("200 acknowledged adds", || {
        acked.load(Ordering::SeqCst) >= 200
    })
    .await?;
    bookie.kill9()?;
    let results = no_hang("adds pending at kill -9", producer).await??;

    let failed: Vec<_> = results.iter().filter(|(_, r)| r.is_err()).collect();
    ensure!(!failed.is_empty(), "no add failed");
    for (id, result) in &failed {
        ensure!(
            matches!(
                result,
                Err(BookieClientError::Unavailable(_) | BookieClientError::Timeout)
            ),
            "add {id} failed with {result:?}"
        );
    }

    // While the bookie is down: a fresh pool fails fast and keeps no grudge.
    let fresh = BookieClients::new(BookieClientConfig::default());
    let down = fresh
        .get(&addr)
        .add(entry(7, 0, Bytes::from_static(b"x")))
        .await;
    ensure!(
        matches!(down, Err(BookieClientError::Unavailable(_))),
        "{down:?}"
    );
    let down = handle.read_entry(1, 0).await;
    ensure!(
        matches!(down, Err(BookieClientError::Unavailable(_))),
        "{down:?}"
    );

    bookie.restart().await?;
    // Every acknowledged add survived kill -9.
    for (id, _) in results.iter().filter(|(_, r)| r.is_ok()) {
        let payload = no_hang("read", handle.read_entry(1, *id)).await?;
        ensure!(
            payload.as_ref() == Ok(&payload_for(1, *id, 512)),
            "acknowledged entry {id}: {payload:?}"
        );
    }
    // The same handle adds again, and so does the pool that met a dead bookie.
    for e in 0..10 {
        no_hang("add", handle.add(entry(2, e, payload_for(2, e, 100)))).await??;
    }
    ensure!(handle.read_entries(2, 0, 9, 0).await?.len() == 10);
    no_hang(
        "add",
        fresh.get(&addr).add(entry(7, 0, Bytes::from_static(b"x"))),
    )
    .await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_times_adds_out_and_resume_recovers() -> Result<()> {
    let etcd = Etcd::start().await?;
    let bookie = bookie(&etcd, "/sigstop", &[]).await?;
    let add_timeout = Duration::from_secs(1);
    let clients = BookieClients::new(BookieClientConfig {
        add_timeout,
        request_timeout: Duration::from_secs(1),
        ..BookieClientConfig::default()
    });
    let handle = clients.get(&bookie.grpc_addr());
    for e in 0..3 {
        handle.add(entry(1, e, payload_for(1, e, 100))).await?;
    }

    bookie.pause()?;
    let started = Instant::now();
    let adds: Vec<_> = (3..23)
        .map(|e| handle.add(entry(1, e, payload_for(1, e, 100))))
        .collect();
    let results = no_hang("adds to a stopped bookie", futures::future::join_all(adds)).await?;
    let waited = started.elapsed();
    for (i, result) in results.iter().enumerate() {
        ensure!(
            *result == Err(BookieClientError::Timeout),
            "add {}: {result:?}",
            i + 3
        );
    }
    ensure!(
        waited >= add_timeout,
        "timed out after {waited:?}, before add_timeout"
    );
    // The replacement connection cannot get through either.
    let again = no_hang("add", handle.add(entry(1, 23, Bytes::from_static(b"x")))).await?;
    ensure!(again == Err(BookieClientError::Timeout), "{again:?}");
    let lac = no_hang("read_lac", handle.read_lac(1, None, Duration::ZERO)).await?;
    ensure!(lac == Err(BookieClientError::Timeout), "{lac:?}");

    bookie.resume()?;
    for e in 0..5 {
        no_hang("add", handle.add(entry(2, e, payload_for(2, e, 100)))).await??;
    }
    ensure!(handle.read_entries(2, 0, 4, 0).await?.len() == 5);
    for e in 0..3 {
        ensure!(handle.read_entry(1, e).await? == payload_for(1, e, 100));
    }
    Ok(())
}
