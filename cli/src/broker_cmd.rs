//! `magnetar broker`: serves topics over the Pulsar protocol, storing them on
//! the bookies registered in the cluster metadata. Also used by standalone.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use magnetar_auth::{PeerCredentials, PeerPolicy};
use magnetar_broker::auth::{AuthConfig, Superusers};
use magnetar_broker::autorecovery::AutorecoveryConfig;
use magnetar_broker::ledger::bookie_client::{BookieClientConfig, BookieClients};
use magnetar_broker::ledger::LedgerClient;
use magnetar_broker::load_manager::LoadManagerConfig;
use magnetar_broker::local_log::{
    self, FlushPolicy, LocalLogConfig, LocalLogStore, Replicas, ReplicationService,
};
use magnetar_broker::managed_ledger::{EntryCache, LedgerLogStore, ManagedLedgerConfig};
use magnetar_broker::metrics::BrokerMetrics;
use magnetar_broker::ownership::{BrokerIdentity, Ownership, ReplicaEndpoint, DEFAULT_LEASE_TTL};
use magnetar_broker::server::BrokerServer;
use magnetar_broker::storage::{self, Architecture, LogStore, Replication};
use magnetar_broker::tls::{TlsAcceptor, TlsFiles};
use magnetar_broker::topic::{
    create_namespace_if_absent, BrokerConfig, BrokerService, InactiveTopicDeleteMode,
    NamespacePolicies, TenantInfo,
};
use magnetar_metadata::MetadataStore;
use serde::Deserialize;
use tokio::task::JoinHandle;

use crate::config_file::prefer_cli;

/// Broker settings shared by `broker` and `standalone`.
#[derive(Args, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BrokerTuning {
    /// host:port that lookups send clients to, and a clustered broker's id
    /// (what other brokers redirect to) [default: the address a client
    /// connected to; a clustered broker's id is its --listen address, with
    /// 127.0.0.1 for a wildcard].
    #[arg(long, env = "MAGNETAR_ADVERTISE")]
    pub advertise: Option<String>,
    /// Largest message or batch accepted, in bytes [default: 5 MiB].
    #[arg(long, env = "MAGNETAR_MAX_MESSAGE_SIZE")]
    pub max_message_size: Option<usize>,
    /// Entries per ledger (decoupled) or segment file (monolithic) before a
    /// topic rolls over to a new one [default: 50000; monolithic: no limit,
    /// segments roll at 1 GiB].
    #[arg(long, env = "MAGNETAR_MAX_ENTRIES_PER_LEDGER")]
    pub max_entries_per_ledger: Option<u64>,
    /// Recent entries kept in memory, across all topics, in MiB [default: 256].
    #[arg(long, env = "MAGNETAR_CACHE_MB")]
    pub cache_mb: Option<usize>,
    /// Bookies per ledger for namespaces without a persistence policy
    /// [default: 2; standalone: 1].
    #[arg(long, env = "MAGNETAR_ENSEMBLE_SIZE")]
    pub ensemble_size: Option<u32>,
    /// Copies of each entry [default: 2; standalone: 1].
    #[arg(long, env = "MAGNETAR_WRITE_QUORUM")]
    pub write_quorum: Option<u32>,
    /// Copies confirmed before a receipt [default: 2; standalone: 1].
    #[arg(long, env = "MAGNETAR_ACK_QUORUM")]
    pub ack_quorum: Option<u32>,
    /// How often message TTL, backlog quotas and retention are applied to
    /// open topics, e.g. 60s or 500ms [default: 60s].
    #[arg(long, env = "MAGNETAR_HOUSEKEEPING_INTERVAL", value_parser = humantime::parse_duration)]
    #[serde(default, deserialize_with = "human_duration")]
    pub housekeeping_interval: Option<Duration>,
    /// Require a token from every client and admin request, and check
    /// namespace permissions (needs --token-secret-key or --token-public-key).
    #[arg(long, env = "MAGNETAR_AUTH_ENABLED")]
    #[serde(default)]
    pub auth_enabled: bool,
    /// HS256 key that tokens are signed with: a file, or `base64:<key>`.
    #[arg(
        long,
        env = "MAGNETAR_TOKEN_SECRET_KEY",
        conflicts_with = "token_public_key"
    )]
    pub token_secret_key: Option<String>,
    /// RS256 public key (PEM file) of the key that tokens are signed with.
    #[arg(long, env = "MAGNETAR_TOKEN_PUBLIC_KEY")]
    pub token_public_key: Option<PathBuf>,
    /// How often the tokens of open connections are checked: an expired
    /// one gets AUTH_CHALLENGE, and a connection whose client does not
    /// answer with a valid token of the same role by the next check is
    /// closed (Pulsar's authenticationRefreshCheckSeconds) [default: 60s].
    #[arg(long, env = "MAGNETAR_AUTH_REFRESH_CHECK", value_parser = humantime::parse_duration)]
    #[serde(default, deserialize_with = "human_duration")]
    pub auth_refresh_check: Option<Duration>,
    /// Roles that may do everything, comma-separated.
    #[arg(long, env = "MAGNETAR_SUPERUSER_ROLES", value_delimiter = ',')]
    pub superuser_roles: Option<Vec<String>>,
    /// Serve `pulsar+ssl://` and HTTPS with this certificate chain (PEM,
    /// the broker's certificate first); needs --tls-key.
    #[arg(long, env = "MAGNETAR_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "MAGNETAR_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Require TLS clients to present a certificate signed by one of these
    /// CAs (PEM).
    #[arg(long, env = "MAGNETAR_TLS_TRUST_CERTS")]
    pub tls_trust_certs: Option<PathBuf>,
    /// Where `pulsar+ssl://` is served when TLS is on [default: 0.0.0.0:6651].
    #[arg(long, env = "MAGNETAR_TLS_LISTEN")]
    pub tls_listen: Option<SocketAddr>,
    /// Where HTTPS (admin REST, /metrics) is served when TLS is on
    /// [default: 0.0.0.0:8443].
    #[arg(long, env = "MAGNETAR_HTTPS")]
    pub https: Option<SocketAddr>,
    /// The token this broker presents to bookies and to peer brokers'
    /// replication services: the token itself, or `file:PATH`.
    #[arg(long, env = "MAGNETAR_STORAGE_TOKEN")]
    pub storage_token: Option<String>,
    /// TLS to bookies: the certificate chain (PEM file) this broker presents
    /// to bookies that require mutual TLS (its subject common name is the
    /// broker's role there, `broker` by default).
    #[arg(long, env = "MAGNETAR_STORAGE_TLS_CERT")]
    pub storage_tls_cert: Option<PathBuf>,
    /// The private key of --storage-tls-cert (PEM file).
    #[arg(long, env = "MAGNETAR_STORAGE_TLS_KEY")]
    pub storage_tls_key: Option<PathBuf>,
    /// The CA certificates (PEM file) that verify bookies' certificates.
    #[arg(long, env = "MAGNETAR_STORAGE_TLS_TRUST_CERTS")]
    pub storage_tls_trust_certs: Option<PathBuf>,
    /// With --auth-enabled, the roles whose tokens may fetch from this
    /// broker's replication service, comma-separated [default: broker].
    #[arg(long, env = "MAGNETAR_STORAGE_ROLES", value_delimiter = ',')]
    pub storage_roles: Option<Vec<String>>,
    /// The cluster this broker belongs to, registered in metadata at start
    /// (tenants' allowed clusters name it) [default: standalone].
    #[arg(long, env = "MAGNETAR_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// Where topics are stored: `decoupled` (ledgers on bookies) or
    /// `monolithic` (segment files on this broker's disk, Kafka-style).
    /// Fixed for a cluster when it is first initialised [default: decoupled].
    #[arg(long, env = "MAGNETAR_ARCHITECTURE")]
    #[serde(default, deserialize_with = "parsed")]
    pub architecture: Option<Architecture>,
    /// Monolithic only: `fsync` confirms an entry once its group of appends
    /// is fsynced (a bookie's durability); `os` once it is written, before
    /// any fsync, as Kafka does by default [default: fsync].
    #[arg(long, env = "MAGNETAR_FLUSH_POLICY")]
    #[serde(default, deserialize_with = "parsed")]
    pub flush_policy: Option<FlushPolicy>,
    /// Monolithic only: an in-sync follower that has not caught up with
    /// its leader for this long leaves the ISR (Kafka's
    /// replica.lag.time.max.ms) [default: 10s].
    #[arg(long, env = "MAGNETAR_REPLICA_LAG_MAX", value_parser = humantime::parse_duration)]
    #[serde(default, deserialize_with = "human_duration")]
    pub replica_lag_max: Option<Duration>,
    /// Bytes waiting to be written to one client connection before the
    /// broker stops reading it and dispatching to its consumers [default: 16 MiB].
    #[arg(long, env = "MAGNETAR_MAX_OUTBOUND_BYTES_PER_CONNECTION")]
    pub max_outbound_bytes_per_connection: Option<usize>,
    /// A client that takes longer than this to read 256 KiB of what waits
    /// for it is disconnected, e.g. 30s [default: 30s].
    #[arg(long, env = "MAGNETAR_CONNECTION_WRITE_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, deserialize_with = "human_duration")]
    pub connection_write_timeout: Option<Duration>,
    /// Client connections this broker holds at most; more are closed as
    /// they are accepted (Pulsar's brokerMaxConnections) [default: 0, no limit].
    #[arg(long, env = "MAGNETAR_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Client connections from one IP address at most (Pulsar's
    /// brokerMaxConnectionsPerIp) [default: 0, no limit].
    #[arg(long, env = "MAGNETAR_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Subscriptions per topic where the namespace sets no
    /// maxSubscriptionsPerTopic [default: 0, no limit].
    #[arg(long, env = "MAGNETAR_MAX_SUBSCRIPTIONS_PER_TOPIC")]
    pub max_subscriptions_per_topic: Option<u32>,
    /// Topics per namespace, each partition counting, where the namespace
    /// sets no maxTopicsPerNamespace [default: 0, no limit].
    #[arg(long, env = "MAGNETAR_MAX_TOPICS_PER_NAMESPACE")]
    pub max_topics_per_namespace: Option<u32>,
    /// Delete topics nobody uses (no producers, consumers or, by default,
    /// subscriptions) where the namespace sets no inactiveTopicPolicies, as
    /// Pulsar's brokerDeleteInactiveTopicsEnabled [default: true].
    #[arg(long, env = "MAGNETAR_DELETE_INACTIVE_TOPICS")]
    pub delete_inactive_topics: Option<bool>,
    /// How long a topic must be unused before it is deleted, checked at
    /// each housekeeping tick [default: 60s].
    #[arg(long, env = "MAGNETAR_INACTIVE_TOPIC_MAX_DURATION", value_parser = humantime::parse_duration)]
    #[serde(default, deserialize_with = "human_duration")]
    pub inactive_topic_max_duration: Option<Duration>,
    /// delete_when_no_subscriptions, or delete_when_subscriptions_caught_up
    /// [default: delete_when_no_subscriptions].
    #[arg(long, env = "MAGNETAR_INACTIVE_TOPIC_DELETE_MODE")]
    #[serde(default, deserialize_with = "parsed")]
    pub inactive_topic_delete_mode: Option<InactiveTopicDeleteMode>,
    /// Keep cursor state in the metadata store, as before cursor logs: each
    /// cursor flush then writes to etcd (for comparisons; otherwise it is
    /// appended to a cursor ledger on the bookies, or in the monolithic
    /// architecture to a cursor log on the partition's replicas)
    /// [default: false].
    #[arg(long, env = "MAGNETAR_CURSORS_IN_METADATA")]
    pub cursors_in_metadata: Option<bool>,
}

/// A value in the file as its flag takes it.
fn parsed<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr<Err = String>,
{
    let text = String::deserialize(d)?;
    text.parse().map(Some).map_err(serde::de::Error::custom)
}

/// Bytes per second with an optional binary unit (`64M`); 0: unlimited.
fn parse_rate(text: &str) -> Result<u64, String> {
    if text.trim() == "0" {
        return Ok(0);
    }
    crate::admin::units::parse_positive_size(text)
}

/// A rate in the file as the flag takes it.
fn parsed_rate<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let text = String::deserialize(d)?;
    parse_rate(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// A duration in the file as the flag takes it ("60s", "1m 30s").
fn human_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

impl BrokerTuning {
    pub fn merged(mut self, file: BrokerTuning) -> Self {
        prefer_cli!(self, file; advertise, max_message_size, max_entries_per_ledger, cache_mb,
            ensemble_size, write_quorum, ack_quorum, housekeeping_interval, token_secret_key,
            token_public_key, superuser_roles, cluster_name, architecture, flush_policy,
            replica_lag_max, max_outbound_bytes_per_connection, connection_write_timeout,
            max_connections, max_connections_per_ip, max_subscriptions_per_topic,
            max_topics_per_namespace, auth_refresh_check, delete_inactive_topics,
            inactive_topic_max_duration, inactive_topic_delete_mode, storage_token, storage_roles,
            storage_tls_cert, storage_tls_key, storage_tls_trust_certs,
            tls_cert, tls_key, tls_trust_certs, tls_listen, https, cursors_in_metadata);
        self.auth_enabled |= file.auth_enabled;
        self
    }

    /// A broker configuration from these settings over `defaults`.
    pub fn config(&self, mut config: BrokerConfig) -> Result<BrokerConfig> {
        if let Some(advertise) = &self.advertise {
            config.advertised_address = Some(advertise.clone());
        }
        if let Some(max) = self.max_message_size {
            anyhow::ensure!(max > 0, "--max-message-size must be positive");
            config.max_message_size = max;
        }
        if let Some(n) = self.max_entries_per_ledger {
            anyhow::ensure!(n > 0, "--max-entries-per-ledger must be positive");
        }
        if let Some(interval) = self.housekeeping_interval {
            anyhow::ensure!(
                !interval.is_zero(),
                "--housekeeping-interval must be positive"
            );
            config.housekeeping_interval = interval;
        }
        if let Some(bound) = self.max_outbound_bytes_per_connection {
            anyhow::ensure!(
                bound > 0,
                "--max-outbound-bytes-per-connection must be positive"
            );
            config.max_outbound_bytes_per_connection = bound;
        }
        if let Some(timeout) = self.connection_write_timeout {
            anyhow::ensure!(
                !timeout.is_zero(),
                "--connection-write-timeout must be positive"
            );
            config.connection_write_timeout = timeout;
        }
        config.max_connections = self.max_connections.unwrap_or(config.max_connections);
        config.max_connections_per_ip = self
            .max_connections_per_ip
            .unwrap_or(config.max_connections_per_ip);
        config.max_subscriptions_per_topic = self
            .max_subscriptions_per_topic
            .unwrap_or(config.max_subscriptions_per_topic);
        config.max_topics_per_namespace = self
            .max_topics_per_namespace
            .unwrap_or(config.max_topics_per_namespace);
        config.cursors_in_metadata = self
            .cursors_in_metadata
            .unwrap_or(config.cursors_in_metadata);
        let inactive = &mut config.inactive_topics;
        inactive.delete_while_inactive = self
            .delete_inactive_topics
            .unwrap_or(inactive.delete_while_inactive);
        if let Some(after) = self.inactive_topic_max_duration {
            inactive.max_inactive_duration_seconds = u32::try_from(after.as_secs())
                .context("--inactive-topic-max-duration is too long")?;
        }
        if let Some(mode) = self.inactive_topic_delete_mode {
            inactive.inactive_topic_delete_mode = mode;
        }
        config.auth = self.auth_config()?;
        if let Some(name) = &self.cluster_name {
            anyhow::ensure!(
                !name.is_empty() && !name.contains('/'),
                "--cluster-name must be a non-empty name without '/'"
            );
            config.cluster_name = name.clone();
        }
        let replication = &mut config.default_replication;
        let (e, qw, qa) = (
            self.ensemble_size.unwrap_or(replication.ensemble_size),
            self.write_quorum.unwrap_or(replication.write_quorum),
            self.ack_quorum.unwrap_or(replication.ack_quorum),
        );
        anyhow::ensure!(
            qa >= 1 && qw >= qa && e >= qw,
            "need ensemble-size >= write-quorum >= ack-quorum >= 1, got {e}/{qw}/{qa}"
        );
        *replication = Replication {
            ensemble_size: e,
            write_quorum: qw,
            ack_quorum: qa,
        };
        Ok(config)
    }

    pub fn architecture(&self) -> Architecture {
        self.architecture.unwrap_or(Architecture::Decoupled)
    }

    /// Where this broker stores topics: managed ledgers on bookies, or
    /// local logs under `data_dir` (which monolithic brokers need), with
    /// replicas on other brokers when `clustered`.
    pub fn storage(
        &self,
        metadata: &Arc<dyn MetadataStore>,
        replication: Replication,
        data_dir: Option<&std::path::Path>,
        clustered: bool,
    ) -> Result<Storage> {
        match self.architecture() {
            Architecture::Decoupled => {
                anyhow::ensure!(
                    self.flush_policy.is_none() && self.replica_lag_max.is_none(),
                    "--flush-policy and --replica-lag-max apply to --architecture monolithic only"
                );
                let ledgers = self.decoupled_storage(metadata, replication)?;
                Ok(Storage {
                    logs: ledgers.clone(),
                    ledgers: Some(ledgers),
                    replicas: None,
                    replication_tls: None,
                })
            }
            Architecture::Monolithic => {
                let data_dir = data_dir
                    .context("--architecture monolithic needs --data-dir for its partitions")?;
                let broker_id = local_log::broker_id(data_dir)
                    .with_context(|| format!("reading the broker id in {}", data_dir.display()))?;
                let mut config = LocalLogConfig {
                    flush: self.flush_policy.unwrap_or(FlushPolicy::Fsync),
                    peers: self.replication_peers()?,
                    credentials: self.storage_credentials()?,
                    tls: self.storage_tls()?,
                    ..LocalLogConfig::default()
                };
                if let Some(lag) = self.replica_lag_max {
                    anyhow::ensure!(!lag.is_zero(), "--replica-lag-max must be positive");
                    config.lag_max = lag;
                }
                config.segment.segment_entries = self.max_entries_per_ledger;
                let store = LocalLogStore::new(
                    metadata.clone(),
                    data_dir.to_path_buf(),
                    broker_id,
                    config,
                    clustered,
                );
                let replicas = clustered.then(|| store.replicas().clone());
                Ok(Storage {
                    logs: Arc::new(store),
                    ledgers: None,
                    replicas,
                    replication_tls: self.storage_peer_tls()?.map(|tls| tls.server_config()),
                })
            }
        }
    }

    /// Topics as managed ledgers on the bookies registered in `metadata`
    /// (the decoupled architecture), replicated as `replication` unless
    /// their namespace says otherwise.
    fn decoupled_storage(
        &self,
        metadata: &Arc<dyn MetadataStore>,
        replication: Replication,
    ) -> Result<Arc<LedgerLogStore>> {
        let mut config = ManagedLedgerConfig::default();
        config.ledger.ensemble_size = replication.ensemble_size;
        config.ledger.write_quorum = replication.write_quorum;
        config.ledger.ack_quorum = replication.ack_quorum;
        if let Some(n) = self.max_entries_per_ledger {
            config.max_entries_per_ledger = n;
        }
        if let Some(mb) = self.cache_mb {
            config.cache = EntryCache::new(mb << 20);
        }
        let bookies = BookieClientConfig {
            credentials: self.storage_credentials()?,
            tls: self.storage_tls()?,
            ..BookieClientConfig::default()
        };
        let client = LedgerClient::new(metadata.clone(), BookieClients::new(bookies));
        Ok(Arc::new(LedgerLogStore::new(
            metadata.clone(),
            client,
            config,
        )))
    }

    /// The TLS listeners, `None` unless a certificate is given.
    pub fn tls(&self) -> Result<Option<TlsEndpoints>> {
        let (cert, key) = match (&self.tls_cert, &self.tls_key) {
            (None, None) => {
                anyhow::ensure!(
                    self.tls_trust_certs.is_none()
                        && self.tls_listen.is_none()
                        && self.https.is_none(),
                    "--tls-trust-certs, --tls-listen and --https need --tls-cert and --tls-key"
                );
                return Ok(None);
            }
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            _ => anyhow::bail!("give both --tls-cert and --tls-key"),
        };
        let files = TlsFiles {
            cert,
            key,
            trust_certs: self.tls_trust_certs.clone(),
        };
        let acceptor =
            magnetar_broker::tls::acceptor(&files).context("loading the TLS certificate")?;
        Ok(Some(TlsEndpoints {
            acceptor,
            pulsar: self
                .tls_listen
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 6651))),
            https: self
                .https
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8443))),
        }))
    }

    /// Mutual TLS with the storage tier (bookies, and peers' replication
    /// services), `None` unless --storage-tls-* are given.
    fn storage_peer_tls(&self) -> Result<Option<magnetar_auth::PeerTls>> {
        match (
            &self.storage_tls_cert,
            &self.storage_tls_key,
            &self.storage_tls_trust_certs,
        ) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(trust)) => Ok(Some(
                magnetar_auth::PeerTls::load(cert, key, Some(trust))
                    .context("loading the storage TLS files")?,
            )),
            _ => anyhow::bail!(
                "TLS to the storage tier needs all of --storage-tls-cert, --storage-tls-key and --storage-tls-trust-certs"
            ),
        }
    }

    /// The client side of [`Self::storage_peer_tls`].
    fn storage_tls(&self) -> Result<Option<tonic::transport::ClientTlsConfig>> {
        match self.storage_peer_tls()? {
            Some(tls) => Ok(Some(tls.client_config()?)),
            None => Ok(None),
        }
    }

    /// What this broker presents to the storage tier.
    fn storage_credentials(&self) -> Result<PeerCredentials> {
        match &self.storage_token {
            None => Ok(PeerCredentials::none()),
            Some(given) => {
                let token = crate::tokens::load_token(given)?;
                PeerCredentials::token(&token).context("--storage-token")
            }
        }
    }

    /// Who may fetch from this broker's replicas: brokers' roles once
    /// client auth is on (the same token key verifies them), else anyone
    /// who can reach the replication port.
    fn replication_peers(&self) -> Result<PeerPolicy> {
        let roles = self
            .storage_roles
            .clone()
            .unwrap_or_else(|| vec![magnetar_auth::DEFAULT_STORAGE_ROLE.to_string()]);
        let verifier = self.auth_config()?.map(|auth| auth.verifier);
        // With storage TLS the replication service requires client
        // certificates, whose common names are then roles too.
        let certificates = self.storage_peer_tls()?.is_some();
        if verifier.is_none() && !certificates {
            anyhow::ensure!(
                self.storage_roles.is_none(),
                "--storage-roles needs --auth-enabled (its token key verifies peers) or --storage-tls-*"
            );
            return Ok(PeerPolicy::Open);
        }
        Ok(PeerPolicy::authenticated(verifier, certificates, roles))
    }
}

impl BrokerTuning {
    /// Auth settings, `None` when off. Auth on without a key is refused
    /// here, at startup, rather than refusing every client later.
    fn auth_config(&self) -> Result<Option<AuthConfig>> {
        if !self.auth_enabled {
            anyhow::ensure!(
                self.token_secret_key.is_none() && self.token_public_key.is_none(),
                "a token key is given but --auth-enabled is not"
            );
            return Ok(None);
        }
        let verifier = crate::tokens::load_verifier(
            self.token_secret_key.as_deref(),
            self.token_public_key.as_deref(),
        )?
        .context("--auth-enabled needs --token-secret-key or --token-public-key")?;
        let superusers = self
            .superuser_roles
            .iter()
            .flatten()
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
            .collect();
        let refresh_check = self
            .auth_refresh_check
            .unwrap_or(magnetar_broker::auth::DEFAULT_AUTH_REFRESH_CHECK);
        anyhow::ensure!(
            !refresh_check.is_zero(),
            "--auth-refresh-check must be positive"
        );
        Ok(Some(AuthConfig {
            verifier: Arc::new(verifier),
            superusers: Superusers(superusers),
            refresh_check,
        }))
    }
}

#[derive(Args, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BrokerArgs {
    /// Metadata store: etcd://host:port[,host:port...][/prefix] or embedded://DIR.
    #[arg(long, env = "MAGNETAR_METADATA")]
    pub metadata: Option<String>,
    /// Pulsar protocol address [default: 0.0.0.0:6650].
    #[arg(long, env = "MAGNETAR_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// HTTP address for admin REST, /metrics and /health [default: 0.0.0.0:8080].
    #[arg(long, env = "MAGNETAR_HTTP")]
    pub http: Option<SocketAddr>,
    /// TTL of this broker's etcd lease: its bundles move to other brokers
    /// this long after it dies or stalls [default: 10s].
    #[arg(long, env = "MAGNETAR_LEASE_TTL", value_parser = humantime::parse_duration)]
    #[serde(default, deserialize_with = "human_duration")]
    pub lease_ttl: Option<Duration>,
    /// How often the broker reports its load and the elected load manager
    /// rebalances bundles; a new broker gets bundles within one interval
    /// [default: 5s].
    #[arg(long, env = "MAGNETAR_LOAD_REPORT_INTERVAL", value_parser = humantime::parse_duration)]
    #[serde(default, deserialize_with = "human_duration")]
    pub load_report_interval: Option<Duration>,
    /// Whether the load manager moves bundles off overloaded brokers by
    /// itself [default: true].
    #[arg(long, env = "MAGNETAR_LOAD_SHEDDING")]
    pub load_shedding: Option<bool>,
    /// Where a monolithic broker keeps its partitions' segment files.
    #[arg(long, env = "MAGNETAR_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Monolithic only: gRPC address followers fetch this broker's
    /// partitions from [default: 0.0.0.0:6651].
    #[arg(long, env = "MAGNETAR_REPLICATION_LISTEN")]
    pub replication_listen: Option<SocketAddr>,
    /// Monolithic only: this broker's rack; a partition's replicas go to
    /// brokers of different racks first.
    #[arg(long, env = "MAGNETAR_RACK")]
    pub rack: Option<String>,
    /// Decoupled only: how long a bookie may be gone before the auditor
    /// copies its ledgers to other bookies (BookKeeper's
    /// lostBookieRecoveryDelay) [default: 60s].
    #[arg(long, env = "MAGNETAR_LOST_BOOKIE_RECOVERY_DELAY", value_parser = humantime::parse_duration)]
    #[serde(default, deserialize_with = "human_duration")]
    pub lost_bookie_recovery_delay: Option<Duration>,
    /// Decoupled only: bytes per second the auditor copies at most, e.g.
    /// 64M; 0 for unlimited [default: 64M].
    #[arg(long, env = "MAGNETAR_REREPLICATION_RATE", value_parser = parse_rate)]
    #[serde(default, deserialize_with = "parsed_rate")]
    pub rereplication_rate: Option<u64>,
    /// Flattened in the file too: its keys sit in the subcommand's table.
    #[command(flatten)]
    #[serde(flatten)]
    pub tuning: BrokerTuning,
}

impl BrokerArgs {
    pub fn merged(mut self, file: BrokerArgs) -> Self {
        prefer_cli!(self, file; metadata, listen, http, lease_ttl, load_report_interval, load_shedding, data_dir,
            replication_listen, rack, lost_bookie_recovery_delay, rereplication_rate);
        self.tuning = self.tuning.merged(file.tuning);
        self
    }
}

/// Where a broker keeps its topics.
pub struct Storage {
    pub logs: Arc<dyn LogStore>,
    /// Decoupled brokers: the same store as managed ledgers, for the
    /// auditor and the rollover of ledgers on lost bookies.
    pub ledgers: Option<Arc<LedgerLogStore>>,
    /// Monolithic brokers in a cluster: the replicas this broker holds,
    /// served to and fetched from its peers.
    pub replicas: Option<Arc<Replicas>>,
    /// TLS of the replication service those peers fetch from (mutual:
    /// fetching brokers present certificates), `None`: plain TCP.
    pub replication_tls: Option<tonic::transport::ServerTlsConfig>,
}

/// Where a broker serves TLS clients, and with what certificate.
pub struct TlsEndpoints {
    pub acceptor: TlsAcceptor,
    pub pulsar: SocketAddr,
    pub https: SocketAddr,
}

/// How a broker takes part in a cluster of brokers sharing metadata.
pub struct ClusterMembership {
    pub lease_ttl: Duration,
    pub load_manager: LoadManagerConfig,
    /// The auditor's pacing (decoupled brokers).
    pub autorecovery: AutorecoveryConfig,
    /// Where the replication service listens (monolithic brokers).
    pub replication_listen: SocketAddr,
    /// This broker's rack, for replica placement (monolithic brokers).
    pub rack: Option<String>,
}

/// A broker serving the Pulsar protocol and its HTTP endpoints.
pub struct RunningBroker {
    pub server: BrokerServer,
    pub http_addr: SocketAddr,
    http_task: JoinHandle<()>,
    https_task: Option<JoinHandle<()>>,
    replication: Option<(Arc<Replicas>, JoinHandle<()>)>,
}

impl RunningBroker {
    /// Starts serving. With `cluster`, the broker registers under a lease
    /// and serves only the namespace bundles it owns (brokers sharing
    /// metadata), placed by the load manager; without, it serves every
    /// topic (standalone).
    pub async fn start(
        metadata: Arc<dyn MetadataStore>,
        (config, storage): (BrokerConfig, Storage),
        (listen, http): (SocketAddr, SocketAddr),
        tls: Option<TlsEndpoints>,
        cluster: Option<ClusterMembership>,
    ) -> Result<RunningBroker> {
        let Storage {
            logs,
            ledgers,
            replicas,
            replication_tls,
        } = storage;
        storage::join_cluster(metadata.as_ref(), logs.architecture())
            .await
            .context("joining the cluster")?;
        let metrics = BrokerMetrics::new().context("creating broker metrics")?;
        if let Some(replicas) = &replicas {
            metrics
                .register(Box::new(replicas.fetched_bytes()))
                .context("registering replication metrics")?;
        }
        let advertised = config.advertised_address.clone();
        let service = BrokerService::new(config, metadata.clone(), logs.clone(), metrics.clone());
        let http_listener = tokio::net::TcpListener::bind(http)
            .await
            .with_context(|| format!("binding broker HTTP on {http}"))?;
        let http_addr = http_listener.local_addr()?;
        let router = magnetar_broker::http::router(metrics, service.clone());
        let mut https_addr = None;
        let mut https_task = None;
        let mut tls_listener = None;
        if let Some(tls) = &tls {
            let https = tokio::net::TcpListener::bind(tls.https)
                .await
                .with_context(|| format!("binding broker HTTPS on {}", tls.https))?;
            https_addr = Some(https.local_addr()?);
            let (acceptor, router) = (tls.acceptor.clone(), router.clone());
            https_task = Some(tokio::spawn(magnetar_broker::http::serve_https(
                https, acceptor, router,
            )));
            let pulsar = tokio::net::TcpListener::bind(tls.pulsar)
                .await
                .with_context(|| {
                    format!("binding the Pulsar protocol over TLS on {}", tls.pulsar)
                })?;
            tls_listener = Some((pulsar, tls.acceptor.clone()));
        }
        let http_task = tokio::spawn(async move {
            if let Err(e) = axum::serve(http_listener, router).await {
                tracing::error!(error = %e, "broker HTTP server stopped");
            }
        });
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding the Pulsar protocol on {listen}"))?;
        let broker_id = advertised.unwrap_or_else(|| reachable(listener_addr(&listener)));
        let mut identity = BrokerIdentity {
            pulsar_url: format!("pulsar://{broker_id}"),
            http_url: format!("http://{}", reachable_at(&broker_id, http_addr)),
            pulsar_url_tls: tls_listener.as_ref().map(|(l, _)| {
                format!("pulsar+ssl://{}", tls_address(&broker_id, listener_addr(l)))
            }),
            http_url_tls: https_addr.map(|a| format!("https://{}", tls_address(&broker_id, a))),
            broker_id,
            replica: None,
        };
        let mut replication = None;
        match cluster {
            Some(cluster) => {
                if let Some(replicas) = replicas {
                    let (endpoint, task) = serve_replication(
                        &identity.broker_id,
                        cluster.replication_listen,
                        replicas.clone(),
                        replication_tls,
                    )
                    .await?;
                    let endpoint = ReplicaEndpoint {
                        rack: cluster.rack.clone(),
                        ..endpoint
                    };
                    identity.replica = Some(endpoint);
                    tokio::spawn(replicas.clone().run_manager());
                    replication = Some((replicas, task));
                }
                let ownership = Ownership::start(metadata, identity, cluster.lease_ttl)
                    .await
                    .context("registering the broker in metadata")?;
                ownership.set_log_store(logs);
                if let Some(ledgers) = ledgers {
                    tokio::spawn(magnetar_broker::autorecovery::run(
                        ownership.clone(),
                        ledgers,
                        cluster.autorecovery.clone(),
                    ));
                }
                service.set_ownership(ownership);
                service.start_load_manager(cluster.load_manager);
            }
            None => service.set_identity(identity),
        }
        let server = BrokerServer::start_with_tls(listener, tls_listener, service)?;
        Ok(RunningBroker {
            server,
            http_addr,
            http_task,
            https_task,
            replication,
        })
    }

    /// Closes connections, persists cursors, seals ledgers, stops
    /// following.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
        self.http_task.abort();
        if let Some(task) = self.https_task {
            task.abort();
        }
        if let Some((replicas, task)) = self.replication {
            replicas.stop_all().await;
            task.abort();
        }
    }
}

/// Serves the replication service on `listen`; returns how peers reach it.
async fn serve_replication(
    broker_id: &str,
    listen: SocketAddr,
    replicas: Arc<Replicas>,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> Result<(ReplicaEndpoint, JoinHandle<()>)> {
    let mut server = tonic::transport::Server::builder();
    let scheme = match tls {
        Some(tls) => {
            server = server
                .tls_config(tls)
                .context("the replication service's TLS certificate or key")?;
            "https"
        }
        None => "http",
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the replication service on {listen}"))?;
    let addr = listener_addr(&listener);
    let peers = replicas.peers().clone();
    let endpoint = ReplicaEndpoint {
        id: replicas.me().to_string(),
        url: format!("{scheme}://{}", reachable_at(broker_id, addr)),
        rack: None,
    };
    // tonic ignores Server::tcp_nodelay for a listener bound here: set it
    // on the accepted sockets, or Nagle holds small fetch answers back.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let task = tokio::spawn(async move {
        let served = server
            .add_service(ReplicationService::server(replicas, peers))
            .serve_with_incoming(incoming)
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "replication service stopped");
        }
    });
    Ok((endpoint, task))
}

fn listener_addr(listener: &tokio::net::TcpListener) -> SocketAddr {
    listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// A TLS listener's address as clients reach it: the host of the broker's
/// id (its advertised address) with the listener's port.
fn tls_address(broker_id: &str, listener: SocketAddr) -> String {
    let host = broker_id
        .rsplit_once(':')
        .map_or(broker_id, |(host, _)| host);
    format!("{host}:{}", listener.port())
}

/// A listener's address as other brokers and clients reach it: one bound
/// to a wildcard address takes the host of the broker's id (its advertised
/// address), so that in a container peers get its advertised name rather
/// than loopback.
fn reachable_at(broker_id: &str, addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        tls_address(broker_id, addr)
    } else {
        addr.to_string()
    }
}

/// `addr` as other processes on this host reach it: a wildcard listen
/// address becomes loopback (set `--advertise` for other hosts).
fn reachable(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    }
}

pub async fn run(args: BrokerArgs) -> Result<()> {
    let metadata_url = args
        .metadata
        .clone()
        .context("--metadata is required (etcd://host:port or embedded://DIR)")?;
    let config = args.tuning.config(BrokerConfig::default())?;
    let metadata = magnetar_metadata::connect(&metadata_url)
        .await
        .with_context(|| {
            format!(
                "connecting to metadata at {}",
                magnetar_metadata::redacted_url(&metadata_url)
            )
        })?;
    // Like Pulsar's cluster initialisation: the default namespace exists,
    // with the broker's default persistence.
    create_namespace_if_absent(
        metadata.as_ref(),
        "public",
        "default",
        &TenantInfo::default(),
        &NamespacePolicies::default(),
    )
    .await
    .context("creating public/default")?;
    let listen = args
        .listen
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 6650)));
    let http = args
        .http
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8080)));
    let lease_ttl = args.lease_ttl.unwrap_or(DEFAULT_LEASE_TTL);
    anyhow::ensure!(!lease_ttl.is_zero(), "--lease-ttl must be positive");
    let mut load_manager = LoadManagerConfig::default();
    if let Some(interval) = args.load_report_interval {
        anyhow::ensure!(
            !interval.is_zero(),
            "--load-report-interval must be positive"
        );
        load_manager.report_interval = interval;
    }
    if let Some(shedding) = args.load_shedding {
        load_manager.shedding = shedding;
    }
    if args.tuning.architecture() == Architecture::Monolithic {
        // Moving a local log's bundle would need its data copied first.
        anyhow::ensure!(
            args.load_shedding != Some(true),
            "--load-shedding is not available with --architecture monolithic: every move copies the bundle's partitions (move bundles by hand with namespaces unload --destination-broker)"
        );
        load_manager.shedding = false;
    }
    let mut autorecovery = AutorecoveryConfig::default();
    if let Some(delay) = args.lost_bookie_recovery_delay {
        autorecovery.lost_bookie_delay = delay;
    }
    if let Some(rate) = args.rereplication_rate {
        autorecovery.rate_bytes_per_second = rate;
    }
    let cluster = ClusterMembership {
        lease_ttl,
        load_manager,
        autorecovery,
        replication_listen: args
            .replication_listen
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 6651))),
        rack: args.rack.clone(),
    };
    let tls = args.tuning.tls()?;
    if let Some(tls) = &tls {
        anyhow::ensure!(
            args.tuning.architecture() != Architecture::Monolithic
                || tls.pulsar != cluster.replication_listen,
            "--tls-listen and --replication-listen are both {}: give one of them another port",
            tls.pulsar
        );
    }
    let storage = args.tuning.storage(
        &metadata,
        config.default_replication,
        args.data_dir.as_deref(),
        true,
    )?;
    let broker = RunningBroker::start(
        metadata,
        (config, storage),
        (listen, http),
        tls,
        Some(cluster),
    )
    .await?;
    println!(
        "broker serving pulsar://{} (metrics http://{}/metrics)",
        broker.server.local_addr, broker.http_addr
    );
    crate::shutdown::requested().await?;
    tracing::info!("shutting down");
    broker.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct TestCli {
        #[command(flatten)]
        tuning: BrokerTuning,
    }

    #[test]
    fn housekeeping_interval_from_flag_or_file() {
        let default = BrokerTuning::default()
            .config(BrokerConfig::default())
            .unwrap();
        assert_eq!(default.housekeeping_interval, Duration::from_secs(60));

        let cli = TestCli::parse_from(["test", "--housekeeping-interval", "1s"]);
        let config = cli.tuning.config(BrokerConfig::default()).unwrap();
        assert_eq!(config.housekeeping_interval, Duration::from_secs(1));

        let file: BrokerTuning = toml::from_str(r#"housekeeping-interval = "1m 30s""#).unwrap();
        let merged = TestCli::parse_from(["test"]).tuning.merged(file);
        let config = merged.config(BrokerConfig::default()).unwrap();
        assert_eq!(config.housekeeping_interval, Duration::from_secs(90));

        let zero = TestCli::parse_from(["test", "--housekeeping-interval", "0s"]);
        assert!(zero.tuning.config(BrokerConfig::default()).is_err());
        assert!(toml::from_str::<BrokerTuning>(r#"housekeeping-interval = "soon""#).is_err());
    }

    #[test]
    fn auth_is_off_by_default_and_needs_a_key() {
        let config = |args: &[&str]| {
            let cli = TestCli::parse_from(std::iter::once("test").chain(args.iter().copied()));
            cli.tuning.config(BrokerConfig::default())
        };
        assert!(config(&[]).unwrap().auth.is_none());
        let no_key = config(&["--auth-enabled"]).unwrap_err().to_string();
        assert!(no_key.contains("--token-secret-key"), "{no_key}");
        assert!(config(&["--token-secret-key", "base64:c2VjcmV0"]).is_err());
        assert!(config(&["--auth-enabled", "--token-secret-key", "base64:not base64!"]).is_err());

        let on = config(&[
            "--auth-enabled",
            "--token-secret-key",
            "base64:c2VjcmV0",
            "--superuser-roles",
            "admin, ops",
        ])
        .unwrap();
        let auth = on.auth.expect("auth on");
        assert!(auth.superusers.contains("admin") && auth.superusers.contains("ops"));

        let dir = tempfile_dir();
        let key = dir.join("secret.key");
        std::fs::write(&key, "c2VjcmV0\n").unwrap();
        let file: BrokerTuning = toml::from_str(&format!(
            "auth-enabled = true\ntoken-secret-key = {:?}\nsuperuser-roles = [\"root\"]",
            key.display().to_string()
        ))
        .unwrap();
        let merged = TestCli::parse_from(["test"]).tuning.merged(file);
        let auth = merged
            .config(BrokerConfig::default())
            .unwrap()
            .auth
            .expect("auth on");
        assert!(auth.superusers.contains("root"));
        std::fs::remove_dir_all(dir).ok();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("magnetar-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
