//! LOOKUP, PARTITIONED_METADATA and GET_TOPICS_OF_NAMESPACE. A single broker
//! owns every topic, so lookups answer with this broker's own address.

use pulsar::proto::{
    CommandGetTopicsOfNamespace, CommandLookupTopic, CommandPartitionedTopicMetadata, ServerError,
};

use super::connection::Connection;
use crate::protocol::commands;
use crate::topic::TopicName;

impl Connection {
    fn broker_url(&self) -> String {
        let address = self
            .service
            .config()
            .advertised_address
            .clone()
            .unwrap_or_else(|| self.local.to_string());
        format!("pulsar://{address}")
    }

    pub(super) fn lookup(&mut self, lookup: CommandLookupTopic) {
        match TopicName::parse(&lookup.topic) {
            Ok(_) => self.send(commands::lookup_connect(
                lookup.request_id,
                self.broker_url(),
            )),
            Err(e) => self.send(commands::lookup_failed(
                lookup.request_id,
                ServerError::InvalidTopicName,
                e.to_string(),
            )),
        }
    }

    pub(super) async fn partitioned_metadata(&mut self, request: CommandPartitionedTopicMetadata) {
        let reply = match TopicName::parse(&request.topic) {
            Err(e) => commands::partitioned_metadata_failed(
                request.request_id,
                ServerError::InvalidTopicName,
                e.to_string(),
            ),
            Ok(name) => match self.service.partitions(&name).await {
                Ok(n) => commands::partitioned_metadata(request.request_id, n),
                Err(e) => commands::partitioned_metadata_failed(
                    request.request_id,
                    e.server_error(),
                    e.to_string(),
                ),
            },
        };
        self.send(reply);
    }

    pub(super) async fn topics_of_namespace(&mut self, request: CommandGetTopicsOfNamespace) {
        let reply = match self.service.topics_of_namespace(&request.namespace).await {
            Ok(topics) => commands::topics_of_namespace(request.request_id, topics),
            Err(e) => commands::error(request.request_id, e.server_error(), e.to_string()),
        };
        self.send(reply);
    }
}
