//! Cluster-wide unique ledger ids from a counter key.
//!
//! The counter holds the last id handed out by anyone. An allocator reserves
//! a block of ids by advancing it with compare-and-set (retrying when another
//! broker won the race) and hands them out locally. An id is durably reserved
//! before it is handed out, so no id is ever returned twice, even across
//! restarts; a restart only skips the rest of its block.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Mutex;

use crate::{keys, Expect, MetadataError, MetadataStore, Result};

/// Hands out ledger ids `>= 1`, unique across every allocator on one store.
pub struct LedgerIdAllocator {
    store: Arc<dyn MetadataStore>,
    key: String,
    block_size: u64,
    /// Reserved but not yet handed out: `next..=last`.
    reserved: Mutex<Option<(u64, u64)>>,
}

impl LedgerIdAllocator {
    /// One CAS per id: ids stay dense. Ledgers are created rarely (one per
    /// roll-over), so that costs little.
    pub fn new(store: Arc<dyn MetadataStore>) -> Self {
        Self::with_block_size(store, 1)
    }

    /// Reserves `block_size` ids per CAS (at least 1).
    pub fn with_block_size(store: Arc<dyn MetadataStore>, block_size: u64) -> Self {
        Self {
            store,
            key: keys::ledger_id_counter(),
            block_size: block_size.max(1),
            reserved: Mutex::new(None),
        }
    }

    pub async fn next(&self) -> Result<u64> {
        let mut reserved = self.reserved.lock().await;
        if let Some((next, last)) = *reserved {
            if next <= last {
                *reserved = (next < last).then_some((next + 1, last));
                return Ok(next);
            }
        }
        let (first, last) = self.reserve_block().await?;
        *reserved = (first < last).then_some((first + 1, last));
        Ok(first)
    }

    /// Advances the counter by one block; returns the block's ids.
    async fn reserve_block(&self) -> Result<(u64, u64)> {
        loop {
            let current = self.store.get(&self.key).await?;
            let (last_used, expect) = match &current {
                None => (0, Expect::Absent),
                Some(kv) => (parse_counter(&kv.value)?, Expect::Version(kv.version)),
            };
            let last = last_used
                .checked_add(self.block_size)
                .ok_or_else(|| MetadataError::Unavailable("ledger id space exhausted".into()))?;
            let value = Bytes::from(last.to_string());
            match self.store.put(&self.key, value, expect, None).await {
                Ok(_) => return Ok((last_used + 1, last)),
                Err(MetadataError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

fn parse_counter(value: &[u8]) -> Result<u64> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| {
            MetadataError::Corrupt(format!(
                "ledger id counter holds {:?}",
                String::from_utf8_lossy(value)
            ))
        })
}
