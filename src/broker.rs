//! The token broker: a CI job proves who it is with its platform's OIDC ID
//! token, the broker checks its policy and exchanges its own workspace token
//! for a short-lived repo token for that one repo and permission.
//!
//! Stateless: the policy, the parent token and the issuers' keys in memory,
//! nothing on disk, any number of replicas. Who minted a token is written into
//! its record (ExchangeToken's `subject`: a keyed hash of issuer and subject
//! that only holders of the parent can compute), so any replica can check a
//! revocation. One JSON audit line per decision on stdout; never a token or an
//! ID token in it, in an answer or in a log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use time::format_description::well_known::Rfc3339;

use crate::api::{self, ApiError, ExchangeRequest};
use crate::oidc::{Identity, Verifier};
use crate::policy::{Ask, Policy};
use crate::secret::Secret;
use crate::token::Permission;

/// The audience ID tokens must be for, unless `--audience` says otherwise.
pub const DEFAULT_AUDIENCE: &str = "githosted-broker";
/// The address the broker listens on by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8700";
/// A request body's most bytes.
const MAX_REQUEST_BODY: usize = 16 * 1024;
/// Each API call's deadline.
const API_DEADLINE: Duration = Duration::from_secs(10);
/// Seconds a client should wait when the API is unavailable.
const RETRY_AFTER_SECS: u64 = 5;
/// Latency histogram buckets, seconds.
const BUCKETS: [f64; 8] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// What the broker needs to run.
pub struct Config {
    pub policy: Policy,
    pub audience: String,
    pub api_url: url::Url,
    pub parent: Secret,
}

/// The broker's state, shared by every request.
pub struct Broker {
    policy: Policy,
    verifier: Verifier,
    api: api::Client,
    parent: Secret,
    /// The parent's workspace slug, resolved on first use (`None`: the API cannot say).
    workspace: tokio::sync::OnceCell<Option<String>>,
    metrics: Metrics,
}

#[derive(Default)]
struct Metrics {
    issued: AtomicU64,
    checked: AtomicU64,
    refused: AtomicU64,
    revoked: AtomicU64,
    error: AtomicU64,
    exchanges: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_micros: AtomicU64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    repo: String,
    permission: String,
    ttl_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    id: String,
}

/// A refusal or failure: status, code, one line.
struct Failure {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Failure {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": self.code, "message": self.message}));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            return (
                self.status,
                [(header::RETRY_AFTER, RETRY_AFTER_SECS.to_string())],
                body,
            )
                .into_response();
        }
        (self.status, body).into_response()
    }
}

impl Broker {
    pub fn new(config: Config) -> Result<Broker, String> {
        let verifier = Verifier::new(&config.policy.issuers(), &config.audience)?;
        let host = config.api_url.host_str().unwrap_or("the API").to_owned();
        let api = api::Client::new(&config.api_url, &host, &api::Network::from_env())
            .map_err(|e| e.to_string())?;
        Ok(Broker {
            policy: config.policy,
            verifier,
            api,
            parent: config.parent,
            workspace: tokio::sync::OnceCell::new(),
            metrics: Metrics::default(),
        })
    }

    /// The HTTP routes.
    pub fn router(self: Arc<Self>) -> axum::Router {
        axum::Router::new()
            .route("/v1/token", post(token))
            .route("/v1/revoke", post(revoke))
            .route("/v1/check", post(check))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/metrics", get(metrics))
            .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY))
            .with_state(self)
    }

    /// The tag written into each minted token's record: only holders of the
    /// parent can compute it, and it names the identity that asked.
    fn owner_tag(&self, identity: &Identity) -> String {
        let mac = self.parent.keyed_hex(
            format!(
                "githosted-broker owner v1\n{}\n{}",
                identity.issuer, identity.subject
            )
            .as_bytes(),
        );
        format!("githosted-broker:{}", mac.get(..32).unwrap_or(&mac))
    }

    async fn identity(&self, headers: &HeaderMap) -> Result<Identity, Failure> {
        let value = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Failure::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "no Authorization: Bearer <OIDC ID token>",
                )
            })?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| {
                Failure::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "the Authorization header is not `Bearer <OIDC ID token>`",
                )
            })?;
        let token = Secret::new(token.trim().to_owned());
        self.verifier.verify(&token).await.map_err(|refusal| {
            Failure::new(
                StatusCode::UNAUTHORIZED,
                match refusal {
                    crate::oidc::Refusal::KeysUnavailable { .. } => "keys_unavailable",
                    _ => "invalid_token",
                },
                refusal.to_string(),
            )
        })
    }

    async fn parent_workspace(&self) -> Result<Option<String>, ApiError> {
        self.workspace
            .get_or_try_init(|| async {
                let deadline = api::deadline_in(API_DEADLINE);
                Ok(self
                    .api
                    .workspace_of(&self.parent, deadline)
                    .await?
                    .map(|w| w.slug))
            })
            .await
            .cloned()
    }

    fn observe(&self, started: Instant) {
        let secs = started.elapsed().as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.metrics.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.metrics.latency_count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.metrics
            .latency_micros
            .fetch_add(micros, Ordering::Relaxed);
    }
}

/// What an API failure means to a client.
fn api_failure(e: &ApiError) -> Failure {
    match e {
        ApiError::Status { status: 404, .. } => {
            Failure::new(StatusCode::NOT_FOUND, "unknown_repo", e.to_string())
        }
        e if e.is_transient() || matches!(e, ApiError::Unresolvable { .. }) => Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_unavailable",
            format!("{e}; try again in {RETRY_AFTER_SECS} s"),
        ),
        e => Failure::new(StatusCode::BAD_GATEWAY, "api_refused", e.to_string()),
    }
}

/// One audit line on stdout.
fn audit(fields: serde_json::Value) {
    let time = time::OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default();
    let mut line = json!({"time": time});
    if let (Some(line), serde_json::Value::Object(fields)) = (line.as_object_mut(), fields) {
        line.extend(fields);
    }
    println!("{line}");
}

async fn token(
    State(broker): State<Arc<Broker>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let started = Instant::now();
    let mut record = new_record("token");
    let outcome = issue(&broker, &headers, &body, &mut record).await;
    broker.finish(started, record, outcome, "issued", &broker.metrics.issued)
}

/// A new audit record for `action`, with a fresh request id.
fn new_record(action: &str) -> serde_json::Value {
    json!({"request_id": uuid::Uuid::new_v4().to_string(), "action": action})
}

impl Broker {
    /// Counts, audits and answers one request's outcome.
    fn finish(
        &self,
        started: Instant,
        mut record: serde_json::Value,
        outcome: Result<Response, Failure>,
        success: &str,
        successes: &AtomicU64,
    ) -> Response {
        self.observe(started);
        let response = match outcome {
            Ok(response) => {
                successes.fetch_add(1, Ordering::Relaxed);
                record["outcome"] = success.into();
                response
            }
            Err(f) => {
                let (name, counter) = if f.status.is_server_error() {
                    ("error", &self.metrics.error)
                } else {
                    ("refused", &self.metrics.refused)
                };
                counter.fetch_add(1, Ordering::Relaxed);
                record["outcome"] = name.into();
                record["status"] = f.status.as_u16().into();
                record["reason"] = f.message.clone().into();
                f.into_response()
            }
        };
        audit(record);
        response
    }
}

/// A request the policy allows: who, what, for how long.
struct Allowed {
    identity: Identity,
    repo: String,
    permission: Permission,
    rule: usize,
    ttl: u64,
}

/// `POST /v1/check`: the decision `/v1/token` would make, without minting (`doctor`).
async fn check(
    State(broker): State<Arc<Broker>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let started = Instant::now();
    let mut record = new_record("check");
    let outcome = authorize(&broker, &headers, &body, &mut record)
        .await
        .map(|allowed| {
            Json(json!({"allowed": true, "rule": allowed.rule, "ttl_seconds": allowed.ttl}))
                .into_response()
        });
    broker.finish(started, record, outcome, "checked", &broker.metrics.checked)
}

async fn issue(
    broker: &Broker,
    headers: &HeaderMap,
    body: &[u8],
    record: &mut serde_json::Value,
) -> Result<Response, Failure> {
    let Allowed {
        identity,
        repo,
        permission,
        ttl,
        ..
    } = authorize(broker, headers, body, record).await?;
    let subject = broker.owner_tag(&identity);
    broker.metrics.exchanges.fetch_add(1, Ordering::Relaxed);
    let minted = broker
        .api
        .exchange_token(
            &broker.parent,
            &ExchangeRequest {
                repo_allowlist: vec![&repo],
                permission,
                ttl_seconds: ttl,
                subject: &subject,
            },
            api::deadline_in(API_DEADLINE),
        )
        .await
        .map_err(|e| api_failure(&e))?;
    let expires_at = time::OffsetDateTime::from_unix_timestamp(minted.expires_at)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default();
    record["token_id"] = minted.record.id.clone().into();
    record["fingerprint"] = minted.token.fingerprint().into();
    record["ttl_seconds"] = ttl.into();
    let body = zeroize::Zeroizing::new(
        json!({"token": minted.token.expose(), "expires_at": expires_at, "id": minted.record.id})
            .to_string(),
    );
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.as_str().to_owned(),
    )
        .into_response())
}

/// Checks the ID token, the request and the policy (and that the repo is in
/// the parent's workspace); the API is asked nothing else.
async fn authorize(
    broker: &Broker,
    headers: &HeaderMap,
    body: &[u8],
    record: &mut serde_json::Value,
) -> Result<Allowed, Failure> {
    let identity = broker.identity(headers).await?;
    record["issuer"] = identity.issuer.clone().into();
    record["subject"] = identity.subject.clone().into();
    let request: TokenRequest = serde_json::from_slice(body).map_err(|e| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("the body is not {{\"repo\": \"WS/REPO\", \"permission\": \"read\"|\"write\", \"ttl_seconds\": N}}: {e}"),
        )
    })?;
    record["repo"] = request.repo.clone().into();
    record["permission"] = request.permission.clone().into();
    let permission = match request.permission.as_str() {
        "read" => Permission::Read,
        "write" => Permission::Write,
        other => {
            return Err(Failure::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!(
                    "permission {:?} is neither \"read\" nor \"write\"",
                    crate::ui::printable(other, 32)
                ),
            ));
        }
    };
    let (workspace, repo) = request
        .repo
        .split_once('/')
        .filter(|(w, r)| !w.is_empty() && !r.is_empty() && !r.contains('/'))
        .ok_or_else(|| {
            Failure::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "repo must be WS/REPO",
            )
        })?;
    let rule = broker
        .policy
        .decide(&Ask {
            issuer: &identity.issuer,
            subject: &identity.subject,
            claims: &identity.claims,
            repo: &request.repo,
            permission,
        })
        .map_err(|denied| {
            Failure::new(
                StatusCode::FORBIDDEN,
                match denied.dimension {
                    crate::policy::Dimension::Subject => "subject_not_allowed",
                    crate::policy::Dimension::Repo => "repo_not_allowed",
                    crate::policy::Dimension::Permission => "permission_not_allowed",
                },
                denied.message,
            )
        })?;
    record["rule"] = rule.number.into();
    let ttl = request
        .ttl_seconds
        .filter(|t| *t > 0)
        .unwrap_or(rule.max_ttl_seconds)
        .min(rule.max_ttl_seconds);
    // The parent's repo slugs are relative to its workspace: never mint for another.
    match broker.parent_workspace().await {
        Ok(Some(ours)) if ours != workspace => {
            return Err(Failure::new(
                StatusCode::FORBIDDEN,
                "repo_not_allowed",
                format!("this broker's token is for workspace {ours}, not {workspace}"),
            ));
        }
        Ok(_) => {}
        Err(e) => return Err(api_failure(&e)),
    }
    Ok(Allowed {
        repo: repo.to_owned(),
        identity,
        permission,
        rule: rule.number,
        ttl,
    })
}

async fn revoke(
    State(broker): State<Arc<Broker>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let started = Instant::now();
    let mut record = new_record("revoke");
    let outcome = revoke_one(&broker, &headers, &body, &mut record)
        .await
        .map(|()| (StatusCode::OK, Json(json!({}))).into_response());
    broker.finish(started, record, outcome, "revoked", &broker.metrics.revoked)
}

async fn revoke_one(
    broker: &Broker,
    headers: &HeaderMap,
    body: &[u8],
    record: &mut serde_json::Value,
) -> Result<(), Failure> {
    let identity = broker.identity(headers).await?;
    record["issuer"] = identity.issuer.clone().into();
    record["subject"] = identity.subject.clone().into();
    let request: RevokeRequest = serde_json::from_slice(body).map_err(|e| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("the body is not {{\"id\": \"…\"}}: {e}"),
        )
    })?;
    record["token_id"] = request.id.clone().into();
    let tag = broker.owner_tag(&identity);
    let deadline = api::deadline_in(API_DEADLINE);
    // Find the record: it says who it was minted for.
    let mut page = String::new();
    let found = loop {
        let list = broker
            .api
            .list_tokens_page(&broker.parent, 100, &page, deadline)
            .await
            .map_err(|e| api_failure(&e))?;
        if let Some(r) = list.tokens.into_iter().find(|r| r.id == request.id) {
            break Some(r);
        }
        match list.next_page_token.filter(|t| !t.is_empty()) {
            Some(next) => page = next,
            None => break None,
        }
    };
    let owned = found.is_some_and(|r| r.name.contains(&tag));
    if !owned {
        // The same answer whether the token does not exist or is another's.
        return Err(Failure::new(
            StatusCode::FORBIDDEN,
            "not_yours",
            "no token with this id was minted by this broker for your identity",
        ));
    }
    broker
        .api
        .revoke_token(&broker.parent, &request.id, deadline)
        .await
        .map_err(|e| api_failure(&e))
}

async fn metrics(State(broker): State<Arc<Broker>>) -> Response {
    let m = &broker.metrics;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut out = String::from(
        "# HELP githosted_broker_requests_total Requests by outcome.\n# TYPE githosted_broker_requests_total counter\n",
    );
    for (outcome, counter) in [
        ("issued", &m.issued),
        ("checked", &m.checked),
        ("refused", &m.refused),
        ("revoked", &m.revoked),
        ("error", &m.error),
    ] {
        out.push_str(&format!(
            "githosted_broker_requests_total{{outcome=\"{outcome}\"}} {}\n",
            load(counter)
        ));
    }
    out.push_str(&format!(
        "# HELP githosted_broker_exchanges_total ExchangeToken calls.\n# TYPE githosted_broker_exchanges_total counter\ngithosted_broker_exchanges_total {}\n",
        load(&m.exchanges)
    ));
    out.push_str(&format!(
        "# HELP githosted_broker_jwks_refreshes_total Fetches of issuers' keys.\n# TYPE githosted_broker_jwks_refreshes_total counter\ngithosted_broker_jwks_refreshes_total {}\n",
        broker.verifier.refreshes()
    ));
    out.push_str("# HELP githosted_broker_request_seconds Request latency.\n# TYPE githosted_broker_request_seconds histogram\n");
    for (i, bound) in BUCKETS.iter().enumerate() {
        out.push_str(&format!(
            "githosted_broker_request_seconds_bucket{{le=\"{bound}\"}} {}\n",
            load(&m.buckets[i])
        ));
    }
    let count = load(&m.latency_count);
    out.push_str(&format!(
        "githosted_broker_request_seconds_bucket{{le=\"+Inf\"}} {count}\ngithosted_broker_request_seconds_sum {}\ngithosted_broker_request_seconds_count {count}\n",
        load(&m.latency_micros) as f64 / 1e6
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// Whether `addr` may serve plain HTTP without `--behind-proxy`.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// Serves until the process is stopped, over TLS when `tls` is given; prints
/// `listening on URL` on stderr first.
pub async fn serve(
    broker: Broker,
    listen: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let router = Arc::new(broker).router();
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match tls {
        None => {
            eprintln!("git-credential-githosted broker: listening on http://{addr}");
            axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await
        }
        Some(config) => {
            eprintln!("git-credential-githosted broker: listening on https://{addr}");
            axum::serve(tls::Listener::new(listener, config), router)
                .with_graceful_shutdown(stop)
                .await
        }
    }
}

/// TLS for the broker: certificates from PEM files, handshakes in their own
/// tasks (a slow client never holds up the others), each within a deadline.
pub mod tls {
    use std::net::SocketAddr;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::sync::mpsc;
    use tokio_rustls::server::TlsStream;

    /// The longest a TLS handshake may take.
    const HANDSHAKE: Duration = Duration::from_secs(10);
    /// Handshaken connections waiting for the server.
    const BACKLOG: usize = 128;

    /// A server configuration from a PEM certificate chain and its key.
    pub fn config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<_, _>>())
            .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "--tls-cert {}: no certificate in it",
                cert.display()
            ));
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| format!("--tls-cert and --tls-key do not go together: {e}"))?;
        Ok(Arc::new(config))
    }

    /// Accepts TCP connections, handshakes each in a task, hands the
    /// finished ones to the server.
    pub struct Listener {
        addr: SocketAddr,
        ready: mpsc::Receiver<(TlsStream<tokio::net::TcpStream>, SocketAddr)>,
    }

    impl Listener {
        pub fn new(tcp: tokio::net::TcpListener, config: Arc<rustls::ServerConfig>) -> Listener {
            let addr = tcp
                .local_addr()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
            let (tx, ready) = mpsc::channel(BACKLOG);
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            tokio::spawn(async move {
                loop {
                    let (stream, peer) = match tcp.accept().await {
                        Ok(accepted) => accepted,
                        // Out of file descriptors and the like: breathe, go on.
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let (acceptor, tx) = (acceptor.clone(), tx.clone());
                    tokio::spawn(async move {
                        if let Ok(Ok(tls)) =
                            tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await
                        {
                            let _ = tx.send((tls, peer)).await;
                        }
                    });
                }
            });
            Listener { addr, ready }
        }
    }

    impl axum::serve::Listener for Listener {
        type Io = TlsStream<tokio::net::TcpStream>;
        type Addr = SocketAddr;

        async fn accept(&mut self) -> (Self::Io, Self::Addr) {
            loop {
                if let Some(next) = self.ready.recv().await {
                    return next;
                }
                // The acceptor task is gone (it never ends on its own): wait for shutdown.
                std::future::pending::<()>().await;
            }
        }

        fn local_addr(&self) -> std::io::Result<Self::Addr> {
            Ok(self.addr)
        }
    }
}
