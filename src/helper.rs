//! The credential-helper operations git runs: `get`, `store`, `erase`.
//!
//! `get` turns a request for `https://githosted.dev/<ws>/<repo>.git` into a
//! short-lived repo token: it finds the workspace token (environment or
//! keychain), exchanges it for a `gr_` limited to that one repo and permission,
//! and answers git with that token and its expiry. Requests for other hosts get
//! no answer at all, so other helpers can serve them.

use std::collections::HashMap;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use crate::agent::client::{Agent, LOOKUP_TIMEOUT};
use crate::agent::wire;
use crate::api::{self, ApiError, ApiMinter, Code};
use crate::broker::{MintParams, Minter};
use crate::keychain::{self, KeychainError, Parent, Source};
use crate::protocol::{Request, Response};
use crate::secret::{Secret, TokenKind};
use crate::settings::{self, Settings};
use crate::target::{Resolution, Target};

/// The username given to git with every token; githosted ignores it.
pub const USERNAME: &str = "githosted";

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
        "{api_host} refused a {permission} token for {workspace}/{repo}: the workspace token may be read-only (then use --permission read), belong to another workspace, or not be a workspace token (server: {message})"
    )]
    PermissionDenied {
        api_host: String,
        workspace: String,
        repo: String,
        permission: &'static str,
        message: String,
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
        "could not get a token for {workspace}/{repo}: {source}; try again later, or check --api-url"
    )]
    Api {
        workspace: String,
        repo: String,
        source: Box<ApiError>,
    },
    #[error("could not read the workspace token for {workspace} on {api_host}: {source}")]
    Keychain {
        api_host: String,
        workspace: String,
        source: KeychainError,
    },
    #[error("{0} does not hold a githosted token (gw_… or gr_…); {remedy}", remedy = not_a_token_remedy(.0))]
    NotAToken(Source),
}

fn not_a_token_remedy(source: &Source) -> String {
    match source {
        Source::Env => format!("set {} to a workspace token", keychain::ENV_TOKEN),
        Source::Keychain { .. } => {
            "store a workspace token with `git-credential-githosted login`".to_owned()
        }
    }
}

/// `get`: answer git's request on stdout. Returns whether it succeeded.
pub fn get(
    settings: &Settings,
    input: &mut impl io::BufRead,
    output: &mut impl Write,
) -> anyhow::Result<bool> {
    let request = Request::read_from(input)?;
    if request.username.as_deref().is_some_and(|u| u != USERNAME) {
        tracing::debug!(username = ?request.username, "another username is asked for: no answer");
        return Ok(true);
    }
    let target = match settings.service.resolve(
        request.protocol.as_deref(),
        request.host.as_deref(),
        request.path.as_deref(),
    ) {
        Resolution::NotOurs => {
            tracing::debug!(protocol = ?request.protocol, host = ?request.host, "not a githosted host: no answer");
            return Ok(true);
        }
        Resolution::NoPath => {
            crate::say!(
                "git sent no repository path for {}, so no repo-scoped token can be made: run `git-credential-githosted configure{}` (it sets credential.useHttpPath)",
                request.host.as_deref().unwrap_or_default(),
                settings.api_url_flag()
            );
            return Ok(false);
        }
        Resolution::BadPath(path) => {
            crate::say!(
                "`{path}` on {} does not name a githosted repository (<workspace>/<repo>.git); check the remote URL",
                request.host.as_deref().unwrap_or_default()
            );
            return Ok(false);
        }
        Resolution::Repo(target) => target,
    };
    match token_for(settings, &target) {
        Ok(issued) => {
            let response = if request.has_capability("authtype") {
                Response {
                    bearer: Some(issued.token),
                    password_expiry_utc: issued.expires_at,
                    ..Response::default()
                }
            } else {
                Response {
                    username: Some(USERNAME.into()),
                    password: Some(issued.token),
                    password_expiry_utc: issued.expires_at,
                    ..Response::default()
                }
            };
            response.write_to(output)?;
            Ok(true)
        }
        Err(e) => {
            crate::say!("{e}");
            if !settings::interactive() {
                // Nobody can answer a prompt: tell git to stop now.
                Response {
                    quit: true,
                    ..Response::default()
                }
                .write_to(output)?;
            }
            Ok(false)
        }
    }
}

/// `store`: git reports that a credential worked. For our own `gr_` the agent
/// already has it; for anything else there is nothing to do. Never writes anything.
pub fn store(input: &mut impl io::BufRead) -> anyhow::Result<()> {
    let request = Request::read_from(input)?;
    tracing::debug!(
        password = ?request.password,
        ephemeral = request.ephemeral,
        "store: nothing to do, tokens are never written"
    );
    Ok(())
}

/// `erase`: git got a 401 with a credential. Drop the cached token with that
/// value (host-only: every token for the host, or for the repo if a path is
/// given) and revoke it at the server, briefly. The keychain is never touched.
pub fn erase(settings: &Settings, input: &mut impl io::BufRead) -> anyhow::Result<()> {
    let request = Request::read_from(input)?;
    let (workspace, repo) = match settings.service.resolve(
        request.protocol.as_deref(),
        request.host.as_deref(),
        request.path.as_deref(),
    ) {
        Resolution::NotOurs | Resolution::BadPath(_) => return Ok(()),
        Resolution::NoPath => (None, None),
        Resolution::Repo(target) => (Some(target.workspace), Some(target.repo)),
    };
    let erase = wire::Request::Erase {
        api: settings.service.api_url().to_string(),
        workspace,
        repo,
        // With Bearer (git 2.46+) the rejected token comes as `credential`.
        password: request.password.or(request.credential),
    };
    // No agent running means nothing is cached: do not start one to find out.
    let dropped = match Agent::connect().and_then(|mut agent| agent.request(&erase, LOOKUP_TIMEOUT))
    {
        Ok(wire::Response::Dropped(dropped)) => dropped,
        Ok(_) => Vec::new(),
        Err(e) => {
            tracing::debug!("erase: no agent ({e})");
            Vec::new()
        }
    };
    for d in &dropped {
        tracing::info!(token = %d.fingerprint, workspace = %d.workspace, repo = %d.repo, "erase: forgot a token");
    }
    revoke(settings, &dropped);
    Ok(())
}

/// Revokes forgotten tokens at the server with their workspace's parent token,
/// best effort and within [`REVOKE_BUDGET`]. Returns how many were revoked.
pub fn revoke(settings: &Settings, dropped: &[wire::Dropped]) -> usize {
    if dropped.is_empty() {
        return 0;
    }
    let api_host = settings.service.api_host();
    let Ok(client) = api::Client::new(
        settings.service.api_url(),
        api_host,
        &api::Network::from_env(),
    ) else {
        return 0;
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return 0;
    };
    let deadline = Instant::now() + REVOKE_BUDGET;
    let mut parents: HashMap<String, Option<Secret>> = HashMap::new();
    let mut jobs = tokio::task::JoinSet::new();
    for d in dropped {
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
        jobs.spawn_on(
            async move {
                let result = client.revoke_token(&parent, &d.id, deadline).await;
                match &result {
                    Ok(()) => tracing::info!(token = %d.fingerprint, "revoked"),
                    Err(e) => tracing::debug!(token = %d.fingerprint, "revoke failed: {e}"),
                }
                result.is_ok()
            },
            runtime.handle(),
        );
    }
    runtime.block_on(async {
        let mut revoked = 0;
        let _ = tokio::time::timeout(REVOKE_BUDGET, async {
            while let Some(done) = jobs.join_next().await {
                revoked += usize::from(done.unwrap_or(false));
            }
        })
        .await;
        revoked
    })
}

/// A token for the target, as git's answer: from the agent's cache when it
/// has a fit one, else minted (through the agent, or directly without one).
pub fn token_for(settings: &Settings, target: &Target) -> Result<Issued, GetError> {
    // One deadline for the whole `get`: the agent and the fallback share it.
    let deadline = api::deadline_in(settings.timeout);
    let env = keychain::env_token();
    if let Some(token) = env.as_ref().filter(|t| t.kind() == TokenKind::Repo) {
        tracing::debug!(token = %token, "GITHOSTED_TOKEN holds a repo token: passed through as it is");
        return Ok(answer(token.clone(), None));
    }
    let key = wire::Key {
        api: settings.service.api_url().to_string(),
        workspace: target.workspace.clone(),
        repo: target.repo.clone(),
        permission: settings.permission,
        // Nothing printed (fingerprints, status) lets another process name this key.
        parent: env.map_or_else(
            || "keychain".to_owned(),
            |t| format!("env:{}", t.holder_id()),
        ),
    };

    let mut agent = if settings.no_agent {
        None
    } else {
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
    };
    let lookup = wire::Request::Get {
        key: key.clone(),
        min_ttl: settings.min_ttl_secs,
    };
    if let Some(a) = agent.as_mut() {
        match a.request(&lookup, LOOKUP_TIMEOUT) {
            Ok(wire::Response::Token { token, expires_at }) => {
                tracing::debug!(token = %token, "served from the agent's cache");
                return Ok(answer(token, Some(expires_at)));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!("the agent did not answer, minting directly: {e}");
                agent = None;
            }
        }
    }

    let parent = find_parent(settings, target)?;
    match parent.token.kind() {
        TokenKind::Repo => {
            tracing::debug!(token = %parent.token, source = %parent.source, "a repo token is passed through as it is");
            return Ok(answer(parent.token, None));
        }
        TokenKind::Workspace => {}
        TokenKind::Unknown => return Err(GetError::NotAToken(parent.source)),
    }
    let mut params = MintParams {
        ttl: settings.ttl_secs,
        subject: settings::subject(),
        timeout: deadline.saturating_duration_since(Instant::now()),
        network: api::Network::from_env(),
    };
    if let Some(mut a) = agent {
        let mint = wire::Request::Mint {
            key: key.clone(),
            ttl: params.ttl,
            min_ttl: settings.min_ttl_secs,
            subject: params.subject.clone(),
            timeout_ms: u64::try_from(params.timeout.as_millis()).unwrap_or(u64::MAX),
            network: Box::new(params.network.clone()),
            parent: parent.token.clone(),
        };
        // The agent answers within the time it was given; allow it a moment more.
        match a.request(&mint, params.timeout.saturating_add(Duration::from_secs(1))) {
            Ok(wire::Response::Token { token, expires_at }) => {
                return Ok(answer(token, Some(expires_at)));
            }
            Ok(wire::Response::Failed(e)) => return Err(classify(settings, target, &parent, e)),
            Ok(other) => tracing::debug!("unexpected agent answer {other:?}, minting directly"),
            Err(e) => tracing::debug!("the agent failed, minting directly: {e}"),
        }
    }
    // Whatever time the agent used is gone: the fallback gets what is left.
    params.timeout = deadline.saturating_duration_since(Instant::now());
    mint_directly(settings, target, &key, &params, &parent)
}

fn find_parent(settings: &Settings, target: &Target) -> Result<Parent, GetError> {
    let api_host = settings.service.api_host();
    keychain::parent_token(api_host, &target.workspace)
        .map_err(|source| GetError::Keychain {
            api_host: api_host.to_owned(),
            workspace: target.workspace.clone(),
            source,
        })?
        .ok_or_else(|| GetError::NoToken {
            api_host: api_host.to_owned(),
            workspace: target.workspace.clone(),
            api_flag: settings.api_url_flag(),
        })
}

/// A token for git, and its expiry (Unix seconds) when known.
pub struct Issued {
    pub token: Secret,
    pub expires_at: Option<i64>,
}

fn answer(token: Secret, expires_at: Option<i64>) -> Issued {
    Issued { token, expires_at }
}

/// One exchange in this process, without the agent.
fn mint_directly(
    settings: &Settings,
    target: &Target,
    key: &wire::Key,
    params: &MintParams,
    parent: &Parent,
) -> Result<Issued, GetError> {
    let runtime = api::runtime().map_err(|e| {
        let error = ApiError::Transport {
            host: settings.service.api_host().to_owned(),
            reason: format!("cannot start the I/O runtime: {e}"),
        };
        classify(settings, target, parent, error)
    })?;
    let minted = runtime
        .block_on(ApiMinter::default().mint(key, params, &parent.token))
        .map_err(|e| classify(settings, target, parent, e))?;
    Ok(answer(minted.token, Some(minted.expires_at)))
}

fn classify(settings: &Settings, target: &Target, parent: &Parent, error: ApiError) -> GetError {
    let api_host = settings.service.api_host().to_owned();
    let (workspace, repo) = (target.workspace.clone(), target.repo.clone());
    let message = match &error {
        ApiError::Status { message, .. } => message.clone(),
        _ => String::new(),
    };
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
        Some(Code::PermissionDenied) => GetError::PermissionDenied {
            api_host,
            workspace,
            repo,
            permission: settings.permission.as_str(),
            message,
        },
        Some(Code::NotFound) => GetError::NotFound {
            api_host,
            workspace,
            repo,
            message,
        },
        _ => GetError::Api {
            workspace,
            repo,
            source: Box::new(error),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Permission;
    use crate::settings::DEFAULT_TIMEOUT_SECS;

    fn settings() -> Settings {
        Settings::new(
            Some("http://127.0.0.1:8080"),
            Permission::Write,
            3600,
            None,
            false,
            DEFAULT_TIMEOUT_SECS,
        )
        .unwrap()
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
