//! Settings of one bookie process. The CLI fills this from flags, the TOML
//! file and `MAGNETAR_*` variables; defaults live here once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use magnetar_auth::{PeerPolicy, PeerTls};

use crate::journal::JournalConfig;
use crate::store::RocksOptions;

#[derive(Clone, Debug)]
pub struct BookieConfig {
    pub data_dir: PathBuf,
    /// gRPC listen address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// HTTP listen address for /metrics and /health; `None` disables it.
    pub http: Option<SocketAddr>,
    /// `host:port` other processes use to reach this bookie; also its id.
    /// Defaults to the bound gRPC address.
    pub advertise: Option<String>,
    /// Rack label, so ensembles can spread across failure domains.
    pub rack: Option<String>,
    pub journal: JournalConfig,
    pub rocks: RocksOptions,
    /// Cap on one range-read response.
    pub max_read_bytes: usize,
    /// Used-disk fraction at which the bookie turns read-only.
    pub disk_high_water: f64,
    /// Used-disk fraction below which a read-only bookie writes again.
    pub disk_low_water: f64,
    pub disk_check_interval: Duration,
    /// TTL of the lease binding this bookie's registration.
    pub lease_ttl: Duration,
    /// How often ledgers are garbage collected against metadata; zero
    /// disables collection.
    pub gc_interval: Duration,
    /// Who may call the gRPC service; `Open` only where nothing but this
    /// host can reach it (see the CLI's loopback rule).
    pub peers: PeerPolicy,
    /// TLS on the gRPC port (mutual when it has trust roots); `None`:
    /// plain TCP.
    pub tls: Option<PeerTls>,
}

impl BookieConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        BookieConfig {
            data_dir,
            listen: SocketAddr::from(([127, 0, 0, 1], 3181)),
            http: Some(SocketAddr::from(([0, 0, 0, 0], 8000))),
            advertise: None,
            rack: None,
            journal: JournalConfig::default(),
            rocks: RocksOptions::default(),
            max_read_bytes: 16 << 20,
            disk_high_water: 0.95,
            disk_low_water: 0.90,
            disk_check_interval: Duration::from_secs(5),
            lease_ttl: Duration::from_secs(10),
            gc_interval: Duration::from_secs(60),
            peers: PeerPolicy::Open,
            tls: None,
        }
    }
}
