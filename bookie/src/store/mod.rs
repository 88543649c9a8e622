//! The storage seam: what the bookie needs from an engine (TiKV's
//! engine_traits idea). The journal and service are generic over
//! [`EntryStore`]; only [`rocks`] names RocksDB.

mod rocks;

use bytes::Bytes;
use thiserror::Error;

pub use rocks::{RocksEntryStore, RocksOptions};

/// Durable per-ledger state kept beside the entries.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LedgerStateRecord {
    #[prost(bool, tag = "1")]
    pub fenced: bool,
    /// Highest LAC any writer piggybacked on an add (-1: none).
    #[prost(int64, tag = "2")]
    pub lac: i64,
    #[prost(bytes = "bytes", tag = "3")]
    pub master_key: Bytes,
    /// Highest entry id stored (-1: none).
    #[prost(int64, tag = "4")]
    pub last_entry_id: i64,
}

#[derive(Debug, Error)]
#[error("storage engine: {0}")]
pub struct StoreError(pub String);

/// A set of writes applied atomically and durably by [`EntryStore::commit`].
pub trait StoreBatch: Send {
    /// Takes the payload as `Bytes` so recording it copies nothing.
    fn put_entry(&mut self, ledger_id: u64, entry_id: i64, payload: Bytes);
    fn put_ledger_state(&mut self, ledger_id: u64, state: &LedgerStateRecord);
    fn delete_ledger(&mut self, ledger_id: u64);
    fn is_empty(&self) -> bool;
}

/// Entry storage engine. `commit` must not return before the batch is durable.
pub trait EntryStore: Send + Sync + 'static {
    type Batch: StoreBatch;

    fn new_batch(&self) -> Self::Batch;
    /// Applies the batch atomically and fsyncs it.
    fn commit(&self, batch: Self::Batch) -> Result<(), StoreError>;
    fn get_entry(&self, ledger_id: u64, entry_id: i64) -> Result<Option<Bytes>, StoreError>;
    /// Consecutive entries from `first` up to `last` (inclusive), stopping at
    /// the first gap or once `max_bytes` is reached (at least one entry).
    fn read_range(
        &self,
        ledger_id: u64,
        first: i64,
        last: i64,
        max_bytes: usize,
    ) -> Result<Vec<(i64, Bytes)>, StoreError>;
    fn load_ledger_states(&self) -> Result<Vec<(u64, LedgerStateRecord)>, StoreError>;
}

/// Big-endian `ledger_id ++ entry_id`, so a ledger's entries sort together and
/// in entry order.
pub fn entry_key(ledger_id: u64, entry_id: i64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&ledger_id.to_be_bytes());
    key[8..].copy_from_slice(&(entry_id as u64).to_be_bytes());
    key
}

/// Inverse of [`entry_key`]; `None` for a key of another length.
pub fn parse_entry_key(key: &[u8]) -> Option<(u64, i64)> {
    let ledger = u64::from_be_bytes(key.get(..8)?.try_into().ok()?);
    let entry = u64::from_be_bytes(key.get(8..16)?.try_into().ok()?);
    (key.len() == 16).then_some((ledger, entry as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_keys_sort_by_ledger_then_entry() {
        let mut keys = [
            entry_key(2, 0),
            entry_key(1, 300),
            entry_key(1, 2),
            entry_key(1, 256),
        ];
        keys.sort();
        let parsed: Vec<_> = keys.iter().map(|k| parse_entry_key(k).unwrap()).collect();
        assert_eq!(parsed, vec![(1, 2), (1, 256), (1, 300), (2, 0)]);
    }

    #[test]
    fn parse_rejects_wrong_length() {
        assert_eq!(parse_entry_key(&[0u8; 15]), None);
        assert_eq!(parse_entry_key(&[0u8; 17]), None);
    }
}
