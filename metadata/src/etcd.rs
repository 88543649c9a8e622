//! The etcd backend: every [`MetadataStore`] operation is one etcd v3 request
//! (a transaction where a compare is needed), under an optional root prefix
//! that callers never see.
//!
//! This module owns the translation between our types and etcd's; it keeps no
//! state of its own beyond the client, so several brokers may share one etcd.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, ConnectOptions, DeleteOptions, EventType,
    GetOptions, PutOptions, Txn as EtcdTxn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::store::{validate_key, validate_prefix, validate_txn};
use crate::{
    Expect, KeyValue, LeaseId, MetadataError, MetadataStore, Op, Result, Revision, Txn, TxnOutcome,
    Version, WatchEvent, WatchEventKind, WatchStream,
};

/// Page size of `list`: keeps each response far below gRPC's 4 MiB limit.
const LIST_PAGE: i64 = 500;
/// Events buffered per watch before the forwarding task waits for the reader.
const WATCH_BUFFER: usize = 256;

/// How to reach etcd.
#[derive(Clone)]
pub struct EtcdOptions {
    /// `host:port` or `http://host:port` of each member.
    pub endpoints: Vec<String>,
    /// Prepended to every key, e.g. `/cluster-a`; empty for none. Several
    /// clusters can share one etcd under different prefixes.
    pub root_prefix: String,
    /// Time to establish a connection to a member.
    pub connect_timeout: Duration,
    /// Bound on every unary request, so a partitioned etcd surfaces as
    /// [`MetadataError::Unavailable`] instead of a hang. Watches are not bound.
    pub request_timeout: Duration,
    /// User name and password, for an etcd with auth enabled.
    pub user: Option<(String, String)>,
    /// TLS towards the members (their endpoints become `https://`).
    pub tls: Option<EtcdTls>,
}

impl EtcdOptions {
    pub fn new(endpoints: Vec<String>, root_prefix: impl Into<String>) -> Self {
        Self {
            endpoints,
            root_prefix: root_prefix.into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            user: None,
            tls: None,
        }
    }
}

impl std::fmt::Debug for EtcdOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("EtcdOptions")
            .field("endpoints", &self.endpoints)
            .field("root_prefix", &self.root_prefix)
            .field("user", &self.user.as_ref().map(|(name, _)| name))
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// Certificates for TLS to etcd, as PEM.
#[derive(Clone)]
pub struct EtcdTls {
    /// The CA that signed the members' certificates.
    pub ca: Vec<u8>,
    /// A client certificate and its key, for members that require one.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTls")
            .field("client_certificate", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

impl EtcdTls {
    /// From the files `MAGNETAR_ETCD_CA_FILE` (required) and
    /// `MAGNETAR_ETCD_CERT_FILE` / `MAGNETAR_ETCD_KEY_FILE` (together) name.
    pub fn from_env() -> Result<Self> {
        let read = |var: &str| -> Result<Option<Vec<u8>>> {
            match std::env::var(var) {
                Err(_) => Ok(None),
                Ok(path) => std::fs::read(&path).map(Some).map_err(|e| {
                    MetadataError::InvalidArgument(format!("{var}: reading {path}: {e}"))
                }),
            }
        };
        let ca = read(crate::ETCD_CA_ENV)?.ok_or_else(|| {
            MetadataError::InvalidArgument(format!(
                "etcds:// needs {} (the CA of etcd's certificates)",
                crate::ETCD_CA_ENV
            ))
        })?;
        let identity = match (read(crate::ETCD_CERT_ENV)?, read(crate::ETCD_KEY_ENV)?) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err(MetadataError::InvalidArgument(format!(
                    "give both {} and {}, or neither",
                    crate::ETCD_CERT_ENV,
                    crate::ETCD_KEY_ENV
                )))
            }
        };
        Ok(EtcdTls { ca, identity })
    }

    fn options(&self) -> etcd_client::TlsOptions {
        let mut tls = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(&self.ca));
        if let Some((cert, key)) = &self.identity {
            tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
        }
        tls
    }
}

/// [`MetadataStore`] on an etcd v3 cluster.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    /// Normalised: empty, or starts with `/` and does not end with `/`.
    root: String,
    request_timeout: Duration,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Creates a client for the given members. The connection is made lazily
    /// by the first request, so an etcd that starts later is fine.
    pub async fn connect(options: EtcdOptions) -> Result<Self> {
        if options.endpoints.is_empty() {
            return Err(MetadataError::InvalidArgument(
                "no etcd endpoint given".into(),
            ));
        }
        let root = normalise_root(&options.root_prefix)?;
        let endpoints: Vec<String> = options
            .endpoints
            .iter()
            .map(|e| {
                if e.contains("://") {
                    e.clone()
                } else if options.tls.is_some() {
                    format!("https://{e}")
                } else {
                    format!("http://{e}")
                }
            })
            .collect();
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(options.connect_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        if let Some((name, password)) = &options.user {
            connect = connect.with_user(name.clone(), password.clone());
        }
        if let Some(tls) = &options.tls {
            connect = connect.with_tls(tls.options());
        }
        let client = Client::connect(endpoints, Some(connect))
            .await
            .map_err(|e| map_error(e, None))?;
        Ok(Self {
            client,
            root,
            request_timeout: options.request_timeout,
        })
    }

    /// The root prefix applied to every key (empty for none).
    pub fn root_prefix(&self) -> &str {
        &self.root
    }

    fn full_key(&self, key: &str) -> Vec<u8> {
        format!("{}{}", self.root, key).into_bytes()
    }

    /// The etcd key range `[start, end)` holding the keys under `prefix`.
    fn prefix_range(&self, prefix: &str) -> (Vec<u8>, Vec<u8>) {
        // With a root, "everything" is `root/`, never `root` alone, which
        // would also match a sibling root such as `/ab` for `/a`.
        let full = if prefix.is_empty() && !self.root.is_empty() {
            format!("{}/", self.root).into_bytes()
        } else {
            self.full_key(prefix)
        };
        let end = prefix_range_end(&full);
        if full.is_empty() {
            // etcd's "all keys": key and range_end both "\0".
            (vec![0], end)
        } else {
            (full, end)
        }
    }

    /// Removes the root prefix from a key returned by etcd.
    fn strip_root(&self, raw: &[u8]) -> Result<String> {
        let key = std::str::from_utf8(raw)
            .map_err(|_| MetadataError::Corrupt(format!("etcd key {raw:?} is not UTF-8")))?;
        key.strip_prefix(self.root.as_str())
            .map(str::to_owned)
            .ok_or_else(|| MetadataError::Corrupt(format!("etcd key {key:?} outside the root")))
    }

    fn to_key_value(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue> {
        Ok(KeyValue {
            key: self.strip_root(kv.key())?,
            value: Bytes::copy_from_slice(kv.value()),
            version: kv.mod_revision(),
            create_revision: kv.create_revision(),
            lease: (kv.lease() != 0).then_some(kv.lease()),
        })
    }

    fn compare(&self, key: &str, expect: Expect) -> Option<EtcdCompare> {
        let full = self.full_key(key);
        match expect {
            Expect::Any => None,
            Expect::Absent => Some(EtcdCompare::version(full, CompareOp::Equal, 0)),
            Expect::Version(v) => Some(EtcdCompare::mod_revision(full, CompareOp::Equal, v)),
        }
    }

    fn put_op(&self, key: &str, value: &Bytes, lease: Option<LeaseId>) -> TxnOp {
        TxnOp::put(self.full_key(key), value.to_vec(), Some(put_options(lease)))
    }

    /// Runs one unary request under the request timeout and maps its error;
    /// `lease` names the lease a LeaseNotFound would be about.
    async fn call<T>(
        &self,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
        lease: Option<LeaseId>,
    ) -> Result<T> {
        match tokio::time::timeout(self.request_timeout, request).await {
            Ok(result) => result.map_err(|e| map_error(e, lease)),
            Err(_) => Err(MetadataError::Unavailable(format!(
                "etcd did not answer within {:?}",
                self.request_timeout
            ))),
        }
    }

    async fn list_once(&self, prefix: &str) -> Result<Vec<KeyValue>> {
        let (mut start, end) = self.prefix_range(prefix);
        let mut kv = self.client.kv_client();
        let mut out = Vec::new();
        // Later pages read at the first page's revision: one consistent view.
        let mut revision = 0;
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(LIST_PAGE);
            if revision != 0 {
                options = options.with_revision(revision);
            }
            let resp = self
                .call(kv.get(start.clone(), Some(options)), None)
                .await?;
            if revision == 0 {
                revision = header_revision(resp.header())?;
            }
            for item in resp.kvs() {
                out.push(self.to_key_value(item)?);
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => return Ok(out),
            }
        }
    }
}

#[async_trait]
impl MetadataStore for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        validate_key(key)?;
        let mut kv = self.client.kv_client();
        let resp = self.call(kv.get(self.full_key(key), None), None).await?;
        resp.kvs().first().map(|k| self.to_key_value(k)).transpose()
    }

    async fn put(
        &self,
        key: &str,
        value: Bytes,
        expect: Expect,
        lease: Option<LeaseId>,
    ) -> Result<Version> {
        validate_key(key)?;
        let mut kv = self.client.kv_client();
        match self.compare(key, expect) {
            None => {
                let resp = self
                    .call(
                        kv.put(self.full_key(key), value.to_vec(), Some(put_options(lease))),
                        lease,
                    )
                    .await?;
                header_revision(resp.header())
            }
            Some(compare) => {
                let txn = EtcdTxn::new()
                    .when([compare])
                    .and_then([self.put_op(key, &value, lease)]);
                let resp = self.call(kv.txn(txn), lease).await?;
                if !resp.succeeded() {
                    return Err(MetadataError::Conflict { key: key.into() });
                }
                header_revision(resp.header())
            }
        }
    }

    async fn delete(&self, key: &str, expect: Expect) -> Result<bool> {
        validate_key(key)?;
        let mut kv = self.client.kv_client();
        match self.compare(key, expect) {
            None => {
                let resp = self.call(kv.delete(self.full_key(key), None), None).await?;
                Ok(resp.deleted() > 0)
            }
            Some(compare) => {
                let txn = EtcdTxn::new()
                    .when([compare])
                    .and_then([TxnOp::delete(self.full_key(key), None::<DeleteOptions>)]);
                let resp = self.call(kv.txn(txn), None).await?;
                if !resp.succeeded() {
                    return Err(MetadataError::Conflict { key: key.into() });
                }
                Ok(resp.op_responses().iter().any(|r| match r {
                    TxnOpResponse::Delete(d) => d.deleted() > 0,
                    _ => false,
                }))
            }
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KeyValue>> {
        validate_prefix(prefix)?;
        // A compaction between two pages invalidates the pinned revision;
        // start over rather than return a torn listing.
        let mut attempts = 0;
        loop {
            match self.list_once(prefix).await {
                Err(MetadataError::Compacted { .. }) if attempts < 3 => attempts += 1,
                other => return other,
            }
        }
    }

    async fn watch(&self, prefix: &str, start_revision: Option<Revision>) -> Result<WatchStream> {
        validate_prefix(prefix)?;
        let (start, end) = self.prefix_range(prefix);
        let mut options = WatchOptions::new().with_range(end);
        if let Some(revision) = start_revision.filter(|r| *r > 0) {
            options = options.with_start_revision(revision);
        }
        let mut watch_client = self.client.watch_client();
        let mut stream = self
            .call(watch_client.watch(start, Some(options)), None)
            .await?;

        // Wait for etcd to confirm the watch: events after this call returns
        // are then guaranteed to be delivered.
        let first = self.call(stream.message(), None).await?;
        let mut pending = None;
        match first {
            Some(resp) if resp.canceled() => {
                return Err(cancel_error(&resp, start_revision.unwrap_or(0)));
            }
            Some(resp) if resp.created() => {}
            Some(resp) => pending = Some(resp),
            None => {
                return Err(MetadataError::Unavailable(
                    "etcd closed the watch before confirming it".into(),
                ));
            }
        }

        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let store = self.clone();
        let requested = start_revision.unwrap_or(0);
        tokio::spawn(async move {
            // Keep the request side alive for as long as the watch runs:
            // dropping it would end the stream.
            let (_requests, mut responses) = stream.split();
            let mut next = pending;
            loop {
                let resp = match next.take() {
                    Some(resp) => resp,
                    None => {
                        tokio::select! {
                            _ = tx.closed() => return,
                            msg = responses.message() => match msg {
                                Ok(Some(resp)) => resp,
                                Ok(None) => return,
                                Err(e) => {
                                    let _ = tx.send(Err(map_error(e, None))).await;
                                    return;
                                }
                            },
                        }
                    }
                };
                for event in resp.events() {
                    let item = store.to_watch_event(event);
                    let failed = item.is_err();
                    if tx.send(item).await.is_err() || failed {
                        return;
                    }
                }
                if resp.canceled() {
                    let _ = tx.send(Err(cancel_error(&resp, requested))).await;
                    return;
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        if ttl.is_zero() {
            return Err(MetadataError::InvalidArgument(
                "lease TTL must be positive".into(),
            ));
        }
        // etcd counts whole seconds; round up so a lease never lives shorter
        // than asked.
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let secs = i64::try_from(secs)
            .map_err(|_| MetadataError::InvalidArgument(format!("lease TTL {ttl:?} too long")))?;
        let mut lease = self.client.lease_client();
        let resp = self.call(lease.grant(secs, None), None).await?;
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        let mut client = self.client.lease_client();
        // One request on a fresh keep-alive stream: refreshes happen every
        // few seconds at most, so a long-lived stream per lease is not worth
        // its reconnection logic.
        let (_keeper, _stream) = self.call(client.keep_alive(lease), Some(lease)).await?;
        Ok(())
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        let mut client = self.client.lease_client();
        self.call(client.revoke(lease), Some(lease)).await?;
        Ok(())
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome> {
        validate_txn(&txn)?;
        let compares: Vec<EtcdCompare> = txn
            .compares
            .iter()
            .filter_map(|c| self.compare(&c.key, c.expect))
            .collect();
        let mut lease = None;
        let ops: Vec<TxnOp> = txn
            .ops
            .iter()
            .map(|op| match op {
                Op::Put {
                    key,
                    value,
                    lease: l,
                } => {
                    lease = lease.or(*l);
                    self.put_op(key, value, *l)
                }
                Op::Delete { key } => TxnOp::delete(self.full_key(key), None::<DeleteOptions>),
            })
            .collect();
        let mut kv = self.client.kv_client();
        let resp = self
            .call(kv.txn(EtcdTxn::new().when(compares).and_then(ops)), lease)
            .await?;
        Ok(TxnOutcome {
            succeeded: resp.succeeded(),
            revision: header_revision(resp.header())?,
        })
    }

    async fn revision(&self) -> Result<Revision> {
        let mut kv = self.client.kv_client();
        let options = GetOptions::new().with_count_only();
        let resp = self
            .call(kv.get(self.full_key("/"), Some(options)), None)
            .await?;
        header_revision(resp.header())
    }
}

impl EtcdStore {
    fn to_watch_event(&self, event: &etcd_client::Event) -> Result<WatchEvent> {
        let kv = event
            .kv()
            .ok_or_else(|| MetadataError::Corrupt("etcd watch event without a key".into()))?;
        let kind = match event.event_type() {
            EventType::Put => WatchEventKind::Put,
            EventType::Delete => WatchEventKind::Delete,
        };
        Ok(WatchEvent {
            kind,
            key: self.strip_root(kv.key())?,
            value: match kind {
                WatchEventKind::Put => Bytes::copy_from_slice(kv.value()),
                WatchEventKind::Delete => Bytes::new(),
            },
            // For a delete etcd sets mod_revision to the deletion's revision.
            revision: kv.mod_revision(),
        })
    }
}

fn put_options(lease: Option<LeaseId>) -> PutOptions {
    match lease {
        Some(id) => PutOptions::new().with_lease(id),
        None => PutOptions::new(),
    }
}

/// `""`, `"/"` -> no root; `"a/b/"` -> `"/a/b"`.
fn normalise_root(root: &str) -> Result<String> {
    let trimmed = root.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    if trimmed.split('/').any(str::is_empty) {
        return Err(MetadataError::InvalidArgument(format!(
            "root prefix {root:?} has an empty path segment"
        )));
    }
    Ok(format!("/{trimmed}"))
}

/// The smallest key greater than every key starting with `prefix`
/// (etcd's `range_end` for a prefix); `"\0"` means "to the end".
fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<Revision> {
    header
        .map(|h| h.revision())
        .ok_or_else(|| MetadataError::Unavailable("etcd response without a header".into()))
}

fn cancel_error(resp: &etcd_client::WatchResponse, requested: Revision) -> MetadataError {
    if resp.compact_revision() > 0 {
        MetadataError::Compacted {
            requested,
            oldest: resp.compact_revision(),
        }
    } else {
        MetadataError::Unavailable(format!(
            "etcd cancelled the watch: {}",
            resp.cancel_reason()
        ))
    }
}

/// Maps etcd client errors onto ours. `lease` is the lease the request was
/// about, reported by a "lease not found".
fn map_error(error: etcd_client::Error, lease: Option<LeaseId>) -> MetadataError {
    use etcd_client::Error as E;
    use tonic::Code;
    match error {
        E::GRpcStatus(status) => {
            let message = status.message();
            if message.contains("lease not found") {
                MetadataError::LeaseNotFound(lease.unwrap_or(0))
            } else if message.contains("compacted") {
                MetadataError::Compacted {
                    requested: 0,
                    oldest: 0,
                }
            } else if status.code() == Code::InvalidArgument {
                MetadataError::InvalidArgument(message.to_owned())
            } else {
                MetadataError::Unavailable(format!("etcd: {status}"))
            }
        }
        E::LeaseKeepAliveError(message) if message.contains("not found") => {
            MetadataError::LeaseNotFound(lease.unwrap_or(0))
        }
        E::InvalidArgs(message) => MetadataError::InvalidArgument(message),
        E::InvalidUri(e) => MetadataError::InvalidArgument(format!("etcd endpoint: {e}")),
        other => MetadataError::Unavailable(format!("etcd: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_end_of_prefix() {
        assert_eq!(prefix_range_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_range_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_range_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_range_end(b""), vec![0]);
    }

    #[test]
    fn root_is_normalised() {
        assert_eq!(normalise_root("").unwrap(), "");
        assert_eq!(normalise_root("/").unwrap(), "");
        assert_eq!(normalise_root("a/b/").unwrap(), "/a/b");
        assert_eq!(normalise_root("/magnetar").unwrap(), "/magnetar");
        assert!(normalise_root("/a//b").is_err());
    }
}
