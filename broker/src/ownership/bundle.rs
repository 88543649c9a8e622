//! Namespace bundles: a namespace's topics are split by the hash of their
//! name into equal hash ranges, and a broker owns whole ranges. Moving a
//! bundle moves its topics without copying data (their ledgers stay on the
//! bookies).

/// Bundles per namespace unless its policies say otherwise (Pulsar's default).
pub const DEFAULT_BUNDLES: u32 = 4;

/// One hash range `[start, end)` (the last one ends at `u32::MAX`
/// inclusive), named as Pulsar names bundles: `0x00000000_0x40000000`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BundleRange {
    pub start: u32,
    pub end: u32,
}

impl BundleRange {
    pub fn name(&self) -> String {
        format!("0x{:08x}_0x{:08x}", self.start, self.end)
    }
}

/// Where a topic's name hashes to (CRC32C of the full name).
pub fn topic_hash(full_name: &str) -> u32 {
    crc32c::crc32c(full_name.as_bytes())
}

/// The bundle of `count` equal bundles that holds `hash`.
pub fn bundle_of(hash: u32, count: u32) -> BundleRange {
    let count = count.max(1) as u64;
    let width = (1u64 << 32) / count;
    let index = (hash as u64 / width).min(count - 1);
    let start = index * width;
    let end = if index == count - 1 {
        u32::MAX as u64
    } else {
        start + width
    };
    BundleRange {
        start: start as u32,
        end: end as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_bundles_cover_the_ring() {
        assert_eq!(bundle_of(0, 4).name(), "0x00000000_0x40000000");
        assert_eq!(bundle_of(0x3fff_ffff, 4).name(), "0x00000000_0x40000000");
        assert_eq!(bundle_of(0x4000_0000, 4).name(), "0x40000000_0x80000000");
        assert_eq!(bundle_of(u32::MAX, 4).name(), "0xc0000000_0xffffffff");
        assert_eq!(bundle_of(12345, 1).name(), "0x00000000_0xffffffff");
    }

    #[test]
    fn uneven_counts_put_the_remainder_in_the_last_bundle() {
        let last = bundle_of(u32::MAX, 3);
        assert_eq!(last.end, u32::MAX);
        assert_eq!(bundle_of(last.start, 3), last);
        assert_eq!(bundle_of(last.start - 1, 3).end, last.start);
    }
}
