//! The contract every metadata backend honours. Semantics follow etcd's, so
//! the embedded backend and etcd are interchangeable.

use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

use crate::Result;

/// Store-wide revision, increasing with every change (etcd's revision).
pub type Revision = i64;

/// A key's version for compare-and-set: the revision of its last change
/// (etcd's `mod_revision`). Never 0 for a key that exists.
pub type Version = i64;

/// Lease handle (etcd's lease id).
pub type LeaseId = i64;

/// What a conditional write expects to find.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Unconditional.
    Any,
    /// The key must not exist (create-if-absent).
    Absent,
    /// The key must exist with exactly this version.
    Version(Version),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// Revision of the last change of this key; use it with [`Expect::Version`].
    pub version: Version,
    /// Revision at which the key was created.
    pub create_revision: Revision,
    /// Lease the key is bound to, if any.
    pub lease: Option<LeaseId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchEventKind {
    Put,
    Delete,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: WatchEventKind,
    pub key: String,
    /// New value for puts; empty for deletes.
    pub value: Bytes,
    /// Revision of this change; resume a watch from `revision + 1`.
    pub revision: Revision,
}

/// Events of a watch, in revision order. Ends (or yields an error) when the
/// backend drops the watch; the caller re-watches from its last revision + 1.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent>> + Send>>;

/// A condition of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    pub key: String,
    pub expect: Expect,
}

/// One write of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put {
        key: String,
        value: Bytes,
        lease: Option<LeaseId>,
    },
    Delete {
        key: String,
    },
}

/// All compares hold, then all ops apply atomically; otherwise nothing applies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnOutcome {
    /// Whether every compare held and the ops were applied.
    pub succeeded: bool,
    /// Store revision after the transaction (unchanged when it failed).
    pub revision: Revision,
}

/// Metadata operations the cluster needs. Keys are absolute `/`-separated
/// paths (build them with [`crate::keys`]); a key or non-empty prefix without
/// the leading `/` is rejected with
/// [`MetadataError::InvalidArgument`](crate::MetadataError::InvalidArgument).
/// A backend configured with a root prefix applies it invisibly.
#[async_trait]
pub trait MetadataStore: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Writes `value` if `expect` holds, else fails with
    /// [`MetadataError::Conflict`](crate::MetadataError::Conflict). Returns the
    /// key's new version. With a lease the key vanishes when the lease ends.
    async fn put(
        &self,
        key: &str,
        value: Bytes,
        expect: Expect,
        lease: Option<LeaseId>,
    ) -> Result<Version>;

    /// Deletes the key if `expect` holds (Conflict otherwise). Returns whether
    /// a key was deleted.
    async fn delete(&self, key: &str, expect: Expect) -> Result<bool>;

    /// All keys starting with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<KeyValue>>;

    /// Changes under `prefix`, from `start_revision` (inclusive) when given,
    /// else from now on. Events after this call returns are never missed.
    /// A start revision whose history is gone fails with
    /// [`MetadataError::Compacted`](crate::MetadataError::Compacted), either
    /// here or as the stream's first item.
    async fn watch(&self, prefix: &str, start_revision: Option<Revision>) -> Result<WatchStream>;

    /// A new lease of at least `ttl` (etcd rounds up to whole seconds and to
    /// its minimum TTL, about 2 s).
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId>;

    /// Refreshes the lease to its full TTL; LeaseNotFound if it already ended.
    async fn keep_alive(&self, lease: LeaseId) -> Result<()>;

    /// Ends the lease now, deleting every key bound to it.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<()>;

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome>;

    /// Current store revision.
    async fn revision(&self) -> Result<Revision>;
}

/// Keys are absolute `/`-separated paths. Requiring the leading `/` keeps a
/// root prefix (`/a`) from matching keys of a sibling prefix (`/ab`), and
/// makes every backend reject the same keys.
pub(crate) fn validate_key(key: &str) -> Result<()> {
    if key.starts_with('/') {
        Ok(())
    } else {
        Err(crate::MetadataError::InvalidArgument(format!(
            "key {key:?} must start with '/'"
        )))
    }
}

/// A prefix is empty (everything) or a key prefix starting with `/`.
pub(crate) fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        Ok(())
    } else {
        validate_key(prefix)
    }
}

/// Rejects a transaction that touches a key twice (etcd refuses those too).
pub(crate) fn validate_txn(txn: &Txn) -> Result<()> {
    let mut seen = std::collections::HashSet::with_capacity(txn.ops.len());
    for compare in &txn.compares {
        validate_key(&compare.key)?;
    }
    for op in &txn.ops {
        let key = match op {
            Op::Put { key, .. } | Op::Delete { key } => key,
        };
        validate_key(key)?;
        if !seen.insert(key.as_str()) {
            return Err(crate::MetadataError::InvalidArgument(format!(
                "key {key:?} written twice in one transaction"
            )));
        }
    }
    Ok(())
}
