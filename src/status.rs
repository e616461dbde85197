//! `status`: what is stored, cached and configured. Fingerprints only.

use std::process::Command;

use crate::agent::client::{Agent, LOOKUP_TIMEOUT};
use crate::agent::wire::{Request, Response};
use crate::broker::{Clock, SystemClock};
use crate::keychain::{self, BACKEND};
use crate::settings::Settings;

/// Prints the agent, its cached tokens, the keychain entries and the git config
/// for the configured hosts.
pub fn run(settings: &Settings) -> anyhow::Result<()> {
    let now = SystemClock.now();
    match Agent::connect().and_then(|mut a| a.request(&Request::Status, LOOKUP_TIMEOUT)) {
        Ok(Response::Status(s)) => {
            println!(
                "agent: pid {}, up {}, {} exchanges, {} cached tokens",
                s.pid,
                duration(s.uptime_secs as i64),
                s.exchanges,
                s.entries.len()
            );
            for e in &s.entries {
                println!(
                    "  {}/{}  {}  expires in {}  {}  ({})",
                    e.workspace,
                    e.repo,
                    e.permission.as_str(),
                    if e.expires_at > now {
                        duration(e.expires_at - now)
                    } else {
                        "expired".into()
                    },
                    e.fingerprint,
                    e.api.trim_end_matches('/')
                );
            }
        }
        Ok(_) => println!("agent: answered something unexpected"),
        Err(crate::agent::client::AgentError::NotRunning) => {
            println!("agent: not running (the next get starts it)")
        }
        Err(e) => println!("agent: {e}"),
    }
    if let Some(token) = keychain::env_token() {
        println!(
            "{}: {token} (used instead of the keychain)",
            keychain::ENV_TOKEN
        );
    }
    match keychain::list() {
        Ok(entries) if entries.is_empty() => println!("keychain ({BACKEND}): no workspace tokens"),
        Ok(entries) => {
            println!("keychain ({BACKEND}):");
            for (account, fingerprint) in entries {
                println!("  {account}  {fingerprint}");
            }
        }
        Err(e) => println!("keychain: {e}"),
    }
    for host in settings.service.git_hosts() {
        let url = format!("{}://{host}/", settings.service.scheme());
        let helpers = git_config(&["--get-urlmatch", "credential.helper", &url]);
        let use_path = git_config(&["--get-urlmatch", "credential.useHttpPath", &url]);
        println!(
            "git: {url} helper = {}, useHttpPath = {}",
            helpers.unwrap_or_else(|| "(none)".into()),
            use_path.unwrap_or_else(|| "unset".into())
        );
    }
    Ok(())
}

fn git_config(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .env_remove(crate::keychain::ENV_TOKEN)
        .arg("config")
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `1h02m`, `4m10s`, `12s`.
pub fn duration(secs: i64) -> String {
    match secs.max(0) {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}
