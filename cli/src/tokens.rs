//! `magnetar tokens`: keys and tokens for token authentication, as `pulsar
//! tokens` makes them (HS256 under a shared secret, RS256 under a private
//! key). Also reads the keys `magnetar broker --token-*-key` takes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine;
use clap::{ArgGroup, Subcommand};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use magnetar_broker::auth::{decode_secret_key, TokenVerifier};

#[derive(Subcommand, Debug)]
pub enum TokensCommand {
    /// A random 32-byte HS256 secret key, base64-encoded.
    CreateSecretKey {
        /// Write the key to this file (created readable by its owner only)
        /// instead of printing it.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// With --output: leave an existing file as it is, so that an init
        /// container can run this at every start.
        #[arg(long, requires = "output")]
        if_missing: bool,
    },
    /// A token whose role (subject) is `--subject`.
    #[command(group(ArgGroup::new("key").required(true).args(["secret_key", "private_key"])))]
    Create {
        /// HS256 secret key: a file, or `base64:<key>` inline.
        #[arg(long)]
        secret_key: Option<String>,
        /// RS256 private key (PEM file).
        #[arg(long)]
        private_key: Option<PathBuf>,
        /// The role the token carries.
        #[arg(long)]
        subject: String,
        /// The token expires this long from now, e.g. 1h, 7d [default: never].
        #[arg(long, value_parser = humantime::parse_duration)]
        expiry_time: Option<Duration>,
        /// Write the token to this file (created readable by its owner
        /// only) instead of printing it.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// With --output: leave an existing file as it is.
        #[arg(long, requires = "output")]
        if_missing: bool,
    },
}

pub fn run(command: TokensCommand) -> Result<()> {
    match command {
        TokensCommand::CreateSecretKey { output, if_missing } => {
            if if_missing && output.as_deref().is_some_and(Path::exists) {
                return Ok(());
            }
            let key: [u8; 32] = rand::random();
            let text = base64::engine::general_purpose::STANDARD.encode(key);
            match output {
                Some(path) => write_private(&path, &text)?,
                None => println!("{text}"),
            }
        }
        TokensCommand::Create {
            secret_key,
            private_key,
            subject,
            expiry_time,
            output,
            if_missing,
        } => {
            if if_missing && output.as_deref().is_some_and(Path::exists) {
                return Ok(());
            }
            let (algorithm, key) = match (secret_key, private_key) {
                (Some(secret), _) => (
                    Algorithm::HS256,
                    EncodingKey::from_secret(&load_secret_key(&secret)?),
                ),
                (None, Some(pem)) => {
                    let bytes = std::fs::read(&pem)
                        .with_context(|| format!("reading the private key {}", pem.display()))?;
                    let key = EncodingKey::from_rsa_pem(&bytes).with_context(|| {
                        format!("{} is not an RSA private key in PEM", pem.display())
                    })?;
                    (Algorithm::RS256, key)
                }
                (None, None) => bail!("give --secret-key or --private-key"),
            };
            anyhow::ensure!(!subject.is_empty(), "--subject must not be empty");
            let mut claims = serde_json::json!({ "sub": subject });
            if let Some(expiry) = expiry_time {
                claims["exp"] = (jsonwebtoken::get_current_timestamp() + expiry.as_secs()).into();
            }
            let token = jsonwebtoken::encode(&Header::new(algorithm), &claims, &key)
                .context("signing the token")?;
            match output {
                Some(path) => write_private(&path, &token)?,
                None => println!("{token}"),
            }
        }
    }
    Ok(())
}

/// A secret key given as `base64:<key>` or as a file (`file://` optional)
/// holding it in base64 or raw.
pub fn load_secret_key(arg: &str) -> Result<Vec<u8>> {
    let key = if let Some(inline) = arg.strip_prefix("base64:") {
        base64::engine::general_purpose::STANDARD
            .decode(inline.trim())
            .context("the base64: secret key is not valid base64")?
    } else {
        let path = arg.strip_prefix("file://").unwrap_or(arg);
        let stored =
            std::fs::read(path).with_context(|| format!("reading the secret key file {path}"))?;
        decode_secret_key(&stored)
    };
    anyhow::ensure!(!key.is_empty(), "the secret key is empty");
    Ok(key)
}

/// The verifier of `--token-secret-key` (a file or `base64:<key>`) or
/// `--token-public-key` (an RS256 PEM file); `None` when neither is given.
pub fn load_verifier(
    secret_key: Option<&str>,
    public_key: Option<&Path>,
) -> Result<Option<TokenVerifier>> {
    Ok(Some(match (secret_key, public_key) {
        (None, None) => return Ok(None),
        (Some(secret), None) => TokenVerifier::hs256(&load_secret_key(secret)?)?,
        (None, Some(pem)) => {
            let bytes = std::fs::read(pem)
                .with_context(|| format!("reading the token public key {}", pem.display()))?;
            TokenVerifier::rs256_pem(&bytes)
                .with_context(|| format!("token public key {}", pem.display()))?
        }
        (Some(_), Some(_)) => bail!("give one of --token-secret-key and --token-public-key"),
    }))
}

/// A token given inline or as `file:PATH` (Pulsar's `file:///path` also
/// works), trimmed of the newline a file ends with.
pub fn load_token(arg: &str) -> Result<String> {
    let token = match arg.strip_prefix("file:") {
        Some(path) => {
            let path = path.strip_prefix("//").unwrap_or(path);
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the token file {path}"))?
        }
        None => arg.to_string(),
    };
    let token = token.trim();
    anyhow::ensure!(!token.is_empty(), "the token is empty");
    Ok(token.to_string())
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(file, "{text}").with_context(|| format!("writing {}", path.display()))
}
