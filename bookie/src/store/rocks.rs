//! RocksDB implementation of [`EntryStore`]: entries in column family
//! `entries` keyed by [`entry_key`], ledger state in `ledgers`.

use std::path::Path;

use bytes::Bytes;
use prost::Message;
use rocksdb::{
    ColumnFamilyDescriptor, DBCompressionType, Direction, IteratorMode, Options, ReadOptions,
    WriteBatch, WriteOptions, DB,
};

use super::{entry_key, parse_entry_key, EntryStore, LedgerStateRecord, StoreBatch, StoreError};

const ENTRIES_CF: &str = "entries";
const LEDGERS_CF: &str = "ledgers";

/// Engine tuning the operator may change.
#[derive(Clone, Debug)]
pub struct RocksOptions {
    /// Memtable size; large memtables absorb bursts without write stalls.
    pub write_buffer_bytes: usize,
    /// Store values of at least `min_blob_size` bytes in blob files (BlobDB):
    /// compaction then moves only keys, so each payload is written twice (WAL,
    /// blob file) rather than once per LSM level.
    pub blob_files: bool,
    pub min_blob_size: u64,
    /// Flush and compaction write with O_DIRECT, sparing the page-cache copy.
    pub direct_io_flush: bool,
}

impl Default for RocksOptions {
    fn default() -> Self {
        RocksOptions {
            write_buffer_bytes: 128 << 20,
            blob_files: true,
            min_blob_size: 256,
            direct_io_flush: false,
        }
    }
}

pub struct RocksEntryStore {
    db: DB,
    sync_write: WriteOptions,
}

/// Writes recorded in order until commit, when the column-family handles are
/// at hand. Payloads are `Bytes` handles, so recording them copies nothing.
#[derive(Default)]
pub struct RocksBatch {
    ops: Vec<BatchOp>,
}

enum BatchOp {
    Entry(u64, i64, Bytes),
    State(u64, Vec<u8>),
    DeleteLedger(u64),
}

impl StoreBatch for RocksBatch {
    fn put_entry(&mut self, ledger_id: u64, entry_id: i64, payload: Bytes) {
        self.ops.push(BatchOp::Entry(ledger_id, entry_id, payload));
    }

    fn put_ledger_state(&mut self, ledger_id: u64, state: &LedgerStateRecord) {
        self.ops
            .push(BatchOp::State(ledger_id, state.encode_to_vec()));
    }

    fn delete_ledger(&mut self, ledger_id: u64) {
        self.ops.push(BatchOp::DeleteLedger(ledger_id));
    }

    fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

fn storage_err(e: rocksdb::Error) -> StoreError {
    StoreError(e.into_string())
}

impl RocksEntryStore {
    pub fn open(path: &Path, tuning: &RocksOptions) -> Result<Self, StoreError> {
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.increase_parallelism(2);
        db_opts.set_max_total_wal_size(512 << 20);
        db_opts.set_use_direct_io_for_flush_and_compaction(tuning.direct_io_flush);
        // Background writes (flush, compaction) sync as they go, so the
        // journal's fsync never waits behind a burst of dirty pages.
        db_opts.set_bytes_per_sync(1 << 20);

        let mut entries_opts = Options::default();
        entries_opts.set_write_buffer_size(tuning.write_buffer_bytes);
        entries_opts.set_max_write_buffer_number(4);
        // Entries are opaque client bytes, usually compressed by the producer.
        entries_opts.set_compression_type(DBCompressionType::None);
        if tuning.blob_files {
            entries_opts.set_enable_blob_files(true);
            entries_opts.set_min_blob_size(tuning.min_blob_size);
            entries_opts.set_blob_file_size(256 << 20);
            // No blob GC: it would rewrite live payloads during compaction.
            // Ledgers are written and deleted roughly in time order, so a blob
            // file is dropped whole once compaction has removed every key
            // that points into it.
            entries_opts.set_enable_blob_gc(false);
        }
        let ledgers_opts = Options::default();

        let db = DB::open_cf_descriptors(
            &db_opts,
            path,
            vec![
                ColumnFamilyDescriptor::new(ENTRIES_CF, entries_opts),
                ColumnFamilyDescriptor::new(LEDGERS_CF, ledgers_opts),
            ],
        )
        .map_err(storage_err)?;
        let mut sync_write = WriteOptions::default();
        sync_write.set_sync(true);
        Ok(RocksEntryStore { db, sync_write })
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, StoreError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StoreError(format!("column family {name} missing")))
    }
}

impl EntryStore for RocksEntryStore {
    type Batch = RocksBatch;

    fn new_batch(&self) -> RocksBatch {
        RocksBatch::default()
    }

    fn commit(&self, batch: RocksBatch) -> Result<(), StoreError> {
        let entries_cf = self.cf(ENTRIES_CF)?;
        let ledgers_cf = self.cf(LEDGERS_CF)?;
        let mut wb = WriteBatch::default();
        for op in &batch.ops {
            match op {
                BatchOp::Entry(ledger, entry, payload) => {
                    wb.put_cf(entries_cf, entry_key(*ledger, *entry), payload)
                }
                BatchOp::State(ledger, state) => wb.put_cf(ledgers_cf, ledger.to_be_bytes(), state),
                BatchOp::DeleteLedger(ledger) => {
                    wb.delete_range_cf(
                        entries_cf,
                        entry_key(*ledger, 0),
                        entry_key(ledger.saturating_add(1), 0),
                    );
                    wb.delete_cf(ledgers_cf, ledger.to_be_bytes());
                }
            }
        }
        self.db.write_opt(wb, &self.sync_write).map_err(storage_err)
    }

    fn get_entry(&self, ledger_id: u64, entry_id: i64) -> Result<Option<Bytes>, StoreError> {
        let cf = self.cf(ENTRIES_CF)?;
        Ok(self
            .db
            .get_pinned_cf(cf, entry_key(ledger_id, entry_id))
            .map_err(storage_err)?
            .map(|v| Bytes::copy_from_slice(&v)))
    }

    fn read_range(
        &self,
        ledger_id: u64,
        first: i64,
        last: i64,
        max_bytes: usize,
    ) -> Result<Vec<(i64, Bytes)>, StoreError> {
        let cf = self.cf(ENTRIES_CF)?;
        let mut read_opts = ReadOptions::default();
        read_opts.set_iterate_upper_bound(entry_key(ledger_id, last.saturating_add(1)));
        let start = entry_key(ledger_id, first);
        let iter = self.db.iterator_cf_opt(
            cf,
            read_opts,
            IteratorMode::From(&start, Direction::Forward),
        );
        let mut out = Vec::new();
        let mut expected = first;
        let mut bytes = 0usize;
        for item in iter {
            let (key, value) = item.map_err(storage_err)?;
            match parse_entry_key(&key) {
                Some((l, e)) if l == ledger_id && e == expected => {
                    bytes += value.len();
                    out.push((e, Bytes::from(value.into_vec())));
                    expected += 1;
                    if bytes >= max_bytes {
                        break;
                    }
                }
                _ => break,
            }
        }
        Ok(out)
    }

    fn load_ledger_states(&self) -> Result<Vec<(u64, LedgerStateRecord)>, StoreError> {
        let cf = self.cf(LEDGERS_CF)?;
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (key, value) = item.map_err(storage_err)?;
            let ledger = key
                .as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError(format!("bad ledger state key of {} bytes", key.len())))?;
            let state = LedgerStateRecord::decode(value.as_ref())
                .map_err(|e| StoreError(format!("ledger {ledger} state: {e}")))?;
            out.push((ledger, state));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> RocksEntryStore {
        RocksEntryStore::open(dir, &RocksOptions::default()).unwrap()
    }

    #[test]
    fn batch_round_trips_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path());
            let mut b = store.new_batch();
            for e in 0..5 {
                b.put_entry(7, e, Bytes::from(format!("entry-{e}")));
            }
            b.put_entry(8, 0, Bytes::from_static(b"other"));
            b.put_ledger_state(
                7,
                &LedgerStateRecord {
                    fenced: true,
                    lac: 3,
                    master_key: Bytes::from_static(b"k"),
                    last_entry_id: 4,
                },
            );
            store.commit(b).unwrap();
        }
        let store = open(dir.path());
        assert_eq!(
            store.get_entry(7, 2).unwrap().as_deref(),
            Some(&b"entry-2"[..])
        );
        let range = store.read_range(7, 1, 10, usize::MAX).unwrap();
        assert_eq!(
            range.iter().map(|(e, _)| *e).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        let states = store.load_ledger_states().unwrap();
        assert_eq!(states.len(), 1);
        assert!(states[0].1.fenced);
        assert_eq!(states[0].1.lac, 3);
    }

    #[test]
    fn range_stops_at_gap_and_byte_cap() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut b = store.new_batch();
        for e in [0, 1, 2, 4] {
            b.put_entry(1, e, Bytes::from(vec![0u8; 100]));
        }
        store.commit(b).unwrap();
        assert_eq!(store.read_range(1, 0, 10, usize::MAX).unwrap().len(), 3);
        assert_eq!(store.read_range(1, 0, 10, 150).unwrap().len(), 2);
        assert_eq!(store.read_range(1, 0, 0, usize::MAX).unwrap().len(), 1);
    }

    #[test]
    fn delete_ledger_drops_entries_and_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut b = store.new_batch();
        b.put_entry(1, 0, Bytes::from_static(b"a"));
        b.put_entry(2, 0, Bytes::from_static(b"b"));
        b.put_ledger_state(1, &LedgerStateRecord::default());
        store.commit(b).unwrap();
        let mut b = store.new_batch();
        b.delete_ledger(1);
        store.commit(b).unwrap();
        assert_eq!(store.get_entry(1, 0).unwrap(), None);
        assert!(store.get_entry(2, 0).unwrap().is_some());
        assert!(store.load_ledger_states().unwrap().is_empty());
    }
}
