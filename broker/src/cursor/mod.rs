//! Cursors (Pulsar's `ManagedCursor`): one per subscription. A cursor keeps
//! the mark-delete position (everything at or before it is acknowledged),
//! the entries individually acknowledged beyond it, and for batches that are
//! only partly acknowledged the bit set of messages still outstanding.
//!
//! Durable cursors are persisted at `keys::cursor` by the subscription's
//! flusher (see [`CursorSnapshot`]), batched rather than once per ack, so a
//! crash redelivers at most the acknowledgements of the last flush interval.
//! A cursor never reads entries; it only needs the topic's position order.

mod state;

pub use state::{CursorSnapshot, CursorState};
