//! Where a token for git comes from (`get`, `token`).
//!
//! In order, within one deadline:
//! 1. a `gr_` in `GITHOSTED_TOKEN` is passed through as it is (it is narrow already);
//! 2. the agent's cache, if it holds a fit token (no keychain read: the warm path);
//! 3. the parent token (environment, then keychain), minted through the agent
//!    (once, however many ask at the same time);
//! 4. without an agent, or when it fails, a mint right here with what is left
//!    of the deadline.
//!
//! With a broker (`--broker`, CI) the job's OIDC ID token takes the parent's
//! place: the agent's cache is keyed by the broker and a keyed hash of the
//! job's identity, a miss fetches an ID token and asks the broker.
//!
//! The parent source, the agent and the minter are traits, so every fallback is
//! tested in-process (see the tests below), like the cache's policy.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::agent::client::{Agent, AgentError};
use crate::api::{self, ApiError, Code};
use crate::cache::{Dropped, Grant, Key, MintParams, Minter};
use crate::keychain::{self, KeychainError, Parent, Source};
use crate::minter::ApiMinter;
use crate::net;
use crate::plan::{self, Plan};
use crate::secret::{Secret, TokenKind};
use crate::settings::{self, Settings};
use crate::target::Target;
use crate::token::Issued;

/// How long revoking forgotten tokens may hold up `erase` or `logout`.
pub const REVOKE_BUDGET: Duration = Duration::from_secs(3);

/// A failure of `get`, worded for the person at the terminal. Never holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error(
        "no githosted workspace token for {workspace} on {api_host}: run `git-credential-githosted login{api_flag} --workspace {workspace}` (token on stdin), or set {env}",
        env = keychain::ENV_TOKEN
    )]
    NoToken {
        api_host: String,
        workspace: String,
        api_flag: String,
    },
    #[error("{api_host} rejected {origin} (expired or revoked): {remedy}")]
    ParentRejected {
        api_host: String,
        origin: Source,
        remedy: String,
    },
    #[error(
        "{} refused a {} token for {}/{} ({}): with a read-only workspace token, run `git-credential-githosted configure{} --permission auto` (read tokens for fetches); pushes need a write token: `git-credential-githosted login{} --workspace {}`",
        .0.api_host, .0.permission, .0.workspace, .0.repo, .0.message, .0.api_flag, .0.api_flag, .0.workspace
    )]
    PermissionDenied(Box<Denied>),
    #[error(
        "your token is for {token_workspace}, not {wanted}: check the URL, or `git-credential-githosted login{api_flag} --workspace {wanted}` with a {wanted} token"
    )]
    WrongWorkspace {
        token_workspace: String,
        wanted: String,
        api_flag: String,
    },
    #[error(
        "{api_host} cannot say which workspace {origin} belongs to, so nothing was minted for {wanted}: {remedy}"
    )]
    WorkspaceUnknown {
        api_host: String,
        origin: Source,
        wanted: String,
        remedy: String,
    },
    #[error(
        "{declared_by} says the token is for {declared}, but {api_host} says it is for {actual}: nothing was minted; correct {declared_by}"
    )]
    DeclaredWorkspace {
        api_host: String,
        declared_by: String,
        declared: String,
        actual: String,
    },
    #[error(
        "{api_host} has no repo `{repo}` in workspace `{workspace}` that this token can see: check the remote URL, or the token belongs to another workspace (server: {message})"
    )]
    NotFound {
        api_host: String,
        workspace: String,
        repo: String,
        message: String,
    },
    #[error(
        "could not get a token for {workspace}/{repo}: {cause}{advice}",
        advice = if cause.is_transient() { "; try again later, or check --api-url" } else { "" }
    )]
    Api {
        workspace: String,
        repo: String,
        cause: Box<ApiError>,
    },
    #[error("could not read the workspace token for {workspace} on {api_host}: {cause}")]
    Keychain {
        api_host: String,
        workspace: String,
        cause: KeychainError,
    },
    #[error("{0} does not hold a githosted token (gw_… or gr_…); {remedy}", remedy = not_a_token_remedy(.0))]
    NotAToken(Source),
    /// Getting a token from a broker failed: one line naming the broker and its reason.
    #[error("{0}")]
    Broker(String),
    /// Inside `exec`: `exec` refused, or cannot be reached (one line).
    #[error("{0}")]
    Exec(String),
}

fn not_a_token_remedy(source: &Source) -> String {
    match source {
        Source::Env => format!("set {} to a workspace token", keychain::ENV_TOKEN),
        Source::Keychain { .. } => {
            "store a workspace token with `git-credential-githosted login`".to_owned()
        }
    }
}

/// A refused permission, and what to say about it.
#[derive(Debug)]
pub struct Denied {
    pub api_host: String,
    pub workspace: String,
    pub repo: String,
    pub permission: &'static str,
    pub message: String,
    pub api_flag: String,
}

/// Where parent tokens come from.
pub trait Parents {
    /// The stored parent for a workspace on an API host.
    fn parent(&self, api_host: &str, workspace: &str) -> Result<Option<Parent>, KeychainError>;
}

/// The OS keychain.
pub struct SystemParents;

impl Parents for SystemParents {
    fn parent(&self, api_host: &str, workspace: &str) -> Result<Option<Parent>, KeychainError> {
        keychain::parent_token(api_host, workspace)
    }
}

/// The agent, as the issuer uses it.
pub trait AgentLink {
    fn lookup(&mut self, key: &Key, min_ttl: Option<u64>) -> Result<Option<Issued>, AgentError>;
    fn mint(
        &mut self,
        key: &Key,
        min_ttl: Option<u64>,
        params: &MintParams,
        grant: &Grant,
    ) -> Result<Result<Issued, ApiError>, AgentError>;
}

impl AgentLink for Agent {
    fn lookup(&mut self, key: &Key, min_ttl: Option<u64>) -> Result<Option<Issued>, AgentError> {
        Agent::lookup(self, key, min_ttl)
    }

    fn mint(
        &mut self,
        key: &Key,
        min_ttl: Option<u64>,
        params: &MintParams,
        grant: &Grant,
    ) -> Result<Result<Issued, ApiError>, AgentError> {
        Agent::mint(self, key, min_ttl, params, grant)
    }
}

/// The agent to use for a `get` (started if need be), or `None`: `--no-agent`,
/// or it cannot be had (then the reason is said when it is worth saying).
pub fn agent(settings: &Settings) -> Option<Agent> {
    if settings.no_agent {
        return None;
    }
    match Agent::connect_or_spawn() {
        Ok(agent) => Some(agent),
        Err(e) if e.is_alarming() => {
            crate::say!("{e}; minting without the agent");
            None
        }
        Err(e) => {
            tracing::debug!("no agent, minting directly: {e}");
            None
        }
    }
}

/// A token for `target` with the system's parents, agent and API; inside
/// `exec`, from `exec`'s renewal channel only.
pub async fn issue(settings: &Settings, target: &Target) -> Result<Issued, GetError> {
    let env = plan::Env::read(settings);
    let plan = plan::get(settings, &env, target);
    let mut link = match &plan {
        Plan::Token { agent: true, .. } => agent(settings),
        _ => None,
    };
    issue_with(
        settings,
        target,
        plan,
        &SystemParents,
        link.as_mut().map(|a| a as &mut dyn AgentLink),
        &ApiMinter::default(),
    )
    .await
}

/// Carries out `plan` (see the module's documentation for the order).
pub async fn issue_with(
    settings: &Settings,
    target: &Target,
    plan: Plan,
    parents: &impl Parents,
    mut agent: Option<&mut dyn AgentLink>,
    minter: &impl Minter,
) -> Result<Issued, GetError> {
    // One deadline for everything: the agent and the fallback share it.
    let deadline = net::deadline_in(settings.timeout);
    let (key, cacheable, lookup, parent) = match plan {
        Plan::Exec(channel) => return from_exec(settings, &channel, target),
        Plan::PassThrough(token) => {
            tracing::debug!(token = %token, "GITHOSTED_TOKEN holds a repo token: passed through as it is");
            return Ok(passed_through(token));
        }
        Plan::NotAToken => return Err(GetError::NotAToken(Source::Env)),
        Plan::NoIdToken => return Err(no_id_token(settings)),
        Plan::Token {
            key,
            cacheable,
            lookup,
            parent,
            ..
        } => (key, cacheable, lookup, parent),
    };
    if !cacheable {
        agent = None;
    }
    if lookup && let Some(link) = agent.as_deref_mut() {
        match look_up(link, &key, settings.min_ttl_secs) {
            Ok(Some(issued)) => return Ok(issued),
            Ok(None) => {}
            Err(()) => agent = None,
        }
    }

    // A miss: the parent, read or fetched now.
    let (grant, parent) = match parent {
        plan::Parent::Env { token, declared } => (
            Grant::Parent {
                token: token.clone(),
                workspace: declared,
            },
            Some(Parent {
                token,
                source: Source::Env,
            }),
        ),
        plan::Parent::Keychain { declared } => {
            let parent = find_parent(settings, target, parents)?;
            match parent.token.kind() {
                TokenKind::Repo => {
                    tracing::debug!(token = %parent.token, source = %parent.source, "a repo token is passed through as it is");
                    return Ok(passed_through(parent.token));
                }
                TokenKind::Workspace => {}
                TokenKind::Unknown => return Err(GetError::NotAToken(parent.source)),
            }
            (plan::stored_grant(&parent, declared), Some(parent))
        }
        plan::Parent::Broker { broker, source } => {
            let id_token = id_token(&broker, &source, deadline).await?;
            let grant = Grant::Broker {
                broker: broker.url.clone(),
                id_token,
            };
            (grant, None)
        }
    };
    let failed = |e: ApiError| match &parent {
        Some(parent) => classify(settings, target, parent, e),
        None => GetError::Broker(e.to_string()),
    };
    let mut params = MintParams {
        ttl: settings.ttl_secs,
        subject: settings::subject(),
        timeout: deadline.saturating_duration_since(Instant::now()),
        network: net::Network::from_env(),
    };
    if let Some(link) = agent {
        match link.mint(&key, settings.min_ttl_secs, &params, &grant) {
            Ok(Ok(issued)) => return Ok(issued),
            Ok(Err(e)) => return Err(failed(e)),
            Err(e) => tracing::debug!("the agent failed, minting directly: {e}"),
        }
    }
    // Whatever time the agent used is gone: the fallback gets what is left.
    params.timeout = deadline.saturating_duration_since(Instant::now());
    let minted = minter
        .mint(&key.scope(), &params, &grant)
        .await
        .map_err(failed)?;
    tracing::debug!(token = %minted.token, id = %minted.record.id, "minted without the agent");
    Ok(Issued {
        token: minted.token,
        expires_at: Some(minted.expires_at),
    })
}

/// `--broker` without a way to get the job's ID token: how to give it one.
fn no_id_token(settings: &Settings) -> GetError {
    GetError::Broker(format!(
        "--broker {} needs the job's OIDC ID token: on GitHub Actions give the job `permissions: id-token: write`; elsewhere add --oidc-token-file PATH or --oidc-token-env NAME",
        settings.broker.as_ref().map_or("", |b| b.url_arg.as_str())
    ))
}

/// The agent's fit token for `key`, if it has one; `Err` when the agent did
/// not answer (go on without it).
fn look_up(
    agent: &mut dyn AgentLink,
    key: &Key,
    min_ttl: Option<u64>,
) -> Result<Option<Issued>, ()> {
    match agent.lookup(key, min_ttl) {
        Ok(found) => {
            if let Some(issued) = &found {
                tracing::debug!(token = %issued.token, "served from the agent's cache");
            }
            Ok(found)
        }
        Err(e) => {
            tracing::debug!("the agent did not answer, going on without it: {e}");
            Err(())
        }
    }
}

/// Inside `exec`: a token from `exec` itself, for a repo it granted (nothing
/// else is asked: no agent, no parent).
#[cfg(unix)]
fn from_exec(
    settings: &Settings,
    channel: &std::path::Path,
    target: &Target,
) -> Result<Issued, GetError> {
    use crate::channel::{Answer, Ask};
    let ask = Ask::Token {
        workspace: target.workspace.clone(),
        repo: target.repo.clone(),
        permission: settings.permission,
    };
    match crate::channel::ask(channel, &ask, settings.timeout) {
        Ok(Answer::Token { token, expires_at }) => Ok(Issued {
            token,
            expires_at: Some(expires_at),
        }),
        Ok(Answer::Refused(why)) => Err(GetError::Exec(why)),
        Ok(Answer::Forgotten | Answer::Hint(_)) => Err(GetError::Exec(
            "`exec` answered a token request with something else".into(),
        )),
        Err(e) => Err(GetError::Exec(format!(
            "cannot reach `exec`'s token channel ({e}): the `exec` that started this command has ended or the command left its sandbox; start it again with `git-credential-githosted exec`"
        ))),
    }
}

#[cfg(not(unix))]
fn from_exec(_: &Settings, _: &std::path::Path, _: &Target) -> Result<Issued, GetError> {
    Err(GetError::Exec(
        "`exec` keeps no token channel on this system".into(),
    ))
}

/// Inside `exec`: tells `exec` that git was refused with `password`, so it is
/// not handed out again (the next ask mints a fresh one). Best effort.
/// Returns `exec`'s line for the person (what happened, what to do).
#[cfg(unix)]
pub fn forget_in_exec(
    settings: &Settings,
    channel: &std::path::Path,
    password: Secret,
) -> Option<String> {
    let ask = crate::channel::Ask::Forget { password };
    match crate::channel::ask(channel, &ask, settings.timeout.min(REVOKE_BUDGET)) {
        Ok(crate::channel::Answer::Hint(line)) => Some(line),
        Ok(_) => None,
        Err(e) => {
            tracing::debug!("exec's channel did not answer an erase: {e}");
            None
        }
    }
}

#[cfg(not(unix))]
pub fn forget_in_exec(_: &Settings, _: &std::path::Path, _: Secret) -> Option<String> {
    None
}

/// The job's ID token for the broker, or the one line that says why not.
pub async fn id_token(
    broker: &settings::BrokerSettings,
    source: &crate::id_token::Source,
    deadline: Instant,
) -> Result<Secret, GetError> {
    source.fetch(&broker.audience, deadline).await.map_err(|e| {
        GetError::Broker(format!(
            "no ID token for the broker {}: {e}",
            broker.url_arg
        ))
    })
}

/// Where the job's ID token comes from, or the one line that says how to give it one.
pub fn id_token_source(settings: &Settings) -> Result<crate::id_token::Source, GetError> {
    match plan::parent(settings, &plan::Env::read(settings)) {
        Some(plan::Parent::Broker { source, .. }) => Ok(source),
        _ => Err(no_id_token(settings)),
    }
}

fn passed_through(token: Secret) -> Issued {
    Issued {
        token,
        expires_at: None,
    }
}

fn find_parent(
    settings: &Settings,
    target: &Target,
    parents: &impl Parents,
) -> Result<Parent, GetError> {
    let api_host = settings.service.api_host();
    parents
        .parent(api_host, &target.workspace)
        .map_err(|cause| GetError::Keychain {
            api_host: api_host.to_owned(),
            workspace: target.workspace.clone(),
            cause,
        })?
        .ok_or_else(|| GetError::NoToken {
            api_host: api_host.to_owned(),
            workspace: target.workspace.clone(),
            api_flag: settings.api_url_flag(),
        })
}

/// Revokes forgotten tokens, best effort and within [`REVOKE_BUDGET`]: those
/// a broker minted through that broker (with a fresh ID token), the others at
/// the API with their workspace's parent token. Returns how many were revoked.
pub async fn revoke(settings: &Settings, dropped: &[Dropped]) -> usize {
    let (brokered, dropped): (Vec<&Dropped>, Vec<&Dropped>) =
        dropped.iter().partition(|d| d.from_broker);
    let mut revoked = 0;
    if !brokered.is_empty() {
        revoked += revoke_through_broker(settings, &brokered).await;
    }
    if dropped.is_empty() {
        return revoked;
    }
    let api_host = settings.service.api_host();
    let Ok(client) = api::Client::new(
        settings.service.api_url(),
        api_host,
        &net::Network::from_env(),
    ) else {
        return 0;
    };
    let deadline = net::deadline_in(REVOKE_BUDGET);
    let mut parents: HashMap<String, Option<Secret>> = HashMap::new();
    let mut jobs = tokio::task::JoinSet::new();
    for &d in &dropped {
        let parent = parents
            .entry(d.workspace.clone())
            .or_insert_with(|| match keychain::parent_token(api_host, &d.workspace) {
                Ok(Some(p)) if p.token.kind() == TokenKind::Workspace => Some(p.token),
                _ => None,
            })
            .clone();
        let Some(parent) = parent else {
            tracing::debug!(token = %d.fingerprint, "no workspace token to revoke it with");
            continue;
        };
        let (client, d) = (client.clone(), d.clone());
        jobs.spawn(async move {
            let result = client.revoke_token(&parent, &d.id, deadline).await;
            match &result {
                Ok(()) => tracing::info!(token = %d.fingerprint, "revoked"),
                Err(e) => tracing::debug!(token = %d.fingerprint, "revoke failed: {e}"),
            }
            result.is_ok()
        });
    }
    revoked + count_done(jobs).await
}

/// How many of `jobs` succeed within [`REVOKE_BUDGET`].
async fn count_done(mut jobs: tokio::task::JoinSet<bool>) -> usize {
    let mut revoked = 0;
    let _ = tokio::time::timeout(REVOKE_BUDGET, async {
        while let Some(done) = jobs.join_next().await {
            revoked += usize::from(done.unwrap_or(false));
        }
    })
    .await;
    revoked
}

/// Revokes tokens a broker minted, through the broker this helper is
/// configured with (it revokes only what it minted for this job's identity).
async fn revoke_through_broker(settings: &Settings, dropped: &[&Dropped]) -> usize {
    let Some(broker) = &settings.broker else {
        tracing::debug!("tokens from a broker, but no --broker to revoke them with");
        return 0;
    };
    let Ok(source) = id_token_source(settings) else {
        return 0;
    };
    let deadline = net::deadline_in(REVOKE_BUDGET);
    let id_token = match id_token(broker, &source, deadline).await {
        Ok(t) => t,
        Err(e) => {
            tracing::debug!("cannot revoke: {e}");
            return 0;
        }
    };
    let mut jobs = tokio::task::JoinSet::new();
    for d in dropped {
        let (url, id_token, d) = (broker.url.clone(), id_token.clone(), (*d).clone());
        jobs.spawn(async move {
            let result = crate::broker_client::revoke(&url, &id_token, &d.id, deadline).await;
            match &result {
                Ok(()) => tracing::info!(token = %d.fingerprint, "revoked through the broker"),
                Err(e) => tracing::debug!(token = %d.fingerprint, "revoke failed: {e}"),
            }
            result.is_ok()
        });
    }
    count_done(jobs).await
}

/// What a failed exchange means to the person at the terminal (wording and remedy).
pub fn classify(
    settings: &Settings,
    target: &Target,
    parent: &Parent,
    error: ApiError,
) -> GetError {
    let api_host = settings.service.api_host().to_owned();
    let (workspace, repo) = (target.workspace.clone(), target.repo.clone());
    let message = match &error {
        ApiError::Status { message, .. } => message.clone(),
        _ => String::new(),
    };
    if let ApiError::WorkspaceUnknown { wanted, .. } = &error {
        let remedy = match &parent.source {
            Source::Env => format!(
                "if {env} is a {wanted} token, set {ws_env}={wanted} (or add --workspace {wanted} to the helper line)",
                env = keychain::ENV_TOKEN,
                ws_env = settings::WORKSPACE_ENV,
            ),
            Source::Keychain { .. } => format!(
                "store it for its workspace: `git-credential-githosted login{} --workspace {wanted}` (token on stdin)",
                settings.api_url_flag()
            ),
        };
        return GetError::WorkspaceUnknown {
            api_host,
            origin: parent.source.clone(),
            wanted: wanted.clone(),
            remedy,
        };
    }
    if let ApiError::DeclaredWorkspace { declared, actual } = &error {
        let declared_by = match &parent.source {
            Source::Keychain { account } => format!("the keychain entry {account}"),
            Source::Env => format!("--workspace or {}", settings::WORKSPACE_ENV),
        };
        return GetError::DeclaredWorkspace {
            api_host,
            declared_by,
            declared: declared.clone(),
            actual: actual.clone(),
        };
    }
    if let ApiError::WrongWorkspace {
        token_workspace,
        wanted,
    } = error
    {
        return GetError::WrongWorkspace {
            token_workspace,
            wanted,
            api_flag: settings.api_url_flag(),
        };
    }
    match error.code() {
        Some(Code::Unauthenticated) => GetError::ParentRejected {
            remedy: match &parent.source {
                Source::Env => format!("set {} to a live workspace token", keychain::ENV_TOKEN),
                Source::Keychain { account } => format!(
                    "run `git-credential-githosted login{}{}` (token on stdin) to store a new one",
                    settings.api_url_flag(),
                    account
                        .split_once('/')
                        .map(|(_, ws)| format!(" --workspace {ws}"))
                        .unwrap_or_default()
                ),
            },
            api_host,
            origin: parent.source.clone(),
        },
        Some(Code::PermissionDenied) => GetError::PermissionDenied(Box::new(Denied {
            api_host,
            workspace,
            repo,
            permission: settings.permission.as_str(),
            message,
            api_flag: settings.api_url_flag(),
        })),
        Some(Code::NotFound) => GetError::NotFound {
            api_host,
            workspace,
            repo,
            message,
        },
        _ => GetError::Api {
            workspace,
            repo,
            cause: Box::new(error),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::api::{Minted, TokenRecord};

    fn settings() -> Settings {
        Settings::for_api(Some("http://127.0.0.1:8080")).unwrap()
    }

    /// Parents: an optional `GITHOSTED_TOKEN` and an optional keychain entry;
    /// counts keychain reads.
    #[derive(Default)]
    struct FakeParents {
        env: Option<&'static str>,
        stored: Option<&'static str>,
        reads: AtomicUsize,
    }

    impl Parents for FakeParents {
        fn parent(&self, _: &str, ws: &str) -> Result<Option<Parent>, KeychainError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            Ok(self.stored.map(|t| Parent {
                token: Secret::new(t.into()),
                source: Source::Keychain {
                    account: format!("127.0.0.1:8080/{ws}"),
                },
            }))
        }
    }

    /// An agent that answers from a script, and records what it was asked.
    #[derive(Default)]
    struct FakeAgent {
        cached: Option<&'static str>,
        /// The mint's answer: Ok(token) / Err(agent failure) / API error.
        mint: Option<Result<Result<&'static str, Code>, ()>>,
        asked: RefCell<Vec<String>>,
    }

    impl AgentLink for FakeAgent {
        fn lookup(&mut self, key: &Key, _: Option<u64>) -> Result<Option<Issued>, AgentError> {
            self.asked.borrow_mut().push(match &key.origin {
                crate::cache::Origin::Keychain => "lookup keychain".to_owned(),
                crate::cache::Origin::Env { holder } => format!("lookup env:{holder}"),
                crate::cache::Origin::Broker { .. } => "lookup broker".to_owned(),
            });
            Ok(self.cached.map(issued))
        }
        fn mint(
            &mut self,
            _: &Key,
            _: Option<u64>,
            params: &MintParams,
            grant: &Grant,
        ) -> Result<Result<Issued, ApiError>, AgentError> {
            let Grant::Parent { token: parent, .. } = grant else {
                panic!("a broker grant for a parent's key");
            };
            self.asked.borrow_mut().push(format!(
                "mint {} {}s",
                parent.fingerprint(),
                params.timeout.as_secs()
            ));
            match self.mint.clone() {
                Some(Ok(Ok(t))) => Ok(Ok(issued(t))),
                Some(Ok(Err(code))) => Ok(Err(status(code, "no"))),
                _ => Err(AgentError::NotRunning),
            }
        }
    }

    fn issued(token: &str) -> Issued {
        Issued {
            token: Secret::new(token.into()),
            expires_at: Some(2_000_000_000),
        }
    }

    /// Mints `gr_direct` and records the time it was given.
    #[derive(Default)]
    struct FakeMinter {
        given: std::sync::Mutex<Vec<Duration>>,
    }

    impl Minter for FakeMinter {
        async fn mint(
            &self,
            _: &crate::minter::Scope,
            params: &MintParams,
            _: &Grant,
        ) -> Result<Minted, ApiError> {
            self.given.lock().unwrap().push(params.timeout);
            Ok(Minted {
                token: Secret::new("gr_direct".into()),
                record: TokenRecord::default(),
                expires_at: 2_000_000_000,
            })
        }
    }

    fn issue_fake(
        parents: &FakeParents,
        agent: Option<&mut FakeAgent>,
        minter: &FakeMinter,
    ) -> Result<Issued, GetError> {
        let settings = settings();
        let env = plan::Env {
            token: parents.env.map(|t| Secret::new(t.into())),
            job: None,
        };
        let plan = plan::get(&settings, &env, &target());
        net::block_on(issue_with(
            &settings,
            &target(),
            plan,
            parents,
            agent.map(|a| a as &mut dyn AgentLink),
            minter,
        ))
        .unwrap()
    }

    #[test]
    fn a_cache_hit_reads_no_keychain() {
        let parents = FakeParents {
            stored: Some("gw_stored"),
            ..FakeParents::default()
        };
        let mut agent = FakeAgent {
            cached: Some("gr_cached"),
            ..FakeAgent::default()
        };
        let minter = FakeMinter::default();
        let got = issue_fake(&parents, Some(&mut agent), &minter).unwrap();
        assert_eq!(got.token.expose(), "gr_cached");
        assert_eq!(parents.reads.load(Ordering::SeqCst), 0);
        assert_eq!(agent.asked.borrow().as_slice(), ["lookup keychain"]);
    }

    #[test]
    fn a_miss_mints_through_the_agent_with_the_stored_parent() {
        let parents = FakeParents {
            stored: Some("gw_stored"),
            ..FakeParents::default()
        };
        let mut agent = FakeAgent {
            mint: Some(Ok(Ok("gr_minted"))),
            ..FakeAgent::default()
        };
        let minter = FakeMinter::default();
        let got = issue_fake(&parents, Some(&mut agent), &minter).unwrap();
        assert_eq!(got.token.expose(), "gr_minted");
        assert!(minter.given.lock().unwrap().is_empty(), "no direct mint");
        let asked = agent.asked.borrow();
        assert!(asked[1].starts_with("mint gw_…"), "{asked:?}");
    }

    #[test]
    fn an_agent_that_fails_leaves_the_fallback_what_is_left() {
        let parents = FakeParents {
            env: Some("gw_env"),
            ..FakeParents::default()
        };
        let mut agent = FakeAgent::default(); // lookup misses, mint fails
        let minter = FakeMinter::default();
        let got = issue_fake(&parents, Some(&mut agent), &minter).unwrap();
        assert_eq!(got.token.expose(), "gr_direct");
        let given = minter.given.lock().unwrap();
        assert_eq!(given.len(), 1);
        assert!(given[0] <= settings().timeout, "{given:?}");
        // The env parent is named by a keyed hash, not by its fingerprint.
        let asked = agent.asked.borrow();
        assert!(asked[0].starts_with("lookup env:") && asked[0].len() == "lookup env:".len() + 64);
    }

    #[test]
    fn an_api_refusal_through_the_agent_is_final() {
        let parents = FakeParents {
            stored: Some("gw_stored"),
            ..FakeParents::default()
        };
        let mut agent = FakeAgent {
            mint: Some(Ok(Err(Code::NotFound))),
            ..FakeAgent::default()
        };
        let minter = FakeMinter::default();
        let err = issue_fake(&parents, Some(&mut agent), &minter).unwrap_err();
        assert!(matches!(err, GetError::NotFound { .. }), "{err}");
        assert!(minter.given.lock().unwrap().is_empty(), "no second try");
    }

    #[test]
    fn repo_tokens_pass_through_and_nothing_is_minted() {
        let minter = FakeMinter::default();
        let parents = FakeParents {
            env: Some("gr_env"),
            ..FakeParents::default()
        };
        let mut agent = FakeAgent::default();
        let got = issue_fake(&parents, Some(&mut agent), &minter).unwrap();
        assert_eq!((got.token.expose(), got.expires_at), ("gr_env", None));
        assert!(agent.asked.borrow().is_empty(), "the agent was asked");
        let parents = FakeParents {
            stored: Some("gr_stored"),
            ..FakeParents::default()
        };
        let got = issue_fake(&parents, None, &minter).unwrap();
        assert_eq!(got.token.expose(), "gr_stored");
        assert!(minter.given.lock().unwrap().is_empty());
    }

    #[test]
    fn no_parent_and_a_non_token_say_what_to_do() {
        let minter = FakeMinter::default();
        let err = issue_fake(&FakeParents::default(), None, &minter).unwrap_err();
        assert!(
            err.to_string()
                .contains("login --api-url http://127.0.0.1:8080 --workspace acme"),
            "{err}"
        );
        let parents = FakeParents {
            stored: Some("hunter2"),
            ..FakeParents::default()
        };
        let err = issue_fake(&parents, None, &minter).unwrap_err();
        assert!(matches!(err, GetError::NotAToken(_)), "{err}");
        assert!(!err.to_string().contains("hunter2"));
    }

    fn target() -> Target {
        Target {
            workspace: "acme".into(),
            repo: "app".into(),
        }
    }

    fn parent(source: Source) -> Parent {
        Parent {
            token: Secret::new("gw_secretparent".into()),
            source,
        }
    }

    fn status(code: Code, message: &str) -> ApiError {
        ApiError::Status {
            host: "127.0.0.1:8080".into(),
            status: 400,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    fn shown(source: Source, error: ApiError) -> String {
        classify(&settings(), &target(), &parent(source), error).to_string()
    }

    fn keychain_source() -> Source {
        Source::Keychain {
            account: "127.0.0.1:8080/acme".into(),
        }
    }

    #[test]
    fn rejected_stored_parent_says_to_log_in_again() {
        let line = shown(
            keychain_source(),
            status(Code::Unauthenticated, "bad token"),
        );
        assert!(line.starts_with("127.0.0.1:8080 rejected the"), "{line}");
        assert!(
            line.contains("run `git-credential-githosted login --api-url http://127.0.0.1:8080 --workspace acme`"),
            "{line}"
        );
    }

    #[test]
    fn rejected_env_parent_says_to_replace_it() {
        let line = shown(Source::Env, status(Code::Unauthenticated, ""));
        assert_eq!(
            line,
            "127.0.0.1:8080 rejected GITHOSTED_TOKEN (expired or revoked): set GITHOSTED_TOKEN to a live workspace token"
        );
    }

    #[test]
    fn permission_and_not_found_name_repo_and_workspace() {
        let line = shown(Source::Env, status(Code::PermissionDenied, "too wide"));
        assert!(
            line.contains("refused a write token for acme/app") && line.contains("too wide"),
            "{line}"
        );
        assert!(
            line.contains("configure --api-url http://127.0.0.1:8080 --permission auto"),
            "{line}"
        );
        let line = shown(Source::Env, status(Code::NotFound, "no such repo"));
        assert!(line.contains("no repo `app` in workspace `acme`"), "{line}");
    }

    #[test]
    fn transient_errors_say_try_again() {
        let line = shown(Source::Env, status(Code::Unavailable, "down"));
        assert!(
            line.contains("acme/app") && line.contains("try again"),
            "{line}"
        );
        let line = shown(
            Source::Env,
            ApiError::Transport {
                host: "127.0.0.1:8080".into(),
                reason: "connection failed: Connection refused".into(),
            },
        );
        assert!(
            line.contains("could not reach 127.0.0.1:8080: connection failed"),
            "{line}"
        );
    }

    #[test]
    fn no_message_holds_the_parent() {
        for code in [
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::NotFound,
            Code::Internal,
        ] {
            for source in [Source::Env, keychain_source()] {
                assert!(!shown(source, status(code.clone(), "x")).contains("secretparent"));
            }
        }
    }

    #[test]
    fn a_stored_non_token_says_to_log_in() {
        let line = GetError::NotAToken(keychain_source()).to_string();
        assert!(line.contains("git-credential-githosted login"), "{line}");
        let line = GetError::NotAToken(Source::Env).to_string();
        assert!(line.contains("set GITHOSTED_TOKEN"), "{line}");
    }
}
