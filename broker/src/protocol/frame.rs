//! A Pulsar protocol frame and the parsing of one complete frame.
//!
//! Wire format (big-endian):
//!
//! ```text
//! [u32 totalSize][u32 commandSize][BaseCommand]
//!     ( [u16 0x0e01][u32 CRC32C] )? [u32 metadataSize][MessageMetadata][payload]
//! ```
//!
//! `totalSize` counts everything after itself; the checksum covers everything
//! after itself (metadataSize, metadata, payload). The part after the command is
//! present only for SEND and MESSAGE; the magic and checksum are optional.
//!
//! This file never buffers or reads: [`parse_frame`] is handed exactly one
//! frame whose sizes the codec has already bounded.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost013::Message;
use pulsar::proto::{BaseCommand, MessageMetadata};

/// Magic number that introduces the CRC32C checksum of a payload section.
pub const MAGIC_CRC32C: u16 = 0x0e01;

/// One frame: a command and, for SEND and MESSAGE, the message it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub command: BaseCommand,
    pub payload: Option<FramePayload>,
}

/// The message section of a SEND or MESSAGE frame.
#[derive(Debug, Clone)]
pub struct FramePayload {
    pub metadata: MessageMetadata,
    /// On decode, a slice of the read buffer (no copy). For a batch this is
    /// the whole batch, single-message metadata included, kept opaque.
    pub payload: Bytes,
    /// The whole section in checksummed wire form
    /// (`[magic][crc32c][metadataSize][metadata][payload]`): what a ledger
    /// entry stores and a MESSAGE frame sends back unchanged. A slice of the
    /// read buffer when the sender included a checksum; empty on frames built
    /// for encoding (the encoder then writes metadata and payload).
    pub entry: Bytes,
}

/// Equality ignores `entry`, a derived form of the other two fields.
impl PartialEq for FramePayload {
    fn eq(&self, other: &Self) -> bool {
        self.metadata == other.metadata && self.payload == other.payload
    }
}

impl Decoded {
    /// The frame, if it decoded whole.
    pub fn into_frame(self) -> Option<Frame> {
        match self {
            Decoded::Frame(frame) => Some(*frame),
            Decoded::Corrupt(_) => None,
        }
    }
}

impl Frame {
    /// A frame with a command only.
    pub fn command(command: BaseCommand) -> Self {
        Self {
            command,
            payload: None,
        }
    }

    /// A frame with a command and a message (SEND or MESSAGE).
    pub fn with_payload(command: BaseCommand, metadata: MessageMetadata, payload: Bytes) -> Self {
        Self {
            command,
            payload: Some(FramePayload {
                metadata,
                payload,
                entry: Bytes::new(),
            }),
        }
    }
}

/// What the decoder yields for one complete frame.
///
/// Boxed: prost inlines every optional sub-command, so a `BaseCommand` is
/// about 4.4 KB; one allocation per frame is cheaper than copying that through
/// `Framed` and the connection's channels.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Frame(Box<Frame>),
    /// The frame's sizes were consistent, so the stream is still in sync, but
    /// its message section is damaged. The connection answers it (SEND_ERROR
    /// for the command's producer and sequence id) and keeps reading.
    Corrupt(Box<CorruptFrame>),
}

/// A frame whose command decoded but whose message section did not.
#[derive(Debug, Clone, PartialEq)]
pub struct CorruptFrame {
    pub command: BaseCommand,
    pub reason: Corruption,
}

/// Why a message section was rejected (recoverable: see [`Decoded::Corrupt`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Corruption {
    #[error("checksum mismatch: frame says {expected:#010x}, computed {computed:#010x}")]
    ChecksumMismatch { expected: u32, computed: u32 },
    #[error("message section truncated: needs {needed} bytes, frame has {available}")]
    Truncated { needed: usize, available: usize },
    #[error("invalid MessageMetadata: {0}")]
    InvalidMetadata(prost013::DecodeError),
}

/// Fatal framing errors: the connection must close.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame totalSize {total_size} is below the minimum of 4")]
    TotalSizeTooSmall { total_size: u32 },
    #[error("frame of {total_size} bytes exceeds the maximum of {max_frame_size}")]
    FrameTooLarge {
        total_size: usize,
        max_frame_size: usize,
    },
    #[error("commandSize {command_size} exceeds totalSize {total_size} - 4")]
    CommandSizeTooLarge { command_size: u32, total_size: u32 },
    #[error("invalid BaseCommand: {0}")]
    InvalidCommand(#[source] prost013::DecodeError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Parses one complete frame: `frame` starts at `commandSize` (the totalSize
/// field already removed) and is exactly `totalSize` bytes long, at least 4.
pub(crate) fn parse_frame(mut frame: Bytes) -> Result<Decoded, FrameError> {
    let total_size = frame.len() as u32;
    let command_size = frame.get_u32();
    if command_size as usize > frame.len() {
        return Err(FrameError::CommandSizeTooLarge {
            command_size,
            total_size,
        });
    }
    let command = BaseCommand::decode(frame.split_to(command_size as usize))
        .map_err(FrameError::InvalidCommand)?;
    if frame.is_empty() {
        return Ok(Decoded::Frame(Box::new(Frame::command(command))));
    }
    match parse_message_section(frame) {
        Ok(payload) => Ok(Decoded::Frame(Box::new(Frame {
            command,
            payload: Some(payload),
        }))),
        Err(reason) => Ok(Decoded::Corrupt(Box::new(CorruptFrame { command, reason }))),
    }
}

/// `[magic checksum]? metadataSize metadata payload`, non-empty.
///
/// Without the magic, the first two bytes are the top of `metadataSize`; they
/// cannot equal 0x0e01 in a frame under 235 MB, so the two forms never clash.
fn parse_message_section(mut section: Bytes) -> Result<FramePayload, Corruption> {
    let whole = section.clone();
    let checksummed = section.len() >= 2 && section[..2] == MAGIC_CRC32C.to_be_bytes();
    if checksummed {
        let needed = 2 + 4 + 4;
        if section.len() < needed {
            return Err(Corruption::Truncated {
                needed,
                available: section.len(),
            });
        }
        section.advance(2);
        let expected = section.get_u32();
        let computed = crc32c::crc32c(&section);
        if expected != computed {
            return Err(Corruption::ChecksumMismatch { expected, computed });
        }
    }
    if section.len() < 4 {
        return Err(Corruption::Truncated {
            needed: 4,
            available: section.len(),
        });
    }
    let metadata_size = section.get_u32() as usize;
    if metadata_size > section.len() {
        return Err(Corruption::Truncated {
            needed: 4 + metadata_size,
            available: 4 + section.len(),
        });
    }
    let metadata = MessageMetadata::decode(section.split_to(metadata_size))
        .map_err(Corruption::InvalidMetadata)?;
    let entry = if checksummed {
        whole
    } else {
        checksummed_entry(&whole)
    };
    Ok(FramePayload {
        metadata,
        payload: section,
        entry,
    })
}

/// Prefixes an unchecksummed section (`[metadataSize][metadata][payload]`)
/// with the magic and its CRC32C. Copies: only old clients send no checksum.
fn checksummed_entry(section: &[u8]) -> Bytes {
    let mut entry = BytesMut::with_capacity(6 + section.len());
    entry.put_u16(MAGIC_CRC32C);
    entry.put_u32(crc32c::crc32c(section));
    entry.extend_from_slice(section);
    entry.freeze()
}

/// Reads the MessageMetadata of a stored entry (checksummed section form).
pub fn entry_metadata(entry: &[u8]) -> Result<MessageMetadata, Corruption> {
    let mut section = entry;
    if section.len() >= 6 && section[..2] == MAGIC_CRC32C.to_be_bytes() {
        section = &section[6..];
    }
    if section.len() < 4 {
        return Err(Corruption::Truncated {
            needed: 4,
            available: section.len(),
        });
    }
    let metadata_size =
        u32::from_be_bytes([section[0], section[1], section[2], section[3]]) as usize;
    let Some(metadata) = section.get(4..4 + metadata_size) else {
        return Err(Corruption::Truncated {
            needed: 4 + metadata_size,
            available: section.len(),
        });
    };
    MessageMetadata::decode(metadata).map_err(Corruption::InvalidMetadata)
}
