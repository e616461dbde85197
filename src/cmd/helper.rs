//! The credential-helper operations git runs: `get`, `store`, `erase`.
//!
//! `get` turns a request for `https://githosted.dev/<ws>/<repo>.git` into a
//! short-lived repo token: it finds the workspace token (environment or
//! keychain), exchanges it for a `gr_` limited to that one repo and permission,
//! and answers git with that token and its expiry. Requests for other hosts get
//! no answer at all, so other helpers can serve them.

use std::io::{self, Write};

use crate::agent::client::Agent;
use crate::issuer;
use crate::protocol::{Request, Response};
use crate::settings::{self, Settings};
use crate::target::Resolution;
use crate::token::Issued;

/// The username given to git with every token; githosted ignores it.
pub const USERNAME: &str = "githosted";

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
            let explained = anyhow::anyhow!(
                "git sent no repository path for {}, so no repo-scoped token can be made: run `git-credential-githosted configure{}` (it sets credential.useHttpPath)",
                request.host.as_deref().unwrap_or_default(),
                settings.api_url_flag()
            );
            return Ok(answer_with(
                &request,
                Err(explained),
                settings.git_prompt,
                output,
            )?);
        }
        Resolution::BadPath(path) => {
            let explained = anyhow::anyhow!(
                "`{path}` on {} does not name a githosted repository (<workspace>/<repo>.git); check the remote URL",
                request.host.as_deref().unwrap_or_default()
            );
            return Ok(answer_with(
                &request,
                Err(explained),
                settings.git_prompt,
                output,
            )?);
        }
        Resolution::Repo(target) => target,
    };
    let issued = crate::net::block_on(issue_for_git(settings, &target))
        .unwrap_or_else(|e| Err(anyhow::anyhow!("{e}")));
    // Ctrl-C at our own prompt ends git's request too, whatever --git-prompt says.
    let interrupted = issued
        .as_ref()
        .err()
        .is_some_and(|e| e.downcast_ref::<crate::ui::Interrupted>().is_some());
    Ok(answer_with(
        &request,
        issued,
        settings.git_prompt && !interrupted,
        output,
    )?)
}

/// `get`'s token for `target`, asking the person at the terminal for a
/// missing workspace token when there is one (the command's one crossing into
/// async I/O).
async fn issue_for_git(
    settings: &Settings,
    target: &crate::target::Target,
) -> anyhow::Result<crate::token::Issued> {
    let issued = issuer::issue(settings, target).await;
    // A typo of a workspace that has a token is not a new workspace.
    let near = match &issued {
        Err(issuer::GetError::NoToken { .. }) => stored_workspace_near(settings, &target.workspace),
        _ => None,
    };
    match (issued, near) {
        (Err(issuer::GetError::NoToken { .. }), Some(near)) => Err(anyhow::anyhow!(
            "no token for {ws} — did you mean {near}? (a workspace token is stored for {near} on {host}): check the remote URL; for another workspace, `git-credential-githosted login{flag} --workspace {ws}`",
            ws = target.workspace,
            host = settings.service.api_host(),
            flag = settings.api_url_flag(),
        )),
        // The first clone on this machine: ask once, on the terminal, as git would.
        (Err(issuer::GetError::NoToken { .. }), None) if settings::interactive() => {
            ask_for_a_parent(settings, target).await?;
            issuer::issue(settings, target)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))
        }
        (other, _) => other.map_err(|e| anyhow::anyhow!("{e}")),
    }
}

/// The workspace with a stored token for this API whose name is closest to
/// `workspace`, when it is close enough to be a typo of it.
fn stored_workspace_near(settings: &Settings, workspace: &str) -> Option<String> {
    let prefix = format!("{}/", settings.service.api_host());
    let stored: Vec<String> = crate::keychain::list()
        .ok()?
        .into_iter()
        .filter_map(|(account, _)| account.strip_prefix(&prefix).map(str::to_owned))
        .collect();
    crate::ui::closest(workspace, stored.iter().map(String::as_str)).map(str::to_owned)
}

/// Answers git's `get`: the token, or the failure said in one line and `quit`
/// so that git stops there (githosted has no password: git's `Username for …`
/// prompt after an explained failure only invites typing the account password).
/// `Ok(false)`: failed.
pub fn answer(
    request: &Request,
    issued: anyhow::Result<Issued>,
    output: &mut impl io::Write,
) -> Result<bool, crate::protocol::ProtocolError> {
    answer_with(request, issued, false, output)
}

/// [`answer`]; with `git_prompt` (`--git-prompt`), a failure leaves git free
/// to prompt when someone can answer (a terminal), as git would without us.
pub fn answer_with(
    request: &Request,
    issued: anyhow::Result<Issued>,
    git_prompt: bool,
    output: &mut impl io::Write,
) -> Result<bool, crate::protocol::ProtocolError> {
    match issued {
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
            crate::say!("{e:#}");
            if !git_prompt || !settings::interactive() {
                // Explained: tell git to stop now, not to prompt for a password.
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

/// Asks the person at the terminal for the workspace's token (without echo),
/// checks it, and stores it in the keychain for that workspace: asked once.
#[cfg(unix)]
async fn ask_for_a_parent(
    settings: &Settings,
    target: &crate::target::Target,
) -> anyhow::Result<()> {
    use crate::tty::{Answer, controlling, read_hidden};
    let api_host = settings.service.api_host();
    let ws = &target.workspace;
    let Some(mut tty) = controlling() else {
        anyhow::bail!("no terminal to ask on");
    };
    let host = settings
        .service
        .git_hosts()
        .first()
        .map_or(api_host, String::as_str);
    let prompt = format!(
        "git-credential-githosted: no workspace token for {ws} on {api_host} yet.\n  \
         Create one on {host}: workspace {ws} → Tokens → Create (kind Workspace, permission Write).\n  \
         Paste it here (input hidden; Ctrl-C to stop): "
    );
    let token = match read_hidden(&mut tty, &prompt)? {
        Answer::Line(line) => crate::secret::Secret::new(line.trim().to_owned()),
        Answer::Interrupted => return Err(crate::ui::Interrupted.into()),
        Answer::Closed => anyhow::bail!("no token given: nothing was stored"),
    };
    if token.kind() != crate::secret::TokenKind::Workspace {
        anyhow::bail!("that is not a workspace token (gw_…): nothing was stored");
    }
    let found = super::login::check(settings, &token).await?;
    if let Some(found) = found.filter(|found| &found.slug != ws) {
        anyhow::bail!(
            "that token is for {}, not {ws}: nothing was stored; check the URL, or paste a {ws} token",
            found.slug
        );
    }
    let account = crate::keychain::account(api_host, Some(ws));
    crate::keychain::write(&account, &token)?;
    crate::say!(
        "stored the workspace token {token} for {account} in the {}; git will not ask again",
        crate::keychain::BACKEND
    );
    Ok(())
}

#[cfg(not(unix))]
async fn ask_for_a_parent(_: &Settings, _: &crate::target::Target) -> anyhow::Result<()> {
    anyhow::bail!("no terminal to ask on")
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
    // With Bearer (git 2.46+) the rejected token comes as `credential`.
    let password = request.password.or(request.credential);
    // Inside `exec`, only `exec` holds tokens: tell it.
    if let Some(channel) = &settings.exec_channel {
        if let Some(password) = password
            && let Some(hint) = issuer::forget_in_exec(settings, channel, password)
        {
            crate::say!("{hint}");
        }
        return Ok(());
    }
    let api = settings.service.api_url().to_string();
    // A CI job with a broker forgets only its own tokens (and revokes them through the broker).
    let Some(origin) = crate::plan::erase_origin(settings, &crate::plan::Env::read(settings))
    else {
        return Ok(()); // no identity: nothing of this job's was cached
    };
    // No agent running means nothing is cached: do not start one to find out.
    let dropped = match Agent::connect().and_then(|mut agent| {
        agent.erase(
            &api,
            workspace.as_deref(),
            repo.as_deref(),
            password.as_ref(),
            origin.as_ref(),
        )
    }) {
        Ok(dropped) => dropped,
        Err(e) => {
            tracing::debug!("erase: no agent ({e})");
            Vec::new()
        }
    };
    for d in &dropped {
        tracing::info!(token = %d.fingerprint, workspace = %d.workspace, repo = %d.repo, "erase: forgot a token");
    }
    let _ = crate::net::block_on(issuer::revoke(settings, &dropped));
    Ok(())
}
