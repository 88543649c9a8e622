//! PRODUCER, SEND and CLOSE_PRODUCER.

use pulsar::proto::{CommandCloseProducer, CommandProducer, CommandSend, ServerError};

use super::connection::{Connection, Event, Receipt};
use crate::protocol::{commands, FramePayload};
use crate::topic::TopicName;

impl Connection {
    /// Opens the topic off the connection task (it may recover ledgers);
    /// PRODUCER_SUCCESS follows as an event.
    pub(super) fn create_producer(&mut self, request: CommandProducer) {
        let name = match TopicName::parse(&request.topic) {
            Ok(name) => name,
            Err(e) => {
                tracing::warn!(connection = self.id, peer = %self.peer, error = %e, "producer refused");
                self.send(commands::error(
                    request.request_id,
                    ServerError::InvalidTopicName,
                    e.to_string(),
                ));
                return;
            }
        };
        let producer_name = request
            .producer_name
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("magnetar-{}-{}", self.id, request.producer_id));
        let service = self.service.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            let result = service.topic(&name).await;
            if let Ok(topic) = &result {
                // Admission checks the quota as it is now, not as of the
                // last housekeeping tick.
                topic.recheck_backlog_quota().await;
            }
            let _ = events.send(Event::ProducerReady {
                producer_id: request.producer_id,
                request_id: request.request_id,
                producer_name,
                result,
            });
        });
    }

    pub(super) fn publish(&mut self, send: CommandSend, payload: FramePayload) {
        let (producer_id, sequence_id) = (send.producer_id, send.sequence_id);
        let Some(producer) = self.producers.get(&producer_id) else {
            self.send(commands::send_error(
                producer_id,
                sequence_id,
                ServerError::NotAllowedError,
                format!("no producer {producer_id} on this connection"),
            ));
            return;
        };
        if producer.failed {
            self.service.metrics().send_errors.inc();
            self.send(commands::send_error(
                producer_id,
                sequence_id,
                ServerError::PersistenceError,
                "an earlier message of this producer failed: reconnect and resend",
            ));
            return;
        }
        let max = self.service.config().max_message_size;
        if payload.payload.len() > max {
            tracing::warn!(connection = self.id, peer = %self.peer, size = payload.payload.len(), max, "message too large");
            self.send(commands::send_error(
                producer_id,
                sequence_id,
                ServerError::NotAllowedError,
                format!(
                    "message of {} bytes exceeds the limit of {max}",
                    payload.payload.len()
                ),
            ));
            return;
        }
        if let Err(reason) = batch_count_is_plausible(&send, &payload, max) {
            tracing::warn!(connection = self.id, peer = %self.peer, %reason, "implausible batch");
            self.send(commands::send_error(
                producer_id,
                sequence_id,
                ServerError::NotAllowedError,
                reason,
            ));
            return;
        }
        let highest = send
            .highest_sequence_id
            .unwrap_or(sequence_id)
            .max(sequence_id);
        let metrics = self.service.metrics();
        let messages = send.num_messages.unwrap_or(1).max(1) as u64;
        let bytes = payload.entry.len() as u64;
        metrics.entries_in.inc();
        metrics.messages_in.inc_by(messages);
        metrics.bytes_in.inc_by(bytes);
        let timer = metrics.publish_seconds.start_timer();
        let topic = producer.topic.clone();
        let append = topic.publish(payload.entry);
        if let Some(until) = topic.throttle_publish(messages, bytes) {
            let until = tokio::time::Instant::from_std(until);
            self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
        }
        self.receipts.push_back(Box::pin(async move {
            let result = append.await;
            timer.observe_duration();
            if result.is_ok() {
                topic.record_published(messages, bytes);
            }
            Receipt::Send(producer_id, sequence_id, highest, result)
        }));
    }

    pub(super) fn close_producer(&mut self, request: CommandCloseProducer) {
        if let Some(producer) = self.producers.remove(&request.producer_id) {
            producer
                .topic
                .remove_producer((self.id, request.producer_id));
        }
        self.send(commands::success(request.request_id));
    }
}

/// Bytes every message of a batch takes at least: its 4-byte metadata size
/// and a SingleMessageMetadata holding its required payload size.
const MIN_BYTES_PER_BATCHED_MESSAGE: usize = 6;

/// Refuses a SEND whose message count its bytes cannot hold: dispatch,
/// permits and batch-index acks all go by the stored count, so a lie there
/// (2^31 messages in a few bytes) would cost every consumer of the topic.
fn batch_count_is_plausible(
    send: &CommandSend,
    payload: &FramePayload,
    max_message_size: usize,
) -> Result<(), String> {
    let compressed = payload.metadata.compression.is_some_and(|c| c != 0);
    let bytes = if compressed {
        (payload.metadata.uncompressed_size.unwrap_or(0) as usize).min(max_message_size)
    } else {
        payload.payload.len()
    };
    let limit =
        (bytes / MIN_BYTES_PER_BATCHED_MESSAGE).clamp(1, commands::MAX_MESSAGES_PER_BATCH as usize);
    for (what, count) in [
        (
            "num_messages_in_batch",
            payload.metadata.num_messages_in_batch,
        ),
        ("num_messages", send.num_messages),
    ] {
        let Some(count) = count else { continue };
        if count < 1 || count as usize > limit {
            return Err(format!(
                "{what} {count} is not possible in a batch of {bytes} bytes (at most {limit})"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulsar::proto::MessageMetadata;

    fn frame(
        count: Option<i32>,
        bytes: usize,
        uncompressed: Option<u32>,
    ) -> (CommandSend, FramePayload) {
        let send = CommandSend {
            num_messages: count,
            ..Default::default()
        };
        let payload = FramePayload {
            metadata: MessageMetadata {
                num_messages_in_batch: count,
                compression: uncompressed.map(|_| 1),
                uncompressed_size: uncompressed,
                ..Default::default()
            },
            payload: bytes::Bytes::from(vec![0u8; bytes]),
            entry: bytes::Bytes::new(),
        };
        (send, payload)
    }

    #[test]
    fn counts_the_bytes_can_hold_pass_and_lies_are_refused() {
        let max = 5 * 1024 * 1024;
        for (count, bytes, uncompressed, ok) in [
            (None, 0, None, true),
            (Some(1), 0, None, true),
            (Some(1000), 6000, None, true),
            (Some(1001), 6000, None, false),
            (Some(i32::MAX), 100, None, false),
            (Some(0), 100, None, false),
            (Some(-1), 100, None, false),
            // Compressed: the declared uncompressed size counts, up to the
            // largest message.
            (Some(1000), 50, Some(6000), true),
            (Some(2_000_000), 50, Some(u32::MAX), false),
        ] {
            let (send, payload) = frame(count, bytes, uncompressed);
            assert_eq!(
                batch_count_is_plausible(&send, &payload, max).is_ok(),
                ok,
                "{count:?} messages in {bytes} bytes ({uncompressed:?} uncompressed)"
            );
        }
    }
}
