//! `GET /admin/v2/openapi.json`: the OpenAPI 3 description of every admin
//! route. The document is hand-maintained in
//! `broker/src/admin/openapi.json` and compiled into the binary; the test
//! below checks that every path it names is routed, so a route renamed or
//! removed without the document fails the build's tests.

use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::topic::BrokerService;

/// The document, as stored in the repository.
pub(super) const OPENAPI_JSON: &str = include_str!("../openapi.json");

pub(super) fn routes() -> Router<Arc<BrokerService>> {
    Router::new().route("/admin/v2/openapi.json", get(document))
}

async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::admin::testing::broker;

    /// Routes the ownership work adds (bundles, load report); they are
    /// documented already and checked once they exist.
    const ADDED_ELSEWHERE: [(&str, &str); 5] = [
        ("get", "/admin/v2/namespaces/{tenant}/{namespace}/bundles"),
        ("put", "/admin/v2/namespaces/{tenant}/{namespace}/unload"),
        (
            "put",
            "/admin/v2/namespaces/{tenant}/{namespace}/{bundle}/unload",
        ),
        (
            "put",
            "/admin/v2/namespaces/{tenant}/{namespace}/{bundle}/split",
        ),
        ("get", "/admin/v2/broker-stats/load-report"),
    ];

    /// Every (method, path) the document describes.
    fn documented() -> Vec<(String, String)> {
        let doc: Value = serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON");
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
        let paths = doc["paths"].as_object().expect("paths");
        let mut all = Vec::new();
        for (path, item) in paths {
            for method in item.as_object().expect("path item").keys() {
                all.push((method.clone(), path.clone()));
            }
        }
        all
    }

    /// `path` with every `{parameter}` replaced by a name no handler
    /// accepts (a space, encoded), so no request changes anything: each is
    /// refused by its handler's validation, which proves it was routed.
    fn concrete(path: &str) -> String {
        let mut out = String::new();
        let mut rest = path;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let close = rest[open..].find('}').expect("closed parameter") + open;
            out.push_str("bad%20name");
            rest = &rest[close + 1..];
        }
        out.push_str(rest);
        out
    }

    /// One HTTP/1.1 request; the status and the body (after the headers).
    async fn call(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, Vec<u8>) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "{} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            method.to_ascii_uppercase()
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("read");
        let text = String::from_utf8_lossy(&answer);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let body = match answer.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(at) => answer[at + 4..].to_vec(),
            None => Vec::new(),
        };
        (status, body)
    }

    /// axum's own "no such route" / "no such method" answers: 404 or 405
    /// with an empty body (every handler's refusal carries a JSON reason).
    fn unrouted(status: u16, body: &[u8]) -> bool {
        (status == 404 || status == 405) && body.iter().all(u8::is_ascii_whitespace)
    }

    #[test]
    fn document_is_unique_and_complete_for_this_api() {
        let all = documented();
        let unique: BTreeSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len());
        for expected in [
            ("get", "/admin/v2/tenants"),
            ("post", "/admin/v2/persistent/{tenant}/{namespace}/{topic}/subscription/{subscription}/resetcursor/{timestamp}"),
            ("get", "/admin/v2/clusters/{cluster}"),
            ("get", "/admin/v2/brokers/health"),
            ("get", "/admin/v2/bookies/all"),
            ("get", "/admin/v2/openapi.json"),
        ] {
            assert!(
                all.contains(&(expected.0.to_string(), expected.1.to_string())),
                "{expected:?} is not documented"
            );
        }
        for added in ADDED_ELSEWHERE {
            assert!(
                all.contains(&(added.0.to_string(), added.1.to_string())),
                "{added:?} is not documented"
            );
        }
    }

    #[tokio::test]
    async fn every_documented_route_is_routed() {
        let broker = broker().await;
        let router = crate::admin::router(broker.service.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });

        let mut checked = 0;
        for (method, path) in documented() {
            let (status, body) = call(addr, &method, &concrete(&path)).await;
            let added_elsewhere = ADDED_ELSEWHERE
                .iter()
                .any(|(m, p)| *m == method && *p == path);
            if added_elsewhere && unrouted(status, &body) {
                // Not merged yet: documented ahead of its handler.
                continue;
            }
            assert!(
                !unrouted(status, &body),
                "{} {path} is documented but not routed ({status})",
                method.to_ascii_uppercase()
            );
            checked += 1;
        }
        assert!(checked >= documented().len() - ADDED_ELSEWHERE.len());

        // A path nobody routes is told apart.
        let (status, body) = call(addr, "get", "/admin/v2/no-such-thing").await;
        assert!(unrouted(status, &body));
        // The document itself is served as JSON.
        let (status, body) = call(addr, "get", "/admin/v2/openapi.json").await;
        assert_eq!(status, 200);
        let served: Value = serde_json::from_slice(&body).expect("served JSON");
        assert!(served["paths"]["/admin/v2/openapi.json"].is_object());
        server.abort();
    }

    #[test]
    fn parameters_become_refused_names() {
        assert_eq!(
            concrete("/admin/v2/clusters/{cluster}/x/{b}"),
            "/admin/v2/clusters/bad%20name/x/bad%20name"
        );
        assert_eq!(concrete("/admin/v2/tenants"), "/admin/v2/tenants");
    }
}
