//! Recent entries of every topic of this broker, so that tailing consumers
//! never read bookies. One budget in bytes for the whole broker; the entries
//! inserted first are evicted first (tailing readers want the newest,
//! catch-up readers go to bookies anyway). Keys are positions, which are
//! unique across topics because ledger ids are.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::Position;

/// A handle to the broker's entry cache; clones share it.
#[derive(Clone)]
pub struct EntryCache {
    inner: Arc<Mutex<CacheInner>>,
}

struct CacheInner {
    entries: HashMap<Position, Bytes>,
    /// Insertion order, for eviction (may hold positions already removed).
    order: VecDeque<Position>,
    bytes: usize,
    max_bytes: usize,
}

impl std::fmt::Debug for EntryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("EntryCache")
            .field("bytes", &inner.bytes)
            .field("max_bytes", &inner.max_bytes)
            .finish()
    }
}

impl EntryCache {
    pub fn new(max_bytes: usize) -> Self {
        EntryCache {
            inner: Arc::new(Mutex::new(CacheInner {
                entries: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
                max_bytes,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert(&self, position: Position, entry: Bytes) {
        let mut inner = self.lock();
        if inner.max_bytes == 0 {
            return;
        }
        inner.bytes += entry.len();
        match inner.entries.insert(position, entry) {
            Some(old) => inner.bytes -= old.len(),
            None => inner.order.push_back(position),
        }
        while inner.bytes > inner.max_bytes {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(evicted) = inner.entries.remove(&oldest) {
                inner.bytes -= evicted.len();
            }
        }
    }

    pub fn get(&self, position: &Position) -> Option<Bytes> {
        self.lock().entries.get(position).cloned()
    }

    /// Looks up consecutive entries of one ledger, stopping at the first miss.
    pub fn get_run(&self, ledger_id: u64, first: i64, last: i64) -> Vec<(Position, Bytes)> {
        let inner = self.lock();
        let mut found = Vec::new();
        for e in first..=last {
            let position = Position::new(ledger_id, e);
            match inner.entries.get(&position) {
                Some(data) => found.push((position, data.clone())),
                None => break,
            }
        }
        found
    }

    /// Drops every entry of `ledger_id` (it failed or was trimmed).
    pub fn invalidate_ledger(&self, ledger_id: u64) {
        let mut inner = self.lock();
        let mut freed = 0;
        inner.entries.retain(|p, e| {
            let keep = p.ledger_id != ledger_id;
            if !keep {
                freed += e.len();
            }
            keep
        });
        inner.bytes -= freed;
        inner.order.retain(|p| p.ledger_id != ledger_id);
    }

    pub fn size_bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_budget_across_ledgers_evicts_first_inserted() {
        let cache = EntryCache::new(10);
        let shared = cache.clone();
        cache.insert(Position::new(9, 0), Bytes::from(vec![0u8; 4]));
        shared.insert(Position::new(3, 0), Bytes::from(vec![0u8; 4]));
        cache.insert(Position::new(9, 1), Bytes::from(vec![0u8; 4]));
        assert!(cache.size_bytes() <= 10);
        // The first inserted went first, whatever its ledger id.
        assert!(cache.get(&Position::new(9, 0)).is_none());
        assert!(shared.get(&Position::new(3, 0)).is_some());
        assert_eq!(cache.get_run(9, 1, 5).len(), 1);
        cache.invalidate_ledger(3);
        assert_eq!(cache.size_bytes(), 4);
        assert!(cache.get(&Position::new(3, 0)).is_none());
    }
}
