//! Cursors (Pulsar's `ManagedCursor`): one per subscription. A cursor keeps
//! the mark-delete position (everything at or before it is acknowledged),
//! the entries individually acknowledged beyond it, and for batches that are
//! only partly acknowledged the bit set of messages still outstanding.
//!
//! Durable cursors are persisted by the subscription's flusher (see
//! [`CursorStorage`]: a cursor log on the bookies, or the metadata store),
//! batched rather than once per ack, so a crash redelivers at most the
//! acknowledgements of the last flush interval.
//! A cursor never reads entries; it only needs the topic's position order.

mod ranges;
mod state;
mod store;

pub use state::{CursorSnapshot, CursorState, MAX_BATCHES_TO_PERSIST, MAX_RANGES_TO_PERSIST};
pub use store::{CursorStorage, DurableCursor};
