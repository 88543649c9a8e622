//! The Pulsar binary protocol, broker side.
//!
//! NOT YET COMPILED: this module is parked until the topics issue wires it in
//! (`pub mod protocol;` in lib.rs). Wiring it needs, in [workspace.dependencies]:
//! `prost013 = { package = "prost", version = "0.13" }`,
//! `pulsar = { version = "6.9", default-features = false, features = ["tokio-runtime"] }`,
//! `tokio-util = { version = "0.7", features = ["codec"] }`, and in broker:
//! those three plus `crc32c` (and `proptest` for tests). Measured caveat: adding
//! `pulsar` re-unifies build-dependency features and recompiles RocksDB once
//! (~20 min), so land it at the start of a session. Its 16 unit tests passed.
//!
//! Owns the wire format: [`frame`] (what a frame is, and its errors) and
//! [`codec`] (a `tokio_util::codec` `Decoder`/`Encoder` over it). The message
//! types are `pulsar::proto`'s (prost 0.13, imported here as `prost013`).
//!
//! It must never touch a socket or know what a command means: connections
//! (one socket, one `Framed`) and command handlers build on it.

pub mod codec;
pub mod frame;

pub use codec::{PulsarCodec, DEFAULT_MAX_FRAME_SIZE};
pub use frame::{CorruptFrame, Corruption, Decoded, Frame, FrameError, FramePayload};
pub use pulsar::proto;
