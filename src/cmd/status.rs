//! `status`: what is stored, cached and configured. Fingerprints only.

use std::io::Write;

use crate::agent::client::Agent;
use crate::cache::{Clock, SystemClock};
use crate::keychain::{self, BACKEND};
use crate::settings::Settings;

/// Prints the agent, its cached tokens, the keychain entries and the git config
/// for the configured hosts.
pub fn run(settings: &Settings, out: &mut dyn Write) -> anyhow::Result<()> {
    let now = SystemClock.now();
    let mut lines = Vec::new();
    match Agent::connect().and_then(|mut a| a.status()) {
        Ok(s) => {
            lines.push(format!(
                "agent: pid {}, up {}, {} exchanges, {} cached tokens",
                s.pid,
                duration(i64::try_from(s.uptime_secs).unwrap_or(i64::MAX)),
                s.exchanges,
                s.entries.len()
            ));
            for e in &s.entries {
                let left = match e.expires_at > now {
                    true => duration(e.expires_at.saturating_sub(now)),
                    false => "expired".into(),
                };
                lines.push(format!(
                    "  {}/{}  {}  expires in {left}  {}  ({})",
                    e.workspace,
                    e.repo,
                    e.permission.as_str(),
                    e.fingerprint,
                    e.api.trim_end_matches('/')
                ));
            }
        }
        Err(crate::agent::client::AgentError::NotRunning) => {
            lines.push("agent: not running (the next get starts it)".into())
        }
        Err(e) => lines.push(format!("agent: {e}")),
    }
    if let Some(token) = keychain::env_token() {
        lines.push(format!(
            "{}: {token} (used instead of the keychain)",
            keychain::ENV_TOKEN
        ));
    }
    match keychain::list() {
        Ok(entries) if entries.is_empty() => {
            lines.push(format!("keychain ({BACKEND}): no workspace tokens"))
        }
        Ok(entries) => {
            lines.push(format!("keychain ({BACKEND}):"));
            for (account, fingerprint) in entries {
                lines.push(format!("  {account}  {fingerprint}"));
            }
        }
        Err(e) => lines.push(format!("keychain: {e}")),
    }
    for host in settings.service.git_hosts() {
        let url = format!("{}://{host}/", settings.service.scheme());
        let (helpers, use_path) = crate::git::credential_config(&url);
        let helpers = match helpers.is_empty() {
            true => "(none)".to_owned(),
            false => helpers.join(", "),
        };
        lines.push(format!(
            "git: {url} helpers = {helpers}, useHttpPath = {use_path}"
        ));
    }
    for line in lines {
        writeln!(out, "{}", crate::ui::printable(&line, 1000))?;
    }
    Ok(())
}

/// `1h02m`, `4m10s`, `12s`.
pub fn duration(secs: i64) -> String {
    match secs.max(0) {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}
