//! `magnetar admin`: pulsar-admin's verbs over the broker's admin REST API
//! at `--admin-url`. Answers are printed as JSON; a refusal prints the
//! broker's reason on stderr and exits with status 1. It only speaks HTTP
//! to a broker, never to metadata or bookies.

mod clusters;
mod namespaces;
mod subscriptions;
mod tenants;
mod topics;
pub(crate) mod units;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use reqwest::header::{CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};
use serde_json::Value;

#[derive(Args, Debug)]
pub struct AdminArgs {
    /// The broker's HTTP (admin REST) address.
    #[arg(
        long = "admin-url",
        visible_alias = "url",
        env = "MAGNETAR_ADMIN_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub admin_url: String,
    /// Token sent as `Authorization: Bearer` when the broker has auth on.
    #[arg(
        long,
        env = "MAGNETAR_AUTH_TOKEN",
        global = true,
        hide_env_values = true
    )]
    pub auth_token: Option<String>,
    /// File holding the token (as `pulsar tokens create` prints it).
    #[arg(long, global = true, conflicts_with = "auth_token")]
    pub auth_token_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Tenants: create, list, get, delete.
    #[command(subcommand)]
    Tenants(tenants::TenantsCommand),
    /// Namespaces and their policies.
    #[command(subcommand)]
    Namespaces(namespaces::NamespacesCommand),
    /// Persistent topics, partitioned topics, subscriptions and stats.
    #[command(subcommand)]
    Topics(topics::TopicsCommand),
    /// Clusters: list, get.
    #[command(subcommand)]
    Clusters(clusters::ClustersCommand),
    /// Brokers: list, leader-broker, healthcheck, namespaces.
    #[command(subcommand)]
    Brokers(clusters::BrokersCommand),
    /// Bookies: list-bookies, racks-info, decommission, cancel-decommission, recovery.
    #[command(subcommand)]
    Bookies(clusters::BookiesCommand),
}

/// Runs one admin command. A failure (a refusal, or no broker at the URL)
/// is one line on stderr and exit status 1, as pulsar-admin does, rather
/// than an error report with a backtrace.
pub async fn run(args: AdminArgs) -> Result<()> {
    let token = match (&args.auth_token, &args.auth_token_file) {
        (Some(token), _) => Some(token.trim().to_string()),
        (None, Some(file)) => Some(
            std::fs::read_to_string(file)
                .with_context(|| format!("reading the token file {}", file.display()))?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    let client = AdminClient::new(&args.admin_url, token);
    let result = match args.command {
        AdminCommand::Tenants(cmd) => tenants::run(&client, cmd).await,
        AdminCommand::Namespaces(cmd) => namespaces::run(&client, cmd).await,
        AdminCommand::Topics(cmd) => topics::run(&client, cmd).await,
        AdminCommand::Clusters(cmd) => clusters::run_clusters(&client, cmd).await,
        AdminCommand::Brokers(cmd) => clusters::run_brokers(&client, cmd).await,
        AdminCommand::Bookies(cmd) => clusters::run_bookies(&client, cmd).await,
    };
    if let Err(e) = result {
        eprintln!("{e:#}");
        std::process::exit(1);
    }
    Ok(())
}

/// Redirects (to a topic's owner, or through the load manager) one admin
/// call follows at most.
const MAX_REDIRECTS: usize = 5;

/// Requests to `/admin/v2/...` of one broker.
pub struct AdminClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl AdminClient {
    /// `url` is `http://host:port`; a bare `host:port` means http.
    pub(crate) fn new(url: &str, token: Option<String>) -> Self {
        let url = url.trim_end_matches('/');
        let url = if url.contains("://") {
            url.to_string()
        } else {
            format!("http://{url}")
        };
        // Redirects are followed by `call_raw`, which keeps the token:
        // reqwest drops `Authorization` on a redirect to another port, and
        // brokers redirect topic requests to the topic's owner.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        AdminClient {
            http,
            base: format!("{url}/admin/v2"),
            token,
        }
    }

    /// `host:port` of the broker this client talks to.
    fn host_port(&self) -> &str {
        let url = self.base.trim_end_matches("/admin/v2");
        url.split_once("://").map_or(url, |(_, rest)| rest)
    }

    /// Sends the request; the JSON answer, `None` for an empty one (Pulsar
    /// answers changes, and reads of unset policies, with 204).
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Option<Value>> {
        let url = format!("{}/{path}", self.base);
        let bytes = self.call_raw(method.clone(), path, body).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("{method} {url} answered with something other than JSON"))
    }

    /// Sends the request; the answer's body as sent, or the refusal as an
    /// error.
    async fn call_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<bytes::Bytes> {
        let (status, bytes) = self.send(method, path, body).await?;
        if !status.is_success() {
            bail!("{status}: {}", reason(&bytes));
        }
        Ok(bytes)
    }

    /// Sends the request, following redirects; the final status and body.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, bytes::Bytes)> {
        let mut url = format!("{}/{path}", self.base);
        let body = body.map(serde_json::to_vec).transpose()?;
        let mut hops = 0;
        let response = loop {
            let mut request = self.http.request(method.clone(), &url);
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            if let Some(body) = &body {
                request = request
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            let response = request
                .send()
                .await
                .with_context(|| format!("{method} {url}"))?;
            let redirect = matches!(
                response.status(),
                StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT
            );
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .map(str::to_string);
            match location {
                Some(next) if redirect && hops < MAX_REDIRECTS => {
                    hops += 1;
                    url = next;
                }
                _ => break response,
            }
        };
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .with_context(|| format!("reading the answer to {method} {url}"))?;
        Ok((status, bytes))
    }

    /// A PUT that creates something: true if created, false if it already
    /// existed (409), an error for any other refusal.
    pub(crate) async fn put_if_absent(&self, path: &str, body: Option<&Value>) -> Result<bool> {
        let (status, bytes) = self.send(Method::PUT, path, body).await?;
        match status {
            StatusCode::CONFLICT => Ok(false),
            s if s.is_success() => Ok(true),
            s => bail!("PUT {path}: {s}: {}", reason(&bytes)),
        }
    }

    /// A GET whose answer is text (`brokers/health`).
    async fn get_text(&self, path: &str) -> Result<String> {
        let bytes = self.call_raw(Method::GET, path, None).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A POST without a body (Pulsar's cursor operations).
    async fn post_empty(&self, path: &str) -> Result<Option<Value>> {
        self.call(Method::POST, path, None).await
    }

    pub(crate) async fn get(&self, path: &str) -> Result<Option<Value>> {
        self.call(Method::GET, path, None).await
    }

    pub(crate) async fn put(&self, path: &str, body: Option<&Value>) -> Result<Option<Value>> {
        self.call(Method::PUT, path, body).await
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> Result<Option<Value>> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub(crate) async fn delete(&self, path: &str) -> Result<Option<Value>> {
        self.call(Method::DELETE, path, None).await
    }
}

/// The broker's reason for a refusal: Pulsar's `{"reason": ...}`, else the
/// body as text.
fn reason(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("reason").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string())
}

/// Prints an answer as JSON; an empty answer to a read prints `null`.
fn print(answer: Option<Value>) -> Result<()> {
    let value = answer.unwrap_or(Value::Null);
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

/// One name as a URL path segment, percent-encoded (subscription names
/// may hold any character; topic names may hold `%`).
fn segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~:=".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `tenant/namespace` as a URL path.
fn namespace_path(namespace: &str) -> Result<String> {
    match namespace.split('/').collect::<Vec<_>>().as_slice() {
        [tenant, ns] if !tenant.is_empty() && !ns.is_empty() => {
            Ok(format!("{}/{}", segment(tenant), segment(ns)))
        }
        _ => bail!("expected a namespace as tenant/namespace, got {namespace:?}"),
    }
}

/// A topic name (`persistent://t/ns/topic`, `t/ns/topic` or just `topic` in
/// public/default) as the URL path `persistent/t/ns/topic`.
fn topic_path(topic: &str) -> Result<String> {
    let rest = if let Some(rest) = topic.strip_prefix("persistent://") {
        rest.to_string()
    } else if topic.contains("://") {
        bail!("only persistent:// topics exist here, got {topic:?}");
    } else if topic.contains('/') {
        topic.to_string()
    } else {
        format!("public/default/{topic}")
    };
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        [tenant, ns, local] if !tenant.is_empty() && !ns.is_empty() && !local.is_empty() => {
            Ok(format!(
                "persistent/{}/{}/{}",
                segment(tenant),
                segment(ns),
                segment(local)
            ))
        }
        _ => bail!("expected a topic as persistent://tenant/namespace/topic, got {topic:?}"),
    }
}

/// `?force=true` when forced.
fn force_query(force: bool) -> &'static str {
    if force {
        "?force=true"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_become_paths() {
        assert_eq!(
            topic_path("persistent://acme/orders/in").unwrap(),
            "persistent/acme/orders/in"
        );
        assert_eq!(topic_path("a/b/c").unwrap(), "persistent/a/b/c");
        assert_eq!(
            topic_path("hello").unwrap(),
            "persistent/public/default/hello"
        );
        assert_eq!(topic_path("a/b/x%y").unwrap(), "persistent/a/b/x%25y");
        for bad in [
            "non-persistent://a/b/c",
            "a/b",
            "a/b/c/d",
            "persistent://a//c",
        ] {
            assert!(topic_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("sub-1_a.b:c=d"), "sub-1_a.b:c=d");
        assert_eq!(segment("a b/c?d%"), "a%20b%2Fc%3Fd%25");
        assert_eq!(segment("é"), "%C3%A9");
    }

    #[test]
    fn namespace_names_become_paths() {
        assert_eq!(namespace_path("acme/orders").unwrap(), "acme/orders");
        assert!(namespace_path("acme").is_err());
        assert!(namespace_path("a/b/c").is_err());
        assert!(namespace_path("/b").is_err());
    }

    #[test]
    fn admin_urls() {
        let client = AdminClient::new("http://127.0.0.1:8080/", None);
        assert_eq!(client.base, "http://127.0.0.1:8080/admin/v2");
        assert_eq!(client.host_port(), "127.0.0.1:8080");
        let bare = AdminClient::new("b1:8080", None);
        assert_eq!(bare.base, "http://b1:8080/admin/v2");
        assert_eq!(bare.host_port(), "b1:8080");
    }

    #[test]
    fn refusal_reasons() {
        assert_eq!(
            reason(br#"{"reason": "Tenant acme already exists"}"#),
            "Tenant acme already exists"
        );
        assert_eq!(reason(b"plain text\n"), "plain text");
    }
}
