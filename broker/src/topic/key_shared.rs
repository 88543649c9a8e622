//! Key_Shared: which consumer a sticky key's hash belongs to.
//!
//! Keys hash into `0..HASH_RANGE_SIZE` as in Pulsar (Murmur3 x86 32-bit,
//! seed 0, modulo 65,536), so hash ranges a client names in STICKY mode mean
//! what they mean on a Pulsar broker. In AUTO_SPLIT mode the first consumer
//! owns the whole range, each newcomer takes half of the largest range, and a
//! leaving consumer's range goes to its neighbour: membership changes move
//! as few keys as possible, and the same membership always gives the same
//! assignment.

use std::collections::BTreeMap;
use std::io::Cursor;

use super::subscription::ConsumerKey;

/// Number of hash slots keys are spread over (Pulsar's default range size).
pub const HASH_RANGE_SIZE: u32 = 65_536;

/// The key of messages that carry none, hashed like any other.
const NO_KEY: &[u8] = b"NONE_KEY";

/// A message's sticky key hash: its ordering key, else its partition key,
/// else a fixed key.
pub fn sticky_key_hash(ordering_key: Option<&[u8]>, partition_key: Option<&str>) -> u16 {
    let key = ordering_key
        .filter(|k| !k.is_empty())
        .or_else(|| partition_key.map(str::as_bytes))
        .unwrap_or(NO_KEY);
    // Reading from an in-memory cursor cannot fail.
    let hash = murmur3::murmur3_32(&mut Cursor::new(key), 0).unwrap_or(0);
    (hash % HASH_RANGE_SIZE) as u16
}

/// How a consumer asks for keys (KeySharedMeta on SUBSCRIBE).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySharedMode {
    AutoSplit,
    /// Inclusive `(start, end)` hash ranges chosen by the consumer.
    Sticky(Vec<(u32, u32)>),
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum KeySharedError {
    #[error("subscription is in {existing} mode, consumer asked for {requested}")]
    ModeMismatch {
        existing: &'static str,
        requested: &'static str,
    },
    #[error("hash range {start}..={end} is invalid (ranges lie within 0..{HASH_RANGE_SIZE})")]
    InvalidRange { start: u32, end: u32 },
    #[error("hash range {start}..={end} overlaps a range of another consumer")]
    RangeConflict { start: u32, end: u32 },
    #[error("a sticky consumer must name at least one hash range")]
    NoRanges,
    #[error("{0} hash ranges named; there are only {HASH_RANGE_SIZE} hashes")]
    TooManyRanges(usize),
    #[error("no hash range left to split for another consumer")]
    RangeExhausted,
}

/// Maps key hashes to consumers.
#[derive(Debug, Default)]
pub struct HashSelector {
    /// AUTO_SPLIT: inclusive end of each range -> its consumer; a range
    /// starts after the previous end.
    auto: BTreeMap<u32, ConsumerKey>,
    /// STICKY: start of each declared range -> its inclusive end and
    /// consumer. Ranges never overlap, so a hash's owner is found by one
    /// lookup and a new range is checked against its neighbours only.
    sticky: BTreeMap<u32, (u32, ConsumerKey)>,
}

impl HashSelector {
    pub fn add_consumer(
        &mut self,
        consumer: ConsumerKey,
        mode: &KeySharedMode,
    ) -> Result<(), KeySharedError> {
        match mode {
            KeySharedMode::AutoSplit => {
                if !self.sticky.is_empty() {
                    return Err(KeySharedError::ModeMismatch {
                        existing: "STICKY",
                        requested: "AUTO_SPLIT",
                    });
                }
                self.add_auto(consumer)
            }
            KeySharedMode::Sticky(ranges) => {
                if !self.auto.is_empty() {
                    return Err(KeySharedError::ModeMismatch {
                        existing: "AUTO_SPLIT",
                        requested: "STICKY",
                    });
                }
                self.add_sticky(consumer, ranges)
            }
        }
    }

    fn add_auto(&mut self, consumer: ConsumerKey) -> Result<(), KeySharedError> {
        let Some((&end, _)) = self.auto.last_key_value() else {
            self.auto.insert(HASH_RANGE_SIZE - 1, consumer);
            return Ok(());
        };
        debug_assert_eq!(end, HASH_RANGE_SIZE - 1);
        // The largest range (the first one on ties) is split; the newcomer
        // takes its lower half.
        let mut start = 0;
        let mut best: Option<(u32, u32)> = None;
        for &end in self.auto.keys() {
            let size = end + 1 - start;
            if best.is_none_or(|(s, e)| size > e + 1 - s) {
                best = Some((start, end));
            }
            start = end + 1;
        }
        let Some((start, end)) = best.filter(|(s, e)| e > s) else {
            return Err(KeySharedError::RangeExhausted);
        };
        let mid = start + (end - start) / 2;
        self.auto.insert(mid, consumer);
        Ok(())
    }

    fn add_sticky(
        &mut self,
        consumer: ConsumerKey,
        ranges: &[(u32, u32)],
    ) -> Result<(), KeySharedError> {
        if ranges.is_empty() {
            return Err(KeySharedError::NoRanges);
        }
        if ranges.len() > HASH_RANGE_SIZE as usize {
            return Err(KeySharedError::TooManyRanges(ranges.len()));
        }
        self.sticky.retain(|_, (_, c)| *c != consumer);
        let mut sorted = ranges.to_vec();
        sorted.sort_unstable();
        let mut previous_end = None;
        for &(start, end) in &sorted {
            if start > end || end >= HASH_RANGE_SIZE {
                return Err(KeySharedError::InvalidRange { start, end });
            }
            // Ranges do not overlap, so only the one starting last at or
            // before `end` can reach into this one.
            let taken_by_other = self
                .sticky
                .range(..=end)
                .next_back()
                .is_some_and(|(_, (e, _))| *e >= start);
            if taken_by_other || previous_end.is_some_and(|p| start <= p) {
                return Err(KeySharedError::RangeConflict { start, end });
            }
            previous_end = Some(end);
        }
        self.sticky
            .extend(sorted.into_iter().map(|(s, e)| (s, (e, consumer))));
        Ok(())
    }

    /// Forgets a consumer; in AUTO_SPLIT its range joins the next range up
    /// (or, for the last range, the one below).
    pub fn remove_consumer(&mut self, consumer: ConsumerKey) {
        self.sticky.retain(|_, (_, c)| *c != consumer);
        let Some(end) = self
            .auto
            .iter()
            .find(|(_, c)| **c == consumer)
            .map(|(e, _)| *e)
        else {
            return;
        };
        self.auto.remove(&end);
        if end == HASH_RANGE_SIZE - 1 {
            // The top range must keep ending at the top: its lower
            // neighbour's consumer takes it over.
            if let Some((&lower_end, &lower)) = self.auto.last_key_value() {
                self.auto.remove(&lower_end);
                self.auto.insert(end, lower);
            }
        }
    }

    /// The consumer that owns `hash`, if any consumer does.
    pub fn select(&self, hash: u16) -> Option<ConsumerKey> {
        let hash = hash as u32;
        if let Some((_, consumer)) = self.auto.range(hash..).next() {
            return Some(*consumer);
        }
        self.sticky
            .range(..=hash)
            .next_back()
            .filter(|(_, (end, _))| hash <= *end)
            .map(|(_, (_, c))| *c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owners(selector: &HashSelector) -> Vec<(u32, ConsumerKey)> {
        selector.auto.iter().map(|(e, c)| (*e, *c)).collect()
    }

    #[test]
    fn auto_split_halves_the_largest_range() {
        let mut s = HashSelector::default();
        s.add_consumer((1, 1), &KeySharedMode::AutoSplit).unwrap();
        assert_eq!(s.select(0), Some((1, 1)));
        assert_eq!(s.select(u16::MAX), Some((1, 1)));
        s.add_consumer((1, 2), &KeySharedMode::AutoSplit).unwrap();
        assert_eq!(owners(&s), vec![(32_767, (1, 2)), (65_535, (1, 1))]);
        s.add_consumer((1, 3), &KeySharedMode::AutoSplit).unwrap();
        // Both halves are equal: the first is split.
        assert_eq!(
            owners(&s),
            vec![(16_383, (1, 3)), (32_767, (1, 2)), (65_535, (1, 1))]
        );
        assert_eq!(s.select(16_384), Some((1, 2)));
    }

    #[test]
    fn leaving_consumer_range_goes_to_a_neighbour() {
        let mut s = HashSelector::default();
        for id in 1..=3 {
            s.add_consumer((1, id), &KeySharedMode::AutoSplit).unwrap();
        }
        s.remove_consumer((1, 2));
        assert_eq!(owners(&s), vec![(16_383, (1, 3)), (65_535, (1, 1))]);
        s.remove_consumer((1, 1));
        assert_eq!(owners(&s), vec![(65_535, (1, 3))]);
        s.remove_consumer((1, 3));
        assert!(owners(&s).is_empty());
        assert_eq!(s.select(7), None);
    }

    #[test]
    fn same_membership_same_assignment() {
        let build = || {
            let mut s = HashSelector::default();
            for id in 1..=5 {
                s.add_consumer((9, id), &KeySharedMode::AutoSplit).unwrap();
            }
            s
        };
        let (a, b) = (build(), build());
        for hash in (0..=u16::MAX).step_by(97) {
            assert_eq!(a.select(hash), b.select(hash));
        }
    }

    #[test]
    fn every_hash_its_own_sticky_range() {
        // 65,536 one-hash ranges over 16 consumers, each consumer's given in
        // reverse order: each lookup finds the consumer that named the hash.
        let mut s = HashSelector::default();
        for c in 0..16u64 {
            let ranges: Vec<(u32, u32)> = (0..HASH_RANGE_SIZE)
                .rev()
                .filter(|h| u64::from(*h) % 16 == c)
                .map(|h| (h, h))
                .collect();
            s.add_consumer((1, c), &KeySharedMode::Sticky(ranges))
                .unwrap();
        }
        for hash in 0..=u16::MAX {
            assert_eq!(s.select(hash), Some((1, u64::from(hash) % 16)));
        }
        // A consumer's own ranges may not overlap each other.
        let mut fresh = HashSelector::default();
        assert_eq!(
            fresh.add_consumer((2, 1), &KeySharedMode::Sticky(vec![(15, 30), (10, 20)])),
            Err(KeySharedError::RangeConflict { start: 15, end: 30 })
        );
        let too_many = vec![(0, 0); HASH_RANGE_SIZE as usize + 1];
        assert_eq!(
            s.add_consumer((2, 2), &KeySharedMode::Sticky(too_many)),
            Err(KeySharedError::TooManyRanges(HASH_RANGE_SIZE as usize + 1))
        );
    }

    #[test]
    fn sticky_lookup_finds_gaps_and_a_removed_consumer_frees_its_ranges() {
        let mut s = HashSelector::default();
        s.add_consumer((1, 1), &KeySharedMode::Sticky(vec![(100, 199), (0, 9)]))
            .unwrap();
        s.add_consumer((1, 2), &KeySharedMode::Sticky(vec![(10, 99)]))
            .unwrap();
        assert_eq!(s.select(0), Some((1, 1)));
        assert_eq!(s.select(9), Some((1, 1)));
        assert_eq!(s.select(10), Some((1, 2)));
        assert_eq!(s.select(199), Some((1, 1)));
        assert_eq!(s.select(200), None);
        s.remove_consumer((1, 1));
        assert_eq!(s.select(150), None);
        s.add_consumer((1, 3), &KeySharedMode::Sticky(vec![(150, 300)]))
            .unwrap();
        assert_eq!(s.select(150), Some((1, 3)));
    }

    #[test]
    fn sticky_ranges_are_checked() {
        let mut s = HashSelector::default();
        s.add_consumer((1, 1), &KeySharedMode::Sticky(vec![(0, 99)]))
            .unwrap();
        assert_eq!(
            s.add_consumer((1, 2), &KeySharedMode::Sticky(vec![(50, 150)])),
            Err(KeySharedError::RangeConflict {
                start: 50,
                end: 150
            })
        );
        assert_eq!(
            s.add_consumer((1, 2), &KeySharedMode::Sticky(vec![(5, 70_000)])),
            Err(KeySharedError::InvalidRange {
                start: 5,
                end: 70_000
            })
        );
        assert!(matches!(
            s.add_consumer((1, 2), &KeySharedMode::AutoSplit),
            Err(KeySharedError::ModeMismatch { .. })
        ));
        s.add_consumer((1, 2), &KeySharedMode::Sticky(vec![(100, 200)]))
            .unwrap();
        assert_eq!(s.select(99), Some((1, 1)));
        assert_eq!(s.select(100), Some((1, 2)));
        assert_eq!(s.select(201), None);
    }

    #[test]
    fn hash_matches_murmur3_of_the_key() {
        // Murmur3 x86_32("hello", seed 0) = 0x248bfa47.
        assert_eq!(sticky_key_hash(None, Some("hello")), 0xfa47);
        assert_eq!(
            sticky_key_hash(Some(b"hello"), Some("other")),
            sticky_key_hash(None, Some("hello"))
        );
        assert_eq!(
            sticky_key_hash(None, None),
            sticky_key_hash(None, Some("NONE_KEY"))
        );
    }
}
