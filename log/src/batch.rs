//! The batch format (layout in the crate's top comment): encoding a batch for
//! append, and checking one that came from disk or from a peer.
//!
//! Every length and count is checked against the bytes actually present
//! before it is used, so hostile input costs neither a panic nor an
//! allocation. This module never touches files.

use bytes::{Buf, Bytes};

use crate::{AppendEntry, LogError};

/// Bytes before a batch's payload.
pub const BATCH_HEADER_LEN: usize = 33;
/// Bytes each entry adds besides its data (timestamp and length).
pub const ENTRY_OVERHEAD: usize = 12;

const MAGIC: u8 = 1;
/// The CRC covers everything after itself.
const CRC_END: usize = 4;

/// Why bytes are not a valid batch.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// The bytes end before the batch does: a torn write, or a cut buffer.
    #[error("incomplete batch: {needed} bytes needed, {available} present")]
    Incomplete { needed: u64, available: u64 },
    #[error("unknown batch format version {0}")]
    UnknownMagic(u8),
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
    /// The CRC matched but the content contradicts itself.
    #[error("malformed batch: {0}")]
    Malformed(&'static str),
    /// A batch inside a segment does not continue the previous one.
    #[error("batch has base offset {found}, expected {expected}")]
    UnexpectedOffset { expected: u64, found: u64 },
}

/// The fixed fields of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchHeader {
    pub base_offset: u64,
    pub epoch: u32,
    pub count: u32,
    pub max_timestamp_ms: u64,
    pub payload_len: u32,
}

impl BatchHeader {
    /// Header plus payload.
    pub fn total_len(&self) -> u64 {
        BATCH_HEADER_LEN as u64 + u64::from(self.payload_len)
    }

    /// One past the batch's last offset (overflow is refused by `parse`).
    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.count)
    }

    /// Reads and sanity-checks the header at the start of `buf` without
    /// looking at the payload (which may not be in `buf`).
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < BATCH_HEADER_LEN {
            return Err(BatchError::Incomplete {
                needed: BATCH_HEADER_LEN as u64,
                available: buf.len() as u64,
            });
        }
        let mut b = &buf[CRC_END..BATCH_HEADER_LEN];
        let magic = b.get_u8();
        if magic != MAGIC {
            return Err(BatchError::UnknownMagic(magic));
        }
        let header = BatchHeader {
            base_offset: b.get_u64(),
            epoch: b.get_u32(),
            count: b.get_u32(),
            max_timestamp_ms: b.get_u64(),
            payload_len: b.get_u32(),
        };
        if header.count == 0 {
            return Err(BatchError::Malformed("batch has no entries"));
        }
        if u64::from(header.payload_len) < u64::from(header.count) * ENTRY_OVERHEAD as u64 {
            return Err(BatchError::Malformed("entry count exceeds payload"));
        }
        if header
            .base_offset
            .checked_add(u64::from(header.count))
            .is_none()
        {
            return Err(BatchError::Malformed("offsets overflow"));
        }
        Ok(header)
    }
}

fn stored_crc(buf: &[u8]) -> u32 {
    u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]])
}

/// Fully checks the batch at the start of `buf` (header, CRC, every entry's
/// length, the max timestamp) and returns its header. Bytes after the batch
/// are ignored.
pub(crate) fn check(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(buf)?;
    let total = header.total_len();
    if (buf.len() as u64) < total {
        return Err(BatchError::Incomplete {
            needed: total,
            available: buf.len() as u64,
        });
    }
    let batch = &buf[..total as usize];
    let computed = crc32c::crc32c(&batch[CRC_END..]);
    let stored = stored_crc(batch);
    if stored != computed {
        return Err(BatchError::Crc { stored, computed });
    }
    let mut payload = &batch[BATCH_HEADER_LEN..];
    let mut max_ts = 0;
    for _ in 0..header.count {
        if payload.len() < ENTRY_OVERHEAD {
            return Err(BatchError::Malformed("entry header past payload end"));
        }
        let ts = payload.get_u64();
        let len = payload.get_u32() as usize;
        if len > payload.len() {
            return Err(BatchError::Malformed("entry length past payload end"));
        }
        payload.advance(len);
        max_ts = max_ts.max(ts);
    }
    if !payload.is_empty() {
        return Err(BatchError::Malformed("bytes after the last entry"));
    }
    if max_ts != header.max_timestamp_ms {
        return Err(BatchError::Malformed(
            "max timestamp disagrees with entries",
        ));
    }
    Ok(header)
}

/// One decoded entry: (offset, timestamp, data sharing the batch's buffer).
pub(crate) type DecodedEntry = (u64, u64, Bytes);

/// The entries of a batch that [`check`] accepted; `batch` is exactly the
/// batch. Stops early (rather than panicking) should the bytes disagree.
pub(crate) fn entries(batch: Bytes, header: BatchHeader) -> impl Iterator<Item = DecodedEntry> {
    let mut payload = batch.slice(BATCH_HEADER_LEN.min(batch.len())..);
    let mut offset = header.base_offset;
    std::iter::from_fn(move || {
        if payload.len() < ENTRY_OVERHEAD {
            return None;
        }
        let ts = payload.get_u64();
        let len = payload.get_u32() as usize;
        if len > payload.len() {
            return None;
        }
        let data = payload.split_to(len);
        let entry = (offset, ts, data);
        offset += 1;
        Some(entry)
    })
    .take(header.count as usize)
}

/// A batch whose payload is encoded (outside the log's lock) but whose base
/// offset and epoch are filled in at append time.
pub(crate) struct PendingBatch {
    buf: Vec<u8>,
    payload_crc: u32,
    count: u32,
    max_timestamp_ms: u64,
}

impl PendingBatch {
    pub fn encode(entries: &[AppendEntry]) -> Result<PendingBatch, LogError> {
        if entries.is_empty() {
            return Err(LogError::EmptyBatch);
        }
        let payload_len: u64 = entries
            .iter()
            .map(|e| ENTRY_OVERHEAD as u64 + e.data.len() as u64)
            .sum();
        let count = u32::try_from(entries.len());
        let (Ok(count), Ok(_)) = (count, u32::try_from(payload_len)) else {
            return Err(LogError::BatchTooLarge {
                entries: entries.len() as u64,
                bytes: payload_len,
            });
        };
        let mut buf = Vec::with_capacity(BATCH_HEADER_LEN + payload_len as usize);
        buf.resize(BATCH_HEADER_LEN, 0);
        let mut max_timestamp_ms = 0;
        for e in entries {
            buf.extend_from_slice(&e.timestamp_ms.to_be_bytes());
            buf.extend_from_slice(&(e.data.len() as u32).to_be_bytes());
            buf.extend_from_slice(&e.data);
            max_timestamp_ms = max_timestamp_ms.max(e.timestamp_ms);
        }
        let payload_crc = crc32c::crc32c(&buf[BATCH_HEADER_LEN..]);
        Ok(PendingBatch {
            buf,
            payload_crc,
            count,
            max_timestamp_ms,
        })
    }

    /// Fills in the header for `base_offset` and `epoch`; returns it and the
    /// finished batch.
    pub fn seal(&mut self, base_offset: u64, epoch: u32) -> (BatchHeader, &[u8]) {
        let header = BatchHeader {
            base_offset,
            epoch,
            count: self.count,
            max_timestamp_ms: self.max_timestamp_ms,
            payload_len: (self.buf.len() - BATCH_HEADER_LEN) as u32,
        };
        let mut h = [0u8; BATCH_HEADER_LEN];
        h[4] = MAGIC;
        h[5..13].copy_from_slice(&header.base_offset.to_be_bytes());
        h[13..17].copy_from_slice(&header.epoch.to_be_bytes());
        h[17..21].copy_from_slice(&header.count.to_be_bytes());
        h[21..29].copy_from_slice(&header.max_timestamp_ms.to_be_bytes());
        h[29..33].copy_from_slice(&header.payload_len.to_be_bytes());
        let header_crc = crc32c::crc32c(&h[CRC_END..]);
        let crc = crc32c::crc32c_combine(
            header_crc,
            self.payload_crc,
            self.buf.len() - BATCH_HEADER_LEN,
        );
        h[..CRC_END].copy_from_slice(&crc.to_be_bytes());
        self.buf[..BATCH_HEADER_LEN].copy_from_slice(&h);
        (header, &self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ts: u64, data: &'static [u8]) -> AppendEntry {
        AppendEntry {
            timestamp_ms: ts,
            data: Bytes::from_static(data),
        }
    }

    fn sealed(entries: &[AppendEntry], base: u64, epoch: u32) -> Vec<u8> {
        let mut p = PendingBatch::encode(entries).unwrap();
        p.seal(base, epoch).1.to_vec()
    }

    #[test]
    fn encode_then_check_and_decode() {
        let batch = sealed(&[entry(5, b"a"), entry(3, b""), entry(9, b"xyz")], 40, 7);
        assert_eq!(batch.len(), BATCH_HEADER_LEN + 3 * ENTRY_OVERHEAD + 4);
        let h = check(&batch).unwrap();
        assert_eq!((h.base_offset, h.epoch, h.count), (40, 7, 3));
        assert_eq!(h.max_timestamp_ms, 9);
        let decoded: Vec<_> = entries(Bytes::from(batch), h).collect();
        assert_eq!(
            decoded,
            vec![
                (40, 5, Bytes::from_static(b"a")),
                (41, 3, Bytes::new()),
                (42, 9, Bytes::from_static(b"xyz")),
            ]
        );
    }

    #[test]
    fn empty_batch_is_refused() {
        assert!(matches!(
            PendingBatch::encode(&[]),
            Err(LogError::EmptyBatch)
        ));
    }

    #[test]
    fn every_cut_is_incomplete_and_every_bit_flip_is_caught() {
        let batch = sealed(&[entry(1, b"hello"), entry(2, b"world")], 0, 1);
        for cut in 0..batch.len() {
            assert!(
                matches!(check(&batch[..cut]), Err(BatchError::Incomplete { .. })),
                "cut at {cut}"
            );
        }
        for byte in 0..batch.len() {
            for bit in 0..8 {
                let mut bad = batch.clone();
                bad[byte] ^= 1 << bit;
                assert!(check(&bad).is_err(), "flip {byte}:{bit} accepted");
            }
        }
    }

    /// A header with a valid CRC but lying lengths (as a hostile peer could
    /// send) is refused without allocating what it claims.
    #[test]
    fn lying_lengths_with_valid_crc_are_malformed() {
        fn forge(count: u32, payload: &[u8], max_ts: u64) -> Vec<u8> {
            let mut b = vec![0u8; BATCH_HEADER_LEN];
            b[4] = MAGIC;
            b[17..21].copy_from_slice(&count.to_be_bytes());
            b[21..29].copy_from_slice(&max_ts.to_be_bytes());
            b[29..33].copy_from_slice(&(payload.len() as u32).to_be_bytes());
            b.extend_from_slice(payload);
            let crc = crc32c::crc32c(&b[4..]);
            b[..4].copy_from_slice(&crc.to_be_bytes());
            b
        }
        let mut entry_claims_4gib = Vec::new();
        entry_claims_4gib.extend_from_slice(&0u64.to_be_bytes());
        entry_claims_4gib.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            check(&forge(1, &entry_claims_4gib, 0)),
            Err(BatchError::Malformed("entry length past payload end"))
        );
        assert_eq!(
            check(&forge(u32::MAX, &entry_claims_4gib, 0)),
            Err(BatchError::Malformed("entry count exceeds payload"))
        );
        let mut two = entry_claims_4gib.clone();
        two[8..12].copy_from_slice(&0u32.to_be_bytes());
        two.extend_from_slice(&[0u8; 3]);
        assert_eq!(
            check(&forge(1, &two, 0)),
            Err(BatchError::Malformed("bytes after the last entry"))
        );
        assert_eq!(
            check(&forge(1, &two[..12], 1)),
            Err(BatchError::Malformed(
                "max timestamp disagrees with entries"
            ))
        );
        assert_eq!(
            check(&forge(0, &[], 0)),
            Err(BatchError::Malformed("batch has no entries"))
        );
    }
}
