//! A connection's outbound queue, bounded in bytes.
//!
//! Everything a connection sends (replies, receipts, dispatched messages)
//! goes through one queue that its writer drains. The queue counts the bytes
//! it holds until the writer has flushed them to the socket; once it holds
//! more than its bound, the connection stops reading requests and the
//! dispatchers stop sending to that connection's consumers (as Pulsar's
//! broker does on a channel that is not writable), so a client that does not
//! read cannot grow the broker's memory. When the writer has brought the
//! queue down to half its bound, it wakes whoever registered to be told.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{mpsc, Notify};

use super::Outbound;

/// What a frame counts for beyond its entry: the command as held in memory
/// (a `BaseCommand` is large, so a queue of small replies is counted at
/// what it costs, not at its size on the wire).
const COMMAND_BYTES: usize = std::mem::size_of::<super::proto::BaseCommand>() + 16;

struct Shared {
    queued: AtomicUsize,
    bound: usize,
    /// Woken (`notify_one`, so a wake is kept until taken) when the queue
    /// drains below half its bound.
    on_drain: Mutex<Vec<Weak<Notify>>>,
}

/// The sending side, cloned into everything that writes to the connection.
#[derive(Clone)]
pub struct OutboundQueue {
    frames: mpsc::UnboundedSender<(Outbound, usize)>,
    shared: Arc<Shared>,
}

/// The writer's side.
pub struct OutboundFrames {
    frames: mpsc::UnboundedReceiver<(Outbound, usize)>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for OutboundQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundQueue")
            .field("queued", &self.queued())
            .field("bound", &self.shared.bound)
            .finish()
    }
}

/// A queue that counts as full once it holds more than `bound` bytes.
pub fn outbound_queue(bound: usize) -> (OutboundQueue, OutboundFrames) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        queued: AtomicUsize::new(0),
        bound: bound.max(1),
        on_drain: Mutex::new(Vec::new()),
    });
    (
        OutboundQueue {
            frames: tx,
            shared: shared.clone(),
        },
        OutboundFrames { frames: rx, shared },
    )
}

fn frame_bytes(frame: &Outbound) -> usize {
    match frame {
        Outbound::Command(_) => COMMAND_BYTES,
        Outbound::Message { entry, .. } => COMMAND_BYTES + entry.len(),
    }
}

impl OutboundQueue {
    /// Queues `frame`; false once the writer has gone (the connection is
    /// closing, and whoever sent it learns so through its own cleanup).
    pub fn send(&self, frame: Outbound) -> bool {
        let bytes = frame_bytes(&frame);
        self.shared.queued.fetch_add(bytes, Ordering::AcqRel);
        if self.frames.send((frame, bytes)).is_err() {
            self.shared.queued.fetch_sub(bytes, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Over its bound: senders that can wait (request reading, dispatch)
    /// should, until woken by [`Self::wake_on_drain`].
    pub fn is_full(&self) -> bool {
        self.queued() >= self.shared.bound
    }

    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Acquire)
    }

    pub fn is_closed(&self) -> bool {
        self.frames.is_closed()
    }

    /// Whether both handles feed the same connection.
    pub fn same_connection(&self, other: &OutboundQueue) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Has `notify` woken each time the queue drains below half its bound.
    pub fn wake_on_drain(&self, notify: &Arc<Notify>) {
        let mut waiters = self
            .shared
            .on_drain
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        waiters.retain(|w| w.strong_count() > 0);
        if !waiters
            .iter()
            .any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(notify)))
        {
            waiters.push(Arc::downgrade(notify));
        }
    }
}

impl OutboundFrames {
    /// The next frame and what it counts for, waiting for one.
    pub async fn recv(&mut self) -> Option<(Outbound, usize)> {
        self.frames.recv().await
    }

    /// The next frame if one is queued.
    pub fn try_recv(&mut self) -> Option<(Outbound, usize)> {
        self.frames.try_recv().ok()
    }

    /// Frames counting `bytes` have reached the socket.
    pub fn written(&self, bytes: usize) {
        let before = self.shared.queued.fetch_sub(bytes, Ordering::AcqRel);
        let after = before.saturating_sub(bytes);
        let low = self.shared.bound / 2;
        if before > low && after <= low {
            let waiters = self
                .shared
                .on_drain
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for waiter in waiters.iter().filter_map(Weak::upgrade) {
                waiter.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use futures::FutureExt;

    use super::*;
    use crate::protocol::commands;

    fn message(len: usize) -> Outbound {
        match commands::pong() {
            Outbound::Command(command) => Outbound::Message {
                command,
                entry: Bytes::from(vec![0u8; len]),
            },
            other => other,
        }
    }

    #[tokio::test]
    async fn full_past_the_bound_and_woken_once_drained_below_half() {
        let frame = COMMAND_BYTES + 400;
        let (queue, mut frames) = outbound_queue(2 * frame + 2);
        let wake = Arc::new(Notify::new());
        queue.wake_on_drain(&wake);
        assert!(!queue.is_full());
        for _ in 0..3 {
            assert!(queue.send(message(400)));
        }
        assert!(queue.is_full());
        let (_, first) = frames.recv().await.unwrap();
        assert_eq!(first, frame);
        frames.written(first);
        assert!(!queue.is_full());
        // Two frames left: above half the bound, nobody is woken yet.
        assert!(wake.notified().now_or_never().is_none());
        let (_, second) = frames.recv().await.unwrap();
        frames.written(second);
        // One frame left: half the bound, so the waiter was woken (and the
        // wake is kept until it waits).
        assert!(wake.notified().now_or_never().is_some(), "woken on drain");
    }

    #[tokio::test]
    async fn a_send_after_the_writer_left_is_refused_and_not_counted() {
        let (queue, frames) = outbound_queue(1000);
        drop(frames);
        assert!(!queue.send(message(10)));
        assert_eq!(queue.queued(), 0);
        assert!(queue.is_closed());
    }
}
