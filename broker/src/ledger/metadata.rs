//! Ledger metadata: the record at `/ledgers/{id}` (quorums, ensembles, state,
//! last entry, length, master key) and the compare-and-set store around it.
//!
//! This module owns the shape and the invariants of that record and every
//! read or write of it. It never talks to a bookie; a change that another
//! writer raced past always surfaces as [`LedgerMetadataError::Conflict`],
//! never as a silent overwrite.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::clock::now_ms;
use bytes::Bytes;
use magnetar_metadata::{keys, Expect, MetadataError, MetadataStore, Version};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{EntryId, LedgerId};

/// Why a ledger-metadata operation failed.
#[derive(Debug, Error)]
pub enum LedgerMetadataError {
    /// The metadata breaks an invariant (quorums, ensembles, state).
    #[error("invalid ledger metadata: {0}")]
    Invalid(String),
    /// A compare-and-set lost: someone else changed (or created) the record.
    #[error("ledger metadata changed concurrently")]
    Conflict,
    #[error("ledger {0} not found")]
    NotFound(LedgerId),
    #[error(transparent)]
    Metadata(MetadataError),
    /// The stored record cannot be decoded, or decodes to invalid metadata.
    #[error("corrupt ledger metadata: {0}")]
    Corrupt(String),
}

impl From<MetadataError> for LedgerMetadataError {
    fn from(e: MetadataError) -> Self {
        match e {
            MetadataError::Conflict { .. } => LedgerMetadataError::Conflict,
            other => LedgerMetadataError::Metadata(other),
        }
    }
}

pub type Result<T, E = LedgerMetadataError> = std::result::Result<T, E>;

/// Life cycle of a ledger: only its writer adds while `Open`; a recovering
/// reader moves it to `InRecovery`, then whoever finishes closes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LedgerState {
    Open,
    InRecovery,
    Closed,
}

/// The record stored at [`keys::ledger`] (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerMetadata {
    /// E: bookies per ensemble.
    pub ensemble_size: usize,
    /// Qw: bookies each entry is written to.
    pub write_quorum: usize,
    /// Qa: acknowledgements that confirm an entry.
    pub ack_quorum: usize,
    /// `(first entry, bookie ids)`, sorted by first entry; the first starts
    /// at 0 and each holds until the next one's first entry.
    pub ensembles: Vec<(EntryId, Vec<String>)>,
    pub state: LedgerState,
    /// Last entry of a closed ledger; -1 while open or when closed empty.
    pub last_entry_id: EntryId,
    /// Payload bytes of a closed ledger.
    pub length: u64,
    /// The key every add and fence must carry (hex in JSON).
    #[serde(with = "hex_bytes")]
    pub master_key: Bytes,
    pub created_at_ms: u64,
    #[serde(default)]
    pub custom: BTreeMap<String, String>,
}

fn invalid(why: impl Into<String>) -> LedgerMetadataError {
    LedgerMetadataError::Invalid(why.into())
}

impl LedgerMetadata {
    /// A new open ledger on `ensemble`, created now. Validated.
    pub fn new(
        write_quorum: usize,
        ack_quorum: usize,
        ensemble: Vec<String>,
        master_key: Bytes,
        custom: BTreeMap<String, String>,
    ) -> Result<Self> {
        let md = LedgerMetadata {
            ensemble_size: ensemble.len(),
            write_quorum,
            ack_quorum,
            ensembles: vec![(0, ensemble)],
            state: LedgerState::Open,
            last_entry_id: -1,
            length: 0,
            master_key,
            created_at_ms: now_ms(),
            custom,
        };
        md.validate()?;
        Ok(md)
    }

    /// Checks E >= Qw >= Qa >= 1, that ensembles are non-empty, each of E
    /// distinct bookies, with strictly increasing first entries starting at
    /// 0, and that a ledger not closed has no last entry.
    pub fn validate(&self) -> Result<()> {
        let (e, qw, qa) = (self.ensemble_size, self.write_quorum, self.ack_quorum);
        if !(e >= qw && qw >= qa && qa >= 1) {
            return Err(invalid(format!(
                "quorums must satisfy E >= Qw >= Qa >= 1 (E={e}, Qw={qw}, Qa={qa})"
            )));
        }
        let Some((first, _)) = self.ensembles.first() else {
            return Err(invalid("no ensemble"));
        };
        if *first != 0 {
            return Err(invalid(format!(
                "first ensemble starts at entry {first}, not 0"
            )));
        }
        let mut previous: Option<EntryId> = None;
        for (start, bookies) in &self.ensembles {
            if previous.is_some_and(|p| *start <= p) {
                return Err(invalid(format!(
                    "ensemble first entries must strictly increase ({} then {start})",
                    previous.unwrap_or_default()
                )));
            }
            previous = Some(*start);
            if bookies.len() != e {
                return Err(invalid(format!(
                    "ensemble at entry {start} has {} bookies, expected {e}",
                    bookies.len()
                )));
            }
            for (i, bookie) in bookies.iter().enumerate() {
                if bookie.is_empty() {
                    return Err(invalid(format!(
                        "empty bookie id in ensemble at entry {start}"
                    )));
                }
                if bookies[..i].contains(bookie) {
                    return Err(invalid(format!(
                        "bookie {bookie} appears twice in ensemble at entry {start}"
                    )));
                }
            }
        }
        match self.state {
            LedgerState::Closed if self.last_entry_id < -1 => Err(invalid(format!(
                "last entry id {} below -1",
                self.last_entry_id
            ))),
            LedgerState::Open | LedgerState::InRecovery if self.last_entry_id != -1 => {
                Err(invalid(format!(
                    "{:?} ledger has last entry id {}",
                    self.state, self.last_entry_id
                )))
            }
            _ => Ok(()),
        }
    }

    /// Index in `ensembles` of the ensemble that holds `entry_id`.
    fn ensemble_index(&self, entry_id: EntryId) -> usize {
        self.ensembles
            .partition_point(|(first, _)| *first <= entry_id)
            .saturating_sub(1)
    }

    /// The ensemble that holds `entry_id` (the first one for negative ids).
    /// Panics on metadata without ensembles, which [`Self::validate`] refuses.
    pub fn ensemble_for(&self, entry_id: EntryId) -> &[String] {
        &self.ensembles[self.ensemble_index(entry_id)].1
    }

    /// The ensemble new entries go to.
    pub fn current_ensemble(&self) -> &[String] {
        &self.ensembles[self.ensembles.len() - 1].1
    }

    /// Positions in the ensemble of the bookies that store `entry_id`:
    /// `(entry_id + i) % E` for `i < Qw`.
    pub fn write_set_indices(&self, entry_id: EntryId) -> Vec<usize> {
        let e = self.ensemble_size.max(1) as i64;
        (0..self.write_quorum as i64)
            .map(|i| (entry_id + i).rem_euclid(e) as usize)
            .collect()
    }

    /// Bookies that store `entry_id`, in write-set order.
    pub fn write_set(&self, entry_id: EntryId) -> Vec<String> {
        let ensemble = self.ensemble_for(entry_id);
        self.write_set_indices(entry_id)
            .into_iter()
            .map(|i| ensemble[i].clone())
            .collect()
    }

    /// First entry of the ensemble after the one holding `entry_id`, i.e.
    /// where that ensemble stops; `None` if it is the current ensemble.
    pub fn next_ensemble_change(&self, entry_id: EntryId) -> Option<EntryId> {
        self.ensembles
            .get(self.ensemble_index(entry_id) + 1)
            .map(|(first, _)| *first)
    }

    /// Starts a new ensemble at `first_entry`. If the current ensemble
    /// starts at that same entry (no entry was confirmed on it yet) it is
    /// replaced instead. Validated; on error `self` is unchanged.
    pub fn change_ensemble(&mut self, first_entry: EntryId, ensemble: Vec<String>) -> Result<()> {
        if self.state == LedgerState::Closed {
            return Err(invalid("cannot change the ensemble of a closed ledger"));
        }
        let mut next = self.clone();
        let (current_first, _) = next.ensembles[next.ensembles.len() - 1];
        match first_entry.cmp(&current_first) {
            std::cmp::Ordering::Less => {
                return Err(invalid(format!(
                    "ensemble change at entry {first_entry} precedes the current ensemble at {current_first}"
                )))
            }
            std::cmp::Ordering::Equal => {
                let last = next.ensembles.len() - 1;
                next.ensembles[last].1 = ensemble;
            }
            std::cmp::Ordering::Greater => next.ensembles.push((first_entry, ensemble)),
        }
        next.validate()?;
        *self = next;
        Ok(())
    }

    /// Replaces `failed` by `replacement` in a new ensemble from
    /// `first_entry` on (see [`Self::change_ensemble`]).
    pub fn replace_bookie(
        &mut self,
        first_entry: EntryId,
        failed: &str,
        replacement: String,
    ) -> Result<()> {
        let mut ensemble = self.current_ensemble().to_vec();
        let slot = ensemble
            .iter()
            .position(|b| b == failed)
            .ok_or_else(|| invalid(format!("bookie {failed} is not in the current ensemble")))?;
        ensemble[slot] = replacement;
        self.change_ensemble(first_entry, ensemble)
    }

    /// Puts `replacement` in `failed`'s place in the ensemble at `index`,
    /// once its entries have been copied there (re-replication). Unlike an
    /// ensemble change it rewrites history, so only a closed ledger (whose
    /// fragments no writer touches any more) may take it. Validated; on
    /// error `self` is unchanged.
    pub fn replace_in_ensemble(
        &mut self,
        index: usize,
        failed: &str,
        replacement: String,
    ) -> Result<()> {
        if self.state != LedgerState::Closed {
            return Err(invalid(
                "only a closed ledger's ensembles are re-replicated",
            ));
        }
        let mut next = self.clone();
        let Some((_, ensemble)) = next.ensembles.get_mut(index) else {
            return Err(invalid(format!("no ensemble at index {index}")));
        };
        let slot = ensemble
            .iter()
            .position(|b| b == failed)
            .ok_or_else(|| invalid(format!("bookie {failed} is not in ensemble {index}")))?;
        ensemble[slot] = replacement;
        next.validate()?;
        *self = next;
        Ok(())
    }

    /// Open -> InRecovery (InRecovery stays). A closed ledger is refused.
    pub fn start_recovery(&mut self) -> Result<()> {
        match self.state {
            LedgerState::Closed => Err(invalid("ledger is already closed")),
            _ => {
                self.state = LedgerState::InRecovery;
                Ok(())
            }
        }
    }

    /// Closes the ledger at `last_entry_id` (-1 when empty) with `length`
    /// payload bytes. A closed ledger is refused.
    pub fn close(&mut self, last_entry_id: EntryId, length: u64) -> Result<()> {
        if self.state == LedgerState::Closed {
            return Err(invalid("ledger is already closed"));
        }
        if last_entry_id < -1 {
            return Err(invalid(format!("last entry id {last_entry_id} below -1")));
        }
        self.state = LedgerState::Closed;
        self.last_entry_id = last_entry_id;
        self.length = length;
        Ok(())
    }

    pub fn is_closed(&self) -> bool {
        self.state == LedgerState::Closed
    }

    /// JSON encoding; the metadata is validated first.
    pub fn to_bytes(&self) -> Result<Bytes> {
        self.validate()?;
        serde_json::to_vec(self)
            .map(Bytes::from)
            .map_err(|e| invalid(format!("encoding: {e}")))
    }

    /// Decodes and validates a stored record; any failure is `Corrupt`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let md: LedgerMetadata = serde_json::from_slice(bytes)
            .map_err(|e| LedgerMetadataError::Corrupt(e.to_string()))?;
        md.validate().map_err(|e| match e {
            LedgerMetadataError::Invalid(why) => LedgerMetadataError::Corrupt(why),
            other => other,
        })?;
        Ok(md)
    }
}

/// Master keys as lowercase hex strings in JSON.
mod hex_bytes {
    use bytes::Bytes;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(text).map(Bytes::from).map_err(D::Error::custom)
    }
}

/// Reads and writes ledger metadata with compare-and-set on its version.
#[derive(Clone)]
pub struct LedgerMetadataStore {
    store: Arc<dyn MetadataStore>,
}

impl LedgerMetadataStore {
    pub fn new(store: Arc<dyn MetadataStore>) -> Self {
        LedgerMetadataStore { store }
    }

    /// The underlying metadata store.
    pub fn store(&self) -> &Arc<dyn MetadataStore> {
        &self.store
    }

    /// Writes the metadata of a new ledger; `Conflict` if `id` exists.
    pub async fn create(&self, id: LedgerId, md: &LedgerMetadata) -> Result<Version> {
        let value = md.to_bytes()?;
        Ok(self
            .store
            .put(&keys::ledger(id), value, Expect::Absent, None)
            .await?)
    }

    /// The metadata of `id` and its version, for a later [`Self::update`].
    pub async fn read(&self, id: LedgerId) -> Result<(LedgerMetadata, Version)> {
        let kv = self
            .store
            .get(&keys::ledger(id))
            .await?
            .ok_or(LedgerMetadataError::NotFound(id))?;
        let md = LedgerMetadata::from_bytes(&kv.value).map_err(|e| match e {
            LedgerMetadataError::Corrupt(why) => {
                LedgerMetadataError::Corrupt(format!("ledger {id}: {why}"))
            }
            other => other,
        })?;
        Ok((md, kv.version))
    }

    /// Replaces the metadata if it is still at `expected_version`; returns
    /// the new version. `Conflict` if it changed (or vanished) meanwhile.
    pub async fn update(
        &self,
        id: LedgerId,
        md: &LedgerMetadata,
        expected_version: Version,
    ) -> Result<Version> {
        let value = md.to_bytes()?;
        Ok(self
            .store
            .put(
                &keys::ledger(id),
                value,
                Expect::Version(expected_version),
                None,
            )
            .await?)
    }

    /// Read-modify-write until it sticks: `change` sees the current
    /// metadata and returns the new one, or `None` when nothing needs
    /// changing. A lost CAS re-reads and asks again, so concurrent changes
    /// (e.g. two recoveries closing one ledger) converge. Returns the
    /// metadata and version in effect at the end.
    pub async fn update_with<F>(
        &self,
        id: LedgerId,
        mut change: F,
    ) -> Result<(LedgerMetadata, Version)>
    where
        F: FnMut(&LedgerMetadata) -> Result<Option<LedgerMetadata>>,
    {
        loop {
            let (current, version) = self.read(id).await?;
            let Some(next) = change(&current)? else {
                return Ok((current, version));
            };
            match self.update(id, &next, version).await {
                Ok(version) => return Ok((next, version)),
                Err(LedgerMetadataError::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Removes the metadata of `id`; `NotFound` if there is none.
    pub async fn delete(&self, id: LedgerId) -> Result<()> {
        if self.store.delete(&keys::ledger(id), Expect::Any).await? {
            Ok(())
        } else {
            Err(LedgerMetadataError::NotFound(id))
        }
    }

    /// Every ledger with metadata, ascending.
    pub async fn list_ids(&self) -> Result<Vec<LedgerId>> {
        let mut ids: Vec<LedgerId> = self
            .store
            .list(&keys::ledgers_prefix())
            .await?
            .iter()
            .filter_map(|kv| keys::parse_ledger_key(&kv.key))
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use magnetar_metadata::EmbeddedStore;

    fn bookies(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn sample() -> LedgerMetadata {
        LedgerMetadata::new(
            2,
            2,
            bookies(&["a:1", "b:1", "c:1"]),
            Bytes::from_static(b"\x00\xffkey"),
            BTreeMap::from([("topic".to_string(), "t".to_string())]),
        )
        .unwrap()
    }

    async fn store() -> (tempfile::TempDir, LedgerMetadataStore) {
        let dir = tempfile::tempdir().unwrap();
        let embedded = EmbeddedStore::open(dir.path().join("md")).await.unwrap();
        (dir, LedgerMetadataStore::new(Arc::new(embedded)))
    }

    #[test]
    fn write_sets_stripe_over_the_ensemble() {
        let md = sample();
        assert_eq!(md.write_set(0), bookies(&["a:1", "b:1"]));
        assert_eq!(md.write_set(1), bookies(&["b:1", "c:1"]));
        assert_eq!(md.write_set(2), bookies(&["c:1", "a:1"]));
        assert_eq!(md.write_set(3), bookies(&["a:1", "b:1"]));
        assert_eq!(md.write_set_indices(5), vec![2, 0]);
    }

    #[test]
    fn ensembles_cover_ranges_of_entries() {
        let mut md = sample();
        md.replace_bookie(10, "b:1", "d:1".into()).unwrap();
        md.replace_bookie(20, "a:1", "e:1".into()).unwrap();
        assert_eq!(md.ensemble_for(0), bookies(&["a:1", "b:1", "c:1"]));
        assert_eq!(md.ensemble_for(9), bookies(&["a:1", "b:1", "c:1"]));
        assert_eq!(md.ensemble_for(10), bookies(&["a:1", "d:1", "c:1"]));
        assert_eq!(md.ensemble_for(25), bookies(&["e:1", "d:1", "c:1"]));
        assert_eq!(md.ensemble_for(-1), bookies(&["a:1", "b:1", "c:1"]));
        assert_eq!(md.write_set(10), bookies(&["d:1", "c:1"]));
        assert_eq!(md.next_ensemble_change(3), Some(10));
        assert_eq!(md.next_ensemble_change(10), Some(20));
        assert_eq!(md.next_ensemble_change(20), None);
        assert_eq!(md.current_ensemble(), bookies(&["e:1", "d:1", "c:1"]));

        // A second change at the same entry replaces that ensemble.
        md.replace_bookie(20, "d:1", "f:1".into()).unwrap();
        assert_eq!(md.ensembles.len(), 3);
        assert_eq!(md.ensemble_for(20), bookies(&["e:1", "f:1", "c:1"]));
        // Going back is refused and leaves the metadata as it was.
        let before = md.clone();
        assert!(matches!(
            md.replace_bookie(5, "c:1", "g:1".into()),
            Err(LedgerMetadataError::Invalid(_))
        ));
        assert!(matches!(
            md.replace_bookie(30, "zz:1", "g:1".into()),
            Err(LedgerMetadataError::Invalid(_))
        ));
        // The replacement may not already be in the ensemble.
        assert!(matches!(
            md.replace_bookie(30, "c:1", "e:1".into()),
            Err(LedgerMetadataError::Invalid(_))
        ));
        assert_eq!(md, before);
    }

    #[test]
    fn validation_refuses_broken_metadata() {
        let base = sample();
        type Breakage = Box<dyn Fn(&mut LedgerMetadata)>;
        let broken: Vec<(&str, Breakage)> = vec![
            ("Qw > E", Box::new(|m| m.write_quorum = 4)),
            ("Qa > Qw", Box::new(|m| m.ack_quorum = 3)),
            ("Qa = 0", Box::new(|m| m.ack_quorum = 0)),
            ("no ensembles", Box::new(|m| m.ensembles.clear())),
            ("first not 0", Box::new(|m| m.ensembles[0].0 = 1)),
            (
                "wrong size",
                Box::new(|m| m.ensembles.push((5, bookies(&["a:1", "b:1"])))),
            ),
            (
                "not increasing",
                Box::new(|m| {
                    m.ensembles.push((5, bookies(&["a:1", "b:1", "d:1"])));
                    m.ensembles.push((5, bookies(&["a:1", "b:1", "e:1"])));
                }),
            ),
            (
                "duplicate bookie",
                Box::new(|m| m.ensembles[0].1[2] = "a:1".into()),
            ),
            ("open with last entry", Box::new(|m| m.last_entry_id = 3)),
        ];
        for (what, breaks) in broken {
            let mut md = base.clone();
            breaks(&mut md);
            assert!(
                matches!(md.validate(), Err(LedgerMetadataError::Invalid(_))),
                "{what} accepted"
            );
            assert!(md.to_bytes().is_err(), "{what} encoded");
        }
        assert!(matches!(
            LedgerMetadata::new(
                3,
                2,
                bookies(&["a:1", "b:1"]),
                Bytes::new(),
                BTreeMap::new()
            ),
            Err(LedgerMetadataError::Invalid(_))
        ));
    }

    #[test]
    fn json_round_trips_with_a_hex_master_key() {
        let mut md = sample();
        md.close(41, 1234).unwrap();
        let bytes = md.to_bytes().unwrap();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.contains("\"master_key\":\"00ff6b6579\""), "{text}");
        assert!(text.contains("\"state\":\"CLOSED\""), "{text}");
        assert_eq!(LedgerMetadata::from_bytes(&bytes).unwrap(), md);
        assert!(matches!(
            LedgerMetadata::from_bytes(b"{"),
            Err(LedgerMetadataError::Corrupt(_))
        ));
        let bad_hex = text.replace("00ff6b6579", "0g");
        assert!(matches!(
            LedgerMetadata::from_bytes(bad_hex.as_bytes()),
            Err(LedgerMetadataError::Corrupt(_))
        ));
        let mut invalid = md.clone();
        invalid.ack_quorum = 9;
        let invalid = serde_json::to_vec(&invalid).unwrap();
        assert!(matches!(
            LedgerMetadata::from_bytes(&invalid),
            Err(LedgerMetadataError::Corrupt(_))
        ));
    }

    #[test]
    fn state_moves_forward_only() {
        let mut md = sample();
        md.start_recovery().unwrap();
        md.start_recovery().unwrap();
        assert_eq!(md.state, LedgerState::InRecovery);
        md.close(-1, 0).unwrap();
        assert!(md.is_closed());
        assert!(md.close(3, 0).is_err());
        assert!(md.start_recovery().is_err());
        assert!(md
            .change_ensemble(0, bookies(&["x:1", "y:1", "z:1"]))
            .is_err());
    }

    #[tokio::test]
    async fn create_read_update_delete_with_cas() {
        let (_dir, store) = store().await;
        let md = sample();
        let v1 = store.create(7, &md).await.unwrap();
        assert!(matches!(
            store.create(7, &md).await,
            Err(LedgerMetadataError::Conflict)
        ));
        let (read, version) = store.read(7).await.unwrap();
        assert_eq!(read, md);
        assert_eq!(version, v1);

        let mut closed = read.clone();
        closed.close(9, 100).unwrap();
        let v2 = store.update(7, &closed, v1).await.unwrap();
        assert_ne!(v1, v2);
        // A writer still holding the old version loses.
        let mut stale = read.clone();
        stale.replace_bookie(3, "a:1", "d:1".into()).unwrap();
        assert!(matches!(
            store.update(7, &stale, v1).await,
            Err(LedgerMetadataError::Conflict)
        ));
        assert_eq!(store.read(7).await.unwrap(), (closed, v2));

        // Invalid metadata never reaches the store.
        let mut bad = md.clone();
        bad.write_quorum = 0;
        assert!(matches!(
            store.update(7, &bad, v2).await,
            Err(LedgerMetadataError::Invalid(_))
        ));
        assert!(matches!(
            store.create(8, &bad).await,
            Err(LedgerMetadataError::Invalid(_))
        ));
        assert!(matches!(
            store.read(8).await,
            Err(LedgerMetadataError::NotFound(8))
        ));

        store.create(3, &md).await.unwrap();
        assert_eq!(store.list_ids().await.unwrap(), vec![3, 7]);
        store.delete(7).await.unwrap();
        assert!(matches!(
            store.delete(7).await,
            Err(LedgerMetadataError::NotFound(7))
        ));
        assert!(matches!(
            store.read(7).await,
            Err(LedgerMetadataError::NotFound(7))
        ));
        assert!(matches!(
            store.update(7, &md, v2).await,
            Err(LedgerMetadataError::Conflict)
        ));
        assert_eq!(store.list_ids().await.unwrap(), vec![3]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn update_with_retries_lost_races_and_converges() {
        let (_dir, store) = store().await;
        store.create(1, &sample()).await.unwrap();
        let mut calls = 0;
        let (md, _) = store
            .update_with(1, |current| {
                calls += 1;
                if calls == 1 {
                    // Someone else closes the ledger between our read and CAS.
                    let raced = store.clone();
                    let mut theirs = current.clone();
                    theirs.close(4, 40).unwrap();
                    tokio::task::block_in_place(|| {
                        tokio::runtime::Handle::current().block_on(async {
                            let (_, v) = raced.read(1).await.unwrap();
                            raced.update(1, &theirs, v).await.unwrap();
                        })
                    });
                }
                if current.is_closed() {
                    return Ok(None);
                }
                let mut next = current.clone();
                next.close(2, 20)?;
                Ok(Some(next))
            })
            .await
            .unwrap();
        assert_eq!(calls, 2);
        assert_eq!((md.last_entry_id, md.length), (4, 40));
        assert_eq!(store.read(1).await.unwrap().0, md);
    }

    #[tokio::test]
    async fn corrupt_records_are_reported_not_parsed() {
        let (_dir, store) = store().await;
        store
            .store()
            .put(
                &keys::ledger(5),
                Bytes::from_static(b"nope"),
                Expect::Any,
                None,
            )
            .await
            .unwrap();
        assert!(matches!(
            store.read(5).await,
            Err(LedgerMetadataError::Corrupt(_))
        ));
    }
}
