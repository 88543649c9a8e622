//! Recent entries of one topic, so that tailing consumers never read bookies.
//! Bounded by bytes; the oldest positions are evicted first (tailing readers
//! want the newest, catch-up readers go to bookies anyway).

use std::collections::BTreeMap;

use bytes::Bytes;

use super::Position;

pub struct EntryCache {
    entries: BTreeMap<Position, Bytes>,
    bytes: usize,
    max_bytes: usize,
}

impl EntryCache {
    pub fn new(max_bytes: usize) -> Self {
        EntryCache {
            entries: BTreeMap::new(),
            bytes: 0,
            max_bytes,
        }
    }

    pub fn insert(&mut self, position: Position, entry: Bytes) {
        if self.max_bytes == 0 {
            return;
        }
        self.bytes += entry.len();
        if let Some(old) = self.entries.insert(position, entry) {
            self.bytes -= old.len();
        }
        while self.bytes > self.max_bytes {
            let Some((_, evicted)) = self.entries.pop_first() else {
                break;
            };
            self.bytes -= evicted.len();
        }
    }

    pub fn get(&self, position: &Position) -> Option<Bytes> {
        self.entries.get(position).cloned()
    }

    /// Drops every entry of `ledger_id` (it failed or was trimmed).
    pub fn invalidate_ledger(&mut self, ledger_id: u64) {
        let doomed: Vec<Position> = self
            .entries
            .range(Position::new(ledger_id, i64::MIN)..=Position::new(ledger_id, i64::MAX))
            .map(|(p, _)| *p)
            .collect();
        for p in doomed {
            if let Some(e) = self.entries.remove(&p) {
                self.bytes -= e.len();
            }
        }
    }

    #[cfg(test)]
    pub fn size_bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_oldest_first_within_budget() {
        let mut cache = EntryCache::new(10);
        for e in 0..5 {
            cache.insert(Position::new(1, e), Bytes::from(vec![0u8; 4]));
        }
        assert!(cache.size_bytes() <= 10);
        assert!(cache.get(&Position::new(1, 0)).is_none());
        assert!(cache.get(&Position::new(1, 4)).is_some());
        cache.invalidate_ledger(1);
        assert_eq!(cache.size_bytes(), 0);
    }
}
