//! Keeps a bug that one client or one topic reaches from taking down the
//! others: the work runs to completion or its panic comes back as an error
//! that the caller logs, after which the caller's own cleanup still runs.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;

/// `work`'s output, or what its panic said.
pub(crate) async fn caught<F: Future>(work: F) -> Result<F::Output, String> {
    AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .map_err(|panic| {
            panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".to_string())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_comes_back_as_its_message() {
        assert_eq!(caught(async { 7 }).await, Ok(7));
        let index = 3;
        let result = caught(async move { [1, 2][index] }).await;
        assert!(result.unwrap_err().contains("index out of bounds"));
    }
}
