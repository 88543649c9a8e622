//! Prometheus metrics of one bookie, updated per round or per request, never
//! per byte.

use magnetar_proto::bookie::ErrorCode;
use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};

#[derive(Clone)]
pub struct BookieMetrics {
    registry: Registry,
    pub entries_added: IntCounter,
    pub bytes_added: IntCounter,
    pub add_errors: IntCounterVec,
    /// Synced write batches, i.e. fsyncs of the journal.
    pub commits: IntCounter,
    pub commit_seconds: Histogram,
    pub round_seconds: Histogram,
    pub round_entries: Histogram,
    pub reads: IntCounterVec,
    pub read_only: IntGauge,
    pub ledgers: IntGauge,
    /// Ledgers deleted because their metadata was gone.
    pub gc_deleted_ledgers: IntCounter,
}

impl BookieMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("magnetar_bookie".into()), None)?;
        let entries_added = IntCounter::new("entries_added_total", "Entries durably added")?;
        let bytes_added = IntCounter::new("bytes_added_total", "Payload bytes durably added")?;
        let add_errors = IntCounterVec::new(
            Opts::new("add_errors_total", "Adds refused, by error code"),
            &["code"],
        )?;
        let commits = IntCounter::new("journal_commits_total", "Synced write batches (fsyncs)")?;
        let latency_buckets = exponential_buckets(0.00005, 2.0, 18)?;
        let commit_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "journal_commit_seconds",
                "Time to write and fsync one round",
            )
            .buckets(latency_buckets.clone()),
        )?;
        let round_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "journal_round_seconds",
                "Time to validate, commit and answer one round",
            )
            .buckets(latency_buckets),
        )?;
        let round_entries = Histogram::with_opts(
            HistogramOpts::new("journal_round_entries", "Entries per synced round")
                .buckets(exponential_buckets(1.0, 2.0, 16)?),
        )?;
        let reads = IntCounterVec::new(
            Opts::new("read_requests_total", "Read requests, by kind"),
            &["kind"],
        )?;
        let read_only = IntGauge::new("read_only", "1 while the bookie refuses adds")?;
        let ledgers = IntGauge::new("ledgers", "Ledgers with state on this bookie")?;
        registry.register(Box::new(entries_added.clone()))?;
        registry.register(Box::new(bytes_added.clone()))?;
        registry.register(Box::new(add_errors.clone()))?;
        registry.register(Box::new(commits.clone()))?;
        registry.register(Box::new(commit_seconds.clone()))?;
        registry.register(Box::new(round_seconds.clone()))?;
        registry.register(Box::new(round_entries.clone()))?;
        registry.register(Box::new(reads.clone()))?;
        registry.register(Box::new(read_only.clone()))?;
        let gc_deleted_ledgers = IntCounter::new(
            "gc_deleted_ledgers_total",
            "Ledgers garbage collected because their metadata was deleted",
        )?;
        registry.register(Box::new(ledgers.clone()))?;
        registry.register(Box::new(gc_deleted_ledgers.clone()))?;
        // Every label value is exported from the start (at 0), so a rate
        // exists before the first error or read of a kind.
        for code in (1..).map_while(|i| ErrorCode::try_from(i).ok()) {
            add_errors.with_label_values(&[code.as_str_name()]);
        }
        for kind in ["entry", "range", "lac"] {
            reads.with_label_values(&[kind]);
        }
        Ok(BookieMetrics {
            registry,
            entries_added,
            bytes_added,
            add_errors,
            commits,
            commit_seconds,
            round_seconds,
            round_entries,
            reads,
            read_only,
            ledgers,
            gc_deleted_ledgers,
        })
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
