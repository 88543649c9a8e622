//! Prometheus metrics of the broker, updated per SEND, per dispatched entry
//! or per connection, never per byte.

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, IntCounter, IntGauge, Registry,
    TextEncoder,
};

#[derive(Clone)]
pub struct BrokerMetrics {
    registry: Registry,
    /// Messages received from producers (a batch counts its messages).
    pub messages_in: IntCounter,
    /// SENDs (entries) received; a batch is one.
    pub entries_in: IntCounter,
    pub bytes_in: IntCounter,
    pub send_errors: IntCounter,
    /// SEND received to receipt sent (durable on an ack quorum).
    pub publish_seconds: Histogram,
    /// Entries sent to consumers (including redeliveries).
    pub entries_out: IntCounter,
    pub messages_out: IntCounter,
    pub bytes_out: IntCounter,
    pub connections: IntGauge,
    /// Connections closed as accepted: the broker or the client's address
    /// was at its connection limit.
    pub connections_refused: IntCounter,
    /// Connections closed because their client read nothing of what waited
    /// for it within the write timeout.
    pub connections_stalled: IntCounter,
    /// Set from the topics open on this broker at each scrape
    /// ([`crate::http`]): topics, their producers and consumers, open
    /// subscriptions (durable ones are cursors), entries not yet
    /// acknowledged summed over subscriptions, ledgers (segments in the
    /// monolithic architecture) and bytes stored.
    pub topics: IntGauge,
    pub producers: IntGauge,
    pub consumers: IntGauge,
    pub subscriptions: IntGauge,
    pub cursors: IntGauge,
    pub backlog_entries: IntGauge,
    pub ledgers: IntGauge,
    pub storage_size_bytes: IntGauge,
}

impl BrokerMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("magnetar_broker".into()), None)?;
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let messages_in = counter("messages_in_total", "Messages published")?;
        let entries_in = counter("entries_in_total", "Entries (SENDs) published")?;
        let bytes_in = counter("bytes_in_total", "Bytes published")?;
        let send_errors = counter("send_errors_total", "SENDs answered with an error")?;
        let entries_out = counter("entries_out_total", "Entries dispatched to consumers")?;
        let messages_out = counter("messages_out_total", "Messages dispatched to consumers")?;
        let bytes_out = counter("bytes_out_total", "Bytes dispatched to consumers")?;
        let connections_refused = counter(
            "connections_refused_total",
            "Connections refused at a connection limit",
        )?;
        let connections_stalled = counter(
            "connections_stalled_total",
            "Connections closed because the client did not read",
        )?;
        let publish_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "publish_seconds",
                "From SEND received to receipt (stored on an ack quorum)",
            )
            .buckets(exponential_buckets(0.0001, 2.0, 18)?),
        )?;
        registry.register(Box::new(publish_seconds.clone()))?;
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let connections = gauge("connections", "Open client connections")?;
        let topics = gauge("topics", "Topics (partitions) open on this broker")?;
        let producers = gauge("producers", "Producers on open topics")?;
        let consumers = gauge("consumers", "Consumers on open topics")?;
        let subscriptions = gauge("subscriptions", "Open subscriptions, readers included")?;
        let cursors = gauge("cursors", "Durable subscriptions (stored cursors) open")?;
        let backlog_entries = gauge(
            "backlog_entries",
            "Entries not acknowledged, summed over open subscriptions",
        )?;
        let ledgers = gauge(
            "ledgers",
            "Ledgers of open topics (segments in the monolithic architecture)",
        )?;
        let storage_size_bytes = gauge("storage_size_bytes", "Bytes stored by open topics")?;
        Ok(BrokerMetrics {
            registry,
            messages_in,
            entries_in,
            bytes_in,
            send_errors,
            publish_seconds,
            entries_out,
            messages_out,
            bytes_out,
            connections,
            connections_refused,
            connections_stalled,
            topics,
            producers,
            consumers,
            subscriptions,
            cursors,
            backlog_entries,
            ledgers,
            storage_size_bytes,
        })
    }

    /// Adds metrics kept elsewhere (a storage architecture's own) to the
    /// broker's exposition.
    pub fn register(
        &self,
        collector: Box<dyn prometheus::core::Collector>,
    ) -> Result<(), prometheus::Error> {
        self.registry.register(collector)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }
}
