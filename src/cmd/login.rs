//! `login` and `logout`: putting the workspace token into the keychain and
//! taking it out again.

use std::io::{self, Read};

use anyhow::{Context, bail};

use crate::agent::client::Agent;
use crate::api::{self, Code};
use crate::cache::Dropped;
use crate::issuer;
use crate::keychain::{self, BACKEND};
use crate::secret::{Secret, TokenKind};
use crate::settings::{self, Settings};

/// `login`: read a workspace token from stdin, check it, store it.
pub fn login(settings: &Settings, workspace: Option<&str>, verify: bool) -> anyhow::Result<()> {
    let api_host = settings.service.api_host();
    let account = keychain::account(api_host, workspace);
    let token = read_token_from_stdin(&format!("githosted workspace token for {account}: "))
        .context("reading the token from stdin")?;
    match token.kind() {
        TokenKind::Workspace => {}
        TokenKind::Repo => bail!(
            "that is a repo token (gr_…); `login` stores a workspace token (gw_…): create one in githosted's workspace settings"
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
    if verify {
        let client = api::Client::new(
            settings.service.api_url(),
            api_host,
            &api::Network::from_env(),
        )?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let deadline = api::deadline_in(settings.timeout);
        match runtime.block_on(client.list_tokens(&token, 1, deadline)) {
            Ok(_) => {}
            Err(e) => match e.code() {
                Some(Code::Unauthenticated) => {
                    bail!(
                        "{api_host} rejected the token {token} (wrong, expired or revoked); nothing was stored"
                    )
                }
                Some(Code::PermissionDenied) => {
                    bail!(
                        "{api_host} says the token {token} is not a workspace token; nothing was stored"
                    )
                }
                _ => bail!(
                    "could not check the token with {api_host}: {}; nothing was stored (use --no-verify to store it unchecked)",
                    e
                ),
            },
        }
    }
    keychain::write(&account, &token)?;
    // Tokens minted from the previous keychain token must not outlive it here.
    let dropped = drain_agent(settings, workspace);
    if !dropped.is_empty() {
        tracing::info!(
            count = dropped.len(),
            "forgot tokens minted from the previous workspace token"
        );
    }
    crate::say!("stored the workspace token {token} for {account} in the {BACKEND}");
    if keychain::env_token().is_some() {
        crate::say!(
            "note: {} is set in this environment and is used instead of the keychain",
            keychain::ENV_TOKEN
        );
    }
    Ok(())
}

/// `logout`: revoke every live token the agent minted for this API host (and
/// workspace), empty its cache, and delete the stored workspace token.
pub fn logout(settings: &Settings, workspace: Option<&str>) -> anyhow::Result<()> {
    let account = keychain::account(settings.service.api_host(), workspace);
    let dropped = drain_agent(settings, workspace);
    // Revoke while the workspace token is still there to revoke with.
    let revoked = issuer::revoke(settings, &dropped);
    if !dropped.is_empty() {
        crate::say!(
            "revoked {revoked} of {} cached repo tokens for {account}",
            dropped.len()
        );
    }
    if keychain::delete(&account)? {
        crate::say!("removed the workspace token for {account} from the {BACKEND}");
    } else {
        crate::say!("no workspace token was stored for {account}");
    }
    Ok(())
}

/// Empties the agent's cache for this API (and workspace), if an agent runs.
fn drain_agent(settings: &Settings, workspace: Option<&str>) -> Vec<Dropped> {
    let api = settings.service.api_url().to_string();
    Agent::connect()
        .and_then(|mut agent| agent.drain(&api, workspace))
        .unwrap_or_default()
}

/// Reads a token typed (without echo) or piped by the user; at most 64 KiB.
fn read_token_from_stdin(prompt: &str) -> io::Result<Secret> {
    let value = if settings::stdin_is_terminal() {
        rpassword::prompt_password(prompt)?
    } else {
        let mut value = String::new();
        io::Read::take(io::stdin().lock(), 64 * 1024).read_to_string(&mut value)?;
        value
    };
    let value = zeroize::Zeroizing::new(value);
    Ok(Secret::new(value.trim().to_owned()))
}
