//! Wall-clock time as the protocol and metadata carry it: milliseconds
//! since the Unix epoch (publish times, ledger creation, retention ages).

/// Now, in milliseconds since the Unix epoch; 0 if the clock is before it.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
