//! `login` and `logout`: putting the workspace token into the keychain and
//! taking it out again.

use std::io::{self, Read};

use anyhow::{Context, bail};

use crate::agent::client::Agent;
use crate::api::{self, Code};
use crate::cache::Dropped;
use crate::issuer;
use crate::keychain::{self, BACKEND};
use crate::net;
use crate::secret::{Secret, TokenKind};
use crate::settings::{self, Settings};
use crate::token::Permission;
use zeroize::Zeroizing;

/// `login`: read a workspace token from stdin, check it, find its workspace,
/// store it under that workspace.
pub fn login(settings: &Settings, workspace: Option<&str>, verify: bool) -> anyhow::Result<()> {
    let api_host = settings.service.api_host();
    let whose = workspace.map_or_else(|| api_host.to_owned(), |ws| format!("{ws} on {api_host}"));
    let Some(token) = read_token(&format!(
        "githosted workspace token for {whose} (input hidden): "
    ))
    .context("reading the token from stdin")?
    else {
        return Err(crate::ui::Interrupted.into());
    };
    match token.kind() {
        TokenKind::Workspace => {}
        TokenKind::Repo => bail!(
            "that is a repo token (gr_…); `login` stores a workspace token (gw_…): in githosted, open the workspace → Tokens → Create, kind Workspace"
        ),
        TokenKind::Unknown if token.expose().is_empty() => {
            bail!(
                "no token on stdin: run `printf %s \"$TOKEN\" | git-credential-githosted login{}`",
                settings.api_url_flag()
            )
        }
        TokenKind::Unknown => {
            bail!("that is not a githosted workspace token (they start with gw_)")
        }
    }
    let found = match verify {
        true => net::block_on(check(settings, &token))??,
        false => None,
    };
    let account = match (&found, workspace) {
        (Some(ws), Some(wanted)) if ws.slug != wanted => bail!(
            "this token is for {}, not {wanted}: nothing was stored; run `git-credential-githosted login{} --workspace {}`, or use a {wanted} token",
            ws.slug,
            settings.api_url_flag(),
            ws.slug
        ),
        (Some(ws), _) => keychain::account(api_host, Some(&ws.slug)),
        (None, ws) => keychain::account(api_host, ws),
    };
    keychain::write(&account, &token)?;
    // Tokens minted from the previous keychain token must not outlive it here.
    let workspace = found.as_ref().map(|ws| ws.slug.as_str()).or(workspace);
    let dropped = drain_agent(settings, workspace);
    if !dropped.is_empty() {
        tracing::info!(
            count = dropped.len(),
            "forgot tokens minted from the previous workspace token"
        );
    }
    let can = match found.as_ref().and_then(|ws| ws.permission()) {
        Some(Permission::Write) => "; it can fetch and push".to_owned(),
        Some(Permission::Read) => format!(
            "; it is read-only: fetches only, pushes need a write token; run `git-credential-githosted configure{} --permission auto` so fetches ask for read tokens",
            settings.api_url_flag()
        ),
        None => String::new(),
    };
    crate::say!("stored the workspace token {token} for {account} in the {BACKEND}{can}");
    if keychain::env_token().is_some() {
        crate::say!(
            "note: {} is set in this environment and is used instead of the keychain",
            keychain::ENV_TOKEN
        );
    }
    Ok(())
}

/// Checks that `token` is a live workspace token of this API and finds its
/// workspace (`None` when the server cannot say). Errors say nothing was stored.
pub async fn check(settings: &Settings, token: &Secret) -> anyhow::Result<Option<api::Workspace>> {
    let api_host = settings.service.api_host();
    let client = api::Client::new(
        settings.service.api_url(),
        api_host,
        &net::Network::from_env(),
    )?;
    let deadline = net::deadline_in(settings.timeout);
    let checked = async {
        client.list_tokens(token, 1, deadline).await?;
        client.workspace_of(token, deadline).await
    }
    .await;
    checked.map_err(|e| match e.code() {
        Some(Code::Unauthenticated) => anyhow::anyhow!(
            "{api_host} rejected the token {token} (wrong, expired or revoked); nothing was stored"
        ),
        Some(Code::PermissionDenied) => anyhow::anyhow!(
            "{api_host} says the token {token} is not a workspace token; nothing was stored"
        ),
        _ if matches!(&e, api::ApiError::Transport { reason, .. } if api::is_refused(reason)) => {
            anyhow::anyhow!(
                "could not check the token: {e}; start the server there or fix --api-url; nothing was stored"
            )
        }
        _ => anyhow::anyhow!(
            "could not check the token with {api_host}: {e}; nothing was stored (use --no-verify to store it unchecked)"
        ),
    })
}

/// `logout`: revoke every live token the agent minted for this API host (and
/// workspace), empty its cache, and delete the stored workspace token.
pub fn logout(settings: &Settings, workspace: Option<&str>) -> anyhow::Result<()> {
    let api_host = settings.service.api_host();
    let account = match workspace {
        Some(ws) => keychain::account(api_host, Some(ws)),
        None => only_account(settings)?,
    };
    net::block_on(logout_account(settings, &account))?
}

/// `logout --all`: [`logout`] of every workspace token stored for this API host.
pub fn logout_all(settings: &Settings) -> anyhow::Result<()> {
    let api_host = settings.service.api_host();
    let accounts = match accounts_of(api_host) {
        Ok(accounts) => accounts,
        // A broker job has no keychain to reach (no D-Bus): it stores nothing;
        // what it holds is the agent's broker tokens, revoked below.
        Err(_) if settings.broker.is_some() => Vec::new(),
        Err(e) => return Err(e),
    };
    if accounts.is_empty() {
        if settings.broker.is_some() {
            return net::block_on(logout_broker(settings))?;
        }
        crate::say!("no workspace token was stored for {api_host}");
    }
    net::block_on(async {
        for account in accounts {
            logout_account(settings, &account).await?;
        }
        Ok(())
    })?
}

/// A broker job's logout: the agent's tokens for this API are dropped and
/// revoked (through the broker); there is no workspace token to delete.
async fn logout_broker(settings: &Settings) -> anyhow::Result<()> {
    let dropped = drain_agent(settings, None);
    let revoked = issuer::revoke(settings, &dropped).await;
    crate::say!(
        "revoked {revoked} of {} cached repo tokens; broker mode stores no workspace token",
        dropped.len()
    );
    Ok(())
}

/// Revokes the tokens minted from `account`'s token, then deletes it.
async fn logout_account(settings: &Settings, account: &str) -> anyhow::Result<()> {
    let workspace = account.split_once('/').map(|(_, ws)| ws);
    let dropped = drain_agent(settings, workspace);
    // Revoke while the workspace token is still there to revoke with.
    let revoked = issuer::revoke(settings, &dropped).await;
    if !dropped.is_empty() {
        crate::say!(
            "revoked {revoked} of {} cached repo tokens for {account}",
            dropped.len()
        );
    }
    if keychain::delete(account)? {
        crate::say!("removed the workspace token for {account} from the {BACKEND}");
    } else {
        crate::say!("no workspace token was stored for {account}");
    }
    Ok(())
}

/// The one keychain entry for this API host (any workspace); several are an
/// error that names them.
fn only_account(settings: &Settings) -> anyhow::Result<String> {
    let api_host = settings.service.api_host();
    let ours = accounts_of(api_host)?;
    match ours.as_slice() {
        [] => Ok(api_host.to_owned()),
        [one] => Ok(one.clone()),
        many => bail!(
            "several workspace tokens are stored for {api_host} ({}): run `git-credential-githosted logout{} --workspace WS`",
            many.iter()
                .map(|a| a.split_once('/').map_or("(any workspace)", |(_, ws)| ws))
                .collect::<Vec<_>>()
                .join(", "),
            settings.api_url_flag()
        ),
    }
}

/// The keychain entries for this API host (any workspace).
fn accounts_of(api_host: &str) -> anyhow::Result<Vec<String>> {
    Ok(keychain::list()?
        .into_iter()
        .map(|(account, _)| account)
        .filter(|a| a == api_host || a.starts_with(&format!("{api_host}/")))
        .collect())
}

/// Empties the agent's cache for this API (and workspace), if an agent runs.
fn drain_agent(settings: &Settings, workspace: Option<&str>) -> Vec<Dropped> {
    let api = settings.service.api_url().to_string();
    Agent::connect()
        .and_then(|mut agent| agent.drain(&api, workspace))
        .unwrap_or_default()
}

/// Reads a token typed (without echo) or piped by the user; at most 64 KiB.
/// `None`: the person pressed Ctrl-C at the prompt.
fn read_token(prompt: &str) -> io::Result<Option<Secret>> {
    let value = if settings::stdin_is_terminal() {
        match prompt_hidden(prompt)? {
            Some(value) => value,
            None => return Ok(None),
        }
    } else {
        let mut value = Zeroizing::new(String::new());
        io::Read::take(io::stdin().lock(), 64 * 1024).read_to_string(&mut value)?;
        value
    };
    Ok(Some(Secret::new(value.trim().to_owned())))
}

#[cfg(unix)]
fn prompt_hidden(prompt: &str) -> io::Result<Option<Zeroizing<String>>> {
    let mut tty =
        crate::tty::controlling().ok_or_else(|| io::Error::other("no terminal to ask on"))?;
    match crate::tty::read_hidden(&mut tty, prompt)? {
        crate::tty::Answer::Line(line) => Ok(Some(line)),
        crate::tty::Answer::Closed => Ok(Some(Zeroizing::new(String::new()))),
        crate::tty::Answer::Interrupted => Ok(None),
    }
}

#[cfg(not(unix))]
fn prompt_hidden(prompt: &str) -> io::Result<Option<Zeroizing<String>>> {
    rpassword::prompt_password(prompt).map(|v| Some(Zeroizing::new(v)))
}
