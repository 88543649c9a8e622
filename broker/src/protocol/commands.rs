//! Builders for the frames a broker sends, so handlers read as "reply
//! success" rather than as nested protobuf literals.

use bytes::Bytes;
use pulsar::proto::base_command::Type;
use pulsar::proto::command_lookup_topic_response::LookupType;
use pulsar::proto::command_partitioned_topic_metadata_response::LookupType as MetadataLookupType;
use pulsar::proto::{
    BaseCommand, CommandAckResponse, CommandActiveConsumerChange, CommandCloseConsumer,
    CommandCloseProducer, CommandConnected, CommandError, CommandGetLastMessageIdResponse,
    CommandGetTopicsOfNamespaceResponse, CommandLookupTopicResponse, CommandMessage,
    CommandPartitionedTopicMetadataResponse, CommandPong, CommandProducerSuccess, CommandSendError,
    CommandSendReceipt, CommandSuccess, MessageIdData, ServerError,
};

use super::codec::Outbound;
use super::frame::entry_metadata;
use crate::storage::Position;
use crate::topic::sticky_key_hash;

fn command(r#type: Type, fill: impl FnOnce(&mut BaseCommand)) -> Outbound {
    let mut command = BaseCommand {
        r#type: r#type as i32,
        ..Default::default()
    };
    fill(&mut command);
    Outbound::Command(Box::new(command))
}

/// A Pulsar message id for an entry (not a message inside a batch).
pub fn message_id(position: Position) -> MessageIdData {
    MessageIdData {
        ledger_id: position.ledger_id,
        entry_id: position.entry_id as u64,
        ..Default::default()
    }
}

/// The position a client's message id names (its batch index aside).
pub fn position_of(id: &MessageIdData) -> Position {
    Position::new(id.ledger_id, id.entry_id as i64)
}

/// The most messages one entry (a batch) may hold: every message of a
/// batch takes at least 6 bytes (its size prefix and metadata), so a
/// 5 MiB batch holds fewer than this. A count past it is a client's lie:
/// SENDs claiming more are refused, and stored entries count as this many.
pub const MAX_MESSAGES_PER_BATCH: u32 = 1 << 20;

/// What dispatch needs to know of a stored entry, read from its metadata
/// once: how many messages it holds (a batch holds several), for a delayed
/// message when it may be delivered (ms since the epoch), and the hash of
/// its sticky key for Key_Shared (a batch goes by the batch's key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryInfo {
    pub messages: u32,
    pub deliver_at: Option<u64>,
    pub key_hash: u16,
}

/// The entry's [`EntryInfo`]; the sticky key is hashed only when
/// `with_key_hash` (Key_Shared), else `key_hash` is 0.
pub fn entry_info(entry: &[u8], with_key_hash: bool) -> EntryInfo {
    let hash = |ordering: Option<&[u8]>, partition: Option<&str>| {
        if with_key_hash {
            sticky_key_hash(ordering, partition)
        } else {
            0
        }
    };
    match entry_metadata(entry) {
        Ok(m) => EntryInfo {
            messages: m
                .num_messages_in_batch
                .map(|n| (n.max(1) as u32).min(MAX_MESSAGES_PER_BATCH))
                .unwrap_or(1),
            deliver_at: m.deliver_at_time.filter(|t| *t > 0).map(|t| t as u64),
            key_hash: hash(m.ordering_key.as_deref(), m.partition_key.as_deref()),
        },
        Err(_) => EntryInfo {
            messages: 1,
            deliver_at: None,
            key_hash: hash(None, None),
        },
    }
}

pub fn connected(protocol_version: i32, max_message_size: usize) -> Outbound {
    command(Type::Connected, |c| {
        c.connected = Some(CommandConnected {
            server_version: concat!("Magnetar ", env!("CARGO_PKG_VERSION")).to_string(),
            protocol_version: Some(protocol_version),
            max_message_size: Some(max_message_size as i32),
        })
    })
}

/// Asks the client for fresh credentials (the broker's copy of the
/// client's token has expired), with the data Pulsar's broker sends.
pub fn auth_challenge(protocol_version: i32) -> Outbound {
    command(Type::AuthChallenge, |c| {
        c.auth_challenge = Some(pulsar::proto::CommandAuthChallenge {
            server_version: Some(concat!("Magnetar ", env!("CARGO_PKG_VERSION")).to_string()),
            challenge: Some(pulsar::proto::AuthData {
                auth_method_name: Some(crate::auth::TOKEN_AUTH_METHOD.to_string()),
                auth_data: Some(b"PulsarAuthRefresh".to_vec()),
            }),
            protocol_version: Some(protocol_version),
        })
    })
}

pub fn pong() -> Outbound {
    command(Type::Pong, |c| c.pong = Some(CommandPong {}))
}

pub fn success(request_id: u64) -> Outbound {
    command(Type::Success, |c| {
        c.success = Some(CommandSuccess {
            request_id,
            schema: None,
        })
    })
}

pub fn error(request_id: u64, error: ServerError, message: impl Into<String>) -> Outbound {
    command(Type::Error, |c| {
        c.error = Some(CommandError {
            request_id,
            error: error as i32,
            message: message.into(),
        })
    })
}

pub fn producer_success(request_id: u64, producer_name: String, last_sequence_id: i64) -> Outbound {
    command(Type::ProducerSuccess, |c| {
        c.producer_success = Some(CommandProducerSuccess {
            request_id,
            producer_name,
            last_sequence_id: Some(last_sequence_id),
            producer_ready: Some(true),
            ..Default::default()
        })
    })
}

pub fn send_receipt(
    producer_id: u64,
    sequence_id: u64,
    highest_sequence_id: u64,
    position: Position,
) -> Outbound {
    command(Type::SendReceipt, |c| {
        c.send_receipt = Some(CommandSendReceipt {
            producer_id,
            sequence_id,
            message_id: Some(message_id(position)),
            highest_sequence_id: Some(highest_sequence_id),
        })
    })
}

pub fn send_error(
    producer_id: u64,
    sequence_id: u64,
    error: ServerError,
    message: impl Into<String>,
) -> Outbound {
    command(Type::SendError, |c| {
        c.send_error = Some(CommandSendError {
            producer_id,
            sequence_id,
            error: error as i32,
            message: message.into(),
        })
    })
}

/// A MESSAGE frame carrying a stored entry as is.
/// A MESSAGE carrying a stored entry; `partition` is the topic's partition
/// index (clients put it in the message ids they hand out).
pub fn message(
    consumer_id: u64,
    (position, partition): (Position, Option<u32>),
    redelivery_count: u32,
    ack_set: Vec<i64>,
    entry: Bytes,
) -> Outbound {
    let mut id = message_id(position);
    id.partition = partition.map(|p| p as i32);
    let command = BaseCommand {
        r#type: Type::Message as i32,
        message: Some(CommandMessage {
            consumer_id,
            message_id: id,
            redelivery_count: Some(redelivery_count),
            ack_set,
            consumer_epoch: None,
        }),
        ..Default::default()
    };
    Outbound::Message {
        command: Box::new(command),
        entry,
    }
}

pub fn close_consumer(consumer_id: u64) -> Outbound {
    command(Type::CloseConsumer, |c| {
        c.close_consumer = Some(CommandCloseConsumer {
            consumer_id,
            request_id: 0,
        })
    })
}

/// Failover: tells a consumer whether it is now the one receiving.
pub fn active_consumer_change(consumer_id: u64, is_active: bool) -> Outbound {
    command(Type::ActiveConsumerChange, |c| {
        c.active_consumer_change = Some(CommandActiveConsumerChange {
            consumer_id,
            is_active: Some(is_active),
        })
    })
}

/// Tells a client its producer is closed by the broker; the client
/// reconnects (and is told why if it is refused again).
pub fn close_producer(producer_id: u64) -> Outbound {
    command(Type::CloseProducer, |c| {
        c.close_producer = Some(CommandCloseProducer {
            producer_id,
            request_id: 0,
        })
    })
}

/// Sends the client to the broker that serves (or should serve) the topic;
/// `authoritative` tells that broker not to redirect again.
/// Sends the client to another broker; `authoritative` tells that broker
/// to take the topic rather than decide again.
/// Where a lookup sends the client: the broker's plain URL and, when it
/// serves TLS, its `pulsar+ssl://` URL (what TLS clients connect to).
#[derive(Clone, Debug)]
pub struct BrokerUrls {
    pub plain: String,
    pub tls: Option<String>,
}

pub fn lookup_redirect(request_id: u64, broker: BrokerUrls, authoritative: bool) -> Outbound {
    command(Type::LookupResponse, |c| {
        c.lookup_topic_response = Some(CommandLookupTopicResponse {
            broker_service_url: Some(broker.plain),
            broker_service_url_tls: broker.tls,
            response: Some(LookupType::Redirect as i32),
            request_id,
            authoritative: Some(authoritative),
            proxy_through_service_url: Some(false),
            ..Default::default()
        })
    })
}

pub fn lookup_connect(request_id: u64, broker: BrokerUrls) -> Outbound {
    command(Type::LookupResponse, |c| {
        c.lookup_topic_response = Some(CommandLookupTopicResponse {
            broker_service_url: Some(broker.plain),
            broker_service_url_tls: broker.tls,
            response: Some(LookupType::Connect as i32),
            request_id,
            authoritative: Some(true),
            proxy_through_service_url: Some(false),
            ..Default::default()
        })
    })
}

pub fn lookup_failed(request_id: u64, error: ServerError, message: impl Into<String>) -> Outbound {
    command(Type::LookupResponse, |c| {
        c.lookup_topic_response = Some(CommandLookupTopicResponse {
            response: Some(LookupType::Failed as i32),
            request_id,
            error: Some(error as i32),
            message: Some(message.into()),
            ..Default::default()
        })
    })
}

pub fn partitioned_metadata(request_id: u64, partitions: u32) -> Outbound {
    command(Type::PartitionedMetadataResponse, |c| {
        c.partition_metadata_response = Some(CommandPartitionedTopicMetadataResponse {
            partitions: Some(partitions),
            request_id,
            response: Some(MetadataLookupType::Success as i32),
            ..Default::default()
        })
    })
}

pub fn partitioned_metadata_failed(
    request_id: u64,
    error: ServerError,
    message: impl Into<String>,
) -> Outbound {
    command(Type::PartitionedMetadataResponse, |c| {
        c.partition_metadata_response = Some(CommandPartitionedTopicMetadataResponse {
            request_id,
            response: Some(MetadataLookupType::Failed as i32),
            error: Some(error as i32),
            message: Some(message.into()),
            ..Default::default()
        })
    })
}

pub fn last_message_id(
    request_id: u64,
    last: MessageIdData,
    mark_delete: Option<Position>,
) -> Outbound {
    command(Type::GetLastMessageIdResponse, |c| {
        c.get_last_message_id_response = Some(CommandGetLastMessageIdResponse {
            last_message_id: last,
            request_id,
            consumer_mark_delete_position: mark_delete.map(message_id),
        })
    })
}

pub fn topics_of_namespace(request_id: u64, topics: Vec<String>) -> Outbound {
    command(Type::GetTopicsOfNamespaceResponse, |c| {
        c.get_topics_of_namespace_response = Some(CommandGetTopicsOfNamespaceResponse {
            request_id,
            topics,
            filtered: Some(false),
            changed: Some(true),
            ..Default::default()
        })
    })
}

pub fn ack_response(consumer_id: u64, request_id: u64) -> Outbound {
    command(Type::AckResponse, |c| {
        c.ack_response = Some(CommandAckResponse {
            consumer_id,
            request_id: Some(request_id),
            ..Default::default()
        })
    })
}
