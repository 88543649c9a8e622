//! A Pulsar client written frame by frame, for sending what no well-behaved
//! client would: the broker's own codec types encode the frames, so the test
//! controls every field.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use magnetar_broker::protocol::{Decoded, Frame, PulsarCodec};
use pulsar::proto::base_command::Type;
use pulsar::proto::{BaseCommand, CommandConnect, MessageMetadata};
use tokio::net::TcpStream;
use tokio_util::codec::{Encoder, Framed};

pub type RawConnection = Framed<TcpStream, PulsarCodec>;

pub const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// A connection that has done CONNECT.
pub async fn connect(addr: &str) -> RawConnection {
    let socket = TcpStream::connect(addr).await.expect("broker accepts");
    let mut framed = Framed::new(socket, PulsarCodec::default());
    framed
        .send(command(Type::Connect, |c| {
            c.connect = Some(CommandConnect {
                client_version: "raw-test".into(),
                protocol_version: Some(19),
                ..Default::default()
            })
        }))
        .await
        .expect("CONNECT sent");
    let connected = next_command(&mut framed).await;
    assert_eq!(connected.r#type, Type::Connected as i32, "{connected:?}");
    framed
}

/// A command frame of `kind`, its body set by `fill`.
pub fn command(kind: Type, fill: impl FnOnce(&mut BaseCommand)) -> Frame {
    let mut command = BaseCommand {
        r#type: kind as i32,
        ..Default::default()
    };
    fill(&mut command);
    Frame::command(command)
}

pub fn ping() -> Frame {
    command(Type::Ping, |c| c.ping = Some(Default::default()))
}

/// A SEND frame with `metadata` and `payload`, checksummed.
pub fn send(send: pulsar::proto::CommandSend, metadata: MessageMetadata, payload: Bytes) -> Frame {
    let command = BaseCommand {
        r#type: Type::Send as i32,
        send: Some(send),
        ..Default::default()
    };
    Frame::with_payload(command, metadata, payload)
}

/// `frame` as the bytes on the wire.
pub fn encode(frame: Frame) -> BytesMut {
    let mut bytes = BytesMut::new();
    PulsarCodec::default()
        .encode(frame, &mut bytes)
        .expect("encodable");
    bytes
}

/// The next frame's command, failing the test if none comes.
pub async fn next_command(framed: &mut RawConnection) -> BaseCommand {
    next_frame(framed).await.command
}

pub async fn next_frame(framed: &mut RawConnection) -> Frame {
    match tokio::time::timeout(REPLY_TIMEOUT, framed.next()).await {
        Ok(Some(Ok(Decoded::Frame(frame)))) => *frame,
        other => panic!("expected a frame, got {other:?}"),
    }
}
