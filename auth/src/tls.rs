//! Mutual TLS between brokers and the storage tier: what a bookie serves
//! with and what a broker connects to bookies with. A server given trust
//! roots requires every client to present a certificate they verify (the
//! certificate's subject common name is then the client's role, see
//! [`crate::peer`]); a client always verifies the server's certificate.

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// A TLS setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PeerTlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// PEM material of one side of a storage-tier connection.
#[derive(Clone, Debug)]
pub struct PeerTls {
    /// This side's certificate chain.
    certificate: Vec<u8>,
    key: Vec<u8>,
    /// CA certificates verifying the other side.
    trust: Option<Vec<u8>>,
}

fn read(path: &Path) -> Result<Vec<u8>, PeerTlsError> {
    std::fs::read(path).map_err(|source| PeerTlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

impl PeerTls {
    /// Loads PEM files: a certificate chain and its key, and optionally
    /// the CA certificates that verify the other side.
    pub fn load(
        certificate: &Path,
        key: &Path,
        trust: Option<&Path>,
    ) -> Result<PeerTls, PeerTlsError> {
        Ok(PeerTls {
            certificate: read(certificate)?,
            key: read(key)?,
            trust: trust.map(read).transpose()?,
        })
    }

    /// Whether the other side must present a certificate these roots
    /// verify (a server's mutual TLS).
    pub fn verifies_peers(&self) -> bool {
        self.trust.is_some()
    }

    fn identity(&self) -> Identity {
        Identity::from_pem(&self.certificate, &self.key)
    }

    /// A server's TLS: its identity, and client certificates required and
    /// verified against the trust roots if there are any.
    pub fn server_config(&self) -> ServerTlsConfig {
        let config = ServerTlsConfig::new().identity(self.identity());
        match &self.trust {
            Some(trust) => config.client_ca_root(Certificate::from_pem(trust)),
            None => config,
        }
    }

    /// A client's TLS: its identity (the server may require it), and the
    /// roots that verify the server, which a client must have.
    pub fn client_config(&self) -> Result<ClientTlsConfig, PeerTlsError> {
        let trust = self.trust.as_ref().ok_or_else(|| {
            PeerTlsError::Invalid(
                "TLS to the storage tier needs the CA certificates that verify it".into(),
            )
        })?;
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(trust))
            .identity(self.identity()))
    }
}
