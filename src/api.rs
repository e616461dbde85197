//! A client for githosted's control-plane API (Connect protocol, unary, JSON).
//!
//! Every call is `POST {base}/githosted.v1.ApiService/{Method}` with a bearer
//! token and a proto3-JSON body; a non-200 answer carries
//! `{"code": "...", "message": "..."}` (githosted's API documentation and official SDKs).
//! Only the three methods the helper needs are here: [`Client::exchange_token`],
//! [`Client::revoke_token`] and [`Client::list_tokens`].

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use url::Url;

use crate::net::{self, CALL_TIMEOUT, Network};
use crate::secret::Secret;
pub use crate::token::Permission;
use crate::ui::printable;

/// The largest answer read from the API; past it the call fails.
pub const MAX_BODY: usize = 1024 * 1024;

/// The `code` of a Connect error (on the agent's wire: its name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Code {
    Unauthenticated,
    PermissionDenied,
    NotFound,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
    Internal,
    Unknown,
    Other(String),
}

impl Code {
    pub fn parse(code: &str) -> Code {
        match code {
            "unauthenticated" => Code::Unauthenticated,
            "permission_denied" => Code::PermissionDenied,
            "not_found" => Code::NotFound,
            "invalid_argument" => Code::InvalidArgument,
            "resource_exhausted" => Code::ResourceExhausted,
            "unavailable" => Code::Unavailable,
            "internal" => Code::Internal,
            "unknown" => Code::Unknown,
            other => Code::Other(printable(other, 40)),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Code::Unauthenticated => "unauthenticated",
            Code::PermissionDenied => "permission_denied",
            Code::NotFound => "not_found",
            Code::InvalidArgument => "invalid_argument",
            Code::ResourceExhausted => "resource_exhausted",
            Code::Unavailable => "unavailable",
            Code::Internal => "internal",
            Code::Unknown => "unknown",
            Code::Other(code) => code,
        }
    }

    /// Worth trying again: the server or the network had a passing problem.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Code::Unavailable | Code::Internal | Code::Unknown | Code::ResourceExhausted
        )
    }

    /// The server does not have the method (Connect's `unimplemented`).
    pub fn is_unimplemented(&self) -> bool {
        matches!(self, Code::Other(code) if code == "unimplemented")
    }

    /// The code for an error answer that carries no Connect JSON.
    fn from_http(status: u16) -> Code {
        match status {
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::NotFound,
            429 => Code::ResourceExhausted,
            503 => Code::Unavailable,
            500..=599 => Code::Internal,
            _ => Code::Unknown,
        }
    }
}

impl From<String> for Code {
    fn from(code: String) -> Code {
        Code::parse(&code)
    }
}

impl From<Code> for String {
    fn from(code: Code) -> String {
        code.as_str().to_owned()
    }
}

/// What went wrong with a call. Messages name the API host; they never hold a
/// token. The agent's wire carries it as it is.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
pub enum ApiError {
    /// The server answered with a Connect error.
    #[error("{host} answered {status} {}: {message}", code.as_str())]
    Status {
        host: String,
        status: u16,
        code: Code,
        message: String,
        /// `Retry-After`, in seconds, when the server sent one.
        retry_after: Option<u64>,
    },
    /// No answer: connection refused, DNS, TLS, timeout. A refused connection
    /// to the API itself has the reason [`refused_reason`] and is final.
    #[error("{}", transport_line(host, reason))]
    Transport { host: String, reason: String },
    /// No client could be set up on this machine (its CA certificates, proxy
    /// settings): nothing was sent, and waiting does not help.
    #[error("{reason}")]
    Setup { reason: String },
    /// An answer that does not follow the API.
    #[error("{host} sent an answer this helper does not understand: {reason}")]
    BadResponse { host: String, reason: String },
    /// The API's host name does not resolve: retrying cannot help.
    #[error("cannot resolve {host} ({reason}): check --api-url and the network")]
    Unresolvable { host: String, reason: String },
    /// The parent token belongs to another workspace than the one asked for
    /// (checked before any exchange: a token's repo slugs are relative to its workspace).
    #[error("your token is for {token_workspace}, not {wanted}")]
    WrongWorkspace {
        token_workspace: String,
        wanted: String,
    },
    /// Neither the API nor a declaration says which workspace the parent token
    /// belongs to: nothing is minted (the caller says how to declare it).
    #[error(
        "{host} cannot say which workspace your token belongs to, and none is declared for it (wanted: {wanted})"
    )]
    WorkspaceUnknown { host: String, wanted: String },
    /// The workspace declared for the parent is not the one the API reports.
    #[error(
        "the workspace declared for your token is {declared}, but the API says it is for {actual}"
    )]
    DeclaredWorkspace { declared: String, actual: String },
    /// A token broker (`--broker`) refused or failed: one line naming it and its reason.
    #[error("{reason}")]
    Broker {
        /// The broker's HTTP status; `None` when it did not answer.
        status: Option<u16>,
        reason: String,
    },
}

/// The start of a [`ApiError::Transport`] reason for a connection the API's
/// own address refused: nothing listens there (on a laptop almost always a
/// wrong `--api-url` or a stopped local server). The API is down all the same
/// ([`ApiError::is_transient`]: a cached token is still served, a broker says
/// 503), but [`Client`] does not wait and try again.
const REFUSED: &str = "nothing listens at ";

/// The reason of a refused connection to `url`.
pub fn refused_reason(url: &str) -> String {
    format!("{REFUSED}{}", url.trim_end_matches('/'))
}

/// Whether a transport `reason` is a refused connection ([`refused_reason`]).
pub fn is_refused(reason: &str) -> bool {
    reason.starts_with(REFUSED)
}

/// How a transport failure reads: "could not reach HOST: nothing listens at
/// URL (connection refused)", or "could not reach HOST: REASON".
fn transport_line(host: &str, reason: &str) -> String {
    if is_refused(reason) {
        format!("could not reach {host}: {reason} (connection refused)")
    } else {
        format!("could not reach {host}: {reason}")
    }
}

impl ApiError {
    /// A passing problem of the server or the network: a transient code, or
    /// no answer at all. [`Client`] retries these, except a refused connection.
    pub fn is_transient(&self) -> bool {
        match self {
            // `unimplemented` (501) is final: the server does not have the method.
            ApiError::Status { code, status, .. } => {
                !code.is_unimplemented() && (code.is_transient() || (500..600).contains(status))
            }
            ApiError::Transport { .. } => true,
            ApiError::Broker { status, .. } => {
                status.is_none_or(|s| s == 429 || (500..600).contains(&s))
            }
            ApiError::BadResponse { .. }
            | ApiError::Setup { .. }
            | ApiError::Unresolvable { .. }
            | ApiError::WrongWorkspace { .. }
            | ApiError::WorkspaceUnknown { .. }
            | ApiError::DeclaredWorkspace { .. } => false,
        }
    }

    /// The error to report when waiting before trying again would pass
    /// `deadline`: a rate limit says how long the server asked for.
    fn waited_too_long(self, deadline: Instant) -> ApiError {
        match self {
            ApiError::Status {
                host,
                status,
                code: code @ Code::ResourceExhausted,
                message,
                retry_after: Some(secs),
            } => ApiError::Status {
                message: format!(
                    "{message}; it asks to wait {secs} s, past this command's deadline ({} s left; see --timeout)",
                    deadline.saturating_duration_since(Instant::now()).as_secs()
                ),
                host,
                status,
                code,
                retry_after: Some(secs),
            },
            other => other,
        }
    }

    /// The Connect code, when the server sent one.
    pub fn code(&self) -> Option<&Code> {
        match self {
            ApiError::Status { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A token record, as far as the helper needs it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TokenRecord {
    pub id: String,
    pub prefix: String,
    pub name: String,
    pub kind: String,
    pub workspace_id: String,
    pub permission: String,
    pub repo_allowlist: Vec<String>,
    pub created_at: Option<String>,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
}

impl TokenRecord {
    /// `expiresAt` as Unix seconds; `None` when absent (never expires).
    pub fn expires_at_unix(&self) -> Result<Option<i64>, time::error::Parse> {
        self.expires_at
            .as_deref()
            .map(|s| OffsetDateTime::parse(s, &Rfc3339).map(|t| t.unix_timestamp()))
            .transpose()
    }
}

/// A freshly minted repo token and its record.
#[derive(Debug)]
pub struct Minted {
    pub token: Secret,
    pub record: TokenRecord,
    /// Unix seconds.
    pub expires_at: i64,
}

/// What to ask `ExchangeToken` for.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExchangeRequest<'a> {
    pub repo_allowlist: Vec<&'a str>,
    pub permission: Permission,
    pub ttl_seconds: u64,
    pub subject: &'a str,
}

#[derive(Deserialize)]
struct ExchangeResponse {
    token: Option<String>,
    record: Option<TokenRecord>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RevokeRequest<'a> {
    token_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListRequest<'a> {
    page_size: u32,
    #[serde(skip_serializing_if = "str::is_empty")]
    page_token: &'a str,
}

/// A workspace, as `ListWorkspaces` describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Workspace {
    pub id: String,
    pub slug: String,
    /// The caller's permission there (`PERMISSION_READ`, `PERMISSION_WRITE`).
    pub permission: String,
}

impl Workspace {
    /// The caller's permission, when the server says.
    pub fn permission(&self) -> Option<Permission> {
        match self.permission.as_str() {
            "PERMISSION_READ" => Some(Permission::Read),
            "PERMISSION_WRITE" => Some(Permission::Write),
            _ => None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WorkspaceList {
    workspaces: Vec<Workspace>,
}

/// The `tokens` of a `ListTokens` answer.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TokenList {
    pub tokens: Vec<TokenRecord>,
    pub next_page_token: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: Option<String>,
    message: Option<String>,
}

/// A githosted API client for one base URL.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    host: String,
    /// Whether requests go through a proxy (then a refused connection is the proxy's).
    proxied: bool,
}

impl Client {
    /// The API's host (with a non-default port), as errors name it.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// A client for `base` (e.g. `https://api.githosted.dev`) with the
    /// proxies and CA certificates of `network`; `host` names it in errors.
    pub fn new(base: &Url, host: &str, network: &Network) -> Result<Client, ApiError> {
        let http = net::client_for(base, host, CALL_TIMEOUT, network)
            .map_err(|reason| ApiError::Setup { reason })?;
        let proxied = network.proxies(base);
        Ok(Client {
            http,
            base: base.clone(),
            host: host.to_owned(),
            proxied,
        })
    }

    /// `ExchangeToken`: a short-lived repo token from a workspace token.
    pub async fn exchange_token(
        &self,
        parent: &Secret,
        request: &ExchangeRequest<'_>,
        deadline: Instant,
    ) -> Result<Minted, ApiError> {
        let body: ExchangeResponse = self
            .call("ExchangeToken", parent, request, deadline)
            .await?;
        let bad = |reason: &str| ApiError::BadResponse {
            host: self.host.clone(),
            reason: reason.to_owned(),
        };
        let token = Secret::new(
            body.token
                .filter(|t| !t.is_empty())
                .ok_or_else(|| bad("no token"))?,
        );
        let record = body.record.ok_or_else(|| bad("no token record"))?;
        let expires_at = record
            .expires_at_unix()
            .map_err(|_| bad("expiresAt is not an RFC 3339 timestamp"))?
            .ok_or_else(|| bad("the token record has no expiresAt"))?;
        Ok(Minted {
            token,
            record,
            expires_at,
        })
    }

    /// `RevokeToken`: revoke the token with this record id.
    pub async fn revoke_token(
        &self,
        parent: &Secret,
        token_id: &str,
        deadline: Instant,
    ) -> Result<(), ApiError> {
        let _: serde_json::Value = self
            .call("RevokeToken", parent, &RevokeRequest { token_id }, deadline)
            .await?;
        Ok(())
    }

    /// The workspace a workspace token belongs to, and its permission there
    /// (`ListWorkspaces`). `None` when the server has no such method: then the
    /// workspace cannot be checked, only trusted.
    pub async fn workspace_of(
        &self,
        token: &Secret,
        deadline: Instant,
    ) -> Result<Option<Workspace>, ApiError> {
        let answer: Result<WorkspaceList, ApiError> = self
            .call("ListWorkspaces", token, &serde_json::json!({}), deadline)
            .await;
        match answer {
            Ok(list) => Ok(list.workspaces.into_iter().next()),
            Err(ApiError::Status { status: 404, .. }) => Ok(None),
            Err(ApiError::Status {
                code: Code::Other(code),
                ..
            }) if code == "unimplemented" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `ListTokens` with one page of `page_size`: proves a token is a live workspace token.
    pub async fn list_tokens(
        &self,
        token: &Secret,
        page_size: u32,
        deadline: Instant,
    ) -> Result<TokenList, ApiError> {
        self.list_tokens_page(token, page_size, "", deadline).await
    }

    /// One page of `ListTokens`, from `page_token` (empty: the first).
    pub async fn list_tokens_page(
        &self,
        token: &Secret,
        page_size: u32,
        page_token: &str,
        deadline: Instant,
    ) -> Result<TokenList, ApiError> {
        let request = ListRequest {
            page_size,
            page_token,
        };
        self.call("ListTokens", token, &request, deadline).await
    }

    /// One method call, retried while that can help and `deadline` allows:
    /// transient errors (`unavailable`, `internal`, `unknown`, other 5xx, no
    /// connection, timeouts) with jittered exponential backoff; a 429 after its
    /// `Retry-After` when that fits. Other errors, and a refused connection, are
    /// final at once. The first retry is said on stderr ("… retrying").
    async fn call<Req: Serialize + ?Sized, Resp: for<'de> Deserialize<'de>>(
        &self,
        method: &str,
        token: &Secret,
        request: &Req,
        deadline: Instant,
    ) -> Result<Resp, ApiError> {
        let mut attempt: u32 = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let error = match self
                .call_once(method, token, request, left.min(CALL_TIMEOUT))
                .await
            {
                Ok(response) => return Ok(response),
                Err(e) => e,
            };
            let wait = match &error {
                ApiError::Status {
                    code: Code::ResourceExhausted,
                    retry_after: Some(secs),
                    ..
                } => Duration::from_secs(*secs),
                // Nothing listens there: waiting will not change that.
                ApiError::Transport { reason, .. } if is_refused(reason) => return Err(error),
                e if e.is_transient() => backoff(attempt),
                _ => return Err(error),
            };
            let fits = Instant::now()
                .checked_add(wait)
                .is_some_and(|resume| resume < deadline);
            if !fits {
                tracing::debug!(method, attempt, "no time left to retry");
                return Err(error.waited_too_long(deadline));
            }
            tracing::debug!(
                method,
                attempt,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "retrying: {error}"
            );
            if attempt == 0 {
                crate::say!(
                    "{error}; retrying for up to {} s (--timeout)",
                    deadline.saturating_duration_since(Instant::now()).as_secs()
                );
            }
            tokio::time::sleep(wait).await;
            attempt = attempt.saturating_add(1);
        }
    }

    async fn call_once<Req: Serialize + ?Sized, Resp: for<'de> Deserialize<'de>>(
        &self,
        method: &str,
        token: &Secret,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, ApiError> {
        let url = self.method_url(method);
        let bearer = zeroize::Zeroizing::new(format!("Bearer {}", token.expose()));
        let mut auth =
            reqwest::header::HeaderValue::from_str(&bearer).map_err(|_| ApiError::Transport {
                host: self.host.clone(),
                reason: format!(
                    "the token {token} holds characters that cannot go in an HTTP header"
                ),
            })?;
        auth.set_sensitive(true);
        tracing::debug!(method, token = %token, host = %self.host, "calling the API");
        let response = self
            .http
            .post(url)
            .timeout(timeout)
            .header(reqwest::header::AUTHORIZATION, auth)
            .header("x-request-id", format!("req_{}", uuid::Uuid::new_v4()))
            .header("x-githosted-client", "git-credential-githosted")
            .json(request)
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        let status = response.status();
        if status.is_redirection() {
            // Never followed (a redirect could carry the token elsewhere), never retried.
            return Err(ApiError::BadResponse {
                host: self.host.clone(),
                reason: format!(
                    "{method} answered {status} (a redirect, which is not followed); check --api-url"
                ),
            });
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let bytes = self.read_body(response).await?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| ApiError::BadResponse {
                host: self.host.clone(),
                reason: format!("{method}: {e}"),
            });
        }
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(ErrorBody { code, message }) => (
                code.map_or(Code::Unknown, |c| Code::parse(&c)),
                message.map(|m| printable(&m, 200)).unwrap_or_default(),
            ),
            // Not Connect JSON (a proxy's page?): classify by the HTTP status.
            Err(_) => (Code::from_http(status.as_u16()), String::new()),
        };
        let message = if message.is_empty() {
            status.canonical_reason().unwrap_or("no message").to_owned()
        } else {
            message
        };
        tracing::debug!(
            method,
            status = status.as_u16(),
            code = code.as_str(),
            "API error"
        );
        Err(ApiError::Status {
            host: self.host.clone(),
            status: status.as_u16(),
            code,
            message,
            retry_after,
        })
    }

    /// The answer's body, at most [`MAX_BODY`] bytes, in memory that is wiped
    /// (it may hold a token).
    async fn read_body(
        &self,
        mut response: reqwest::Response,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, ApiError> {
        let too_big = || ApiError::BadResponse {
            host: self.host.clone(),
            reason: format!("the answer is larger than {} KiB", MAX_BODY / 1024),
        };
        if response
            .content_length()
            .is_some_and(|n| n > MAX_BODY as u64)
        {
            return Err(too_big());
        }
        let mut body = zeroize::Zeroizing::new(Vec::new());
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(e))? {
            if body.len().saturating_add(chunk.len()) > MAX_BODY {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn method_url(&self, method: &str) -> Url {
        let mut url = self.base.clone();
        let path = format!(
            "{}/githosted.v1.ApiService/{method}",
            self.base.path().trim_end_matches('/')
        );
        url.set_path(&path);
        url
    }

    fn transport(&self, e: reqwest::Error) -> ApiError {
        let e = e.without_url();
        let mut reason = if e.is_timeout() {
            "timed out".to_owned()
        } else if e.is_connect() {
            "connection failed".to_owned()
        } else {
            // reqwest's own message, without the URL (which holds nothing secret, but is noise).
            e.to_string()
        };
        // The causes say what to fix: refused, DNS, certificate. Each once.
        let mut causes = Vec::new();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            causes.push(printable(&cause.to_string(), 200));
            source = cause.source();
        }
        let refused = {
            let mut source = std::error::Error::source(&e);
            let mut found = false;
            while let Some(cause) = source {
                found |= cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
                source = cause.source();
            }
            found || causes.iter().any(|c| c.contains("Connection refused"))
        };
        if refused && e.is_connect() && !self.proxied {
            return ApiError::Transport {
                host: self.host.clone(),
                reason: refused_reason(self.base.as_str()),
            };
        }
        let dns = causes
            .iter()
            .any(|c| c.starts_with("dns error") || c.contains("failed to lookup address"));
        if dns {
            let innermost = causes.last().map(String::as_str).unwrap_or("no such host");
            return ApiError::Unresolvable {
                host: self.host.clone(),
                reason: innermost
                    .trim_start_matches("failed to lookup address information: ")
                    .to_owned(),
            };
        }
        for cause in causes {
            if !reason.contains(&cause) {
                reason.push_str(": ");
                reason.push_str(&cause);
            }
        }
        ApiError::Transport {
            host: self.host.clone(),
            reason,
        }
    }
}

/// Jittered exponential backoff: about 250 ms, 500 ms, 1 s, … capped at 4 s,
/// each between half and the whole of that.
fn backoff(attempt: u32) -> Duration {
    let ceiling = Duration::from_millis(250).saturating_mul(1 << attempt.min(4));
    ceiling.mul_f64(0.5 + fastrand::f64() / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchange_request_is_proto3_json() {
        let req = ExchangeRequest {
            repo_allowlist: vec!["app"],
            permission: Permission::Write,
            ttl_seconds: 3600,
            subject: "git-credential-githosted:alice@laptop",
        };
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"repoAllowlist":["app"],"permission":"PERMISSION_WRITE","ttlSeconds":3600,"subject":"git-credential-githosted:alice@laptop"}"#
        );
    }

    #[test]
    fn record_parses_with_missing_fields() {
        let r: TokenRecord =
            serde_json::from_str(r#"{"id":"tk_1","expiresAt":"2026-11-22T15:00:00Z"}"#).unwrap();
        assert_eq!(r.id, "tk_1");
        assert_eq!(r.expires_at_unix().unwrap(), Some(1_795_359_600));
        let r: TokenRecord = serde_json::from_str("{}").unwrap();
        assert_eq!(r.expires_at_unix().unwrap(), None);
        let r: TokenRecord = serde_json::from_str(r#"{"expiresAt":"tomorrow"}"#).unwrap();
        assert!(r.expires_at_unix().is_err());
    }

    #[test]
    fn a_bad_proxy_or_ca_setting_is_named() {
        let base = Url::parse("https://api.githosted.dev").unwrap();
        let net = Network {
            https_proxy: Some("::not a url::".into()),
            ..Network::default()
        };
        let err = Client::new(&base, "api.githosted.dev", &net).err().unwrap();
        assert!(
            err.to_string().contains("https_proxy is not a proxy URL"),
            "{err}"
        );
        let net = Network {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Network::default()
        };
        let err = Client::new(&base, "api.githosted.dev", &net).err().unwrap();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        // Neither matters for a loopback http API.
        let local = Url::parse("http://127.0.0.1:1").unwrap();
        let net = Network {
            https_proxy: Some("::not a url::".into()),
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Network::default()
        };
        assert!(Client::new(&local, "127.0.0.1:1", &net).is_ok());
    }

    /// Issue 21, item 6: a refused connection is final at once, in one line
    /// that names the URL; other transport failures stay worth a retry.
    #[test]
    fn a_refused_connection_is_final_and_says_nothing_listens() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port(); // the listener is dropped: nothing listens there now
        let base = Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        let host = format!("127.0.0.1:{port}");
        let client = Client::new(&base, &host, &Network::default()).unwrap();
        let err = net::block_on(client.list_tokens(
            &Secret::new("gw_x".into()),
            1,
            net::deadline_in(Duration::from_secs(60)),
        ))
        .unwrap()
        .unwrap_err();
        assert!(
            matches!(&err, ApiError::Transport { reason, .. } if is_refused(reason)),
            "{err:?}"
        );
        let line = err.to_string();
        assert_eq!(
            line,
            format!(
                "could not reach {host}: nothing listens at http://127.0.0.1:{port} (connection refused)"
            )
        );
        // A timeout or a reset still is.
        let other = ApiError::Transport {
            host: host.clone(),
            reason: "timed out".into(),
        };
        assert!(other.is_transient());
        assert_eq!(
            other.to_string(),
            format!("could not reach {host}: timed out")
        );
    }

    #[test]
    fn method_url_keeps_a_base_path() {
        let c = Client::new(
            &Url::parse("http://127.0.0.1:1/prefix/").unwrap(),
            "h",
            &Network::default(),
        )
        .unwrap();
        assert_eq!(
            c.method_url("ListTokens").as_str(),
            "http://127.0.0.1:1/prefix/githosted.v1.ApiService/ListTokens"
        );
        let c = Client::new(
            &Url::parse("https://api.githosted.dev").unwrap(),
            "h",
            &Network::default(),
        )
        .unwrap();
        assert_eq!(
            c.method_url("ExchangeToken").as_str(),
            "https://api.githosted.dev/githosted.v1.ApiService/ExchangeToken"
        );
    }
}
