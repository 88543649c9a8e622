//! The local logs open in this process, by directory: one writer per
//! directory, and a new owner (a reopen after a takeover) fences the old
//! handle before it opens the files, so the fenced one confirms nothing
//! after that and never writes beside it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::log::LocalLog;
use crate::storage::StorageError;

fn open_logs() -> &'static Mutex<HashMap<PathBuf, Weak<LocalLog>>> {
    static OPEN: OnceLock<Mutex<HashMap<PathBuf, Weak<LocalLog>>>> = OnceLock::new();
    OPEN.get_or_init(|| Mutex::new(HashMap::new()))
}

fn lock() -> std::sync::MutexGuard<'static, HashMap<PathBuf, Weak<LocalLog>>> {
    open_logs().lock().unwrap_or_else(|p| p.into_inner())
}

/// Fences the handle open on `dir`, if any, waiting until it has stopped.
pub async fn fence(dir: &Path, why: &str) {
    let previous = lock().remove(dir).and_then(|w| w.upgrade());
    if let Some(previous) = previous {
        if previous.stop(StorageError::Fenced(why.to_string())).await {
            tracing::info!(dir = %dir.display(), why, "fenced the previous owner of a local log");
        }
    }
}

pub fn register(log: &Arc<LocalLog>) {
    lock().insert(log.dir().clone(), Arc::downgrade(log));
}

/// Forgets `log` (closed or deleted) unless another handle replaced it.
pub fn forget(dir: &Path, log: &LocalLog) {
    let mut open = lock();
    if open
        .get(dir)
        .is_some_and(|w| std::ptr::eq(w.as_ptr(), log as *const LocalLog))
    {
        open.remove(dir);
    }
}
