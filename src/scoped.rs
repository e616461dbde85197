//! `token` and `exec`: short-lived repo tokens for scripts, CI jobs and sandboxes.
//!
//! - `token --repo WS/REPO` prints one token (from the agent's cache when it has
//!   a fit one), for `http.extraHeader`, an SDK client, or a child job's
//!   `GITHOSTED_TOKEN`.
//! - `exec --repo WS/REPO [--repo …] -- CMD…` mints a fresh token limited to
//!   those repos, runs CMD with it as `GITHOSTED_TOKEN` (never the parent), lets
//!   git inside CMD use it, and revokes it when CMD ends, however it ends.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::api::{self, ExchangeRequest};
use crate::helper::{self, REVOKE_BUDGET};
use crate::keychain;
use crate::secret::TokenKind;
use crate::settings::{self, Settings};
use crate::target::Target;

/// The repos named by `--repo`, which must all be in one workspace.
fn targets(repos: &[String]) -> anyhow::Result<Vec<Target>> {
    if repos.is_empty() {
        bail!("name the repository: --repo WORKSPACE/REPO");
    }
    let targets = repos
        .iter()
        .map(|r| Target::parse(r).with_context(|| format!("`{r}` is not WORKSPACE/REPO")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if targets.iter().any(|t| t.workspace != targets[0].workspace) {
        bail!("all --repo values must be in one workspace (one workspace token mints the token)");
    }
    Ok(targets)
}

/// `token`: print one short-lived token for one repo.
pub fn token(settings: &Settings, repos: &[String]) -> anyhow::Result<()> {
    let targets = targets(repos)?;
    let [target] = targets.as_slice() else {
        bail!("`token` makes a token for one repo; use `exec` for several");
    };
    let issued = helper::token_for(settings, target)?;
    println!("{}", issued.token.expose());
    Ok(())
}

/// `exec` needs Unix signals to outlive the command.
#[cfg(not(unix))]
pub fn exec(_: &Settings, _: &[String], _: &[String]) -> anyhow::Result<ExitCode> {
    bail!("`exec` is supported on Unix only")
}

/// `exec`: run `command` with a fresh token for `repos`, revoked when it ends.
/// Returns the command's exit status (128 + signal if a signal ended it).
#[cfg(unix)]
pub fn exec(settings: &Settings, repos: &[String], command: &[String]) -> anyhow::Result<ExitCode> {
    let targets = targets(repos)?;
    let Some((program, args)) = command.split_first() else {
        bail!("name the command to run after `--`: exec --repo WS/REPO -- CMD…");
    };
    let api_host = settings.service.api_host();
    let workspace = &targets[0].workspace;
    let parent = keychain::parent_token(api_host, workspace)?.with_context(|| {
        format!(
            "no githosted workspace token for {workspace} on {api_host}: run `git-credential-githosted login{} --workspace {workspace}`, or set {}",
            settings.api_url_flag(),
            keychain::ENV_TOKEN
        )
    })?;
    if parent.token.kind() != TokenKind::Workspace {
        bail!(
            "{} holds no workspace token (gw_…); `exec` needs one to mint a narrower token",
            parent.source
        );
    }

    let client = api::Client::new(settings.service.api_url(), api_host)?;
    let runtime = api::runtime()?;
    let subject = settings::subject();
    let request = ExchangeRequest {
        repo_allowlist: targets.iter().map(|t| t.repo.as_str()).collect(),
        permission: settings.permission,
        ttl_seconds: settings.ttl_secs,
        subject: &subject,
    };
    let minted = runtime
        .block_on(client.exchange_token(&parent.token, &request, Instant::now() + settings.timeout))
        .with_context(|| format!("minting a token for {}", repos.join(", ")))?;
    tracing::info!(token = %minted.token, "exec: minted");

    let mut child = tokio::process::Command::new(program);
    child
        .args(args)
        .env(keychain::ENV_TOKEN, minted.token.expose());
    for (key, value) in git_config_env(settings) {
        child.env(key, value);
    }
    let status = runtime.block_on(run_forwarding_signals(child, program));

    // Whatever happened to the command, the token dies with it.
    let deadline = Instant::now() + REVOKE_BUDGET;
    match runtime.block_on(client.revoke_token(&parent.token, &minted.record.id, deadline)) {
        Ok(()) => tracing::info!(token = %minted.token, "exec: revoked"),
        Err(e) => eprintln!(
            "git-credential-githosted: could not revoke the exec token {} ({e}); it expires on its own in {}",
            minted.token,
            crate::status::duration(
                minted.expires_at - crate::broker::Clock::now(&crate::broker::SystemClock)
            )
        ),
    }
    status
}

/// Runs the command; SIGTERM and SIGHUP sent to us are passed on (SIGINT from a
/// terminal reaches the command by itself), and we outlive it to revoke.
#[cfg(unix)]
async fn run_forwarding_signals(
    mut command: tokio::process::Command,
    program: &str,
) -> anyhow::Result<ExitCode> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot run `{program}`"))?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            _ = term.recv() => forward(&child, rustix::process::Signal::TERM),
            _ = hangup.recv() => forward(&child, rustix::process::Signal::HUP),
            _ = interrupt.recv() => {}
        }
    };
    use std::os::unix::process::ExitStatusExt;
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    };
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

#[cfg(unix)]
fn forward(child: &tokio::process::Child, signal: rustix::process::Signal) {
    if let Some(pid) = child
        .id()
        .and_then(|id| rustix::process::Pid::from_raw(id as i32))
    {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// `GIT_CONFIG_*` variables that point git inside the command at this helper
/// for the service's hosts, so it uses the scoped token even without `configure`.
#[cfg_attr(not(unix), allow(dead_code))]
fn git_config_env(settings: &Settings) -> Vec<(String, String)> {
    let Ok(exe) = std::env::current_exe() else {
        return Vec::new();
    };
    let exe = exe.to_string_lossy().into_owned();
    // Git runs the helper line through the shell.
    if !exe
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c))
    {
        tracing::debug!(
            "exec: helper path has shell characters; not configuring git for the command"
        );
        return Vec::new();
    }
    let helper = match &settings.api_url_arg {
        Some(url) if crate::configure::shell_safe_url(url) => format!("{exe} --api-url {url}"),
        Some(_) => return Vec::new(),
        None => exe,
    };
    let mut entries = Vec::new();
    for host in settings.service.git_hosts() {
        let section = format!("credential.{}://{host}", settings.service.scheme());
        entries.push((format!("{section}.helper"), String::new()));
        entries.push((format!("{section}.helper"), helper.clone()));
        entries.push((format!("{section}.useHttpPath"), "true".to_owned()));
    }
    let start: usize = std::env::var("GIT_CONFIG_COUNT")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let mut env = Vec::new();
    for (i, (key, value)) in entries.into_iter().enumerate() {
        env.push((format!("GIT_CONFIG_KEY_{}", start + i), key));
        env.push((format!("GIT_CONFIG_VALUE_{}", start + i), value));
    }
    env.push((
        "GIT_CONFIG_COUNT".to_owned(),
        (start + env.len() / 2).to_string(),
    ));
    env
}
