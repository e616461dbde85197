//! `status`: what is stored, cached and configured. Fingerprints only.
//!
//! `--json` prints one object with stable fields (documented in the README):
//! `agent` (`running`, `pid`, `uptime_secs`, `exchanges`, `tokens`: `api`,
//! `workspace`, `repo`, `permission`, `expires_at`, `fingerprint`),
//! `broker` (`url`, `audience`, `id_token`: where the job's ID token comes
//! from, or null; the whole field null without a broker),
//! `env_token` (a fingerprint, or null), `keychain` (`backend`, `entries`:
//! `account`, `fingerprint`; `error`), `git` (`url`, `helpers`, `use_http_path`).

use std::io::Write;

use serde::Serialize;

use crate::agent::client::{Agent, AgentError};
use crate::cache::{Clock, SystemClock};
use crate::keychain::{self, BACKEND};
use crate::settings::Settings;

/// How to print.
#[derive(Debug, Clone, Copy, Default)]
pub struct Output {
    pub json: bool,
    pub color: bool,
}

#[derive(Serialize)]
struct Status {
    /// A CI job's broker, when tokens come from one (then no keychain is read).
    broker: Option<BrokerReport>,
    agent: AgentReport,
    env_token: Option<String>,
    keychain: KeychainReport,
    git: Vec<GitReport>,
}

#[derive(Serialize)]
struct BrokerReport {
    url: String,
    audience: String,
    /// Where the job's ID token comes from, or null when this job has none.
    id_token: Option<String>,
}

#[derive(Serialize)]
struct AgentReport {
    running: bool,
    pid: Option<u32>,
    uptime_secs: Option<u64>,
    exchanges: Option<u64>,
    tokens: Vec<TokenReport>,
    /// Why it cannot be reached, when that is worth saying.
    error: Option<String>,
}

#[derive(Serialize)]
struct TokenReport {
    api: String,
    workspace: String,
    repo: String,
    permission: &'static str,
    expires_at: i64,
    fingerprint: String,
    /// The broker it was minted through, or null.
    broker: Option<String>,
}

#[derive(Serialize)]
struct KeychainReport {
    backend: &'static str,
    entries: Vec<EntryReport>,
    error: Option<String>,
}

#[derive(Serialize)]
struct EntryReport {
    account: String,
    fingerprint: String,
}

#[derive(Serialize)]
struct GitReport {
    url: String,
    helpers: Vec<String>,
    use_http_path: bool,
}

/// Prints the agent, its cached tokens, the keychain entries and the git config
/// for the hosts of each API it covers (every configured one when several could be meant).
pub fn run(settings: &[Settings], output: Output, out: &mut dyn Write) -> anyhow::Result<()> {
    let status = gather(settings);
    if output.json {
        serde_json::to_writer_pretty(&mut *out, &status)?;
        writeln!(out)?;
        return Ok(());
    }
    for line in lines(&status, output.color) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

fn gather(all: &[Settings]) -> Status {
    let agent = match Agent::connect().and_then(|mut a| a.status()) {
        Ok(s) => AgentReport {
            running: true,
            pid: Some(s.pid),
            uptime_secs: Some(s.uptime_secs),
            exchanges: Some(s.exchanges),
            tokens: s
                .entries
                .into_iter()
                .map(|e| TokenReport {
                    api: e.api.trim_end_matches('/').to_owned(),
                    workspace: e.workspace,
                    repo: e.repo,
                    permission: e.permission.as_str(),
                    expires_at: e.expires_at,
                    fingerprint: e.fingerprint,
                    broker: e.broker.map(|b| b.trim_end_matches('/').to_owned()),
                })
                .collect(),
            error: None,
        },
        Err(e) => AgentReport {
            running: false,
            pid: None,
            uptime_secs: None,
            exchanges: None,
            tokens: Vec::new(),
            error: (!matches!(e, AgentError::NotRunning)).then(|| e.to_string()),
        },
    };
    let broker = all
        .iter()
        .find_map(|s| s.broker.as_ref())
        .map(|b| BrokerReport {
            url: b.url_arg.clone(),
            audience: b.audience.clone(),
            id_token: crate::id_token::Source::choose(
                b.token_file.as_deref(),
                b.token_env.as_deref(),
            )
            .map(|source| source.describe()),
        });
    // A broker job needs no keychain (and has none to ask: no D-Bus noise).
    let keychain = match broker.is_some() && keychain::env_token().is_none() {
        true => Ok(Vec::new()),
        false => keychain::list(),
    };
    let keychain = match keychain {
        Ok(entries) => KeychainReport {
            backend: BACKEND,
            entries: entries
                .into_iter()
                .map(|(account, fingerprint)| EntryReport {
                    account,
                    fingerprint,
                })
                .collect(),
            error: None,
        },
        Err(e) => KeychainReport {
            backend: BACKEND,
            entries: Vec::new(),
            error: Some(e.to_string()),
        },
    };
    let git = all
        .iter()
        .flat_map(|settings| {
            let scheme = settings.service.scheme();
            settings
                .service
                .git_hosts()
                .iter()
                .map(move |host| format!("{scheme}://{host}/"))
        })
        .map(|url| {
            let (helpers, use_http_path) = crate::git::credential_config(&url);
            GitReport {
                url,
                helpers,
                use_http_path,
            }
        })
        .collect();
    Status {
        broker,
        agent,
        env_token: keychain::env_token().map(|t| t.fingerprint()),
        keychain,
        git,
    }
}

/// The report as lines for a person: sanitised, then coloured.
fn lines(s: &Status, color: bool) -> Vec<String> {
    let now = SystemClock.now();
    let head = |text: &str| match color {
        true => format!("\x1b[1m{text}\x1b[0m"),
        false => text.to_owned(),
    };
    let clean = |text: String| crate::ui::printable(&text, 1000);
    let mut out = Vec::new();
    if let Some(b) = &s.broker {
        let id_token = match &b.id_token {
            Some(source) => format!("the job's ID token from {source}"),
            None => "no ID token in this job (GitHub Actions: `permissions: id-token: write`; else --oidc-token-env or --oidc-token-file)".to_owned(),
        };
        out.push(clean(format!(
            "{} {} (audience {}), {id_token}; its tokens are cached by the agent below",
            head("broker:"),
            b.url,
            b.audience
        )));
    }
    match (&s.agent.pid, &s.agent.error) {
        (Some(pid), _) => {
            out.push(format!(
                "{} pid {pid}, up {}, {}, {}",
                head("agent:"),
                duration(i64::try_from(s.agent.uptime_secs.unwrap_or(0)).unwrap_or(i64::MAX)),
                crate::ui::count(s.agent.exchanges.unwrap_or(0), "exchange"),
                crate::ui::count(
                    u64::try_from(s.agent.tokens.len()).unwrap_or(u64::MAX),
                    "cached token"
                )
            ));
            for t in &s.agent.tokens {
                let left = match t.expires_at > now {
                    true => format!("expires in {}", duration(t.expires_at.saturating_sub(now))),
                    false => "expired".into(),
                };
                let from = match &t.broker {
                    Some(broker) => format!("{}, broker {broker}", t.api),
                    None => t.api.clone(),
                };
                out.push(clean(format!(
                    "  {}/{}  {}  {left}  {}  ({from})",
                    t.workspace, t.repo, t.permission, t.fingerprint
                )));
            }
        }
        (None, Some(error)) => out.push(format!("{} {}", head("agent:"), clean(error.clone()))),
        (None, None) => out.push(format!(
            "{} not running (the next get starts it)",
            head("agent:")
        )),
    }
    if let Some(fingerprint) = &s.env_token {
        out.push(format!(
            "{} {fingerprint} (used instead of the keychain)",
            head(&format!("{}:", keychain::ENV_TOKEN))
        ));
    }
    let label = head(&format!("keychain ({}):", s.keychain.backend));
    match (&s.keychain.error, s.keychain.entries.is_empty()) {
        // GITHOSTED_TOKEN stands in for it: its absence is no news.
        (Some(_), _) if s.env_token.is_some() => out.push(format!(
            "{label} not reachable, not needed ({} is used)",
            keychain::ENV_TOKEN
        )),
        (None, true) if s.broker.is_some() => {
            out.push(format!("{label} not used (tokens come from the broker)"))
        }
        (Some(error), _) => out.push(format!("{label} {}", clean(error.clone()))),
        (None, true) => out.push(format!("{label} no workspace tokens")),
        (None, false) => {
            out.push(label);
            for e in &s.keychain.entries {
                out.push(clean(format!("  {}  {}", e.account, e.fingerprint)));
            }
        }
    }
    for g in &s.git {
        let helpers = match g.helpers.is_empty() {
            true => "(none)".to_owned(),
            false => g.helpers.join(", "),
        };
        out.push(format!(
            "{} {}",
            head("git:"),
            clean(format!(
                "{} helpers = {helpers}, useHttpPath = {}",
                g.url, g.use_http_path
            ))
        ));
    }
    out
}

/// `1h02m`, `4m10s`, `12s`.
pub fn duration(secs: i64) -> String {
    match secs.max(0) {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}
