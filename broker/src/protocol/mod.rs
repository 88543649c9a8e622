//! The Pulsar binary protocol, broker side.
//!
//! Owns the wire format: [`frame`] (what a frame is, and its errors) and
//! [`codec`] (a `tokio_util::codec` `Decoder`/`Encoder` over it). The message
//! types are `pulsar::proto`'s (prost 0.13, imported here as `prost013`).
//!
//! It must never touch a socket or know what a command means: connections
//! (one socket, one `Framed`) and command handlers build on it.

pub mod codec;
pub mod commands;
pub mod frame;
pub mod outbound;

pub use codec::{Outbound, PulsarCodec, DEFAULT_MAX_FRAME_SIZE};
pub use frame::{
    entry_metadata, CorruptFrame, Corruption, Decoded, Frame, FrameError, FramePayload,
};
pub use outbound::{outbound_queue, OutboundFrames, OutboundQueue};
pub use pulsar::proto;
