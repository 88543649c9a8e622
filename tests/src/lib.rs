//! Test kit: real etcd and `magnetar` processes on 127.0.0.1 with free ports
//! and temporary directories, killed when dropped. Integration tests in
//! `tests/` build on it; nothing here is mocked.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use magnetar_auth::PeerCredentials;
use magnetar_proto::bookie::bookie_client::BookieClient;
use magnetar_proto::bookie::HealthRequest;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;
use tonic::transport::Channel;

pub mod certs;
pub mod clients;
pub mod cluster;

/// The lowest port `free_port` hands out.
const PORTS_LOW: u16 = 10_000;

/// A port nobody listens on right now, never handed out before by this
/// process. It lies below the kernel's ephemeral range, so an outgoing
/// connection (which takes an ephemeral port) cannot claim it between this
/// check and the server's own bind.
pub fn free_port() -> u16 {
    static CURSOR: OnceLock<AtomicU32> = OnceLock::new();
    let span = u32::from(ephemeral_low().saturating_sub(PORTS_LOW).max(1));
    // Processes start apart; threads of one share the cursor.
    let cursor = CURSOR.get_or_init(|| AtomicU32::new(std::process::id().wrapping_mul(7919)));
    for _ in 0..span {
        let offset = cursor.fetch_add(1, Ordering::Relaxed) % span;
        let port = PORTS_LOW + offset as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port on 127.0.0.1")
}

/// The first port of the kernel's ephemeral range (Linux's default if unknown).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// The `magnetar` binary under test: `$MAGNETAR_BIN`, else the one built
/// beside this test executable (`cargo build --bin magnetar` first).
pub fn magnetar_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("MAGNETAR_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current test executable");
    // target/<profile>/deps/<test> -> target/<profile>/magnetar
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    profile_dir.join("magnetar")
}

fn signal(child: &Child, sig: Signal) -> Result<()> {
    kill(Pid::from_raw(child.id() as i32), sig).with_context(|| format!("sending {sig}"))
}

/// Polls `check` every 50 ms until it holds; panics naming `what` after
/// `limit`. Returns how long it took. Tests wait on a condition with this
/// instead of sleeping for a fixed time.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

/// Tail of a log file, for failure messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// What a process that exited said of why: from its last `Error:` line up
/// to its backtrace, else the last `lines` lines.
pub fn error_excerpt(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let Some(start) = text.rfind("Error: ") else {
        return log_tail(path, lines);
    };
    text[start..]
        .lines()
        .take_while(|l| !l.starts_with("Stack backtrace"))
        .take(lines)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A real single-node etcd server in a temporary data directory.
pub struct Etcd {
    child: Child,
    _dir: TempDir,
    log: PathBuf,
    pub client_port: u16,
    /// Serving TLS with this certificate (PEM), which is also its own CA.
    tls_certificate: Option<Vec<u8>>,
}

impl Etcd {
    /// Starts etcd on free ports; if another process took a port between
    /// choosing and binding it, tries again with new ones.
    pub async fn start() -> Result<Etcd> {
        Self::start_serving(None).await
    }

    /// Starts etcd serving clients over TLS only, with the certificate and
    /// key in these PEM files.
    pub async fn start_tls(certificate: &Path, key: &Path) -> Result<Etcd> {
        Self::start_serving(Some((certificate.to_path_buf(), key.to_path_buf()))).await
    }

    async fn start_serving(tls: Option<(PathBuf, PathBuf)>) -> Result<Etcd> {
        const ATTEMPTS: usize = 3;
        let mut attempt = 1;
        loop {
            let mut etcd = Self::spawn(tls.as_ref())?;
            match etcd.wait_ready().await {
                Ok(()) => return Ok(etcd),
                Err(e)
                    if attempt < ATTEMPTS
                        && log_tail(&etcd.log, 30).contains("address already in use") =>
                {
                    eprintln!("etcd lost a port race (attempt {attempt}); retrying on other ports");
                    drop(e);
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn spawn(tls: Option<&(PathBuf, PathBuf)>) -> Result<Etcd> {
        let etcd = std::env::var_os("ETCD_BIN")
            .map(PathBuf::from)
            .or_else(|| which("etcd"))
            .context(
                "the `etcd` binary is not installed; run scripts/setup.sh (Debian package etcd-server)",
            )?;
        let dir = tempfile::tempdir()?;
        let client_port = free_port();
        let peer_port = free_port();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let client_url = format!("{scheme}://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let log = dir.path().join("etcd.log");
        let mut command = Command::new(etcd);
        let tls_certificate = match tls {
            Some((certificate, key)) => {
                command
                    .arg(format!("--cert-file={}", certificate.display()))
                    .arg(format!("--key-file={}", key.display()));
                Some(std::fs::read(certificate)?)
            }
            None => None,
        };
        let child = command
            .arg("--name=test")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=test={peer_url}"))
            .stdout(Stdio::null())
            .stderr(File::create(&log)?)
            .spawn()
            .context("spawning etcd")?;
        Ok(Etcd {
            child,
            _dir: dir,
            log,
            client_port,
            tls_certificate,
        })
    }

    async fn probe(&self) -> bool {
        let mut options = magnetar_metadata::EtcdOptions::new(
            vec![format!("127.0.0.1:{}", self.client_port)],
            "/ready-probe",
        );
        options.tls = self
            .tls_certificate
            .clone()
            .map(|ca| magnetar_metadata::EtcdTls { ca, identity: None });
        match magnetar_metadata::EtcdStore::connect(options).await {
            Ok(store) => {
                use magnetar_metadata::MetadataStore;
                store.get("/probe").await.is_ok()
            }
            Err(_) => false,
        }
    }

    /// Turns etcd's authentication on, with `root` (every permission) as
    /// the one user, through etcdctl as an operator would.
    pub fn enable_auth(&self, root_password: &str) -> Result<()> {
        let etcdctl = which("etcdctl").context(
            "the `etcdctl` binary is not installed; run scripts/setup.sh (Debian package etcd-client)",
        )?;
        let endpoint = self.endpoint();
        let password = format!("--new-user-password={root_password}");
        for args in [
            vec![
                "user",
                "add",
                "root",
                password.as_str(),
                "--interactive=false",
            ],
            vec!["auth", "enable"],
        ] {
            let out = Command::new(&etcdctl)
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={endpoint}"))
                .args(&args)
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "etcdctl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.probe().await {
                return Ok(());
            }
            let exited = self.child.try_wait()?.is_some();
            if exited || Instant::now() > deadline {
                bail!("etcd did not become ready:\n{}", log_tail(&self.log, 30));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// etcd's store revision, which every write (put, delete, or a
    /// transaction that writes) advances by one: the difference of two
    /// readings counts the writes between them.
    pub async fn revision(&self) -> Result<i64> {
        let mut client = etcd_client::Client::connect([self.endpoint()], None).await?;
        let status = client.status().await?;
        status
            .header()
            .map(|h| h.revision())
            .context("etcd's status has no header")
    }

    /// The keys written (put or deleted) after `revision`, up to now, in
    /// order: what a test counts when other processes (bookies refreshing
    /// their registrations) write to the same etcd meanwhile.
    pub async fn keys_written_since(&self, revision: i64) -> Result<Vec<String>> {
        let now = self.revision().await?;
        let mut written = Vec::new();
        if now <= revision {
            return Ok(written);
        }
        let mut client = etcd_client::Client::connect([self.endpoint()], None).await?;
        let options = etcd_client::WatchOptions::new()
            .with_all_keys()
            .with_start_revision(revision + 1);
        let mut stream = client.watch("", Some(options)).await?;
        while let Some(response) = stream.message().await? {
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                if kv.mod_revision() > now {
                    return Ok(written);
                }
                written.push(kv.key_str()?.to_string());
                if kv.mod_revision() == now {
                    return Ok(written);
                }
            }
        }
        Ok(written)
    }

    /// `http://127.0.0.1:PORT`, as etcd clients take it.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls_certificate.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// `etcd://127.0.0.1:PORT/prefix`: each test uses its own prefix.
    pub fn metadata_url(&self, prefix: &str) -> String {
        format!(
            "etcd://127.0.0.1:{}/{}",
            self.client_port,
            prefix.trim_start_matches('/')
        )
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Which `magnetar` subcommand a [`BookieProcess`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `magnetar bookie` against the given metadata URL.
    Bookie,
    /// `magnetar standalone`: embedded metadata, a bookie and the broker in
    /// one process; the broker serves the Pulsar protocol on
    /// [`BookieProcess::pulsar_url`].
    Standalone,
    /// `magnetar broker` against the given metadata URL (no bookie of its
    /// own): serves the Pulsar protocol on [`BookieProcess::pulsar_url`].
    Broker,
}

/// A `magnetar bookie` (or `standalone`) process. Its data directory and
/// ports outlive restarts.
pub struct BookieProcess {
    mode: Mode,
    child: Option<Child>,
    dir: TempDir,
    metadata_url: String,
    extra_args: Vec<String>,
    /// The bookie's gRPC port.
    pub grpc_port: u16,
    /// The bookie's HTTP port (/metrics, /health).
    pub http_port: u16,
    /// Standalone only: the broker's Pulsar binary protocol port.
    pub broker_port: u16,
    /// Standalone only: the broker's HTTP port (admin REST, /metrics).
    pub broker_http_port: u16,
}

/// `magnetar standalone` is a [`BookieProcess`] in [`Mode::Standalone`]:
/// a broker, a bookie and embedded metadata in one process.
pub type StandaloneProcess = BookieProcess;

impl BookieProcess {
    pub async fn start(metadata_url: &str, extra_args: &[&str]) -> Result<BookieProcess> {
        Self::start_mode(Mode::Bookie, metadata_url, extra_args).await
    }

    /// `magnetar broker` against `metadata_url`, storing on the bookies
    /// registered there.
    pub async fn start_broker(metadata_url: &str, extra_args: &[&str]) -> Result<BookieProcess> {
        Self::start_mode(Mode::Broker, metadata_url, extra_args).await
    }

    /// `magnetar standalone` with its data under a temporary directory.
    pub async fn start_standalone(extra_args: &[&str]) -> Result<BookieProcess> {
        Self::start_mode(Mode::Standalone, "", extra_args).await
    }

    async fn start_mode(
        mode: Mode,
        metadata_url: &str,
        extra_args: &[&str],
    ) -> Result<BookieProcess> {
        const ATTEMPTS: usize = 3;
        let mut attempt = 1;
        loop {
            let mut bookie = BookieProcess {
                mode,
                child: None,
                dir: tempfile::tempdir()?,
                metadata_url: metadata_url.to_string(),
                extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
                grpc_port: free_port(),
                http_port: free_port(),
                broker_port: free_port(),
                broker_http_port: free_port(),
            };
            match bookie.spawn().await {
                Ok(()) => return Ok(bookie),
                // Another process took a port between choosing and binding
                // it: try again on new ones.
                Err(e)
                    if attempt < ATTEMPTS
                        && format!("{e:#}").contains("Address already in use") =>
                {
                    eprintln!(
                        "magnetar {} lost a port race (attempt {attempt}); retrying on other ports",
                        bookie.subcommand()
                    );
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub fn grpc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }

    pub fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    /// Standalone only: where Pulsar clients connect, `127.0.0.1:PORT`.
    pub fn broker_addr(&self) -> String {
        format!("127.0.0.1:{}", self.broker_port)
    }

    /// Standalone only: the broker's HTTP address (admin REST, /metrics).
    pub fn broker_http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.broker_http_port)
    }

    /// Standalone only: the service URL Pulsar clients take,
    /// `pulsar://127.0.0.1:PORT`.
    pub fn pulsar_url(&self) -> String {
        format!("pulsar://{}", self.broker_addr())
    }

    /// Standalone only: `http://127.0.0.1:PORT` of the broker's admin REST.
    pub fn broker_http_url(&self) -> String {
        format!("http://{}", self.broker_http_addr())
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("bookie.log")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Replaces the extra flags used by the next (re)start.
    pub fn set_extra_args(&mut self, extra_args: &[&str]) {
        self.extra_args = extra_args.iter().map(|s| s.to_string()).collect();
    }

    async fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut command = Command::new(magnetar_bin());
        match self.mode {
            Mode::Bookie => command
                .arg("bookie")
                .arg("--metadata")
                .arg(&self.metadata_url)
                .arg("--listen")
                .arg(self.grpc_addr())
                .arg("--http")
                .arg(self.http_addr())
                .arg("--advertise")
                .arg(self.grpc_addr()),
            Mode::Standalone => command
                .arg("standalone")
                .arg("--listen")
                .arg(self.broker_addr())
                .arg("--http")
                .arg(self.broker_http_addr())
                .arg("--bookie-listen")
                .arg(self.grpc_addr())
                .arg("--bookie-http")
                .arg(self.http_addr()),
            Mode::Broker => command
                .arg("broker")
                .arg("--metadata")
                .arg(&self.metadata_url)
                .arg("--listen")
                .arg(self.broker_addr())
                .arg("--http")
                .arg(self.broker_http_addr()),
        };
        if self.mode != Mode::Broker {
            command.arg("--data-dir").arg(self.data_dir());
        }
        let child = command
            .args(&self.extra_args)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", magnetar_bin().display()))?;
        self.child = Some(child);
        self.wait_ready().await
    }

    /// Waits until the bookie answers its health check and, in standalone
    /// mode, the broker port accepts TCP connections.
    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "magnetar {} exited with {status} before serving:\n{}",
                        self.subcommand(),
                        error_excerpt(&self.log_path(), 30)
                    );
                }
            }
            let bookie_ready = self.mode == Mode::Broker || self.bookie_healthy().await;
            if bookie_ready && self.broker_accepting().await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "magnetar {} did not become ready:\n{}",
                    self.subcommand(),
                    log_tail(&self.log_path(), 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn subcommand(&self) -> &'static str {
        match self.mode {
            Mode::Bookie => "bookie",
            Mode::Standalone => "standalone",
            Mode::Broker => "broker",
        }
    }

    /// Serving: answering health checks, or refusing them for want of
    /// credentials (a bookie that requires a token).
    async fn bookie_healthy(&self) -> bool {
        if self.extra_args.iter().any(|a| a == "--tls-cert") {
            // Its gRPC port wants TLS: it says when it serves (after it
            // registered), and its HTTP port answers.
            let started = std::fs::read_to_string(self.log_path())
                .is_ok_and(|log| log.contains("bookie started"));
            let url = format!("http://{}/health", self.http_addr());
            return started
                && reqwest::get(&url)
                    .await
                    .is_ok_and(|r| r.status().is_success());
        }
        match self.client().await {
            Ok(mut client) => match client.health(HealthRequest {}).await {
                Ok(_) => true,
                Err(status) => matches!(
                    status.code(),
                    tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
                ),
            },
            Err(_) => false,
        }
    }

    /// True when there is no broker (bookie mode) or its port accepts a
    /// TCP connection.
    async fn broker_accepting(&self) -> bool {
        if self.mode == Mode::Bookie {
            return true;
        }
        let connect = tokio::net::TcpStream::connect(self.broker_addr());
        matches!(
            tokio::time::timeout(Duration::from_secs(2), connect).await,
            Ok(Ok(_))
        )
    }

    /// A gRPC client presenting no credentials.
    pub async fn client(&self) -> Result<wire::BookieRpc> {
        self.client_with(PeerCredentials::none()).await
    }

    /// A gRPC client presenting `credentials` on every call.
    pub async fn client_with(&self, credentials: PeerCredentials) -> Result<wire::BookieRpc> {
        let channel = Channel::from_shared(format!("http://{}", self.grpc_addr()))?
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await?;
        Ok(BookieClient::with_interceptor(channel, credentials)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20))
    }

    /// A gRPC client over TLS: it verifies the bookie against `trust`
    /// (PEM CA certificates) and presents `identity` (certificate chain and
    /// key, PEM) if given.
    pub async fn client_tls(
        &self,
        trust: &[u8],
        identity: Option<(&[u8], &[u8])>,
    ) -> Result<wire::BookieRpc> {
        let mut tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(trust));
        if let Some((cert, key)) = identity {
            tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        let channel = Channel::from_shared(format!("https://{}", self.grpc_addr()))?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await?;
        Ok(
            BookieClient::with_interceptor(channel, PeerCredentials::none())
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
        )
    }

    fn running(&self) -> Result<&Child> {
        self.child.as_ref().context("bookie is not running")
    }

    /// kill -9: no chance to flush or deregister.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// SIGTERM and wait for a graceful exit.
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("bookie is not running")?;
        signal(&child, Signal::SIGTERM)?;
        Ok(child.wait()?)
    }

    pub fn pause(&self) -> Result<()> {
        signal(self.running()?, Signal::SIGSTOP)
    }

    /// The process's resident memory (VmRSS), in bytes.
    pub fn rss_bytes(&self) -> Result<u64> {
        let pid = self.running()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .context("no VmRSS in /proc/PID/status")?;
        Ok(kib * 1024)
    }

    pub fn resume(&self) -> Result<()> {
        signal(self.running()?, Signal::SIGCONT)
    }

    /// Starts the process again on the same data directory and ports.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill9()?;
        self.spawn().await
    }
}

impl Drop for BookieProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // A paused process must be resumed to die promptly.
            let _ = signal(child, Signal::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A `magnetar bookie` started for what it says at startup: whether it
/// serves (it registers in metadata first) or refuses, and why.
pub struct LaunchedBookie {
    child: Child,
    _dir: TempDir,
    /// Its first stdout line once serving, or its exit status and stderr
    /// if it refused to start.
    pub outcome: std::result::Result<String, String>,
}

impl LaunchedBookie {
    /// Runs `magnetar bookie` with its data under `dir`, on `listen`, with
    /// `env` set; returns once it has said which.
    pub fn launch(
        dir: TempDir,
        metadata: &str,
        listen: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> LaunchedBookie {
        use std::io::BufRead;
        let mut child = Command::new(magnetar_bin())
            .args(["bookie", "--metadata", metadata, "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen", listen, "--http"])
            .arg(format!("127.0.0.1:{}", free_port()))
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning magnetar bookie");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        // A refusing bookie exits, closing stdout: read_line returns 0.
        let read = std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap_or(0);
        let outcome = if read > 0 {
            Ok(line)
        } else {
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            Err(format!("{status}: {stderr}"))
        };
        LaunchedBookie {
            child,
            _dir: dir,
            outcome,
        }
    }
}

impl Drop for LaunchedBookie {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Raw bookie-wire helpers shared by the tests that talk to a bookie directly.
pub mod wire {
    use bytes::Bytes;
    use magnetar_auth::PeerCredentials;
    use magnetar_proto::bookie::bookie_client::BookieClient;
    use magnetar_proto::bookie::{AddBatch, AddBatchResult, AddEntry, ErrorCode, ReadEntryRequest};
    use tokio::sync::mpsc;
    use tonic::service::interceptor::InterceptedService;
    use tonic::transport::Channel;

    /// A bookie stub as tests hold it: presenting credentials, or none.
    pub type BookieRpc = BookieClient<InterceptedService<Channel, PeerCredentials>>;

    /// The master key every raw-wire test writes with.
    pub const MASTER_KEY: &[u8] = b"master-key";

    /// An add of `payload` as entry `entry_id`, LAC one behind.
    pub fn entry(ledger_id: u64, entry_id: i64, payload: Bytes) -> AddEntry {
        AddEntry {
            ledger_id,
            entry_id,
            lac: entry_id - 1,
            master_key: Bytes::from_static(MASTER_KEY),
            recovery: false,
            payload,
        }
    }

    /// A payload of `len` bytes that names its ledger and entry, so a
    /// misplaced entry is caught by content.
    pub fn payload_for(ledger_id: u64, entry_id: i64, len: usize) -> Bytes {
        let seed = format!("l{ledger_id}e{entry_id}:");
        Bytes::from(seed.bytes().cycle().take(len).collect::<Vec<u8>>())
    }

    /// Reads one entry; returns the bookie's code and the payload (empty on
    /// error).
    pub async fn read_entry(
        client: &mut BookieRpc,
        ledger_id: u64,
        entry_id: i64,
    ) -> anyhow::Result<(ErrorCode, Bytes)> {
        let r = client
            .read_entry(ReadEntryRequest {
                ledger_id,
                entry_id,
            })
            .await?
            .into_inner();
        Ok((ErrorCode::try_from(r.code)?, r.payload))
    }

    /// Sends `batches` over one add stream and returns every batch result.
    pub async fn add_batches(
        client: &mut BookieRpc,
        batches: Vec<Vec<AddEntry>>,
    ) -> anyhow::Result<Vec<AddBatchResult>> {
        let (tx, rx) = mpsc::channel(batches.len().max(1));
        for (i, entries) in batches.into_iter().enumerate() {
            tx.send(AddBatch {
                batch_id: i as u64,
                entries,
            })
            .await?;
        }
        drop(tx);
        let mut responses = client
            .add_entries(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(r) = responses.message().await? {
            out.push(r);
        }
        Ok(out)
    }
}
