//! LOOKUP, PARTITIONED_METADATA and GET_TOPICS_OF_NAMESPACE. Lookups answer
//! with the broker that owns the topic's bundle (see `crate::ownership`).

use pulsar::proto::{
    CommandGetTopicsOfNamespace, CommandLookupTopic, CommandPartitionedTopicMetadata, ServerError,
};

use super::connection::Connection;
use crate::ownership::{BrokerIdentity, LookupAnswer, OwnershipError};
use crate::protocol::commands::{self, BrokerUrls};
use crate::topic::TopicName;

fn urls_of(broker: &BrokerIdentity) -> BrokerUrls {
    BrokerUrls {
        plain: broker.pulsar_url.clone(),
        tls: broker.pulsar_url_tls.clone(),
    }
}

impl Connection {
    /// This broker's URLs as this client reaches it: the address it
    /// connected to (or the advertised one) for its own transport.
    fn broker_urls(&self) -> BrokerUrls {
        let identity = self.service.identity();
        if self.tls {
            return BrokerUrls {
                plain: identity.map_or_else(
                    || format!("pulsar://{}", self.local),
                    |i| i.pulsar_url.clone(),
                ),
                tls: Some(format!("pulsar+ssl://{}", self.local)),
            };
        }
        let address = self
            .service
            .config()
            .advertised_address
            .clone()
            .unwrap_or_else(|| self.local.to_string());
        BrokerUrls {
            plain: format!("pulsar://{address}"),
            tls: identity.and_then(|i| i.pulsar_url_tls.clone()),
        }
    }

    /// Answers with this broker when it serves the topic (or no ownership is
    /// configured), else redirects to the owner or to the broker that should
    /// take the topic's bundle. Ownership may need metadata round trips, so
    /// the answer is sent from a task.
    pub(super) fn lookup(&mut self, lookup: CommandLookupTopic) {
        let request_id = lookup.request_id;
        let name = match TopicName::parse(&lookup.topic) {
            Ok(name) => name,
            Err(e) => {
                return self.send(commands::lookup_failed(
                    request_id,
                    ServerError::InvalidTopicName,
                    e.to_string(),
                ))
            }
        };
        let Some(ownership) = self.service.ownership().cloned() else {
            return self.send(commands::lookup_connect(request_id, self.broker_urls()));
        };
        let outbound = self.outbound.clone();
        let authoritative = lookup.authoritative.unwrap_or(false);
        tokio::spawn(async move {
            let reply = match ownership.lookup(&name, authoritative).await {
                Ok(LookupAnswer::Here) => {
                    commands::lookup_connect(request_id, urls_of(ownership.identity()))
                }
                Ok(LookupAnswer::Elsewhere {
                    broker,
                    authoritative,
                }) => commands::lookup_redirect(request_id, urls_of(&broker), authoritative),
                Err(e) => {
                    tracing::warn!(topic = %name, error = %e, "lookup failed");
                    let code = match e {
                        OwnershipError::NamespaceNotFound(_) => ServerError::TopicNotFound,
                        _ => ServerError::ServiceNotReady,
                    };
                    commands::lookup_failed(request_id, code, e.to_string())
                }
            };
            let _ = outbound.send(reply);
        });
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
