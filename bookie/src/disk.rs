//! Disk-space watch: above the high-water mark the bookie turns read-only
//! (adds refused, reads served); below the low-water mark it writes again.

use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DiskUsage {
    pub total_bytes: u64,
    pub free_bytes: u64,
}

impl DiskUsage {
    pub fn used_fraction(&self) -> f64 {
        if self.total_bytes == 0 {
            return 0.0;
        }
        1.0 - self.free_bytes as f64 / self.total_bytes as f64
    }
}

pub fn disk_usage(path: &Path) -> std::io::Result<DiskUsage> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    let block = stat.fragment_size() as u64;
    Ok(DiskUsage {
        total_bytes: stat.blocks() as u64 * block,
        free_bytes: stat.blocks_available() as u64 * block,
    })
}

/// Hysteresis so the bookie does not flap around one threshold.
pub fn next_read_only(currently: bool, used: f64, high_water: f64, low_water: f64) -> bool {
    if currently {
        used > low_water
    } else {
        used >= high_water
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_has_hysteresis() {
        assert!(!next_read_only(false, 0.90, 0.95, 0.90));
        assert!(next_read_only(false, 0.95, 0.95, 0.90));
        assert!(next_read_only(true, 0.93, 0.95, 0.90));
        assert!(!next_read_only(true, 0.90, 0.95, 0.90));
    }

    #[test]
    fn usage_of_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        let u = disk_usage(dir.path()).unwrap();
        assert!(u.total_bytes > 0);
        assert!(u.free_bytes <= u.total_bytes);
        assert!((0.0..=1.0).contains(&u.used_fraction()));
    }
}
