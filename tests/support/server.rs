//! A local, githosted-compatible server for the integration tests.
//!
//! It follows `reference/githosted-api.md`:
//! - the Connect-JSON control plane, `POST /githosted.v1.ApiService/{Method}` with
//!   `Authorization: Bearer <token>` (ExchangeToken, RevokeToken, ListTokens, CreateToken);
//! - git's smart HTTP, served by `git http-backend` (CGI) under `/<ws>/<repo>.git/...` and
//!   `/git/<ws>/<repo>.git/...`, authenticated by HTTP Basic (token as password) or Bearer.
//!
//! It runs on its own thread with its own tokio runtime, so a plain `#[test]` can block on a
//! `git` subprocess while the server answers; dropping the [`Server`] stops it. Tokens are
//! stored only as HMAC-SHA256 digests under a per-server random key. The one exception is
//! [`Server::issued_tokens`], a test-only side log that exists so tests can scan output and
//! files for leaked secrets; the server itself never consults it.
//!
//! Every test binary uses a different subset of this module, hence `allow(dead_code)`.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{Hmac, Mac};
use rand::Rng;
use serde_json::{Map, Value, json};
use sha2::Sha256;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::io::AsyncWriteExt;

/// `ttlSeconds` 0 means this (1 hour).
pub const DEFAULT_EXCHANGE_TTL_SECS: i64 = 3600;
/// `ttlSeconds` above this is clamped to it (24 hours).
pub const MAX_EXCHANGE_TTL_SECS: i64 = 86_400;
/// CreateToken `ttlHours` above this (10 years) is refused; 0 means never expires.
pub const MAX_CREATE_TTL_HOURS: i64 = 24 * 3650;
/// ListTokens `pageSize` 0 means this; larger sizes are capped at [`MAX_PAGE_SIZE`].
pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 100;
/// The same message for missing, unknown, expired and revoked tokens: the wire does not say which.
const UNAUTHENTICATED_MESSAGE: &str = "missing, invalid, expired or revoked token";
/// Git request bodies are buffered; pushes in tests are small.
const GIT_BODY_LIMIT: usize = 256 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Test-facing types
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Workspace,
    Repo,
}

impl Kind {
    pub fn wire(self) -> &'static str {
        match self {
            Kind::Workspace => "TOKEN_KIND_WORKSPACE",
            Kind::Repo => "TOKEN_KIND_REPO",
        }
    }

    /// The record's `prefix` and the raw token's first letters (before `_`).
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Workspace => "gw",
            Kind::Repo => "gr",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Permission {
    Read,
    Write,
}

impl Permission {
    pub fn wire(self) -> &'static str {
        match self {
            Permission::Read => "PERMISSION_READ",
            Permission::Write => "PERMISSION_WRITE",
        }
    }
}

/// What [`Server::seed_token`] creates.
#[derive(Clone, Debug)]
pub struct TokenSpec {
    pub kind: Kind,
    pub permission: Permission,
    /// Repo slugs or `rp_…` ids, stored as given (repo tokens only).
    pub allowlist: Vec<String>,
    /// `None` = never expires.
    pub ttl: Option<Duration>,
}

impl TokenSpec {
    pub fn workspace_write() -> Self {
        TokenSpec {
            kind: Kind::Workspace,
            permission: Permission::Write,
            allowlist: Vec::new(),
            ttl: None,
        }
    }

    pub fn workspace_read() -> Self {
        TokenSpec {
            permission: Permission::Read,
            ..Self::workspace_write()
        }
    }

    pub fn repo(permission: Permission, repos: &[&str], ttl: Option<Duration>) -> Self {
        TokenSpec {
            kind: Kind::Repo,
            permission,
            allowlist: repos.iter().map(|r| r.to_string()).collect(),
            ttl,
        }
    }

    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

/// A queued fault for control-plane calls. The first queued fault whose `method` matches
/// (`None` = any API method) is applied to the next `times` matching calls.
#[derive(Clone, Debug)]
pub struct Fault {
    pub method: Option<String>,
    pub times: usize,
    pub kind: FaultKind,
}

#[derive(Clone, Debug)]
pub enum FaultKind {
    /// Answer with this status and a Connect error body `{"code", "message"}`.
    Status {
        http: u16,
        code: String,
        retry_after: Option<u64>,
    },
    /// Wait, then answer normally.
    Delay(Duration),
    /// Answer with this status and this body verbatim (`Content-Type: application/json`).
    RawBody { http: u16, body: String },
    /// Answer 200 with a body of `bytes` spaces, streamed without a length.
    HugeBody { bytes: u64 },
}

impl Fault {
    /// `times` answers of `http` with Connect `code` to calls of `method` (`None` = any).
    pub fn status(method: Option<&str>, times: usize, http: u16, code: &str) -> Self {
        Fault {
            method: method.map(str::to_string),
            times,
            kind: FaultKind::Status {
                http,
                code: code.to_string(),
                retry_after: None,
            },
        }
    }

    /// `times` answers of 429 `resource_exhausted`, with `Retry-After` if given.
    pub fn rate_limited(method: Option<&str>, times: usize, retry_after: Option<u64>) -> Self {
        Fault {
            method: method.map(str::to_string),
            times,
            kind: FaultKind::Status {
                http: 429,
                code: "resource_exhausted".to_string(),
                retry_after,
            },
        }
    }

    pub fn delay(method: Option<&str>, times: usize, delay: Duration) -> Self {
        Fault {
            method: method.map(str::to_string),
            times,
            kind: FaultKind::Delay(delay),
        }
    }

    /// `times` answers of 200 whose body is `bytes` long, streamed (no Content-Length).
    pub fn huge_body(method: Option<&str>, times: usize, bytes: u64) -> Self {
        Fault {
            method: method.map(str::to_string),
            times,
            kind: FaultKind::HugeBody { bytes },
        }
    }

    pub fn raw_body(method: Option<&str>, times: usize, http: u16, body: &str) -> Self {
        Fault {
            method: method.map(str::to_string),
            times,
            kind: FaultKind::RawBody {
                http,
                body: body.to_string(),
            },
        }
    }
}

/// The scheme of the request's `Authorization` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthScheme {
    None,
    Basic,
    Bearer,
    Other,
}

/// A token record as tests see it (never the raw value). Times are Unix seconds, rounded
/// down exactly as on the wire (RFC 3339 without fractions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecordView {
    pub id: String,
    pub prefix: String,
    pub name: String,
    pub kind: Kind,
    pub organization_id: String,
    pub workspace_id: String,
    pub workspace_slug: String,
    pub permission: Permission,
    pub repo_allowlist: Vec<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub created_by_token_prefix: String,
    /// Not on the wire: the record id of the token that minted/created this one.
    pub parent_id: Option<String>,
    /// Not on the wire: ExchangeToken's `subject`.
    pub subject: String,
}

/// One successful ExchangeToken call.
#[derive(Clone, Debug)]
pub struct ExchangeSeen {
    pub parent_id: String,
    /// `repoAllowlist` as requested.
    pub allowlist: Vec<String>,
    /// `permission` as requested; `None` when omitted or `PERMISSION_UNSPECIFIED`.
    pub requested_permission: Option<Permission>,
    /// `ttlSeconds` as requested (0 when omitted).
    pub ttl_seconds: i64,
    pub subject: String,
    pub minted: TokenRecordView,
    /// Always `Bearer` for a successful call; kept for symmetry with [`GitRequestSeen`].
    pub auth_scheme: AuthScheme,
    pub request_id: Option<String>,
    pub client: Option<String>,
}

/// Every request that reached `/githosted.v1.ApiService/{method}`.
#[derive(Clone, Debug)]
pub struct ApiCallSeen {
    pub method: String,
    pub auth_scheme: AuthScheme,
    /// Record id of the authenticated caller, if authentication succeeded.
    pub token_id: Option<String>,
    pub status: u16,
    /// Connect error code for non-200 answers produced by the server or a `Status` fault.
    pub code: Option<String>,
    pub faulted: bool,
    /// `X-Request-Id`, `X-Githosted-Client` and `Content-Type` as sent.
    pub request_id: Option<String>,
    pub client: Option<String>,
    pub content_type: Option<String>,
    /// Time spent in the API handler (after the body was read, until the answer was built).
    pub elapsed: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathForm {
    /// `/<ws>/<repo>.git/...`
    Plain,
    /// `/git/<ws>/<repo>.git/...`
    GitPrefix,
}

/// One git smart-HTTP request. Never holds a raw token.
#[derive(Clone, Debug)]
pub struct GitRequestSeen {
    pub method: String,
    /// The request path, without the query.
    pub path: String,
    pub query: String,
    pub form: PathForm,
    pub ws: String,
    pub repo: String,
    /// `git-upload-pack` / `git-receive-pack`, from `?service=` or the POST path.
    pub service: Option<String>,
    pub push: bool,
    pub auth_scheme: AuthScheme,
    /// The request's `Content-Encoding` (git gzips larger upload-pack requests).
    pub content_encoding: Option<String>,
    /// The authenticated token's record; `None` when no valid token was presented.
    pub token: Option<TokenRecordView>,
    pub status: u16,
}

impl GitRequestSeen {
    pub fn token_id(&self) -> Option<&str> {
        self.token.as_ref().map(|t| t.id.as_str())
    }
}

// ---------------------------------------------------------------------------------------------
// The handle
// ---------------------------------------------------------------------------------------------

pub struct Server {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    // Declared last: removed after the server thread has stopped.
    _dir: tempfile::TempDir,
}

impl Server {
    /// Binds 127.0.0.1 on a random port and starts serving on a new thread.
    pub fn start() -> Server {
        let dir = tempfile::tempdir().expect("temp dir for the test server");
        let root = dir.path().join("repos");
        let home = dir.path().join("home");
        std::fs::create_dir_all(&root).expect("create repo root");
        std::fs::create_dir_all(&home).expect("create server HOME");

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("local addr");

        let shared = Arc::new(Shared {
            root,
            home,
            state: Mutex::new(Store::new()),
        });
        let app = Router::new()
            .route("/githosted.v1.ApiService/{method}", post(api_handler))
            .fallback(git_handler)
            .with_state(shared.clone());

        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("githosted-test-server".to_string())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("server runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    let serve = std::future::IntoFuture::into_future(axum::serve(listener, app));
                    tokio::select! {
                        result = serve => {
                            if let Err(err) = result {
                                eprintln!("test server stopped: {err}");
                            }
                        }
                        _ = rx => {}
                    }
                });
                // Drops in-flight connections (and kills their http-backend children).
                rt.shutdown_timeout(Duration::from_secs(2));
            })
            .expect("spawn server thread");

        Server {
            shared,
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT`, the API base URL and the git host.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT`, as git's credential `host=` shows it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT/<ws>/<repo>.git`
    pub fn repo_url(&self, ws: &str, repo: &str) -> String {
        format!("{}/{ws}/{repo}.git", self.base_url())
    }

    /// `http://127.0.0.1:PORT/git/<ws>/<repo>.git`
    pub fn repo_url_git_prefix(&self, ws: &str, repo: &str) -> String {
        format!("{}/git/{ws}/{repo}.git", self.base_url())
    }

    /// Creates workspace `slug` with a fresh `ws_…` id (idempotent).
    pub fn add_workspace(&self, slug: &str) {
        assert!(valid_slug(slug), "invalid workspace slug {slug:?}");
        let mut st = self.lock();
        if st.workspace_by_slug(slug).is_none() {
            st.workspaces.push(Workspace {
                id: new_id("ws_"),
                slug: slug.to_string(),
            });
        }
    }

    pub fn workspace_id(&self, ws: &str) -> String {
        let st = self.lock();
        let w = st
            .workspace_by_slug(ws)
            .unwrap_or_else(|| panic!("no workspace {ws:?}"));
        st.workspaces[w].id.clone()
    }

    /// Creates the bare repo `<root>/<ws>/<repo>.git` with one commit on `main` (a README),
    /// HEAD -> main. The workspace must exist.
    pub fn add_repo(&self, ws: &str, repo: &str) {
        assert!(valid_slug(repo), "invalid repo slug {repo:?}");
        let ws_id = self.workspace_id(ws);
        let path = self.repo_path(ws, repo);
        assert!(!path.exists(), "repo {ws}/{repo} exists already");
        std::fs::create_dir_all(&path).expect("create repo dir");
        let p = path.to_str().expect("utf-8 temp path");
        self.git(None, &["init", "--bare", "-q", p], None);
        self.git(
            Some(&path),
            &["symbolic-ref", "HEAD", "refs/heads/main"],
            None,
        );
        let readme = format!("# {repo}\n\nA test repository in {ws}.\n");
        let blob = self.git(
            Some(&path),
            &["hash-object", "-w", "--stdin"],
            Some(&readme),
        );
        let tree = self.git(
            Some(&path),
            &["mktree"],
            Some(&format!("100644 blob {blob}\tREADME\n")),
        );
        let commit = self.git(
            Some(&path),
            &["commit-tree", &tree, "-m", "Initial commit"],
            None,
        );
        self.git(
            Some(&path),
            &["update-ref", "refs/heads/main", &commit],
            None,
        );
        self.lock().repos.push(Repo {
            id: new_id("rp_"),
            slug: repo.to_string(),
            workspace_id: ws_id,
        });
    }

    /// Registers repo `<ws>/<repo>` without creating it on disk: enough for ExchangeToken,
    /// which only checks the record, but not for git traffic. For benchmarks that need many
    /// repos ([`Server::add_repo`] runs several `git` commands per repo).
    pub fn add_repo_record_only(&self, ws: &str, repo: &str) {
        assert!(valid_slug(repo), "invalid repo slug {repo:?}");
        let ws_id = self.workspace_id(ws);
        let mut st = self.lock();
        assert!(
            !st.repos
                .iter()
                .any(|r| r.workspace_id == ws_id && r.slug == repo),
            "repo {ws}/{repo} exists already"
        );
        st.repos.push(Repo {
            id: new_id("rp_"),
            slug: repo.to_string(),
            workspace_id: ws_id,
        });
    }

    /// The repo's `rp_…` id.
    pub fn repo_id(&self, ws: &str, repo: &str) -> String {
        let st = self.lock();
        let w = st
            .workspace_by_slug(ws)
            .unwrap_or_else(|| panic!("no workspace {ws:?}"));
        let ws_id = st.workspaces[w].id.clone();
        st.repos
            .iter()
            .find(|r| r.workspace_id == ws_id && r.slug == repo)
            .unwrap_or_else(|| panic!("no repo {ws}/{repo}"))
            .id
            .clone()
    }

    pub fn repo_path(&self, ws: &str, repo: &str) -> PathBuf {
        self.shared.root.join(ws).join(format!("{repo}.git"))
    }

    /// Runs `git <args>` against the server's repos with the server's clean environment and
    /// returns trimmed stdout (e.g. `git rev-parse main` in [`Server::repo_path`]).
    pub fn git(&self, dir: Option<&FsPath>, args: &[&str], stdin: Option<&str>) -> String {
        let mut cmd = StdCommand::new("git");
        if let Some(dir) = dir {
            cmd.arg("-C").arg(dir);
        }
        cmd.args(args);
        clean_git_env(&mut cmd, &self.shared.home);
        cmd.env("GIT_AUTHOR_NAME", "Test Server")
            .env("GIT_AUTHOR_EMAIL", "server@githosted.test")
            .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
            .env("GIT_COMMITTER_NAME", "Test Server")
            .env("GIT_COMMITTER_EMAIL", "server@githosted.test")
            .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn git");
        if let Some(input) = stdin {
            use std::io::Write;
            let mut pipe = child.stdin.take().expect("git stdin");
            pipe.write_all(input.as_bytes()).expect("write git stdin");
        }
        let out = child.wait_with_output().expect("wait for git");
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Stores a new token (HMAC only) and returns its raw value.
    pub fn seed_token(&self, ws: &str, spec: TokenSpec) -> String {
        let mut st = self.lock();
        let w = st
            .workspace_by_slug(ws)
            .unwrap_or_else(|| panic!("no workspace {ws:?}"));
        let now = now();
        let name = format!("seed-{}", st.tokens.len() + 1);
        let (raw, _) = st.issue(NewToken {
            kind: spec.kind,
            permission: spec.permission,
            name,
            workspace: w,
            allowlist: spec.allowlist,
            created_at: now,
            expires_at: spec.ttl.map(|ttl| now + ttl),
            created_by_token_prefix: String::new(),
            created_by_name: "test seed".to_string(),
            parent_id: None,
            subject: String::new(),
        });
        raw
    }

    /// Revokes the token now. Panics if the token is unknown.
    pub fn revoke(&self, raw_token: &str) {
        let mut st = self.lock();
        let i = st.find(raw_token).expect("revoke: unknown token");
        st.tokens[i].revoked_at.get_or_insert(now());
    }

    /// Makes the token expired now (its `expiresAt` becomes one second ago).
    pub fn expire(&self, raw_token: &str) {
        let mut st = self.lock();
        let i = st.find(raw_token).expect("expire: unknown token");
        st.tokens[i].expires_at = Some(now() - Duration::from_secs(1));
    }

    /// Successful ExchangeToken calls.
    pub fn exchange_count(&self) -> usize {
        self.lock().exchanges.len()
    }

    /// Every request that reached API method `method` (including failed and faulted ones).
    pub fn calls(&self, method: &str) -> usize {
        self.lock()
            .api_calls
            .iter()
            .filter(|c| c.method == method)
            .count()
    }

    pub fn exchanges(&self) -> Vec<ExchangeSeen> {
        self.lock().exchanges.clone()
    }

    /// Serve `GET …/info/refs` without credentials (the first 401 of a push then
    /// comes on its POST, where git asks helpers without any capability).
    pub fn set_anonymous_info_refs(&self, on: bool) {
        self.lock().anonymous_info_refs = on;
    }

    /// Record ids revoked through the `RevokeToken` API (not through [`Server::revoke`]).
    pub fn revoked_via_api(&self) -> Vec<String> {
        self.lock().revoked_via_api.clone()
    }

    pub fn api_calls(&self) -> Vec<ApiCallSeen> {
        self.lock().api_calls.clone()
    }

    pub fn git_requests(&self) -> Vec<GitRequestSeen> {
        self.lock().git_requests.clone()
    }

    /// Looks the token up by its HMAC, like the server does.
    pub fn record_for(&self, raw_token: &str) -> Option<TokenRecordView> {
        let st = self.lock();
        st.find(raw_token).map(|i| st.view(i))
    }

    /// TEST-ONLY: every raw token value this server has issued (seeded, exchanged, created).
    /// The server's token store holds HMAC digests only; this side log exists solely so tests
    /// can check that no issued secret shows up in output, logs or files.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.lock().issued_for_leak_checks.clone()
    }

    pub fn inject_fault(&self, fault: Fault) {
        if fault.times > 0 {
            self.lock().faults.push_back(fault);
        }
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Faults injected and not yet used (a request takes one when it arrives).
    pub fn pending_faults(&self) -> usize {
        self.lock().faults.len()
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        self.shared.lock()
    }
}

impl Server {
    /// Stops serving now (connections refused from here on); the records stay readable.
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

struct Shared {
    root: PathBuf,
    home: PathBuf,
    state: Mutex<Store>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Workspace {
    id: String,
    slug: String,
}

struct Repo {
    id: String,
    slug: String,
    workspace_id: String,
}

type Digest = [u8; 32];

struct Token {
    id: String,
    /// HMAC-SHA256(server key, raw token). The raw value is never stored.
    digest: Digest,
    kind: Kind,
    permission: Permission,
    name: String,
    workspace: usize,
    allowlist: Vec<String>,
    created_at: OffsetDateTime,
    expires_at: Option<OffsetDateTime>,
    revoked_at: Option<OffsetDateTime>,
    last_used_at: Option<OffsetDateTime>,
    created_by_name: String,
    created_by_token_prefix: String,
    parent_id: Option<String>,
    subject: String,
}

impl Token {
    fn live(&self, now: OffsetDateTime) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

struct NewToken {
    kind: Kind,
    permission: Permission,
    name: String,
    workspace: usize,
    allowlist: Vec<String>,
    created_at: OffsetDateTime,
    expires_at: Option<OffsetDateTime>,
    created_by_token_prefix: String,
    created_by_name: String,
    parent_id: Option<String>,
    subject: String,
}

struct Store {
    hmac_key: [u8; 32],
    organization_id: String,
    workspaces: Vec<Workspace>,
    repos: Vec<Repo>,
    tokens: Vec<Token>,
    faults: VecDeque<Fault>,
    api_calls: Vec<ApiCallSeen>,
    exchanges: Vec<ExchangeSeen>,
    git_requests: Vec<GitRequestSeen>,
    /// Record ids revoked through `RevokeToken`, in order.
    revoked_via_api: Vec<String>,
    /// Test knob: answer `GET …/info/refs` without credentials, so a push's
    /// first 401 comes on its POST.
    anonymous_info_refs: bool,
    /// TEST-ONLY, see [`Server::issued_tokens`]. Never read by the server.
    issued_for_leak_checks: Vec<String>,
}

impl Store {
    fn new() -> Self {
        Store {
            hmac_key: rand::random(),
            organization_id: new_id("org_"),
            workspaces: Vec::new(),
            repos: Vec::new(),
            tokens: Vec::new(),
            faults: VecDeque::new(),
            api_calls: Vec::new(),
            exchanges: Vec::new(),
            git_requests: Vec::new(),
            revoked_via_api: Vec::new(),
            anonymous_info_refs: false,
            issued_for_leak_checks: Vec::new(),
        }
    }

    fn digest(&self, raw: &str) -> Digest {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.hmac_key).expect("any key length");
        mac.update(raw.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn find(&self, raw: &str) -> Option<usize> {
        let d = self.digest(raw);
        self.tokens.iter().position(|t| t.digest == d)
    }

    /// The live token for `raw`, marking it used; `None` for unknown, expired or revoked.
    fn authenticate(&mut self, raw: &str) -> Option<usize> {
        let now = now();
        let i = self.find(raw)?;
        if !self.tokens[i].live(now) {
            return None;
        }
        self.tokens[i].last_used_at = Some(now);
        Some(i)
    }

    fn issue(&mut self, t: NewToken) -> (String, usize) {
        let raw = format!("{}_{}", t.kind.prefix(), random_alnum(40));
        let token = Token {
            id: new_id("tk_"),
            digest: self.digest(&raw),
            kind: t.kind,
            permission: t.permission,
            name: t.name,
            workspace: t.workspace,
            allowlist: t.allowlist,
            created_at: t.created_at,
            expires_at: t.expires_at,
            revoked_at: None,
            last_used_at: None,
            created_by_name: t.created_by_name,
            created_by_token_prefix: t.created_by_token_prefix,
            parent_id: t.parent_id,
            subject: t.subject,
        };
        self.tokens.push(token);
        self.issued_for_leak_checks.push(raw.clone());
        (raw, self.tokens.len() - 1)
    }

    fn workspace_by_slug(&self, slug: &str) -> Option<usize> {
        self.workspaces.iter().position(|w| w.slug == slug)
    }

    fn repo_in(&self, workspace: usize, slug: &str) -> Option<&Repo> {
        let ws_id = &self.workspaces[workspace].id;
        self.repos
            .iter()
            .find(|r| &r.workspace_id == ws_id && r.slug == slug)
    }

    fn view(&self, i: usize) -> TokenRecordView {
        let t = &self.tokens[i];
        let ws = &self.workspaces[t.workspace];
        TokenRecordView {
            id: t.id.clone(),
            prefix: t.kind.prefix().to_string(),
            name: t.name.clone(),
            kind: t.kind,
            organization_id: self.organization_id.clone(),
            workspace_id: ws.id.clone(),
            workspace_slug: ws.slug.clone(),
            permission: t.permission,
            repo_allowlist: t.allowlist.clone(),
            created_at: t.created_at.unix_timestamp(),
            expires_at: t.expires_at.map(OffsetDateTime::unix_timestamp),
            revoked_at: t.revoked_at.map(OffsetDateTime::unix_timestamp),
            last_used_at: t.last_used_at.map(OffsetDateTime::unix_timestamp),
            created_by_token_prefix: t.created_by_token_prefix.clone(),
            parent_id: t.parent_id.clone(),
            subject: t.subject.clone(),
        }
    }

    /// The token record in proto3 canonical JSON: default values (empty strings and lists,
    /// unset timestamps) are left out.
    fn record_json(&self, i: usize) -> Value {
        let t = &self.tokens[i];
        let mut m = Map::new();
        let mut put = |k: &str, v: Value| {
            let empty = match &v {
                Value::String(s) => s.is_empty(),
                Value::Array(a) => a.is_empty(),
                Value::Null => true,
                _ => false,
            };
            if !empty {
                m.insert(k.to_string(), v);
            }
        };
        put("id", json!(t.id));
        put("prefix", json!(t.kind.prefix()));
        put("name", json!(t.name));
        put("kind", json!(t.kind.wire()));
        put("organizationId", json!(self.organization_id));
        put("workspaceId", json!(self.workspaces[t.workspace].id));
        put("permission", json!(t.permission.wire()));
        put("repoAllowlist", json!(t.allowlist));
        put("createdAt", json!(rfc3339(t.created_at)));
        put("expiresAt", json!(t.expires_at.map(rfc3339)));
        put("revokedAt", json!(t.revoked_at.map(rfc3339)));
        put("lastUsedAt", json!(t.last_used_at.map(rfc3339)));
        put("createdByName", json!(t.created_by_name));
        put("createdByTokenPrefix", json!(t.created_by_token_prefix));
        Value::Object(m)
    }

    /// Resolves one `repoAllowlist` entry (a slug in the caller's workspace or an `rp_…` id).
    fn check_allowlist_entry(&self, workspace: usize, entry: &str) -> Result<(), ApiError> {
        if entry.is_empty() {
            return Err(ApiError::invalid_argument(
                "repoAllowlist entries must not be empty",
            ));
        }
        if entry.starts_with("rp_") {
            let repo = self
                .repos
                .iter()
                .find(|r| r.id == entry)
                .ok_or_else(|| ApiError::not_found(format!("repo {entry} not found")))?;
            if repo.workspace_id != self.workspaces[workspace].id {
                return Err(ApiError::permission_denied(format!(
                    "repo {entry} is not in this workspace"
                )));
            }
            return Ok(());
        }
        if self.repo_in(workspace, entry).is_none() {
            return Err(ApiError::not_found(format!(
                "repo {entry:?} not found in this workspace"
            )));
        }
        Ok(())
    }

    /// `organizationRef` / `workspaceRef`: empty means "the caller's"; otherwise an id or
    /// slug that must name the caller's own organization / workspace.
    fn check_refs(&self, caller: usize, req: &Req) -> Result<(), ApiError> {
        let org = req.string("organizationRef", "organization_ref")?;
        if !org.is_empty() && org != self.organization_id {
            return Err(ApiError::permission_denied(
                "organizationRef is not the caller's",
            ));
        }
        let ws = req.string("workspaceRef", "workspace_ref")?;
        let own = &self.workspaces[self.tokens[caller].workspace];
        if !ws.is_empty() && ws != own.id && ws != own.slug {
            return Err(ApiError::permission_denied(
                "workspaceRef is not the caller's",
            ));
        }
        Ok(())
    }

    fn require_workspace_token(&self, caller: usize) -> Result<(), ApiError> {
        if self.tokens[caller].kind != Kind::Workspace {
            return Err(ApiError::permission_denied(
                "this method needs a workspace (gw_) token",
            ));
        }
        Ok(())
    }

    // ----- API methods -------------------------------------------------------------------------

    fn exchange_token(
        &mut self,
        caller: usize,
        req: &Req,
        meta: &CallMeta,
    ) -> Result<Value, ApiError> {
        self.require_workspace_token(caller)?;
        self.check_refs(caller, req)?;
        let allowlist = req.strings("repoAllowlist", "repo_allowlist")?;
        let requested_permission = req.permission()?;
        let ttl_seconds = req.int("ttlSeconds", "ttl_seconds")?;
        let subject = req.string("subject", "subject")?;

        if allowlist.is_empty() {
            return Err(ApiError::invalid_argument(
                "repoAllowlist must not be empty",
            ));
        }
        if ttl_seconds < 0 {
            return Err(ApiError::invalid_argument(
                "ttlSeconds must not be negative",
            ));
        }
        let workspace = self.tokens[caller].workspace;
        for entry in &allowlist {
            self.check_allowlist_entry(workspace, entry)?;
        }
        let permission = requested_permission.unwrap_or(Permission::Read);
        if permission > self.tokens[caller].permission {
            return Err(ApiError::permission_denied(
                "permission exceeds the parent token's permission",
            ));
        }
        let ttl = match ttl_seconds {
            0 => DEFAULT_EXCHANGE_TTL_SECS,
            n => n.min(MAX_EXCHANGE_TTL_SECS),
        };
        let now = now();
        let name = if subject.is_empty() {
            "exchange".to_string()
        } else {
            format!("exchange: {subject}")
        };
        let (raw, i) = self.issue(NewToken {
            kind: Kind::Repo,
            permission,
            name,
            workspace,
            allowlist: allowlist.clone(),
            created_at: now,
            expires_at: Some(now + Duration::from_secs(ttl as u64)),
            created_by_token_prefix: self.tokens[caller].kind.prefix().to_string(),
            created_by_name: String::new(),
            parent_id: Some(self.tokens[caller].id.clone()),
            subject: subject.clone(),
        });
        self.exchanges.push(ExchangeSeen {
            parent_id: self.tokens[caller].id.clone(),
            allowlist,
            requested_permission,
            ttl_seconds,
            subject,
            minted: self.view(i),
            auth_scheme: AuthScheme::Bearer,
            request_id: meta.request_id.clone(),
            client: meta.client.clone(),
        });
        Ok(json!({"token": raw, "record": self.record_json(i)}))
    }

    fn revoke_token(&mut self, caller: usize, req: &Req) -> Result<Value, ApiError> {
        self.require_workspace_token(caller)?;
        self.check_refs(caller, req)?;
        let id = req.string("tokenId", "token_id")?;
        if id.is_empty() {
            return Err(ApiError::invalid_argument("tokenId is required"));
        }
        let workspace = self.tokens[caller].workspace;
        let target = self
            .tokens
            .iter_mut()
            .find(|t| t.id == id && t.workspace == workspace)
            .ok_or_else(|| ApiError::not_found(format!("token {id} not found")))?;
        target.revoked_at.get_or_insert(now());
        self.revoked_via_api.push(id);
        Ok(json!({}))
    }

    fn list_tokens(&mut self, caller: usize, req: &Req) -> Result<Value, ApiError> {
        self.require_workspace_token(caller)?;
        self.check_refs(caller, req)?;
        let page_size = req.int("pageSize", "page_size")?;
        let page_token = req.string("pageToken", "page_token")?;
        if page_size < 0 {
            return Err(ApiError::invalid_argument("pageSize must not be negative"));
        }
        let size = match page_size as usize {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let start: usize = if page_token.is_empty() {
            0
        } else {
            page_token
                .parse()
                .map_err(|_| ApiError::invalid_argument("invalid pageToken"))?
        };
        let workspace = self.tokens[caller].workspace;
        let mine: Vec<usize> = (0..self.tokens.len())
            .filter(|&i| self.tokens[i].workspace == workspace)
            .collect();
        let page: Vec<Value> = mine
            .iter()
            .skip(start)
            .take(size)
            .map(|&i| self.record_json(i))
            .collect();
        let mut out = Map::new();
        if !page.is_empty() {
            out.insert("tokens".into(), Value::Array(page));
        }
        let next = start.saturating_add(size);
        if next < mine.len() {
            out.insert("nextPageToken".into(), json!(next.to_string()));
        }
        Ok(Value::Object(out))
    }

    fn create_token(&mut self, caller: usize, req: &Req) -> Result<Value, ApiError> {
        self.require_workspace_token(caller)?;
        self.check_refs(caller, req)?;
        if self.tokens[caller].permission != Permission::Write {
            return Err(ApiError::permission_denied(
                "CreateToken needs a write workspace token",
            ));
        }
        let name = req.string("name", "name")?;
        let kind = req.kind()?;
        let permission = req.permission()?;
        let allowlist = req.strings("repoAllowlist", "repo_allowlist")?;
        let ttl_hours = req.int("ttlHours", "ttl_hours")?;
        if name.is_empty() {
            return Err(ApiError::invalid_argument("name is required"));
        }
        let kind = kind.ok_or_else(|| ApiError::invalid_argument("kind is required"))?;
        let permission =
            permission.ok_or_else(|| ApiError::invalid_argument("permission is required"))?;
        if !(0..=MAX_CREATE_TTL_HOURS).contains(&ttl_hours) {
            return Err(ApiError::invalid_argument(format!(
                "ttlHours must be between 0 and {MAX_CREATE_TTL_HOURS}"
            )));
        }
        let workspace = self.tokens[caller].workspace;
        match kind {
            Kind::Workspace if !allowlist.is_empty() => {
                return Err(ApiError::invalid_argument(
                    "a workspace token takes no repoAllowlist",
                ));
            }
            Kind::Repo if allowlist.is_empty() => {
                return Err(ApiError::invalid_argument(
                    "a repo token needs a non-empty repoAllowlist",
                ));
            }
            _ => {}
        }
        for entry in &allowlist {
            self.check_allowlist_entry(workspace, entry)?;
        }
        let now = now();
        let (raw, i) = self.issue(NewToken {
            kind,
            permission,
            name,
            workspace,
            allowlist,
            created_at: now,
            expires_at: (ttl_hours > 0).then(|| now + Duration::from_secs(ttl_hours as u64 * 3600)),
            created_by_token_prefix: self.tokens[caller].kind.prefix().to_string(),
            created_by_name: String::new(),
            parent_id: Some(self.tokens[caller].id.clone()),
            subject: String::new(),
        });
        Ok(json!({"token": raw, "record": self.record_json(i)}))
    }

    /// Takes one use of the first queued fault that applies to `method`.
    fn take_fault(&mut self, method: &str) -> Option<FaultKind> {
        let pos = self
            .faults
            .iter()
            .position(|f| f.method.as_deref().is_none_or(|m| m == method))?;
        let fault = &mut self.faults[pos];
        fault.times -= 1;
        let kind = fault.kind.clone();
        if fault.times == 0 {
            self.faults.remove(pos);
        }
        Some(kind)
    }
}

// ---------------------------------------------------------------------------------------------
// Connect-JSON control plane
// ---------------------------------------------------------------------------------------------

const METHODS: [&str; 4] = ["ExchangeToken", "RevokeToken", "ListTokens", "CreateToken"];

struct ApiError {
    http: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(http: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            http,
            code,
            message: message.into(),
        }
    }
    fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            UNAUTHENTICATED_MESSAGE,
        )
    }
    fn permission_denied(m: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission_denied", m)
    }
    fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", m)
    }
    fn invalid_argument(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_argument", m)
    }
}

fn connect_error(http: StatusCode, code: &str, message: &str) -> Response {
    (
        http,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"code": code, "message": message}).to_string(),
    )
        .into_response()
}

struct CallMeta {
    request_id: Option<String>,
    client: Option<String>,
}

async fn api_handler(
    State(shared): State<Arc<Shared>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let header_str = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut seen = ApiCallSeen {
        method: method.clone(),
        auth_scheme: AuthScheme::None,
        token_id: None,
        status: 200,
        code: None,
        faulted: false,
        request_id: header_str("x-request-id"),
        client: header_str("x-githosted-client"),
        content_type: header_str("content-type"),
        elapsed: Duration::ZERO,
    };
    let (scheme, raw) = credentials(&headers);
    seen.auth_scheme = scheme;

    let fault = shared.lock().take_fault(&method);
    match fault {
        Some(FaultKind::Delay(d)) => tokio::time::sleep(d).await,
        Some(FaultKind::Status {
            http,
            code,
            retry_after,
        }) => {
            let status = StatusCode::from_u16(http).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp = connect_error(status, &code, "injected fault");
            if let Some(secs) = retry_after {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            seen.status = status.as_u16();
            seen.code = Some(code);
            seen.faulted = true;
            seen.elapsed = started.elapsed();
            shared.lock().api_calls.push(seen);
            return resp;
        }
        Some(FaultKind::RawBody { http, body }) => {
            let status = StatusCode::from_u16(http).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            seen.status = status.as_u16();
            seen.faulted = true;
            seen.elapsed = started.elapsed();
            shared.lock().api_calls.push(seen);
            return (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        }
        Some(FaultKind::HugeBody { bytes }) => {
            seen.faulted = true;
            seen.elapsed = started.elapsed();
            shared.lock().api_calls.push(seen);
            const CHUNK: u64 = 64 * 1024;
            let chunks = bytes.div_ceil(CHUNK);
            let stream = futures_util::stream::iter((0..chunks).map(|_| {
                Ok::<_, std::convert::Infallible>(Bytes::from(vec![b' '; CHUNK as usize]))
            }));
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                axum::body::Body::from_stream(stream),
            )
                .into_response();
        }
        None => {}
    }

    let meta = CallMeta {
        request_id: seen.request_id.clone(),
        client: seen.client.clone(),
    };
    let mut st = shared.lock();
    let result = (|| {
        if !METHODS.contains(&method.as_str()) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unimplemented",
                format!("githosted.v1.ApiService/{method} is not implemented"),
            ));
        }
        let json_body = seen
            .content_type
            .as_deref()
            .is_some_and(|ct| ct.split(';').next().unwrap_or("").trim() == "application/json");
        if !json_body {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_argument",
                "Content-Type must be application/json",
            ));
        }
        let caller = match (scheme, raw.as_deref()) {
            (AuthScheme::Bearer, Some(raw)) => st.authenticate(raw),
            _ => None,
        }
        .ok_or_else(ApiError::unauthenticated)?;
        seen.token_id = Some(st.tokens[caller].id.clone());
        let parsed: Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid_argument(format!("request is not JSON: {e}")))?;
        let Value::Object(fields) = parsed else {
            return Err(ApiError::invalid_argument("request must be a JSON object"));
        };
        let req = Req(&fields);
        match method.as_str() {
            "ExchangeToken" => st.exchange_token(caller, &req, &meta),
            "RevokeToken" => st.revoke_token(caller, &req),
            "ListTokens" => st.list_tokens(caller, &req),
            _ => st.create_token(caller, &req),
        }
    })();
    let resp = match result {
        Ok(value) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            value.to_string(),
        )
            .into_response(),
        Err(e) => {
            seen.status = e.http.as_u16();
            seen.code = Some(e.code.to_string());
            connect_error(e.http, e.code, &e.message)
        }
    };
    seen.elapsed = started.elapsed();
    st.api_calls.push(seen);
    resp
}

/// Field access for a proto3 JSON request: accepts the lowerCamelCase name and the proto
/// field name, treats `null` and missing as the default value, ignores unknown fields.
struct Req<'a>(&'a Map<String, Value>);

impl Req<'_> {
    fn field(&self, camel: &str, snake: &str) -> Option<&Value> {
        self.0
            .get(camel)
            .or_else(|| self.0.get(snake))
            .filter(|v| !v.is_null())
    }

    fn string(&self, camel: &str, snake: &str) -> Result<String, ApiError> {
        match self.field(camel, snake) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(ApiError::invalid_argument(format!(
                "{camel}: want a string"
            ))),
        }
    }

    fn strings(&self, camel: &str, snake: &str) -> Result<Vec<String>, ApiError> {
        let bad = || ApiError::invalid_argument(format!("{camel}: want a list of strings"));
        match self.field(camel, snake) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string).ok_or_else(bad))
                .collect(),
            Some(_) => Err(bad()),
        }
    }

    /// An integer as a JSON number or (proto3 int64 style) a decimal string.
    fn int(&self, camel: &str, snake: &str) -> Result<i64, ApiError> {
        let bad = || ApiError::invalid_argument(format!("{camel}: want an integer"));
        match self.field(camel, snake) {
            None => Ok(0),
            Some(Value::Number(n)) => n
                .as_i64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                        .map(|f| f as i64)
                })
                .ok_or_else(bad),
            Some(Value::String(s)) => s.parse().map_err(|_| bad()),
            Some(_) => Err(bad()),
        }
    }

    fn enum_name(&self, camel: &str) -> Result<Option<String>, ApiError> {
        match self.field(camel, camel) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::invalid_argument(format!(
                "{camel}: want an enum name"
            ))),
        }
    }

    /// `None` for missing or `PERMISSION_UNSPECIFIED`.
    fn permission(&self) -> Result<Option<Permission>, ApiError> {
        match self.enum_name("permission")?.as_deref() {
            None | Some("PERMISSION_UNSPECIFIED") => Ok(None),
            Some("PERMISSION_READ") => Ok(Some(Permission::Read)),
            Some("PERMISSION_WRITE") => Ok(Some(Permission::Write)),
            Some(other) => Err(ApiError::invalid_argument(format!(
                "permission: unknown value {other:?}"
            ))),
        }
    }

    /// `None` for missing or `TOKEN_KIND_UNSPECIFIED`.
    fn kind(&self) -> Result<Option<Kind>, ApiError> {
        match self.enum_name("kind")?.as_deref() {
            None | Some("TOKEN_KIND_UNSPECIFIED") => Ok(None),
            Some("TOKEN_KIND_WORKSPACE") => Ok(Some(Kind::Workspace)),
            Some("TOKEN_KIND_REPO") => Ok(Some(Kind::Repo)),
            Some(other) => Err(ApiError::invalid_argument(format!(
                "kind: unknown value {other:?}"
            ))),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Git smart HTTP
// ---------------------------------------------------------------------------------------------

struct GitPath {
    form: PathForm,
    ws: String,
    repo: String,
    /// After `<repo>.git/`, e.g. `info/refs` or `git-upload-pack`.
    rest: String,
}

fn parse_git_path(path: &str) -> Option<GitPath> {
    fn plain(s: &str, form: PathForm) -> Option<GitPath> {
        let (ws, after) = s.split_once('/')?;
        let (repo_git, rest) = after.split_once('/').unwrap_or((after, ""));
        let repo = repo_git.strip_suffix(".git")?;
        let rest_ok = rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
            && !rest.split('/').any(|seg| seg == "..");
        (valid_slug(ws) && valid_slug(repo) && rest_ok).then(|| GitPath {
            form,
            ws: ws.to_string(),
            repo: repo.to_string(),
            rest: rest.to_string(),
        })
    }
    let s = path.strip_prefix('/')?;
    s.strip_prefix("git/")
        .and_then(|r| plain(r, PathForm::GitPrefix))
        .or_else(|| plain(s, PathForm::Plain))
}

/// `git-upload-pack` / `git-receive-pack` from `info/refs?service=…` or the POST endpoint.
fn git_service(rest: &str, query: &str) -> Option<String> {
    if rest == "info/refs" {
        return query
            .split('&')
            .find_map(|kv| kv.strip_prefix("service="))
            .map(str::to_string);
    }
    ["git-upload-pack", "git-receive-pack"]
        .into_iter()
        .find(|s| rest == *s)
        .map(str::to_string)
}

fn plain_text(status: StatusCode, text: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{text}\n"),
    )
        .into_response()
}

fn unauthorized_git() -> Response {
    let mut resp = plain_text(StatusCode::UNAUTHORIZED, "authentication required");
    let h = resp.headers_mut();
    h.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"githosted\""),
    );
    h.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"githosted\""),
    );
    resp
}

async fn git_handler(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    if path.starts_with("/githosted.") {
        return connect_error(StatusCode::NOT_FOUND, "unimplemented", "unknown procedure");
    }
    let Some(gp) = parse_git_path(&path) else {
        // A git request (for a repo path that cannot exist) without credentials:
        // ask for them first, saying nothing about what exists.
        let git_request = path.ends_with("/info/refs")
            || path.ends_with("/git-upload-pack")
            || path.ends_with("/git-receive-pack");
        if git_request && credentials(&parts.headers).1.is_none() {
            return unauthorized_git();
        }
        return plain_text(StatusCode::NOT_FOUND, "not found");
    };
    let query = parts.uri.query().unwrap_or("").to_string();
    let service = git_service(&gp.rest, &query);
    let push = service.as_deref() == Some("git-receive-pack");
    let (scheme, raw) = credentials(&parts.headers);

    let mut seen = GitRequestSeen {
        method: parts.method.to_string(),
        path: path.clone(),
        query: query.clone(),
        form: gp.form,
        ws: gp.ws.clone(),
        repo: gp.repo.clone(),
        service,
        push,
        auth_scheme: scheme,
        content_encoding: parts
            .headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        token: None,
        status: 0,
    };

    // Decide under the lock; run the backend without it.
    let decision: Result<String, Response> = {
        let mut st = shared.lock();
        let anonymous_refs = st.anonymous_info_refs
            && raw.is_none()
            && parts.method == axum::http::Method::GET
            && gp.rest == "info/refs";
        match raw.as_deref().and_then(|raw| st.authenticate(raw)) {
            None if anonymous_refs => Ok("anonymous".to_owned()),
            None => Err(unauthorized_git()),
            Some(i) => {
                seen.token = Some(st.view(i));
                let t = &st.tokens[i];
                let own_ws = &st.workspaces[t.workspace];
                let repo = st.repo_in(t.workspace, &gp.repo);
                let allowed = t.kind == Kind::Workspace
                    || t.allowlist
                        .iter()
                        .any(|entry| *entry == gp.repo || repo.is_some_and(|r| r.id == *entry));
                if own_ws.slug != gp.ws {
                    Err(plain_text(
                        StatusCode::FORBIDDEN,
                        "token is for another workspace",
                    ))
                } else if !allowed {
                    Err(plain_text(
                        StatusCode::FORBIDDEN,
                        "repo not allowed for this token",
                    ))
                } else if repo.is_none() {
                    Err(plain_text(StatusCode::NOT_FOUND, "repository not found"))
                } else if push && t.permission != Permission::Write {
                    Err(plain_text(StatusCode::FORBIDDEN, "token is read-only"))
                } else {
                    Ok(t.id.clone())
                }
            }
        }
    };
    let resp = match decision {
        Err(resp) => resp,
        Ok(remote_user) => match axum::body::to_bytes(body, GIT_BODY_LIMIT).await {
            Err(_) => plain_text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
            Ok(body) => {
                let cgi = Cgi {
                    method: parts.method.as_str(),
                    path_info: format!("/{}/{}.git/{}", gp.ws, gp.repo, gp.rest),
                    query: &query,
                    headers: &parts.headers,
                    remote_user: &remote_user,
                };
                match http_backend(&shared, cgi, body).await {
                    Ok(resp) => resp,
                    Err(err) => plain_text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &format!("http-backend: {err}"),
                    ),
                }
            }
        },
    };
    seen.status = resp.status().as_u16();
    shared.lock().git_requests.push(seen);
    resp
}

struct Cgi<'a> {
    method: &'a str,
    path_info: String,
    query: &'a str,
    headers: &'a HeaderMap,
    remote_user: &'a str,
}

/// Runs `git http-backend` as a CGI script: request meta-variables in the environment, the
/// body on stdin; its stdout is CGI headers (with `Status:`), a blank line, then the body.
async fn http_backend(shared: &Shared, cgi: Cgi<'_>, body: Bytes) -> Result<Response, String> {
    let header = |name: &str| {
        cgi.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend");
    clean_git_env(cmd.as_std_mut(), &shared.home);
    cmd.env("GIT_PROJECT_ROOT", &shared.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REQUEST_METHOD", cgi.method)
        .env("PATH_INFO", &cgi.path_info)
        .env("QUERY_STRING", cgi.query)
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_USER", cgi.remote_user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("HTTP_GIT_PROTOCOL", header("git-protocol"))
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let writer = tokio::spawn(async move {
        // http-backend may stop reading early (e.g. on an error); that is not our failure.
        let _ = stdin.write_all(&body).await;
    });
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("wait: {e}"))?;
    let _ = writer.await;
    parse_cgi(&out.stdout).ok_or_else(|| {
        format!(
            "bad CGI output ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn parse_cgi(out: &[u8]) -> Option<Response> {
    let (head_len, sep_len) = [&b"\r\n\r\n"[..], &b"\n\n"[..]]
        .iter()
        .filter_map(|sep| {
            out.windows(sep.len())
                .position(|w| w == *sep)
                .map(|p| (p, sep.len()))
        })
        .min()?;
    let head = std::str::from_utf8(&out[..head_len]).ok()?;
    let mut status = StatusCode::OK;
    let mut headers = HeaderMap::new();
    for line in head.lines() {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next()?.parse().ok()?;
            status = StatusCode::from_u16(code).ok()?;
        } else {
            headers.append(
                header::HeaderName::from_bytes(name.trim().as_bytes()).ok()?,
                HeaderValue::from_str(value).ok()?,
            );
        }
    }
    let mut resp = Response::new(Body::from(out[head_len + sep_len..].to_vec()));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    Some(resp)
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Only what git needs from the test's environment: PATH, plus a private HOME and no system
/// config, so the developer's git configuration cannot change the server.
fn clean_git_env(cmd: &mut StdCommand, home: &FsPath) {
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("LC_ALL", "C");
}

/// The `Authorization` header: its scheme and, for Basic, the password; for Bearer, the token.
fn credentials(headers: &HeaderMap) -> (AuthScheme, Option<String>) {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return (AuthScheme::None, None);
    };
    let Ok(value) = value.to_str() else {
        return (AuthScheme::Other, None);
    };
    let (scheme, param) = value.trim().split_once(' ').unwrap_or((value, ""));
    let param = param.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        (
            AuthScheme::Bearer,
            Some(param.to_string()).filter(|t| !t.is_empty()),
        )
    } else if scheme.eq_ignore_ascii_case("basic") {
        let password = base64_decode(param)
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.split_once(':').map(|(_, p)| p.to_string()))
            .filter(|p| !p.is_empty());
        (AuthScheme::Basic, password)
    } else {
        (AuthScheme::Other, None)
    }
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn valid_slug(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn random_alnum(n: usize) -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", random_alnum(16).to_ascii_lowercase())
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// RFC 3339 in UTC without fractional seconds (rounded down), e.g. `2026-11-22T14:00:00Z`.
fn rfc3339(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_default()
}
