//! `tokio_util::codec` Decoder/Encoder for Pulsar frames.
//!
//! The decoder bounds `totalSize` before buffering a body, reserves exactly
//! what the frame still needs, and hands out payloads as slices of the read
//! buffer. The encoder writes straight into the output buffer and computes the
//! CRC32C there. Neither copies a payload more than once (into the socket
//! buffer, on encode).

use bytes::{Buf, BufMut, BytesMut};
use prost013::Message;
use tokio_util::codec::{Decoder, Encoder};

use bytes::Bytes;
use pulsar::proto::BaseCommand;

use super::frame::{parse_frame, Decoded, Frame, FrameError, MAGIC_CRC32C};

/// What a broker writes: a command, or a MESSAGE whose section is a stored
/// entry sent back byte for byte (no re-encoding, no new checksum).
#[derive(Debug, Clone)]
pub enum Outbound {
    Command(Box<BaseCommand>),
    Message {
        command: Box<BaseCommand>,
        /// Checksummed section as stored (see [`super::FramePayload::entry`]).
        entry: Bytes,
    },
}

impl Encoder<Outbound> for PulsarCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Outbound, dst: &mut BytesMut) -> Result<(), FrameError> {
        let (command, entry) = match frame {
            Outbound::Command(command) => (command, Bytes::new()),
            Outbound::Message { command, entry } => (command, entry),
        };
        self.put_command(&command, entry.len(), dst)?;
        dst.extend_from_slice(&entry);
        Ok(())
    }
}

/// Pulsar's default `maxMessageSize` (5 MiB) plus 10 KiB for command and
/// metadata, like the Java broker's frame padding.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 5 * 1024 * 1024 + 10 * 1024;

/// Codec for one connection. `max_frame_size` bounds `totalSize` in both
/// directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PulsarCodec {
    max_frame_size: usize,
}

impl Default for PulsarCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_SIZE)
    }
}

impl PulsarCodec {
    pub fn new(max_frame_size: usize) -> Self {
        Self { max_frame_size }
    }

    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// Checks the frame's size, reserves room for all of it, and writes
    /// `totalSize`, `commandSize` and the command; `section_size` bytes of
    /// message section are the caller's to write next.
    fn put_command(
        &self,
        command: &BaseCommand,
        section_size: usize,
        dst: &mut BytesMut,
    ) -> Result<(), FrameError> {
        let command_size = command.encoded_len();
        let total_size = 4 + command_size + section_size;
        if total_size > self.max_frame_size || total_size > u32::MAX as usize {
            return Err(FrameError::FrameTooLarge {
                total_size,
                max_frame_size: self.max_frame_size,
            });
        }
        dst.reserve(4 + total_size);
        dst.put_u32(total_size as u32);
        dst.put_u32(command_size as u32);
        command
            .encode(dst)
            .expect("reserved capacity for the command");
        Ok(())
    }
}

impl Decoder for PulsarCodec {
    type Item = Decoded;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Decoded>, FrameError> {
        if src.len() < 4 {
            return Ok(None);
        }
        let total_size = u32::from_be_bytes([src[0], src[1], src[2], src[3]]);
        if total_size < 4 {
            return Err(FrameError::TotalSizeTooSmall { total_size });
        }
        if total_size as usize > self.max_frame_size {
            return Err(FrameError::FrameTooLarge {
                total_size: total_size as usize,
                max_frame_size: self.max_frame_size,
            });
        }
        let frame_len = 4 + total_size as usize;
        if src.len() < 8 {
            return Ok(None);
        }
        // Check commandSize as soon as it is here, before waiting for a body.
        let command_size = u32::from_be_bytes([src[4], src[5], src[6], src[7]]);
        if command_size > total_size - 4 {
            return Err(FrameError::CommandSizeTooLarge {
                command_size,
                total_size,
            });
        }
        if src.len() < frame_len {
            // `reserve` is relative to len: this asks for exactly the rest of
            // the frame, and is a no-op once the capacity is there.
            src.reserve(frame_len - src.len());
            return Ok(None);
        }
        let mut frame = src.split_to(frame_len).freeze();
        frame.advance(4);
        parse_frame(frame).map(Some)
    }
}

impl Encoder<Frame> for PulsarCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        let metadata_size = frame
            .payload
            .as_ref()
            .map(|p| p.metadata.encoded_len())
            .unwrap_or(0);
        let section_size = match &frame.payload {
            // magic + checksum + metadataSize + metadata + payload
            Some(p) => 2 + 4 + 4 + metadata_size + p.payload.len(),
            None => 0,
        };
        self.put_command(&frame.command, section_size, dst)?;
        if let Some(payload) = frame.payload {
            dst.put_u16(MAGIC_CRC32C);
            let checksum_at = dst.len();
            dst.put_u32(0);
            let covered_from = dst.len();
            dst.put_u32(metadata_size as u32);
            payload
                .metadata
                .encode(dst)
                .expect("reserved capacity for the metadata");
            dst.extend_from_slice(&payload.payload);
            let checksum = crc32c::crc32c(&dst[covered_from..]);
            dst[checksum_at..covered_from].copy_from_slice(&checksum.to_be_bytes());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;
    use pulsar::proto::{
        base_command::Type, BaseCommand, CommandConnected, CommandMessage, CommandSend,
        CommandSendReceipt, KeyValue, MessageIdData, MessageMetadata,
    };

    use super::*;
    use crate::protocol::frame::{Corruption, FramePayload};

    fn whole(frame: Frame) -> Decoded {
        Decoded::Frame(Box::new(frame))
    }

    fn connected() -> BaseCommand {
        BaseCommand {
            r#type: Type::Connected as i32,
            connected: Some(CommandConnected {
                server_version: "magnetar".into(),
                protocol_version: Some(21),
                max_message_size: Some(5 * 1024 * 1024),
            }),
            ..Default::default()
        }
    }

    fn send(producer_id: u64, sequence_id: u64) -> BaseCommand {
        BaseCommand {
            r#type: Type::Send as i32,
            send: Some(CommandSend {
                producer_id,
                sequence_id,
                num_messages: Some(1),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn metadata(sequence_id: u64) -> MessageMetadata {
        MessageMetadata {
            producer_name: "p-1".into(),
            sequence_id,
            publish_time: 1_700_000_000_000,
            properties: vec![KeyValue {
                key: "k".into(),
                value: "v".into(),
            }],
            ..Default::default()
        }
    }

    fn encode(frame: Frame) -> BytesMut {
        let mut buf = BytesMut::new();
        PulsarCodec::default().encode(frame, &mut buf).unwrap();
        buf
    }

    fn decode_one(buf: &mut BytesMut) -> Decoded {
        PulsarCodec::default()
            .decode(buf)
            .unwrap()
            .expect("a frame")
    }

    #[test]
    fn simple_command_round_trips() {
        let frame = Frame::command(connected());
        let mut buf = encode(frame.clone());
        assert_eq!(decode_one(&mut buf), whole(frame));
        assert!(buf.is_empty());
    }

    #[test]
    fn send_receipt_round_trips() {
        let frame = Frame::command(BaseCommand {
            r#type: Type::SendReceipt as i32,
            send_receipt: Some(CommandSendReceipt {
                producer_id: 7,
                sequence_id: 42,
                message_id: Some(MessageIdData {
                    ledger_id: 3,
                    entry_id: 9,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let mut buf = encode(frame.clone());
        assert_eq!(decode_one(&mut buf), whole(frame));
    }

    #[test]
    fn send_with_payload_round_trips_with_valid_checksum() {
        let payload = Bytes::from_static(b"hello, pulsar");
        let frame = Frame::with_payload(send(1, 5), metadata(5), payload.clone());
        let mut buf = encode(frame.clone());

        // Check the layout by hand: magic right after the command, and the
        // checksum covering everything after itself.
        let command_size = u32::from_be_bytes(buf[4..8].try_into().unwrap()) as usize;
        let magic_at = 8 + command_size;
        assert_eq!(buf[magic_at..magic_at + 2], [0x0e, 0x01]);
        let checksum = u32::from_be_bytes(buf[magic_at + 2..magic_at + 6].try_into().unwrap());
        assert_eq!(checksum, crc32c::crc32c(&buf[magic_at + 6..]));
        assert_eq!(
            buf.len(),
            4 + u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize
        );

        assert_eq!(decode_one(&mut buf), whole(frame));
    }

    #[test]
    fn message_to_a_consumer_round_trips() {
        let frame = Frame::with_payload(
            BaseCommand {
                r#type: Type::Message as i32,
                message: Some(CommandMessage {
                    consumer_id: 11,
                    message_id: MessageIdData {
                        ledger_id: 5,
                        entry_id: 6,
                        ..Default::default()
                    },
                    redelivery_count: Some(0),
                    ..Default::default()
                }),
                ..Default::default()
            },
            metadata(6),
            Bytes::from_static(b"for the consumer"),
        );
        let mut buf = encode(frame.clone());
        assert_eq!(decode_one(&mut buf), whole(frame));
    }

    #[test]
    fn decoded_payload_is_a_slice_of_the_read_buffer() {
        let frame = Frame::with_payload(send(1, 1), metadata(1), Bytes::from(vec![7u8; 1000]));
        let mut buf = encode(frame);
        let range = buf.as_ptr_range();
        let Some(Frame {
            payload: Some(FramePayload { payload, .. }),
            ..
        }) = decode_one(&mut buf).into_frame()
        else {
            panic!("expected a frame with a payload");
        };
        assert!(range.contains(&payload.as_ptr()));
    }

    #[test]
    fn partial_input_byte_by_byte_yields_none_until_complete() {
        let frame = Frame::with_payload(send(2, 3), metadata(3), Bytes::from_static(b"abc"));
        let wire = encode(frame.clone());
        let mut codec = PulsarCodec::default();
        let mut buf = BytesMut::new();
        for (i, byte) in wire.iter().enumerate() {
            buf.put_u8(*byte);
            let out = codec.decode(&mut buf).unwrap();
            if i + 1 < wire.len() {
                assert!(out.is_none(), "frame yielded early at byte {i}");
            } else {
                assert_eq!(out, Some(whole(frame.clone())));
            }
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn two_frames_back_to_back() {
        let first = Frame::command(connected());
        let second = Frame::with_payload(send(1, 2), metadata(2), Bytes::from_static(b"xyz"));
        let mut buf = encode(first.clone());
        buf.extend_from_slice(&encode(second.clone()));
        let mut codec = PulsarCodec::default();
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(whole(first)));
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(whole(second)));
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn oversized_total_size_is_rejected_before_buffering() {
        let mut codec = PulsarCodec::new(1024);
        let mut buf = BytesMut::with_capacity(8);
        buf.put_u32(1025);
        let before = buf.capacity();
        match codec.decode(&mut buf) {
            Err(FrameError::FrameTooLarge {
                total_size: 1025,
                max_frame_size: 1024,
            }) => {}
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
        assert_eq!(buf.capacity(), before, "no body was reserved");

        // Exactly the limit is fine (and only the missing bytes are reserved).
        let mut buf = BytesMut::new();
        buf.put_u32(1024);
        buf.put_u32(0);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() >= 4 + 1024);
    }

    #[test]
    fn total_size_below_four_is_rejected() {
        let mut buf = BytesMut::new();
        buf.put_u32(3);
        assert!(matches!(
            PulsarCodec::default().decode(&mut buf),
            Err(FrameError::TotalSizeTooSmall { total_size: 3 })
        ));
    }

    #[test]
    fn command_size_beyond_total_size_is_rejected() {
        let mut buf = BytesMut::new();
        buf.put_u32(10);
        buf.put_u32(7); // at most 10 - 4 = 6
        assert!(matches!(
            PulsarCodec::default().decode(&mut buf),
            Err(FrameError::CommandSizeTooLarge {
                command_size: 7,
                total_size: 10
            })
        ));
    }

    #[test]
    fn corrupted_checksum_is_recoverable() {
        let frame = Frame::with_payload(send(9, 77), metadata(77), Bytes::from_static(b"data"));
        let mut buf = encode(frame);
        let last = buf.len() - 1;
        buf[last] ^= 0xff;
        // A following frame still decodes: the stream is in sync.
        buf.extend_from_slice(&encode(Frame::command(connected())));

        let mut codec = PulsarCodec::default();
        match codec.decode(&mut buf).unwrap() {
            Some(Decoded::Corrupt(corrupt)) => {
                assert_eq!(corrupt.command, send(9, 77));
                assert!(matches!(
                    corrupt.reason,
                    Corruption::ChecksumMismatch { .. }
                ));
            }
            other => panic!("expected a corrupt frame, got {other:?}"),
        }
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(whole(Frame::command(connected())))
        );
    }

    #[test]
    fn garbage_command_is_a_typed_error() {
        let garbage = [0xffu8, 0xff, 0xff, 0xff, 0xff, 0xff];
        let mut buf = BytesMut::new();
        buf.put_u32(4 + garbage.len() as u32);
        buf.put_u32(garbage.len() as u32);
        buf.extend_from_slice(&garbage);
        assert!(matches!(
            PulsarCodec::default().decode(&mut buf),
            Err(FrameError::InvalidCommand(_))
        ));
    }

    #[test]
    fn a_stored_entry_goes_back_out_as_a_valid_message_unchanged() {
        let sent = Frame::with_payload(send(1, 4), metadata(4), Bytes::from_static(b"batch"));
        let mut buf = encode(sent);
        let Decoded::Frame(frame) = decode_one(&mut buf) else {
            panic!("expected a frame");
        };
        let entry = frame.payload.expect("payload").entry;
        // The entry is the checksummed section exactly as the producer sent it.
        assert_eq!(entry[..2], MAGIC_CRC32C.to_be_bytes());
        assert_eq!(
            crate::protocol::entry_metadata(&entry).unwrap(),
            metadata(4)
        );
        let message = BaseCommand {
            r#type: Type::Message as i32,
            message: Some(CommandMessage {
                consumer_id: 3,
                message_id: MessageIdData {
                    ledger_id: 8,
                    entry_id: 2,
                    ..Default::default()
                },
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut out = BytesMut::new();
        PulsarCodec::default()
            .encode(
                Outbound::Message {
                    command: Box::new(message.clone()),
                    entry,
                },
                &mut out,
            )
            .unwrap();
        assert_eq!(
            decode_one(&mut out),
            whole(Frame::with_payload(
                message,
                metadata(4),
                Bytes::from_static(b"batch")
            ))
        );
    }

    #[test]
    fn frame_without_magic_is_accepted() {
        let command = send(4, 8);
        let meta = metadata(8);
        let payload = b"no checksum here";
        let command_bytes = command.encode_to_vec();
        let meta_bytes = meta.encode_to_vec();
        let mut buf = BytesMut::new();
        let total = 4 + command_bytes.len() + 4 + meta_bytes.len() + payload.len();
        buf.put_u32(total as u32);
        buf.put_u32(command_bytes.len() as u32);
        buf.extend_from_slice(&command_bytes);
        buf.put_u32(meta_bytes.len() as u32);
        buf.extend_from_slice(&meta_bytes);
        buf.extend_from_slice(payload);
        assert_eq!(
            decode_one(&mut buf),
            whole(Frame::with_payload(
                command,
                meta,
                Bytes::from_static(payload)
            ))
        );
    }

    #[test]
    fn truncated_message_section_is_recoverable() {
        let command_bytes = send(1, 1).encode_to_vec();
        let mut buf = BytesMut::new();
        buf.put_u32((4 + command_bytes.len() + 4) as u32);
        buf.put_u32(command_bytes.len() as u32);
        buf.extend_from_slice(&command_bytes);
        buf.put_u32(100); // metadataSize beyond the frame, no checksum
        assert!(matches!(
            decode_one(&mut buf),
            Decoded::Corrupt(corrupt) if matches!(corrupt.reason, Corruption::Truncated { .. })
        ));
    }

    #[test]
    fn encoding_beyond_the_limit_fails() {
        let frame = Frame::with_payload(send(1, 1), metadata(1), Bytes::from(vec![0u8; 2048]));
        let mut buf = BytesMut::new();
        assert!(matches!(
            PulsarCodec::new(1024).encode(frame, &mut buf),
            Err(FrameError::FrameTooLarge { .. })
        ));
    }

    proptest! {
        #[test]
        fn round_trip_any_payload_and_split(
            sizes in prop::collection::vec(0usize..20_000, 1..4),
            splits in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
            seed in any::<u8>(),
        ) {
            let frames: Vec<Frame> = sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    let payload: Vec<u8> =
                        (0..n).map(|j| (j as u8).wrapping_mul(31).wrapping_add(seed)).collect();
                    Frame::with_payload(send(1, i as u64), metadata(i as u64), payload.into())
                })
                .collect();
            let mut wire = BytesMut::new();
            let mut codec = PulsarCodec::default();
            for frame in &frames {
                codec.encode(frame.clone(), &mut wire).unwrap();
            }

            let mut cuts: Vec<usize> = splits.iter().map(|ix| ix.index(wire.len() + 1)).collect();
            cuts.push(wire.len());
            cuts.sort_unstable();

            let mut buf = BytesMut::new();
            let mut decoded = Vec::new();
            let mut fed = 0;
            for cut in cuts {
                buf.extend_from_slice(&wire[fed..cut]);
                fed = cut;
                while let Some(item) = codec.decode(&mut buf).unwrap() {
                    decoded.push(item);
                }
            }
            prop_assert!(buf.is_empty());
            let expected: Vec<Decoded> = frames.into_iter().map(whole).collect();
            prop_assert_eq!(decoded, expected);
        }
    }
}
