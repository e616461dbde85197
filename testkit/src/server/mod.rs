//! A local, githosted-compatible server for the integration tests.
//!
//! It follows githosted's documented API (and its official SDKs):
//! - the Connect-JSON control plane, `POST /githosted.v1.ApiService/{Method}` with
//!   `Authorization: Bearer <token>` (ExchangeToken, RevokeToken, ListTokens, CreateToken);
//! - git's smart HTTP, served by `git http-backend` (CGI) under `/<ws>/<repo>.git/...` and
//!   `/git/<ws>/<repo>.git/...`, authenticated by HTTP Basic (token as password) or Bearer;
//! - a minimal Git LFS batch API under `<repo>.git/info/lfs/` (see `lfs.rs`), authenticated the same way.
//!
//! It runs on its own thread with its own tokio runtime, so a plain `#[test]` can block on a
//! `git` subprocess while the server answers; dropping the [`Server`] stops it. Tokens are
//! stored only as HMAC-SHA256 digests under a per-server random key. The one exception is
//! [`Server::issued_tokens`], a test-only side log that exists so tests can scan output and
//! files for leaked secrets; the server itself never consults it.
//!

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

mod api;
mod git;
mod lfs;
mod persist;
mod store;
mod util;

use api::*;
use git::*;
use lfs::*;
use store::*;
use util::*;

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
pub(crate) const UNAUTHENTICATED_MESSAGE: &str = "missing, invalid, expired or revoked token";
/// Git request bodies are buffered; pushes in tests are small.
pub(crate) const GIT_BODY_LIMIT: usize = 256 * 1024 * 1024;

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
    // Declared last: removed after the server thread has stopped (none when
    // the state lives in a directory of the caller's).
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    /// Binds 127.0.0.1 on a random port and starts serving on a new thread.
    pub fn start() -> Server {
        Server::start_on(0)
    }

    /// [`Server::start`] on a given loopback port (0: any free one).
    pub fn start_on(port: u16) -> Server {
        Server::start_in(port, None).expect("start the test server")
    }

    /// [`Server::start_on`], its workspaces, repos and tokens kept in
    /// `state_dir` (created if missing) and read back from it: a server
    /// started again with the same directory knows every token it issued.
    /// `Err`: the port is taken, or the directory holds no state it can read.
    pub fn start_with_state(port: u16, state_dir: &FsPath) -> Result<Server, String> {
        Server::start_in(port, Some(state_dir))
    }

    fn start_in(port: u16, state_dir: Option<&FsPath>) -> Result<Server, String> {
        let (dir, base, store) = match state_dir {
            None => {
                let dir = tempfile::tempdir().map_err(|e| format!("a temp dir: {e}"))?;
                let base = dir.path().to_owned();
                (Some(dir), base, Store::new())
            }
            Some(state) => {
                std::fs::create_dir_all(state).map_err(|e| format!("{}: {e}", state.display()))?;
                (None, state.to_owned(), persist::load(state)?)
            }
        };
        let root = base.join("repos");
        let home = base.join("home");
        std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
        std::fs::create_dir_all(&home).map_err(|e| format!("{}: {e}", home.display()))?;

        let listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("nonblocking listener: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("local addr: {e}"))?;

        let shared = Arc::new(Shared {
            root,
            home,
            state: Mutex::new(store),
            state_dir: state_dir.map(FsPath::to_owned),
        });
        let app = Router::new()
            .route(
                "/githosted.v1.ApiService/{method}",
                post(
                    |State(shared): State<Arc<Shared>>,
                     method: Path<String>,
                     headers: HeaderMap,
                     body: Bytes| async move {
                        let answer =
                            api_handler(State(shared.clone()), method, headers, body).await;
                        shared.persist();
                        answer
                    },
                ),
            )
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
            .map_err(|e| format!("spawn server thread: {e}"))?;

        Ok(Server {
            shared,
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
            _dir: dir,
        })
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
        drop(st);
        self.shared.persist();
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
        self.shared.persist();
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
        drop(st);
        self.shared.persist();
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

    /// Exchanged tokens live at most `cap` from now on (whatever was asked).
    pub fn cap_exchange_ttl(&self, cap: Duration) {
        self.lock().exchange_ttl_cap = Some(i64::try_from(cap.as_secs()).unwrap_or(i64::MAX));
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Faults injected and not yet used (a request takes one when it arrives).
    pub fn pending_faults(&self) -> usize {
        self.lock().faults.len()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Store> {
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
