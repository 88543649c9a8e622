//! pulsar-admin's relative times (`10m`, `1h`) and sizes (`100M`, `2G`), so
//! the same command lines work here. `-1` means unlimited in both.

/// Seconds in a relative time: a whole number with an optional unit `s`,
/// `m`, `h`, `d`, `w` or `y` (no unit: seconds); `-1` stays -1.
pub fn parse_time_secs(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if text == "-1" {
        return Ok(-1);
    }
    let (number, unit) = split_unit(text);
    let scale: i64 = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "y" => 365 * 86_400,
        _ => {
            return Err(format!(
                "{text:?}: unknown time unit {unit:?} (s, m, h, d, w, y)"
            ))
        }
    };
    scaled(text, number, scale)
}

/// A size that must be positive (a rate), as [`parse_size_bytes`] reads it.
pub fn parse_positive_size(text: &str) -> Result<u64, String> {
    match parse_size_bytes(text)? {
        n if n > 0 => Ok(n as u64),
        _ => Err(format!("{text:?}: must be a positive size")),
    }
}

/// Bytes in a size: a whole number with an optional binary unit `K`, `M`,
/// `G` or `T` (either case; no unit: bytes); `-1` stays -1.
pub fn parse_size_bytes(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if text == "-1" {
        return Ok(-1);
    }
    let (number, unit) = split_unit(text);
    let scale: i64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(format!("{text:?}: unknown size unit {unit:?} (K, M, G, T)")),
    };
    scaled(text, number, scale)
}

/// Whole minutes in `secs` (pulsar-admin's retention time); -1 stays -1.
pub fn to_minutes(secs: i64) -> i64 {
    if secs < 0 {
        -1
    } else {
        secs / 60
    }
}

/// Whole MiB in `bytes` (pulsar-admin's retention size); -1 stays -1.
pub fn to_mebibytes(bytes: i64) -> i64 {
    if bytes < 0 {
        -1
    } else {
        bytes >> 20
    }
}

fn split_unit(text: &str) -> (&str, &str) {
    let at = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    text.split_at(at)
}

fn scaled(text: &str, number: &str, scale: i64) -> Result<i64, String> {
    if number.is_empty() {
        return Err(format!(
            "{text:?}: expected a whole number with an optional unit, or -1"
        ));
    }
    number
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time_secs("60"), Ok(60));
        assert_eq!(parse_time_secs("45s"), Ok(45));
        assert_eq!(parse_time_secs("10m"), Ok(600));
        assert_eq!(parse_time_secs("1h"), Ok(3600));
        assert_eq!(parse_time_secs("3d"), Ok(3 * 86_400));
        assert_eq!(parse_time_secs("2w"), Ok(14 * 86_400));
        assert_eq!(parse_time_secs("1y"), Ok(365 * 86_400));
        assert_eq!(parse_time_secs("-1"), Ok(-1));
        assert_eq!(parse_time_secs("0"), Ok(0));
        for bad in ["", "m", "10x", "1.5h", "-2", "10mm", "99999999999999999999"] {
            assert!(parse_time_secs(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size_bytes("512"), Ok(512));
        assert_eq!(parse_size_bytes("10K"), Ok(10 * 1024));
        assert_eq!(parse_size_bytes("10k"), Ok(10 * 1024));
        assert_eq!(parse_size_bytes("100M"), Ok(100 << 20));
        assert_eq!(parse_size_bytes("2G"), Ok(2 << 30));
        assert_eq!(parse_size_bytes("1t"), Ok(1 << 40));
        assert_eq!(parse_size_bytes("-1"), Ok(-1));
        for bad in ["", "M", "10Q", "1.5G", "-5", "9999999999T"] {
            assert!(parse_size_bytes(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn retention_units() {
        assert_eq!(to_minutes(600), 10);
        assert_eq!(to_minutes(59), 0);
        assert_eq!(to_minutes(-1), -1);
        assert_eq!(to_mebibytes(100 << 20), 100);
        assert_eq!(to_mebibytes(-1), -1);
    }
}
