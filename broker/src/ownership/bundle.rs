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

/// Boundaries of a namespace's bundles as stored in its policies, in
/// Pulsar's `BundlesData` JSON: `boundaries` are hex strings from
/// `0x00000000` to `0xffffffff`, one more than `numBundles`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundlesData {
    #[serde(default)]
    pub boundaries: Vec<String>,
    #[serde(default)]
    pub num_bundles: u32,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum BundleError {
    #[error("invalid bundle {0:?}: expected 0xSTART_0xEND (8 hex digits each)")]
    InvalidName(String),
    #[error("bundle {0} is not a bundle of this namespace")]
    NotFound(String),
    #[error("bundle {0} is too small to split")]
    TooSmall(String),
    #[error("invalid bundle boundaries: {0}")]
    InvalidBoundaries(String),
    #[error("a namespace has 1 to {MAX_BUNDLES} bundles, not {0}")]
    InvalidCount(u32),
}

/// Most bundles a namespace may be split into.
pub const MAX_BUNDLES: u32 = 1024;

/// How a namespace's hash ring is cut into bundles: sorted boundaries from
/// 0 to `u32::MAX`; bundle `i` is `[b[i], b[i+1])`, the last one inclusive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleLayout {
    boundaries: Vec<u32>,
}

impl Default for BundleLayout {
    fn default() -> Self {
        BundleLayout::equal(DEFAULT_BUNDLES)
    }
}

impl BundleLayout {
    /// `count` equal bundles (the remainder goes to the last one).
    pub fn equal(count: u32) -> BundleLayout {
        let count = count.clamp(1, MAX_BUNDLES);
        let mut boundaries: Vec<u32> = (0..count).map(|i| bundle_of_index(i, count)).collect();
        boundaries.push(u32::MAX);
        BundleLayout { boundaries }
    }

    /// From stored `BundlesData`: its boundaries, or `numBundles` equal
    /// bundles when it names only a count (as `pulsar-admin namespaces
    /// create --bundles N` sends).
    pub fn from_data(data: &BundlesData) -> Result<BundleLayout, BundleError> {
        if data.boundaries.is_empty() {
            if data.num_bundles == 0 || data.num_bundles > MAX_BUNDLES {
                return Err(BundleError::InvalidCount(data.num_bundles));
            }
            return Ok(BundleLayout::equal(data.num_bundles));
        }
        let boundaries = data
            .boundaries
            .iter()
            .map(|b| parse_hex(b).ok_or_else(|| BundleError::InvalidBoundaries(b.clone())))
            .collect::<Result<Vec<u32>, _>>()?;
        let valid = boundaries.len() >= 2
            && boundaries.len() as u32 <= MAX_BUNDLES + 1
            && boundaries.first() == Some(&0)
            && boundaries.last() == Some(&u32::MAX)
            && boundaries.windows(2).all(|w| w[0] < w[1]);
        if !valid {
            return Err(BundleError::InvalidBoundaries(format!(
                "{:?} must rise strictly from 0x00000000 to 0xffffffff",
                data.boundaries
            )));
        }
        Ok(BundleLayout { boundaries })
    }

    pub fn to_data(&self) -> BundlesData {
        BundlesData {
            boundaries: self
                .boundaries
                .iter()
                .map(|b| format!("0x{b:08x}"))
                .collect(),
            num_bundles: self.count(),
        }
    }

    pub fn count(&self) -> u32 {
        (self.boundaries.len() - 1) as u32
    }

    pub fn ranges(&self) -> impl Iterator<Item = BundleRange> + '_ {
        self.boundaries.windows(2).map(|w| BundleRange {
            start: w[0],
            end: w[1],
        })
    }

    /// The bundle holding `hash`.
    pub fn find(&self, hash: u32) -> BundleRange {
        // Index of the first boundary above `hash`; the bundle starts one
        // before it. `u32::MAX` belongs to the last bundle.
        let above = self.boundaries.partition_point(|b| *b <= hash);
        let index = above.clamp(1, self.boundaries.len() - 1) - 1;
        BundleRange {
            start: self.boundaries[index],
            end: self.boundaries[index + 1],
        }
    }

    /// Whether `range` is one of this layout's bundles.
    pub fn contains(&self, range: BundleRange) -> bool {
        self.ranges().any(|r| r == range)
    }

    /// This layout with `range` cut in two halves (Pulsar's
    /// `range_equally_divide`); returns the halves too.
    pub fn split(
        &self,
        range: BundleRange,
    ) -> Result<(BundleLayout, BundleRange, BundleRange), BundleError> {
        if !self.contains(range) {
            return Err(BundleError::NotFound(range.name()));
        }
        if range.end - range.start < 2 || self.count() >= MAX_BUNDLES {
            return Err(BundleError::TooSmall(range.name()));
        }
        let middle = range.start + (range.end - range.start) / 2;
        let mut boundaries = self.boundaries.clone();
        let at = boundaries.partition_point(|b| *b <= range.start);
        boundaries.insert(at, middle);
        Ok((
            BundleLayout { boundaries },
            BundleRange {
                start: range.start,
                end: middle,
            },
            BundleRange {
                start: middle,
                end: range.end,
            },
        ))
    }
}

impl BundleRange {
    /// Parses a bundle name (`0x00000000_0x40000000`).
    pub fn parse(name: &str) -> Result<BundleRange, BundleError> {
        let invalid = || BundleError::InvalidName(name.to_string());
        let (start, end) = name.split_once('_').ok_or_else(invalid)?;
        let start = parse_hex(start).ok_or_else(invalid)?;
        let end = parse_hex(end).ok_or_else(invalid)?;
        if start >= end {
            return Err(invalid());
        }
        Ok(BundleRange { start, end })
    }

    /// Whether a topic hash falls in this range (the range ending at
    /// `u32::MAX` includes it).
    pub fn holds(&self, hash: u32) -> bool {
        hash >= self.start && (hash < self.end || (self.end == u32::MAX && hash == u32::MAX))
    }
}

fn parse_hex(text: &str) -> Option<u32> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))?;
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

fn bundle_of_index(index: u32, count: u32) -> u32 {
    let width = (1u64 << 32) / count as u64;
    (index as u64 * width) as u32
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

    #[test]
    fn layouts_find_and_split() {
        let layout = BundleLayout::default();
        assert_eq!(layout.count(), 4);
        for hash in [
            0u32,
            1,
            0x3fff_ffff,
            0x4000_0000,
            0x9abc_def0,
            u32::MAX - 1,
            u32::MAX,
        ] {
            assert_eq!(layout.find(hash), bundle_of(hash, 4), "hash {hash:#x}");
            assert!(layout.find(hash).holds(hash));
        }
        let first = BundleRange::parse("0x00000000_0x40000000").unwrap();
        let (split, low, high) = layout.split(first).unwrap();
        assert_eq!(split.count(), 5);
        assert_eq!(low.name(), "0x00000000_0x20000000");
        assert_eq!(high.name(), "0x20000000_0x40000000");
        assert_eq!(split.find(0x1fff_ffff), low);
        assert_eq!(split.find(0x2000_0000), high);
        assert!(!split.contains(first));
        assert_eq!(layout.split(low), Err(BundleError::NotFound(low.name())));
        let last = BundleRange::parse("0xc0000000_0xffffffff").unwrap();
        let (split, _, high) = split.split(last).unwrap();
        assert_eq!(split.find(u32::MAX), high);
        let data = split.to_data();
        assert_eq!(data.num_bundles, 6);
        assert_eq!(BundleLayout::from_data(&data).unwrap(), split);
    }

    #[test]
    fn bundle_data_is_checked() {
        let count_only = BundlesData {
            boundaries: vec![],
            num_bundles: 16,
        };
        assert_eq!(BundleLayout::from_data(&count_only).unwrap().count(), 16);
        let zero = BundlesData {
            boundaries: vec![],
            num_bundles: 0,
        };
        assert!(BundleLayout::from_data(&zero).is_err());
        let unsorted = BundlesData {
            boundaries: vec![
                "0x00000000".into(),
                "0x80000000".into(),
                "0x40000000".into(),
                "0xffffffff".into(),
            ],
            num_bundles: 3,
        };
        assert!(BundleLayout::from_data(&unsorted).is_err());
        let short = BundlesData {
            boundaries: vec!["0x00000000".into(), "0x80000000".into()],
            num_bundles: 1,
        };
        assert!(BundleLayout::from_data(&short).is_err());
        assert!(BundleRange::parse("0x40000000_0x00000000").is_err());
        assert!(BundleRange::parse("garbage").is_err());
        assert!(BundleRange::parse("0x0_0x1").is_ok());
        let tiny = BundleRange::parse("0x00000000_0x00000001").unwrap();
        let layout = BundleLayout::from_data(&BundlesData {
            boundaries: vec![
                "0x00000000".into(),
                "0x00000001".into(),
                "0xffffffff".into(),
            ],
            num_bundles: 2,
        })
        .unwrap();
        assert_eq!(layout.split(tiny), Err(BundleError::TooSmall(tiny.name())));
    }
}
