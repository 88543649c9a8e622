//! The cluster a benchmark starts for itself on this machine: etcd (from
//! PATH), bookies and brokers as child processes of this very binary, on
//! free 127.0.0.1 ports in a temporary directory. It owns those processes:
//! every one is killed with SIGKILL when the topology is dropped (on every
//! exit path, errors and Ctrl-C included), and each child is also told by
//! the kernel to die with the runner (PR_SET_PDEATHSIG) in case the runner
//! itself is killed. It never sends load; faults act on it through
//! [`Topology::kill`], [`Topology::pause`] and [`Topology::add_broker`].

use std::fs::File;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use magnetar_metadata::{keys, MetadataStore};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::sample::{WatchList, Watched};
use super::workload::Persistence;

/// How long a process may take to answer its health check.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("{0} is not installed (Debian: etcd-server)")]
    Missing(&'static str),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{name} exited before it was ready ({status}); its log ends:\n{log}")]
    Exited {
        name: String,
        status: String,
        log: String,
    },
    #[error("{name} was not ready within {READY_TIMEOUT:?}; its log ends:\n{log}")]
    NotReady { name: String, log: String },
    #[error("metadata: {0}")]
    Metadata(String),
    #[error("no {0} with that index")]
    NoSuchProcess(String),
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TopologyError {
    let what = what.into();
    move |source| TopologyError::Io { what, source }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TopologyKind {
    /// One `magnetar standalone` (broker + bookie + embedded metadata).
    Standalone,
    /// etcd, bookies and brokers storing ledgers on the bookies.
    Decoupled,
    /// etcd and brokers keeping partitions on their own disks (ISR).
    Monolithic,
}

impl TopologyKind {
    pub fn name(self) -> &'static str {
        match self {
            TopologyKind::Standalone => "standalone",
            TopologyKind::Decoupled => "decoupled",
            TopologyKind::Monolithic => "monolithic",
        }
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct TopologySpec {
    pub kind: TopologyKind,
    pub brokers: usize,
    pub bookies: usize,
    /// Broker defaults and namespace policy (monolithic: E = replicas,
    /// Qa = min.insync).
    pub persistence: Persistence,
    /// Monolithic: `--flush-policy` (fsync or os).
    pub flush_policy: Option<String>,
    /// Broker `--lease-ttl` (how soon a killed broker's bundles move).
    pub lease_ttl: Option<Duration>,
    /// Extra flags for every broker.
    pub broker_args: Vec<String>,
    /// Keep the directory (data and logs) after the run.
    pub keep_dir: bool,
    /// `MAGNETAR_LOG` of the children.
    pub log_filter: String,
}

/// One child process.
#[derive(Debug)]
pub struct Process {
    pub name: String,
    child: Option<Child>,
    pub pid: u32,
    /// `http://127.0.0.1:PORT` (health, metrics; the admin API of a broker).
    pub http_url: String,
    pub log: PathBuf,
    pub data_dir: Option<PathBuf>,
    paused: bool,
}

impl Process {
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.paused {
                let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGCONT);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A broker and where clients reach it.
#[derive(Debug)]
pub struct Broker {
    pub process: Process,
    /// `127.0.0.1:PORT` of its Pulsar listener: its broker id.
    pub address: String,
    /// Monolithic: `127.0.0.1:PORT` of its replication service.
    pub replication_address: Option<String>,
}

impl Broker {
    pub fn service_url(&self) -> String {
        format!("pulsar://{}", self.address)
    }
}

/// A started cluster. Dropping it kills every process it started.
pub struct Topology {
    pub spec: TopologySpec,
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    exe: PathBuf,
    /// `etcd://127.0.0.1:PORT/bench` (none for standalone).
    pub metadata_url: Option<String>,
    etcd: Option<Process>,
    pub bookies: Vec<Process>,
    pub brokers: Vec<Broker>,
    watch: WatchList,
    /// Versions of what runs (etcd's, this binary's).
    pub versions: Vec<(String, String)>,
}

/// A port nobody listens on right now (bound once, then released).
fn free_port() -> Result<u16, TopologyError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(io_error("choosing a free port"))
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A command whose process the kernel kills when the runner dies.
fn child_command(program: &Path) -> Command {
    let mut command = Command::new(program);
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no
    // memory of the parent; it runs in the child between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.stdin(Stdio::null());
    command
}

impl Topology {
    /// Starts everything `spec` names and waits until each process answers
    /// its health check and registered in metadata.
    pub async fn start(spec: TopologySpec) -> Result<Topology, TopologyError> {
        let exe = std::env::current_exe().map_err(io_error("finding this binary"))?;
        let dir = tempfile::Builder::new()
            .prefix("magnetar-bench.")
            .tempdir()
            .map_err(io_error("creating the run directory"))?;
        let path = dir.path().to_path_buf();
        let mut topology = Topology {
            dir: Some(dir),
            path,
            exe,
            metadata_url: None,
            etcd: None,
            bookies: Vec::new(),
            brokers: Vec::new(),
            watch: Arc::new(Mutex::new(Vec::new())),
            versions: vec![(
                "magnetar".to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            )],
            spec,
        };
        if topology.spec.keep_dir {
            if let Some(dir) = topology.dir.take() {
                let kept = dir.keep();
                eprintln!("bench: keeping {}", kept.display());
            }
        }
        match topology.spec.kind {
            TopologyKind::Standalone => topology.start_standalone().await?,
            kind => {
                topology.start_etcd().await?;
                if kind == TopologyKind::Decoupled {
                    for _ in 0..topology.spec.bookies {
                        topology.start_bookie().await?;
                    }
                    topology
                        .wait_registered(&keys::bookies_available_prefix(), topology.bookies.len())
                        .await?;
                }
                for _ in 0..topology.spec.brokers {
                    topology.add_broker().await?;
                }
            }
        }
        Ok(topology)
    }

    /// Where the processes' logs and data are.
    pub fn dir(&self) -> &Path {
        &self.path
    }

    /// The processes the sampler reads (kept current as faults act).
    pub fn watch_list(&self) -> WatchList {
        self.watch.clone()
    }

    fn watch(&self, process: &Process, metrics: bool) {
        if let Ok(mut w) = self.watch.lock() {
            w.push(Watched {
                name: process.name.clone(),
                pid: process.pid,
                metrics_url: metrics.then(|| format!("{}/metrics", process.http_url)),
            });
        }
    }

    fn unwatch(&self, pid: u32) {
        if let Ok(mut w) = self.watch.lock() {
            w.retain(|p| p.pid != pid);
        }
    }

    fn spawn(
        &self,
        name: &str,
        program: &Path,
        args: &[String],
        http_url: String,
        data_dir: Option<PathBuf>,
    ) -> Result<Process, TopologyError> {
        let log = self.path.join(format!("{name}.log"));
        let out = File::create(&log).map_err(io_error(format!("creating {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(io_error(format!("opening {}", log.display())))?;
        let child = child_command(program)
            .args(args)
            .env("MAGNETAR_LOG", &self.spec.log_filter)
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io_error(format!("starting {name} ({})", program.display())))?;
        Ok(Process {
            name: name.to_string(),
            pid: child.id(),
            child: Some(child),
            http_url,
            log,
            data_dir,
            paused: false,
        })
    }

    /// Polls `health` (an HTTP URL answering 2xx when ready) until it
    /// answers, the process exits, or [`READY_TIMEOUT`] passes.
    async fn wait_healthy(process: &mut Process, health: &str) -> Result<(), TopologyError> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = process.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    process.child = None;
                    return Err(TopologyError::Exited {
                        name: process.name.clone(),
                        status: status.to_string(),
                        log: log_tail(&process.log),
                    });
                }
            }
            let answer =
                tokio::time::timeout(Duration::from_secs(2), http.get(health).send()).await;
            if matches!(answer, Ok(Ok(ref r)) if r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(TopologyError::NotReady {
                    name: process.name.clone(),
                    log: log_tail(&process.log),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn start_etcd(&mut self) -> Result<(), TopologyError> {
        let etcd = which("etcd").ok_or(TopologyError::Missing("etcd"))?;
        if let Ok(out) = Command::new(&etcd).arg("--version").output() {
            let text = String::from_utf8_lossy(&out.stdout);
            if let Some(v) = text.lines().find_map(|l| l.strip_prefix("etcd Version: ")) {
                self.versions.push(("etcd".into(), v.trim().to_string()));
            }
        }
        let client = free_port()?;
        let peer = free_port()?;
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let args = vec![
            "--name=bench".to_string(),
            format!("--data-dir={}", self.path.join("etcd").display()),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=bench={peer_url}"),
        ];
        let mut process = self.spawn("etcd", &etcd, &args, client_url.clone(), None)?;
        Self::wait_healthy(&mut process, &format!("{client_url}/health")).await?;
        self.watch(&process, true);
        self.etcd = Some(process);
        self.metadata_url = Some(format!("etcd://127.0.0.1:{client}/bench"));
        Ok(())
    }

    async fn start_standalone(&mut self) -> Result<(), TopologyError> {
        let (listen, http, bookie, bookie_http) =
            (free_port()?, free_port()?, free_port()?, free_port()?);
        let data = self.path.join("standalone-data");
        let mut args = vec![
            "standalone".to_string(),
            format!("--data-dir={}", data.display()),
            format!("--listen=127.0.0.1:{listen}"),
            format!("--http=127.0.0.1:{http}"),
            format!("--bookie-listen=127.0.0.1:{bookie}"),
            format!("--bookie-http=127.0.0.1:{bookie_http}"),
        ];
        args.extend(self.spec.broker_args.iter().cloned());
        let http_url = format!("http://127.0.0.1:{http}");
        let mut process =
            self.spawn("standalone", &self.exe, &args, http_url.clone(), Some(data))?;
        Self::wait_healthy(&mut process, &format!("{http_url}/health")).await?;
        self.watch(&process, true);
        self.brokers.push(Broker {
            process,
            address: format!("127.0.0.1:{listen}"),
            replication_address: None,
        });
        Ok(())
    }

    fn metadata(&self) -> Result<&str, TopologyError> {
        self.metadata_url
            .as_deref()
            .ok_or_else(|| TopologyError::Metadata("this topology has no etcd".into()))
    }

    async fn start_bookie(&mut self) -> Result<(), TopologyError> {
        let index = self.bookies.len();
        let (grpc, http) = (free_port()?, free_port()?);
        let data = self.path.join(format!("bookie{index}"));
        let args = vec![
            "bookie".to_string(),
            format!("--metadata={}", self.metadata()?),
            format!("--data-dir={}", data.display()),
            format!("--listen=127.0.0.1:{grpc}"),
            format!("--http=127.0.0.1:{http}"),
            format!("--advertise=127.0.0.1:{grpc}"),
        ];
        let http_url = format!("http://127.0.0.1:{http}");
        let name = format!("bookie{index}");
        let mut process = self.spawn(&name, &self.exe, &args, http_url.clone(), Some(data))?;
        Self::wait_healthy(&mut process, &format!("{http_url}/health")).await?;
        self.watch(&process, true);
        self.bookies.push(process);
        Ok(())
    }

    /// Starts one more broker (also the `add-broker` fault) and waits until
    /// it is registered; returns its index.
    pub async fn add_broker(&mut self) -> Result<usize, TopologyError> {
        let index = self.brokers.len();
        let (listen, http) = (free_port()?, free_port()?);
        let p = self.spec.persistence;
        let mut args = vec![
            "broker".to_string(),
            format!("--metadata={}", self.metadata()?),
            format!("--listen=127.0.0.1:{listen}"),
            format!("--http=127.0.0.1:{http}"),
            format!("--ensemble-size={}", p.ensemble_size),
            format!("--write-quorum={}", p.write_quorum),
            format!("--ack-quorum={}", p.ack_quorum),
        ];
        if let Some(ttl) = self.spec.lease_ttl {
            args.push(format!("--lease-ttl={}ms", ttl.as_millis()));
        }
        let mut data_dir = None;
        let mut replication_address = None;
        if self.spec.kind == TopologyKind::Monolithic {
            let data = self.path.join(format!("broker{index}-data"));
            let replication = format!("127.0.0.1:{}", free_port()?);
            args.push("--architecture=monolithic".into());
            args.push(format!("--data-dir={}", data.display()));
            args.push(format!("--replication-listen={replication}"));
            if let Some(policy) = &self.spec.flush_policy {
                args.push(format!("--flush-policy={policy}"));
            }
            data_dir = Some(data);
            replication_address = Some(replication);
        }
        args.extend(self.spec.broker_args.iter().cloned());
        let http_url = format!("http://127.0.0.1:{http}");
        let name = format!("broker{index}");
        let mut process = self.spawn(&name, &self.exe, &args, http_url.clone(), data_dir)?;
        Self::wait_healthy(&mut process, &format!("{http_url}/health")).await?;
        self.watch(&process, true);
        self.brokers.push(Broker {
            process,
            address: format!("127.0.0.1:{listen}"),
            replication_address,
        });
        let live = self.brokers.iter().filter(|b| b.process.running()).count();
        self.wait_registered(&keys::brokers_available_prefix(), live)
            .await?;
        Ok(index)
    }

    /// Waits until at least `count` keys exist under `prefix`.
    async fn wait_registered(&self, prefix: &str, count: usize) -> Result<(), TopologyError> {
        let store = self.store().await?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match store.list(prefix).await {
                Ok(kvs) if kvs.len() >= count => return Ok(()),
                _ if Instant::now() > deadline => {
                    return Err(TopologyError::Metadata(format!(
                        "fewer than {count} registrations under {prefix} after {READY_TIMEOUT:?}"
                    )))
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// A client of the topology's etcd.
    pub async fn store(&self) -> Result<Arc<dyn MetadataStore>, TopologyError> {
        magnetar_metadata::connect(self.metadata()?)
            .await
            .map_err(|e| TopologyError::Metadata(e.to_string()))
    }

    /// Index of the broker whose id (`host:port`, or `pulsar://host:port`)
    /// is `id`, or whose replication address it is.
    pub fn broker_index(&self, id: &str) -> Option<usize> {
        let id = id.trim_start_matches("pulsar://").trim_end_matches('/');
        self.brokers
            .iter()
            .position(|b| b.address == id || b.replication_address.as_deref() == Some(id))
    }

    fn process_mut(&mut self, role: Role, index: usize) -> Result<&mut Process, TopologyError> {
        let found = match role {
            Role::Broker => self.brokers.get_mut(index).map(|b| &mut b.process),
            Role::Bookie => self.bookies.get_mut(index),
        };
        found.ok_or_else(|| TopologyError::NoSuchProcess(format!("{role:?} {index}")))
    }

    /// kill -9; returns the process's name.
    pub fn kill(&mut self, role: Role, index: usize) -> Result<String, TopologyError> {
        let process = self.process_mut(role, index)?;
        if !process.running() {
            return Err(TopologyError::NoSuchProcess(format!(
                "{} (already stopped)",
                process.name
            )));
        }
        let (name, pid) = (process.name.clone(), process.pid);
        process.kill9();
        self.unwatch(pid);
        Ok(name)
    }

    /// SIGSTOP (`stop`) or SIGCONT a broker or bookie.
    pub fn pause(&mut self, role: Role, index: usize, stop: bool) -> Result<String, TopologyError> {
        let process = self.process_mut(role, index)?;
        if !process.running() {
            return Err(TopologyError::NoSuchProcess(format!(
                "{} (not running)",
                process.name
            )));
        }
        let signal = if stop {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        };
        kill(Pid::from_raw(process.pid as i32), signal).map_err(|e| TopologyError::Io {
            what: format!("sending {signal} to {}", process.name),
            source: e.into(),
        })?;
        process.paused = stop;
        Ok(process.name.clone())
    }

    /// Bytes under a process's data directory (0 without one).
    pub fn data_bytes(&self, role: Role, index: usize) -> u64 {
        let dir = match role {
            Role::Broker => self
                .brokers
                .get(index)
                .and_then(|b| b.process.data_dir.clone()),
            Role::Bookie => self.bookies.get(index).and_then(|b| b.data_dir.clone()),
        };
        dir.map(|d| dir_bytes(&d)).unwrap_or(0)
    }

    fn all_processes(&mut self) -> impl Iterator<Item = &mut Process> {
        self.brokers
            .iter_mut()
            .map(|b| &mut b.process)
            .chain(self.bookies.iter_mut())
            .chain(self.etcd.iter_mut())
    }
}

/// Which kind of server a fault aims at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Broker,
    Bookie,
}

/// Total size of the files under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

impl Topology {
    /// Kills every process of the topology (also done on drop).
    pub fn shutdown(&mut self) {
        for process in self.all_processes() {
            process.kill9();
        }
        if let Ok(mut w) = self.watch.lock() {
            w.clear();
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_sizes_add_up_files_below() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("a")).expect("mkdir");
        std::fs::write(dir.path().join("a/x"), [0u8; 100]).expect("write");
        std::fs::write(dir.path().join("y"), [0u8; 20]).expect("write");
        assert_eq!(dir_bytes(dir.path()), 120);
        assert_eq!(dir_bytes(&dir.path().join("missing")), 0);
    }

    #[test]
    fn a_paused_child_is_killed_and_reaped() {
        let child = child_command(Path::new("/bin/sleep"))
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        let mut process = Process {
            name: "sleep".into(),
            pid,
            child: Some(child),
            http_url: String::new(),
            log: PathBuf::new(),
            data_dir: None,
            paused: false,
        };
        kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).expect("stop");
        process.paused = true;
        process.kill9();
        assert!(!process.running());
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "killed and waited for, so not even a zombie"
        );
    }
}
