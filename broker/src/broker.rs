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
//!
//! Fails closed: the broker knows its workspace before it serves (`--workspace`,
//! or the API's `ListWorkspaces`) and never mints for another; revoking needs
//! the handle `/v1/token` returned (an HMAC keyed from the parent, so any
//! replica checks any replica's) and costs one API call; identities no rule
//! allows are refused before any API call, and rate-limited; connections are
//! capped and each request is bounded in time.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use time::format_description::well_known::Rfc3339;

use crate::api::{self, ApiError, ExchangeRequest};
use crate::net;
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
/// The longest a client may take to send a request's head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a request may take, body and answer included (longer than
/// the API's deadline, so a slow API still gets its JSON 503).
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(25);
/// Connections served in full at once; beyond them a connection only gets
/// `/healthz` (everything else: 503 + `Retry-After`), with a short head deadline.
pub const MAX_CONNECTIONS: usize = 1024;
/// The head deadline of a connection beyond [`MAX_CONNECTIONS`].
const SHED_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Seconds a client over the connection cap should wait.
const SHED_RETRY_AFTER_SECS: u64 = 1;
/// Rate limit per identity on `/v1/revoke` and on refused identities: burst, per second.
const LIMIT_BURST: f64 = 20.0;
const LIMIT_PER_SECOND: f64 = 2.0;
/// The most identities a rate limiter remembers.
const LIMIT_KEYS: usize = 10_000;

/// What the broker needs to run.
pub struct Config {
    pub policy: Policy,
    pub audience: String,
    pub api_url: url::Url,
    pub parent: Secret,
    /// `--workspace`: the workspace of the parent, as declared.
    pub workspace: Option<String>,
    /// Where the parent came from, for messages (`--token-file PATH`, `GITHOSTED_TOKEN`, …).
    pub parent_source: String,
}

/// The broker's state, shared by every request.
pub struct Broker {
    policy: Policy,
    verifier: Verifier,
    api: api::Client,
    parent: Secret,
    /// The parent's workspace slug: declared or the API's, never unknown.
    workspace: String,
    /// The workspace's id, when the API said (checked against minted records).
    workspace_id: Option<String>,
    /// The key of revocation handles, derived from the parent.
    handle_key: Secret,
    /// The API answered 401 for the parent: `/healthz` says 503.
    parent_refused: AtomicBool,
    /// Per identity: `/v1/revoke`, and identities no rule allows.
    revoke_limit: RateLimit,
    refused_limit: RateLimit,
    /// Lines to print once the broker listens (the shared audience, an API
    /// that could not be asked at start).
    warnings: Vec<String>,
    metrics: Metrics,
}

/// A token bucket per key.
struct RateLimit {
    buckets: std::sync::Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimit {
    fn new() -> RateLimit {
        RateLimit {
            buckets: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Takes one from `key`'s bucket; `Err(seconds to wait)` when it is empty.
    fn take(&self, key: &str) -> Result<(), u64> {
        let Ok(mut buckets) = self.buckets.lock() else {
            return Err(1);
        };
        let now = Instant::now();
        let refill = |(level, at): (f64, Instant)| {
            (level + now.duration_since(at).as_secs_f64() * LIMIT_PER_SECOND).min(LIMIT_BURST)
        };
        if buckets.len() >= LIMIT_KEYS && !buckets.contains_key(key) {
            // Forget the identities whose bucket is full again.
            buckets.retain(|_, b| refill(*b) < LIMIT_BURST);
            if buckets.len() >= LIMIT_KEYS {
                return Err(1);
            }
        }
        let level = buckets.get(key).map_or(LIMIT_BURST, |b| refill(*b));
        if level < 1.0 {
            buckets.insert(key.to_owned(), (level, now));
            let wait = ((1.0 - level) / LIMIT_PER_SECOND).ceil();
            return Err(if wait.is_finite() && wait >= 1.0 {
                wait as u64
            } else {
                1
            });
        }
        buckets.insert(key.to_owned(), (level - 1.0, now));
        Ok(())
    }
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
    /// `Retry-After` seconds (503 has [`RETRY_AFTER_SECS`] unless set).
    retry_after: Option<u64>,
}

impl Failure {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    fn rate_limited(wait: u64) -> Failure {
        Failure {
            retry_after: Some(wait),
            ..Failure::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests for this identity; try again in {wait} s"),
            )
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": self.code, "message": self.message}));
        let retry_after = self
            .retry_after
            .or((self.status == StatusCode::SERVICE_UNAVAILABLE).then_some(RETRY_AFTER_SECS));
        match retry_after {
            Some(secs) => {
                (self.status, [(header::RETRY_AFTER, secs.to_string())], body).into_response()
            }
            None => (self.status, body).into_response(),
        }
    }
}

/// What the broker's workspace is, from `--workspace` and what the API said
/// at start (`ListWorkspaces`; `Ok(None)`: the API cannot tell, but the parent
/// is live): the slug and, when the API said, the id. `Err`: one line, the
/// broker does not start.
pub fn settle_workspace(
    declared: Option<&str>,
    answer: Result<Option<api::Workspace>, ApiError>,
    parent_source: &str,
) -> Result<(String, Option<String>), String> {
    match answer {
        Err(
            e @ ApiError::Status {
                status: 401 | 403, ..
            },
        ) => Err(format!(
            "the API refused the broker's workspace token from {parent_source}: {e}; give a live workspace token (gw_…) there"
        )),
        Err(e) => match declared {
            Some(ws) => Ok((ws.to_owned(), None)),
            None => Err(format!(
                "cannot establish the broker's workspace: {e}; give --workspace WS (the workspace of the broker's token)"
            )),
        },
        Ok(Some(found)) => match declared {
            Some(ws) if ws != found.slug => Err(format!(
                "--workspace {ws}: the broker's token from {parent_source} is for workspace {}; give --workspace {}",
                found.slug, found.slug
            )),
            _ => Ok((found.slug, Some(found.id).filter(|id| !id.is_empty()))),
        },
        Ok(None) => match declared {
            Some(ws) => Ok((ws.to_owned(), None)),
            None => Err(
                "the API cannot say which workspace the broker's token is for: give --workspace WS"
                    .into(),
            ),
        },
    }
}

/// A revocation handle: what `/v1/token` returns as the token's `id` and
/// `/v1/revoke` takes back: `gbr1.<record id>.<expiry>.<mac>`.
struct Handle<'a> {
    token_id: &'a str,
    expires_at: i64,
    mac: &'a str,
}

const HANDLE_PREFIX: &str = "gbr1.";

impl<'a> Handle<'a> {
    fn parse(text: &'a str) -> Option<Handle<'a>> {
        let rest = text.strip_prefix(HANDLE_PREFIX)?;
        let mut parts = rest.rsplitn(3, '.');
        let mac = parts.next()?;
        let expires_at = parts.next()?.parse().ok()?;
        let token_id = parts.next()?;
        (!token_id.is_empty() && mac.len() == 64).then_some(Handle {
            token_id,
            expires_at,
            mac,
        })
    }
}

impl Broker {
    /// Checks the parent with the API and settles the workspace: a parent the
    /// API refuses, or a workspace neither declared nor told, stops start-up.
    pub async fn start(config: Config) -> Result<Broker, String> {
        let verifier = Verifier::new(&config.policy.issuers(), &config.audience)?;
        let host = config.api_url.host_str().unwrap_or("the API").to_owned();
        let api = api::Client::new(&config.api_url, &host, &net::Network::from_env())
            .map_err(|e| e.to_string())?;
        if let Some(ws) = &config.workspace
            && !crate::policy::is_slug(ws)
        {
            return Err(format!(
                "--workspace {:?} is not a workspace slug (letters, digits, -, _, .)",
                crate::ui::printable(ws, 64)
            ));
        }
        let deadline = net::deadline_in(API_DEADLINE);
        let answer = match api.workspace_of(&config.parent, deadline).await {
            // The API cannot tell the workspace: still prove the parent is live.
            Ok(None) => api
                .list_tokens(&config.parent, 1, deadline)
                .await
                .map(|_| None),
            other => other,
        };
        let mut warnings = Vec::new();
        if let Err(e) = &answer
            && config.workspace.is_some()
            && !matches!(
                e,
                ApiError::Status {
                    status: 401 | 403,
                    ..
                }
            )
        {
            warnings.push(format!(
                "warning: could not check the broker's token with the API ({e}); serving workspace {} as declared",
                config.workspace.as_deref().unwrap_or_default()
            ));
        }
        let (workspace, workspace_id) =
            settle_workspace(config.workspace.as_deref(), answer, &config.parent_source)?;
        if config.audience == DEFAULT_AUDIENCE {
            warnings.push(format!(
                "warning: checking ID tokens for the shared default audience {DEFAULT_AUDIENCE:?}: an ID token sent to any other broker trusting the same issuers is accepted here too; give this broker's URL as --audience (and to the helpers as --oidc-audience)"
            ));
        }
        let handle_key = Secret::new(
            config
                .parent
                .keyed_hex(b"githosted-broker revocation handle key v1"),
        );
        Ok(Broker {
            policy: config.policy,
            verifier,
            api,
            parent: config.parent,
            workspace,
            workspace_id,
            handle_key,
            parent_refused: AtomicBool::new(false),
            revoke_limit: RateLimit::new(),
            refused_limit: RateLimit::new(),
            warnings,
            metrics: Metrics::default(),
        })
    }

    /// The workspace this broker mints for.
    pub fn workspace(&self) -> &str {
        &self.workspace
    }

    /// The HTTP routes.
    pub fn router(self: Arc<Self>) -> axum::Router {
        axum::Router::new()
            .route("/v1/token", post(token))
            .route("/v1/revoke", post(revoke))
            .route("/v1/check", post(check))
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics))
            .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY))
            .layer(axum::middleware::from_fn(within_deadline))
            .with_state(self)
    }

    /// The routes of a connection beyond the cap: `/healthz`, and 503 for the rest.
    fn shed_router(self: Arc<Self>) -> axum::Router {
        axum::Router::new()
            .route("/healthz", get(healthz))
            .fallback(|| async {
                Failure {
                    retry_after: Some(SHED_RETRY_AFTER_SECS),
                    ..Failure::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "overloaded",
                        format!(
                            "the broker is serving its most connections ({MAX_CONNECTIONS}); try again in {SHED_RETRY_AFTER_SECS} s"
                        ),
                    )
                }
            })
            .with_state(self)
    }

    /// The revocation handle of a minted token, for `identity`.
    fn handle(&self, identity: &Identity, token_id: &str, expires_at: i64) -> String {
        let mac = self.handle_mac(identity, token_id, expires_at);
        format!("{HANDLE_PREFIX}{token_id}.{expires_at}.{mac}")
    }

    fn handle_mac(&self, identity: &Identity, token_id: &str, expires_at: i64) -> String {
        self.handle_key.keyed_hex(
            format!(
                "githosted-broker revoke v1\n{}\n{token_id}\n{expires_at}\n{}",
                self.workspace,
                self.owner_tag(identity)
            )
            .as_bytes(),
        )
    }

    /// Notes an API answer about the parent: a 401 means it is dead.
    fn note(&self, e: &ApiError) {
        if matches!(e, ApiError::Status { status: 401, .. }) {
            self.parent_refused.store(true, Ordering::Relaxed);
        }
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

/// `GET /healthz`: 503 once the API refused the parent (401), else ok.
async fn healthz(State(broker): State<Arc<Broker>>) -> Response {
    if broker.parent_refused.load(Ordering::Relaxed) {
        return Failure {
            retry_after: Some(RETRY_AFTER_SECS),
            ..Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "parent_refused",
                "the API refused the broker's workspace token (401): give the broker a live one and restart it",
            )
        }
        .into_response();
    }
    "ok\n".into_response()
}

/// Every request within [`REQUEST_DEADLINE`], its body included.
async fn within_deadline(request: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_DEADLINE, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "deadline",
            format!(
                "the request took longer than {} s",
                REQUEST_DEADLINE.as_secs()
            ),
        )
        .into_response(),
    }
}

/// One request's audit line: what was asked, by whom, and what came of it.
/// Fields not known (yet) are left out; they are written in this order
/// (alphabetical, as the line has always been).
#[derive(Debug, Default, serde::Serialize)]
struct Record {
    action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    permission: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    repo: Option<String>,
    request_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    /// When it was written (RFC 3339, UTC).
    time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl_seconds: Option<u64>,
}

/// One audit line on stdout.
fn audit(mut record: Record) {
    record.time = time::OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default();
    if let Ok(line) = serde_json::to_string(&record) {
        println!("{line}");
    }
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
fn new_record(action: &'static str) -> Record {
    Record {
        action,
        request_id: uuid::Uuid::new_v4().to_string(),
        ..Record::default()
    }
}

impl Broker {
    /// Counts, audits and answers one request's outcome.
    fn finish(
        &self,
        started: Instant,
        mut record: Record,
        outcome: Result<Response, Failure>,
        success: &'static str,
        successes: &AtomicU64,
    ) -> Response {
        self.observe(started);
        let response = match outcome {
            Ok(response) => {
                successes.fetch_add(1, Ordering::Relaxed);
                record.outcome = Some(success);
                response
            }
            Err(f) => {
                let (name, counter) = if f.status.is_server_error() {
                    ("error", &self.metrics.error)
                } else {
                    ("refused", &self.metrics.refused)
                };
                counter.fetch_add(1, Ordering::Relaxed);
                record.outcome = Some(name);
                record.status = Some(f.status.as_u16());
                record.reason = Some(f.message.clone());
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
    record: &mut Record,
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
            net::deadline_in(API_DEADLINE),
        )
        .await
        .map_err(|e| {
            broker.note(&e);
            api_failure(&e)
        })?;
    record.token_id = Some(minted.record.id.clone());
    // A second check: the record must be in our workspace, when both are known.
    if let Some(ours) = &broker.workspace_id
        && !minted.record.workspace_id.is_empty()
        && minted.record.workspace_id != *ours
    {
        let revoked = broker
            .api
            .revoke_token(
                &broker.parent,
                &minted.record.id,
                net::deadline_in(API_DEADLINE),
            )
            .await;
        record.revoked = Some(revoked.is_ok());
        return Err(Failure::new(
            StatusCode::BAD_GATEWAY,
            "wrong_workspace",
            format!(
                "the API minted a token in workspace {} instead of {} ({ours}); it was revoked and not handed out",
                crate::ui::printable(&minted.record.workspace_id, 64),
                broker.workspace
            ),
        ));
    }
    let expires_at = time::OffsetDateTime::from_unix_timestamp(minted.expires_at)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default();
    record.fingerprint = Some(minted.token.fingerprint());
    record.ttl_seconds = Some(ttl);
    let handle = broker.handle(&identity, &minted.record.id, minted.expires_at);
    let body = zeroize::Zeroizing::new(
        json!({
            "token": minted.token.expose(),
            "expires_at": expires_at,
            "id": handle,
            "token_id": minted.record.id,
        })
        .to_string(),
    );
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.as_str().to_owned(),
    )
        .into_response())
}

/// Checks the ID token, the request, the policy and that the repo is in the
/// broker's workspace; the API is asked nothing.
async fn authorize(
    broker: &Broker,
    headers: &HeaderMap,
    body: &[u8],
    record: &mut Record,
) -> Result<Allowed, Failure> {
    let identity = broker.identity(headers).await?;
    record.issuer = Some(identity.issuer.clone());
    record.subject = Some(identity.subject.clone());
    let request: TokenRequest = serde_json::from_slice(body).map_err(|e| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("the body is not {{\"repo\": \"WS/REPO\", \"permission\": \"read\"|\"write\", \"ttl_seconds\": N}}: {e}"),
        )
    })?;
    record.repo = Some(request.repo.clone());
    record.permission = Some(request.permission.clone());
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
    let (workspace, repo) = crate::policy::slug_request(&request.repo).ok_or_else(|| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!(
                "repo {:?} is not WS/REPO: only slugs are accepted (letters, digits, -, _, .; not a repo id rp_…)",
                crate::ui::printable(&request.repo, 80)
            ),
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
            if denied.dimension == crate::policy::Dimension::Subject
                && let Err(wait) = broker.refused_limit.take(&limit_key(&identity))
            {
                return Failure::rate_limited(wait);
            }
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
    record.rule = Some(rule.number);
    let ttl = request
        .ttl_seconds
        .filter(|t| *t > 0)
        .unwrap_or(rule.max_ttl_seconds)
        .min(rule.max_ttl_seconds);
    // The parent's repo slugs are relative to its workspace: never mint for another.
    if workspace != broker.workspace {
        return Err(Failure::new(
            StatusCode::FORBIDDEN,
            "repo_not_allowed",
            format!(
                "this broker mints for workspace {}, not {workspace}",
                broker.workspace
            ),
        ));
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

/// The rate limiters' key: the identity.
fn limit_key(identity: &Identity) -> String {
    format!("{}\n{}", identity.issuer, identity.subject)
}

async fn revoke_one(
    broker: &Broker,
    headers: &HeaderMap,
    body: &[u8],
    record: &mut Record,
) -> Result<(), Failure> {
    let identity = broker.identity(headers).await?;
    record.issuer = Some(identity.issuer.clone());
    record.subject = Some(identity.subject.clone());
    broker
        .revoke_limit
        .take(&limit_key(&identity))
        .map_err(Failure::rate_limited)?;
    if !broker
        .policy
        .knows(&identity.issuer, &identity.subject, &identity.claims)
    {
        return Err(Failure::new(
            StatusCode::FORBIDDEN,
            "subject_not_allowed",
            format!(
                "no rule allows subject {:?} of {}",
                crate::ui::printable(&identity.subject, 200),
                identity.issuer
            ),
        ));
    }
    let request: RevokeRequest = serde_json::from_slice(body).map_err(|e| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("the body is not {{\"id\": \"…\"}}: {e}"),
        )
    })?;
    let not_yours = || {
        // The same answer whether the handle is forged, another's or not a handle.
        Failure::new(
            StatusCode::FORBIDDEN,
            "not_yours",
            "this is not the id of a token this broker minted for your identity",
        )
    };
    let handle = Handle::parse(&request.id).ok_or_else(not_yours)?;
    record.token_id = Some(handle.token_id.to_owned());
    let expected = broker.handle_mac(&identity, handle.token_id, handle.expires_at);
    if !Secret::new(expected).ct_eq(handle.mac) {
        return Err(not_yours());
    }
    if handle.expires_at <= time::OffsetDateTime::now_utc().unix_timestamp() {
        // Expired already: nothing left to revoke.
        return Ok(());
    }
    match broker
        .api
        .revoke_token(
            &broker.parent,
            handle.token_id,
            net::deadline_in(API_DEADLINE),
        )
        .await
    {
        Ok(()) => Ok(()),
        // Gone already.
        Err(ApiError::Status { status: 404, .. }) => Ok(()),
        Err(e) => {
            broker.note(&e);
            Err(api_failure(&e))
        }
    }
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

/// Raises the soft limit of open files to the hard limit (a flood of
/// connections must not starve `/healthz`); the limit in force.
#[cfg(unix)]
pub fn raise_nofile() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        );
    }
    getrlimit(Resource::Nofile).current
}

/// Serves until the process is stopped, over TLS when `tls` is given; prints
/// `listening on URL` on stderr first, then any warnings.
///
/// Each connection: the TLS handshake and each request head within
/// [`HEADER_READ_TIMEOUT`], each request within [`REQUEST_DEADLINE`]; beyond
/// [`MAX_CONNECTIONS`] open ones, a connection gets `/healthz` and a 503 with
/// `Retry-After` for anything else.
pub async fn serve(
    broker: Broker,
    listen: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<()> {
    #[cfg(unix)]
    let _ = raise_nofile();
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let broker = Arc::new(broker);
    let router = broker.clone().router();
    let shed = broker.clone().shed_router();
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!("githosted-broker: listening on {scheme}://{addr}");
    for warning in &broker.warnings {
        eprintln!("githosted-broker: {warning}");
    }
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            _ = &mut stop => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors and the like: breathe, go on.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let permit = slots.clone().try_acquire_owned().ok();
        let service = if permit.is_some() {
            router.clone()
        } else {
            shed.clone()
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let full = permit.is_some();
            let head = if full {
                HEADER_READ_TIMEOUT
            } else {
                SHED_HEADER_READ_TIMEOUT
            };
            match acceptor {
                None => connection(stream, service, head, full).await,
                Some(acceptor) => {
                    if let Ok(Ok(stream)) =
                        tokio::time::timeout(head, acceptor.accept(stream)).await
                    {
                        connection(stream, service, head, full).await;
                    }
                }
            }
            drop(permit);
        });
    }
}

/// Serves HTTP/1.1 on one connection, each request head within `head`;
/// kept alive only when it holds one of the [`MAX_CONNECTIONS`] slots (`full`).
async fn connection<I>(io: I, service: axum::Router, head: Duration, full: bool)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(head)
        .keep_alive(full);
    let service = hyper_util::service::TowerToHyperService::new(service);
    let _ = builder
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .await;
}

/// TLS for the broker: certificates from PEM files.
pub mod tls {
    use std::path::Path;
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(slug: &str) -> api::Workspace {
        api::Workspace {
            id: format!("ws_{slug}"),
            slug: slug.into(),
            permission: "PERMISSION_WRITE".into(),
        }
    }

    fn status(status: u16, code: &str) -> ApiError {
        ApiError::Status {
            host: "api".into(),
            status,
            code: api::Code::parse(code),
            message: "no".into(),
            retry_after: None,
        }
    }

    #[test]
    fn the_workspace_is_declared_or_told_never_guessed() {
        let src = "GITHOSTED_TOKEN";
        assert_eq!(
            settle_workspace(None, Ok(Some(ws("acme"))), src),
            Ok(("acme".into(), Some("ws_acme".into())))
        );
        assert_eq!(
            settle_workspace(Some("acme"), Ok(Some(ws("acme"))), src),
            Ok(("acme".into(), Some("ws_acme".into())))
        );
        let e = settle_workspace(Some("sandbox"), Ok(Some(ws("acme"))), src).unwrap_err();
        assert!(e.contains("--workspace acme"), "{e}");
        let e = settle_workspace(None, Ok(None), src).unwrap_err();
        assert!(e.contains("--workspace WS"), "{e}");
        assert_eq!(
            settle_workspace(Some("acme"), Ok(None), src),
            Ok(("acme".into(), None))
        );
        for refused in [
            status(401, "unauthenticated"),
            status(403, "permission_denied"),
        ] {
            let e = settle_workspace(Some("acme"), Err(refused), src).unwrap_err();
            assert!(e.contains(src) && e.contains("refused"), "{e}");
        }
        let down = ApiError::Transport {
            host: "api".into(),
            reason: "connection refused".into(),
        };
        let e = settle_workspace(None, Err(down.clone()), src).unwrap_err();
        assert!(
            e.contains("could not reach") && e.contains("--workspace"),
            "{e}"
        );
        assert_eq!(
            settle_workspace(Some("acme"), Err(down), src),
            Ok(("acme".into(), None))
        );
    }

    #[test]
    fn handles_parse_only_in_their_own_shape() {
        let mac = "a".repeat(64);
        let text = format!("gbr1.tk_1.2.3.1700000000.{mac}");
        let h = Handle::parse(&text).unwrap();
        assert_eq!((h.token_id, h.expires_at), ("tk_1.2.3", 1_700_000_000));
        for bad in [
            "tk_1".to_owned(),
            format!("gbr1.tk_1.x.{mac}"),
            format!("gbr1..1.{mac}"),
            "gbr1.tk_1.1.abc".to_owned(),
            format!("gbr2.tk_1.1.{mac}"),
        ] {
            assert!(Handle::parse(&bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn the_rate_limit_allows_a_burst_then_says_how_long_to_wait() {
        let limit = RateLimit::new();
        for _ in 0..LIMIT_BURST as usize {
            assert_eq!(limit.take("a"), Ok(()));
        }
        let wait = limit.take("a").unwrap_err();
        assert!(wait >= 1);
        assert_eq!(limit.take("b"), Ok(()), "one identity limited another");
    }
}
