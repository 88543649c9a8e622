//! Delivery verification: every payload carries (producer, sequence number),
//! each producer remembers which of its sequence numbers were acknowledged,
//! and each subscription which it received. At the end an acknowledged
//! message a subscription never received is lost; one received twice is a
//! duplicate; one received after a later message of the same producer on
//! the same partition (and not seen before) is out of order. This module
//! only counts; it never talks to a broker.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::workload::HEADER_BYTES;

const MAGIC: &[u8; 4] = b"MGB1";

/// What a producer writes at the start of each payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Index of the producer over the whole run.
    pub producer: u32,
    /// The producer's message number, from 0.
    pub sequence: u64,
    /// When the message was due by the schedule (µs since the epoch).
    pub intended_micros: u64,
    /// When it was handed to the client (µs since the epoch).
    pub sent_micros: u64,
}

impl Header {
    /// Overwrites the first [`HEADER_BYTES`] of `payload` (which must hold them).
    pub fn write(&self, payload: &mut [u8]) {
        payload[0..4].copy_from_slice(MAGIC);
        payload[4..8].copy_from_slice(&self.producer.to_be_bytes());
        payload[8..16].copy_from_slice(&self.sequence.to_be_bytes());
        payload[16..24].copy_from_slice(&self.intended_micros.to_be_bytes());
        payload[24..32].copy_from_slice(&self.sent_micros.to_be_bytes());
    }

    /// The header of a payload, or `None` for one this run did not write.
    pub fn read(payload: &[u8]) -> Option<Header> {
        let head = payload.get(..HEADER_BYTES)?;
        if &head[0..4] != MAGIC {
            return None;
        }
        let u64_at = |at: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&head[at..at + 8]);
            u64::from_be_bytes(bytes)
        };
        let mut producer = [0u8; 4];
        producer.copy_from_slice(&head[4..8]);
        Some(Header {
            producer: u32::from_be_bytes(producer),
            sequence: u64_at(8),
            intended_micros: u64_at(16),
            sent_micros: u64_at(24),
        })
    }
}

/// Microseconds since the epoch (0 if the clock is before it).
pub fn unix_micros(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_micros() as u64
}

/// A growable set of sequence numbers.
#[derive(Debug, Clone, Default)]
pub struct SequenceSet {
    words: Vec<u64>,
    len: u64,
}

impl SequenceSet {
    /// Adds `n`; false if it was already there.
    pub fn insert(&mut self, n: u64) -> bool {
        let word = (n / 64) as usize;
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let bit = 1u64 << (n % 64);
        let fresh = self.words[word] & bit == 0;
        self.words[word] |= bit;
        self.len += fresh as u64;
        fresh
    }

    #[cfg(test)]
    pub fn contains(&self, n: u64) -> bool {
        self.words
            .get((n / 64) as usize)
            .is_some_and(|w| w & (1u64 << (n % 64)) != 0)
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// How many members of `self` are not in `other`.
    pub fn count_missing_from(&self, other: &SequenceSet) -> u64 {
        self.words
            .iter()
            .enumerate()
            .map(|(i, w)| (w & !other.words.get(i).copied().unwrap_or(0)).count_ones() as u64)
            .sum()
    }

    /// The first few members of `self` not in `other`, for the report.
    pub fn first_missing_from(&self, other: &SequenceSet, at_most: usize) -> Vec<u64> {
        let mut out = Vec::new();
        for (i, w) in self.words.iter().enumerate() {
            let mut missing = w & !other.words.get(i).copied().unwrap_or(0);
            while missing != 0 && out.len() < at_most {
                let bit = missing.trailing_zeros() as u64;
                out.push(i as u64 * 64 + bit);
                missing &= missing - 1;
            }
            if out.len() >= at_most {
                break;
            }
        }
        out
    }
}

/// What one producer knows at the end: which sends were acknowledged.
#[derive(Debug, Default)]
pub struct ProducerRecord {
    /// The producer's id, as its messages' headers carry it.
    pub producer: u32,
    pub topic: usize,
    pub acknowledged: SequenceSet,
    /// Sends handed to the client.
    pub sent: u64,
    /// Sends the client reported as failed (their fate is unknown).
    pub failed: u64,
}

/// What one subscription received, updated by all of its consumers.
#[derive(Debug, Default)]
pub struct SubscriptionCheck {
    received: HashMap<u32, SequenceSet>,
    /// Highest sequence seen per (partition, producer).
    latest: HashMap<(u32, u32), u64>,
    duplicates: u64,
    out_of_order: u64,
    foreign: u64,
    unique: u64,
}

impl SubscriptionCheck {
    /// Notes one received message of `partition` (`None` for a topic
    /// without partitions).
    pub fn received(&mut self, partition: Option<u32>, header: Option<Header>) {
        let Some(h) = header else {
            self.foreign += 1;
            return;
        };
        let fresh = self
            .received
            .entry(h.producer)
            .or_default()
            .insert(h.sequence);
        if !fresh {
            self.duplicates += 1;
            return;
        }
        self.unique += 1;
        let latest = self
            .latest
            .entry((partition.unwrap_or(u32::MAX), h.producer))
            .or_insert(h.sequence);
        if h.sequence < *latest {
            self.out_of_order += 1;
        } else {
            *latest = h.sequence;
        }
    }

    /// Messages received at least once.
    pub fn unique(&self) -> u64 {
        self.unique
    }

    /// The verdict against what the topic's producers were told.
    pub fn verdict(
        &self,
        name: &str,
        producers: &[(u32, &ProducerRecord)],
        order_checked: bool,
    ) -> SubscriptionVerdict {
        let empty = SequenceSet::default();
        let mut expected = 0;
        let mut lost = 0;
        let mut unacknowledged = 0;
        let mut examples = Vec::new();
        for (id, record) in producers {
            let got = self.received.get(id).unwrap_or(&empty);
            expected += record.acknowledged.len();
            let missing = record.acknowledged.count_missing_from(got);
            if missing > 0 && examples.len() < 5 {
                for seq in record
                    .acknowledged
                    .first_missing_from(got, 5 - examples.len())
                {
                    examples.push(format!("producer {id} message {seq}"));
                }
            }
            lost += missing;
            unacknowledged += got.count_missing_from(&record.acknowledged);
        }
        SubscriptionVerdict {
            subscription: name.to_string(),
            acknowledged: expected,
            received: self.unique,
            lost,
            lost_examples: examples,
            duplicates: self.duplicates,
            out_of_order: order_checked.then_some(self.out_of_order),
            received_unacknowledged: unacknowledged,
            foreign: self.foreign,
        }
    }
}

/// The partition index in a topic name `...-partition-N`.
pub fn partition_of(topic: &str) -> Option<u32> {
    let (_, index) = topic.rsplit_once("-partition-")?;
    index.parse().ok()
}

/// One subscription's verification, as the results record it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionVerdict {
    pub subscription: String,
    /// Messages its topic's producers were told are stored.
    pub acknowledged: u64,
    /// Distinct messages it received.
    pub received: u64,
    /// Acknowledged but never received: must be 0.
    pub lost: u64,
    pub lost_examples: Vec<String>,
    /// Received more than once (allowed: redelivery after a failure).
    pub duplicates: u64,
    /// Received after a later message of the same producer on the same
    /// partition; `None` when the subscription type does not promise order.
    pub out_of_order: Option<u64>,
    /// Received although the producer was not told it was stored (a send
    /// whose fate was unknown, or still pending at the end).
    pub received_unacknowledged: u64,
    /// Messages without this run's header.
    pub foreign: u64,
}

impl SubscriptionVerdict {
    pub fn passed(&self) -> bool {
        self.lost == 0 && self.out_of_order.unwrap_or(0) == 0 && self.foreign == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(producer: u32, sequence: u64) -> Option<Header> {
        Some(Header {
            producer,
            sequence,
            intended_micros: 1,
            sent_micros: 2,
        })
    }

    #[test]
    fn a_header_survives_the_payload() {
        let mut payload = vec![7u8; 100];
        let h = Header {
            producer: 3,
            sequence: u64::MAX - 1,
            intended_micros: 1_700_000_000_000_000,
            sent_micros: 1_700_000_000_000_123,
        };
        h.write(&mut payload);
        assert_eq!(Header::read(&payload), Some(h));
        assert_eq!(payload[HEADER_BYTES], 7, "the rest is untouched");
        assert_eq!(Header::read(&payload[..10]), None, "too short");
        assert_eq!(Header::read(&[0u8; 64]), None, "not ours");
    }

    #[test]
    fn sets_count_what_the_other_lacks() {
        let mut a = SequenceSet::default();
        let mut b = SequenceSet::default();
        for n in [0, 1, 63, 64, 200] {
            assert!(a.insert(n));
        }
        assert!(!a.insert(64));
        assert_eq!(a.len(), 5);
        b.insert(1);
        b.insert(200);
        assert_eq!(a.count_missing_from(&b), 3);
        assert_eq!(a.first_missing_from(&b, 2), vec![0, 63]);
        assert_eq!(b.count_missing_from(&a), 0);
        assert!(a.contains(63) && !a.contains(62) && !a.contains(10_000));
    }

    #[test]
    fn lost_duplicate_and_reordered_messages_are_told_apart() {
        let mut record = ProducerRecord::default();
        for seq in 0..10 {
            record.acknowledged.insert(seq);
        }
        let mut check = SubscriptionCheck::default();
        for seq in [0, 1, 2, 4, 3, 5, 5, 6, 7, 8, 10] {
            check.received(Some(0), header(0, seq));
        }
        check.received(Some(0), None);
        let v = check.verdict("s", &[(0, &record)], true);
        assert_eq!(v.acknowledged, 10);
        assert_eq!(v.lost, 1, "9 was acknowledged and never came");
        assert_eq!(v.lost_examples, vec!["producer 0 message 9"]);
        assert_eq!(v.duplicates, 1);
        assert_eq!(v.out_of_order, Some(1), "3 after 4");
        assert_eq!(v.received_unacknowledged, 1, "10 was never acknowledged");
        assert_eq!(v.foreign, 1);
        assert!(!v.passed());
    }

    #[test]
    fn order_is_per_partition_and_producer() {
        let mut check = SubscriptionCheck::default();
        check.received(Some(0), header(0, 5));
        check.received(Some(1), header(0, 2));
        check.received(Some(0), header(1, 1));
        let mut record = ProducerRecord::default();
        for seq in [5, 2] {
            record.acknowledged.insert(seq);
        }
        let mut other = ProducerRecord::default();
        other.acknowledged.insert(1);
        let v = check.verdict("s", &[(0, &record), (1, &other)], true);
        assert_eq!(v.out_of_order, Some(0));
        assert!(v.passed());
        let unordered = check.verdict("s", &[(0, &record), (1, &other)], false);
        assert_eq!(unordered.out_of_order, None);
    }

    #[test]
    fn partitions_come_from_topic_names() {
        assert_eq!(partition_of("persistent://a/b/t-partition-12"), Some(12));
        assert_eq!(partition_of("persistent://a/b/t"), None);
        assert_eq!(partition_of("persistent://a/b/t-partition-x"), None);
    }
}
