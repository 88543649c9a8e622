//! SUBSCRIBE, FLOW, ACK, REDELIVER_UNACKNOWLEDGED_MESSAGES, SEEK,
//! GET_LAST_MESSAGE_ID, UNSUBSCRIBE and CLOSE_CONSUMER.

use pulsar::proto::command_ack::AckType;
use pulsar::proto::command_subscribe::{InitialPosition as WireInitialPosition, SubType};
use pulsar::proto::KeySharedMode as WireKeySharedMode;
use pulsar::proto::{
    CommandAck, CommandCloseConsumer, CommandFlow, CommandGetLastMessageId,
    CommandRedeliverUnacknowledgedMessages, CommandSeek, CommandSubscribe, CommandUnsubscribe,
    KeySharedMeta, KeySharedMode, ServerError,
};

use super::connection::{Connection, ConsumerState, Event};
use crate::protocol::commands;
use crate::storage::Position;
use crate::topic::{
    Acknowledgement, ConsumerHandle, InitialPosition, KeySharedOptions, SubscribeRequest,
    SubscriptionType, TopicName,
};

/// A Key_Shared consumer's KeySharedMeta in broker terms (AUTO_SPLIT when
/// absent, as clients that send none expect).
fn key_shared_options(meta: Option<&KeySharedMeta>) -> Result<KeySharedOptions, String> {
    let Some(meta) = meta else {
        return Ok(KeySharedOptions::default());
    };
    let mode = match KeySharedMode::try_from(meta.key_shared_mode) {
        Ok(WireKeySharedMode::AutoSplit) => crate::topic::KeySharedMode::AutoSplit,
        Ok(WireKeySharedMode::Sticky) => {
            let mut ranges = Vec::with_capacity(meta.hash_ranges.len());
            for range in &meta.hash_ranges {
                let (Ok(start), Ok(end)) = (u32::try_from(range.start), u32::try_from(range.end))
                else {
                    return Err(format!(
                        "hash range {}..={} is negative",
                        range.start, range.end
                    ));
                };
                ranges.push((start, end));
            }
            crate::topic::KeySharedMode::Sticky(ranges)
        }
        Err(_) => return Err(format!("unknown key shared mode {}", meta.key_shared_mode)),
    };
    Ok(KeySharedOptions {
        mode,
        allow_out_of_order: meta.allow_out_of_order_delivery.unwrap_or(false),
    })
}

impl Connection {
    /// The consumer, or an ERROR reply to `request_id` if there is none.
    fn consumer_or_reply(&self, consumer_id: u64, request_id: u64) -> Option<&ConsumerState> {
        let consumer = self.consumers.get(&consumer_id);
        if consumer.is_none() {
            self.send(commands::error(
                request_id,
                ServerError::ConsumerNotFound,
                format!("no consumer {consumer_id}"),
            ));
        }
        consumer
    }

    pub(super) fn subscribe(&mut self, request: CommandSubscribe) {
        let refuse = |conn: &Connection, error: ServerError, message: String| {
            tracing::warn!(connection = conn.id, peer = %conn.peer, %message, "subscribe refused");
            conn.send(commands::error(request.request_id, error, message));
        };
        let name = match TopicName::parse(&request.topic) {
            Ok(name) => name,
            Err(e) => return refuse(self, ServerError::InvalidTopicName, e.to_string()),
        };
        if request.subscription.is_empty() {
            return refuse(
                self,
                ServerError::NotAllowedError,
                "empty subscription name".into(),
            );
        }
        let sub_type = match SubType::try_from(request.sub_type) {
            Ok(SubType::Exclusive) => SubscriptionType::Exclusive,
            Ok(SubType::Shared) => SubscriptionType::Shared,
            Ok(SubType::Failover) => SubscriptionType::Failover,
            Ok(SubType::KeyShared) => SubscriptionType::KeyShared,
            Err(_) => {
                return refuse(
                    self,
                    ServerError::NotAllowedError,
                    format!("unknown subscription type {}", request.sub_type),
                )
            }
        };
        let key_shared = match key_shared_options(request.key_shared_meta.as_ref()) {
            Ok(options) => options,
            Err(message) => return refuse(self, ServerError::ConsumerAssignError, message),
        };
        let initial = match request.initial_position.map(WireInitialPosition::try_from) {
            Some(Ok(WireInitialPosition::Earliest)) => InitialPosition::Earliest,
            _ => InitialPosition::Latest,
        };
        let subscribe = SubscribeRequest {
            subscription: request.subscription.clone(),
            sub_type,
            durable: request.durable.unwrap_or(true),
            initial,
            start: request.start_message_id.clone(),
        };
        let key = (self.id, request.consumer_id);
        let handle = ConsumerHandle {
            key,
            name: request.consumer_name.clone().unwrap_or_default(),
            priority: request.priority_level.unwrap_or(0),
            outbound: self.outbound.clone(),
            key_shared,
        };
        // A re-subscribe of a live consumer id (after the broker closed it)
        // replaces the old registration, which must go first.
        let previous = self.consumers.remove(&request.consumer_id);
        let service = self.service.clone();
        let events = self.events.clone();
        let (consumer_id, request_id) = (request.consumer_id, request.request_id);
        tokio::spawn(async move {
            if let Some(previous) = previous {
                previous
                    .topic
                    .release_consumer(&previous.subscription, key)
                    .await;
            }
            let result = match service.topic(&name).await {
                Ok(topic) => topic
                    .subscribe(&subscribe, handle)
                    .await
                    .map(|subscription| (topic, subscription)),
                Err(e) => Err(e),
            };
            if let Err(Event::ConsumerReady {
                result: Ok((topic, subscription)),
                ..
            }) = events
                .send(Event::ConsumerReady {
                    consumer_id,
                    request_id,
                    result,
                })
                .map_err(|e| e.0)
            {
                topic.release_consumer(&subscription, key).await;
            }
        });
    }

    pub(super) fn flow(&mut self, flow: CommandFlow) {
        if let Some(consumer) = self.consumers.get(&flow.consumer_id) {
            consumer
                .subscription
                .add_permits((self.id, flow.consumer_id), flow.message_permits);
        }
    }

    pub(super) fn ack(&mut self, ack: CommandAck) {
        let Some(consumer) = self.consumers.get(&ack.consumer_id) else {
            return;
        };
        let cumulative = ack.ack_type == AckType::Cumulative as i32;
        let acks: Vec<Acknowledgement> = ack
            .message_id
            .iter()
            .map(|id| Acknowledgement {
                position: commands::position_of(id),
                batch_index: id.batch_index.unwrap_or(-1),
                ack_set: id.ack_set.clone(),
            })
            .collect();
        consumer
            .subscription
            .acknowledge_from((self.id, ack.consumer_id), cumulative, &acks);
        if let Some(request_id) = ack.request_id {
            self.send(commands::ack_response(ack.consumer_id, request_id));
        }
    }

    pub(super) fn redeliver(&mut self, request: CommandRedeliverUnacknowledgedMessages) {
        let Some(consumer) = self.consumers.get(&request.consumer_id) else {
            return;
        };
        let key = (self.id, request.consumer_id);
        if request.message_ids.is_empty() {
            consumer.subscription.redeliver_unacknowledged(key, None);
        } else {
            let positions: Vec<Position> = request
                .message_ids
                .iter()
                .map(commands::position_of)
                .collect();
            consumer
                .subscription
                .redeliver_unacknowledged(key, Some(&positions));
        }
    }

    /// Resets the subscription to a message id or a publish time, then
    /// closes its consumers, which reconnect and resume from there (as
    /// Pulsar does).
    pub(super) async fn seek(&mut self, seek: CommandSeek) {
        let Some(consumer) = self.consumer_or_reply(seek.consumer_id, seek.request_id) else {
            return;
        };
        let target = if let Some(id) = &seek.message_id {
            if id.ledger_id == u64::MAX {
                Position::EARLIEST
            } else if id.ledger_id >= i64::MAX as u64 {
                let last = consumer.topic.log().last_confirmed();
                Position::new(last.ledger_id, last.entry_id + 1)
            } else {
                commands::position_of(id)
            }
        } else if let Some(time) = seek.message_publish_time {
            match consumer.topic.position_at_publish_time(time).await {
                Ok(position) => position,
                Err(e) => {
                    self.send(commands::error(
                        seek.request_id,
                        e.server_error(),
                        e.to_string(),
                    ));
                    return;
                }
            }
        } else {
            self.send(commands::error(
                seek.request_id,
                ServerError::NotAllowedError,
                "SEEK needs a message id or a publish time",
            ));
            return;
        };
        let subscription = consumer.subscription.clone();
        let disconnected = subscription.seek(target);
        tracing::info!(connection = self.id, subscription = %subscription.name(), %target, "seek");
        // Disconnect first, as Pulsar does: clients reset their start
        // position on the disconnect that precedes the seek's success.
        for handle in disconnected {
            if handle.key.0 == self.id {
                self.consumers.remove(&handle.key.1);
            }
            let _ = handle.outbound.send(commands::close_consumer(handle.key.1));
        }
        self.send(commands::success(seek.request_id));
    }

    pub(super) async fn last_message_id(&mut self, request: CommandGetLastMessageId) {
        let Some(consumer) = self.consumer_or_reply(request.consumer_id, request.request_id) else {
            return;
        };
        let reply = match consumer.topic.last_message_id().await {
            Ok(last) => commands::last_message_id(
                request.request_id,
                last,
                Some(consumer.subscription.mark_delete_position()),
            ),
            Err(e) => commands::error(request.request_id, e.server_error(), e.to_string()),
        };
        self.send(reply);
    }

    pub(super) async fn unsubscribe(&mut self, request: CommandUnsubscribe) {
        let Some(consumer) = self.consumer_or_reply(request.consumer_id, request.request_id) else {
            return;
        };
        let key = (self.id, request.consumer_id);
        match consumer
            .topic
            .unsubscribe(&consumer.subscription, key)
            .await
        {
            Ok(()) => {
                self.consumers.remove(&request.consumer_id);
                self.send(commands::success(request.request_id));
            }
            Err(e) => self.send(commands::error(
                request.request_id,
                e.server_error(),
                e.to_string(),
            )),
        }
    }

    pub(super) async fn close_consumer(&mut self, request: CommandCloseConsumer) {
        if let Some(consumer) = self.consumers.remove(&request.consumer_id) {
            consumer
                .topic
                .release_consumer(&consumer.subscription, (self.id, request.consumer_id))
                .await;
        }
        self.send(commands::success(request.request_id));
    }
}
