//! The credential-helper operations git runs: `get`, `store`, `erase`.
//!
//! `get` turns a request for `https://githosted.dev/<ws>/<repo>.git` into a
//! short-lived repo token: it finds the workspace token (environment or
//! keychain), exchanges it for a `gr_` limited to that one repo and permission,
//! and answers git with that token and its expiry. Requests for other hosts get
//! no answer at all, so other helpers can serve them.

use std::io::{self, Write};

use crate::api::{self, ApiError, Code, ExchangeRequest};
use crate::keychain::{self, KeychainError, Parent, Source};
use crate::protocol::{Request, Response};
use crate::secret::{Secret, TokenKind};
use crate::settings::{self, Settings};
use crate::target::{Resolution, Target};

/// The username given to git with every token; githosted ignores it.
pub const USERNAME: &str = "githosted";

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
    #[error("{0} does not hold a githosted token (gw_… or gr_…); set it to a workspace token")]
    NotAToken(Source),
}

/// `get`: answer git's request on stdout. Returns whether it succeeded.
pub fn get(
    settings: &Settings,
    input: &mut impl io::BufRead,
    output: &mut impl Write,
) -> anyhow::Result<bool> {
    let request = Request::read_from(input)?;
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
            eprintln!(
                "git-credential-githosted: git sent no repository path for {}, so no repo-scoped token can be made: run `git-credential-githosted configure{}` (it sets credential.useHttpPath)",
                request.host.as_deref().unwrap_or_default(),
                settings.api_url_flag()
            );
            return Ok(false);
        }
        Resolution::BadPath(path) => {
            eprintln!(
                "git-credential-githosted: `{path}` on {} does not name a githosted repository (<workspace>/<repo>.git); check the remote URL",
                request.host.as_deref().unwrap_or_default()
            );
            return Ok(false);
        }
        Resolution::Repo(target) => target,
    };
    if request.username.as_deref().is_some_and(|u| u != USERNAME) {
        tracing::debug!(username = ?request.username, "another username is asked for: no answer");
        return Ok(true);
    }
    match token_for(settings, &target) {
        Ok(response) => {
            response.write_to(output)?;
            Ok(true)
        }
        Err(e) => {
            eprintln!("git-credential-githosted: {e}");
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

/// `store`: git reports that a credential worked. Never writes anything anywhere.
pub fn store(input: &mut impl io::BufRead) -> anyhow::Result<()> {
    let request = Request::read_from(input)?;
    tracing::debug!(
        password = ?request.password,
        ephemeral = request.ephemeral,
        "store: nothing to do, tokens are never written"
    );
    Ok(())
}

/// `erase`: git got a 401 with a credential. Without a cache there is nothing
/// to forget; the parent token in the keychain is never touched.
pub fn erase(input: &mut impl io::BufRead) -> anyhow::Result<()> {
    let request = Request::read_from(input)?;
    tracing::debug!(password = ?request.password, host = ?request.host, "erase: nothing cached");
    Ok(())
}

/// A fresh token for the target, as git's answer.
fn token_for(settings: &Settings, target: &Target) -> Result<Response, GetError> {
    let api_host = settings.service.api_host().to_owned();
    let parent = keychain::parent_token(&api_host, &target.workspace)
        .map_err(|source| GetError::Keychain {
            api_host: api_host.clone(),
            workspace: target.workspace.clone(),
            source,
        })?
        .ok_or_else(|| GetError::NoToken {
            api_host: api_host.clone(),
            workspace: target.workspace.clone(),
            api_flag: settings.api_url_flag(),
        })?;
    match parent.token.kind() {
        TokenKind::Repo => {
            tracing::debug!(token = %parent.token, source = %parent.source, "a repo token is passed through as it is");
            Ok(Response {
                username: Some(USERNAME.into()),
                password: Some(parent.token),
                ..Response::default()
            })
        }
        TokenKind::Workspace => exchange(settings, target, &parent),
        TokenKind::Unknown => Err(GetError::NotAToken(parent.source)),
    }
}

fn exchange(settings: &Settings, target: &Target, parent: &Parent) -> Result<Response, GetError> {
    let api_host = settings.service.api_host();
    let api_error = |source: ApiError| classify(settings, target, parent, source);
    let client = api::Client::new(settings.service.api_url(), api_host).map_err(api_error)?;
    let subject = settings::subject();
    let request = ExchangeRequest {
        repo_allowlist: vec![target.repo.as_str()],
        permission: settings.permission,
        ttl_seconds: settings.ttl_secs,
        subject: &subject,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            api_error(ApiError::Transport {
                host: api_host.to_owned(),
                reason: format!("cannot start the I/O runtime: {e}"),
            })
        })?;
    let minted = runtime
        .block_on(client.exchange_token(&parent.token, &request))
        .map_err(api_error)?;
    tracing::info!(
        token = %minted.token,
        parent = %parent.token,
        workspace = %target.workspace,
        repo = %target.repo,
        permission = settings.permission.as_str(),
        expires_at = minted.expires_at,
        "minted a repo token"
    );
    Ok(Response {
        username: Some(USERNAME.into()),
        password: Some(minted.token),
        password_expiry_utc: Some(minted.expires_at),
        quit: false,
    })
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

/// Reads a token typed or piped by the user (no echo on a terminal).
pub fn read_token_from_stdin(prompt: &str) -> io::Result<Secret> {
    let value = if settings::stdin_is_terminal() {
        rpassword::prompt_password(prompt)?
    } else {
        let mut value = String::new();
        io::Read::read_to_string(&mut io::stdin().lock(), &mut value)?;
        value
    };
    let value = zeroize::Zeroizing::new(value);
    Ok(Secret::new(value.trim().to_owned()))
}
