//! `doctor`: find what would go wrong before git does. One line per check —
//! `OK`, `WARN` or `FAIL` with the fix — and a non-zero exit on any `FAIL`.
//! Never prints a secret.

use std::io::Write;
use std::process::{Command, ExitCode};

use crate::agent::client::{Agent, LOOKUP_TIMEOUT};
use crate::agent::wire::{Request, Response};
use crate::api::{self, Code};
use crate::keychain::{self, BACKEND};
use crate::secret::Secret;
use crate::settings::Settings;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Ok,
    Warn,
    Fail,
}

struct Report<'a> {
    worst: Level,
    out: &'a mut dyn Write,
    /// The first failure to write (a closed pipe): reported once at the end.
    broken: Option<std::io::Error>,
}

impl Report<'_> {
    fn line(&mut self, level: Level, text: impl AsRef<str>) {
        let tag = match level {
            Level::Ok => "OK  ",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        self.worst = self.worst.max(level);
        if self.broken.is_none()
            && let Err(e) = writeln!(
                self.out,
                "{tag} {}",
                crate::ui::printable(text.as_ref(), 400)
            )
        {
            self.broken = Some(e);
        }
    }
}

/// Runs every check for the configured API and its git hosts.
pub fn run(settings: &Settings, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let mut report = Report {
        worst: Level::Ok,
        out,
        broken: None,
    };
    check_git(&mut report);
    for host in settings.service.git_hosts() {
        check_helper_chain(&mut report, settings, host);
    }
    let parents = check_parent_sources(&mut report, settings);
    check_agent(&mut report);
    check_tokens(&mut report, settings, parents);
    if let Some(e) = report.broken {
        return Err(e.into());
    }
    Ok(if report.worst == Level::Fail {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .env_remove(keychain::ENV_TOKEN)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn check_git(report: &mut Report) {
    let Some(version) = git(&["--version"]) else {
        report.line(Level::Fail, "git: not found on PATH; install git");
        return;
    };
    let version = version.trim().trim_start_matches("git version ").to_owned();
    let numbers: Vec<u32> = version
        .split('.')
        .take(2)
        .filter_map(|n| n.parse().ok())
        .collect();
    match numbers.as_slice() {
        [major, minor] if (*major, *minor) >= (2, 46) => report.line(
            Level::Ok,
            format!("git {version}: Bearer tokens (authtype), password_expiry_utc"),
        ),
        [major, minor] if (*major, *minor) >= (2, 40) => report.line(
            Level::Ok,
            format!("git {version}: Basic auth with password_expiry_utc (Bearer needs git 2.46+)"),
        ),
        _ => report.line(
            Level::Warn,
            format!("git {version}: older than 2.40, it ignores token expiry; upgrade git"),
        ),
    }
}

/// The helpers git would ask for `url`, in order, and the effective useHttpPath,
/// from `git config --list` (same order as git reads them).
fn helper_chain(scheme: &str, host: &str) -> (Vec<String>, bool) {
    let listing = git(&["config", "--list", "-z"]).unwrap_or_default();
    let mut helpers = Vec::new();
    let mut use_path = false;
    for entry in listing.split('\0').filter(|e| !e.is_empty()) {
        let (key, value) = entry.split_once('\n').unwrap_or((entry, ""));
        let Some(rest) = key.strip_prefix("credential.") else {
            continue;
        };
        let (url, name) = match rest.rsplit_once('.') {
            Some((url, name)) => (Some(url), name),
            None => (None, rest),
        };
        if let Some(url) = url {
            let target = url.trim_end_matches('/');
            let ours = format!("{scheme}://{host}");
            let matches = target.eq_ignore_ascii_case(&ours)
                || target
                    .to_ascii_lowercase()
                    .starts_with(&format!("{}/", ours.to_ascii_lowercase()));
            if !matches {
                continue;
            }
        }
        match name.to_ascii_lowercase().as_str() {
            "helper" if value.is_empty() => helpers.clear(),
            "helper" => helpers.push(value.to_owned()),
            "usehttppath" => {
                use_path = matches!(
                    value.to_ascii_lowercase().as_str(),
                    "true" | "1" | "yes" | "on"
                )
            }
            _ => {}
        }
    }
    (helpers, use_path)
}

fn is_ours(helper: &str) -> bool {
    let first = helper.split_whitespace().next().unwrap_or("");
    first == "githosted" || first.ends_with("/git-credential-githosted")
}

fn check_helper_chain(report: &mut Report, settings: &Settings, host: &str) {
    let scheme = settings.service.scheme();
    let url = format!("{scheme}://{host}/");
    let (helpers, use_path) = helper_chain(scheme, host);
    let Some(position) = helpers.iter().position(|h| is_ours(h)) else {
        report.line(
            Level::Fail,
            format!(
                "{url}: git does not use this helper; run `git-credential-githosted configure{}`",
                settings.api_url_flag()
            ),
        );
        return;
    };
    let mut clean = true;
    for (i, helper) in helpers.iter().enumerate().filter(|(_, h)| !is_ours(h)) {
        let name = helper.split_whitespace().next().unwrap_or("");
        let name = name
            .rsplit('/')
            .next()
            .unwrap_or(name)
            .trim_start_matches("git-credential-");
        let (level, why) = match name {
            "store" => (
                Level::Fail,
                "git hands it every token that worked and it writes them to ~/.git-credentials in plain text",
            ),
            "osxkeychain" | "libsecret" | "manager" | "manager-core" | "wincred" => (
                Level::Fail,
                "git hands it every token that worked and it keeps them after they expire",
            ),
            "cache" => (
                Level::Warn,
                "it keeps tokens for its own --timeout, not their expiry",
            ),
            _ if i < position => (
                Level::Warn,
                "it is asked before this helper and may answer with something else",
            ),
            _ => continue,
        };
        clean = false;
        report.line(
            level,
            format!(
                "{url}: helper `{helper}` is also configured: {why}; run `git-credential-githosted configure{}` (its empty reset silences helpers before it) and remove `{helper}` for this host",
                settings.api_url_flag()
            ),
        );
    }
    if !use_path {
        report.line(
            Level::Fail,
            format!("{url}: credential.useHttpPath is off, so git does not say which repo; run `git-credential-githosted configure`"),
        );
    } else if clean {
        report.line(
            Level::Ok,
            format!(
                "{url}: git asks `{}` and useHttpPath is on",
                helpers[position]
            ),
        );
    }
}

/// Where parent tokens come from; returns (label, token) for each to probe.
fn check_parent_sources(report: &mut Report, settings: &Settings) -> Vec<(String, Secret)> {
    let api_host = settings.service.api_host();
    if let Some(token) = keychain::env_token() {
        report.line(
            Level::Ok,
            format!(
                "{}: set ({token}); used instead of the keychain",
                keychain::ENV_TOKEN
            ),
        );
        return vec![(keychain::ENV_TOKEN.to_owned(), token)];
    }
    let entries = match keychain::list() {
        Ok(entries) => entries,
        Err(e) => {
            report.line(Level::Fail, format!("keychain: {e}"));
            return Vec::new();
        }
    };
    let ours: Vec<String> = entries
        .into_iter()
        .map(|(account, _)| account)
        .filter(|a| a == api_host || a.starts_with(&format!("{api_host}/")))
        .collect();
    if ours.is_empty() {
        report.line(
            Level::Fail,
            format!(
                "keychain ({BACKEND}): no workspace token for {api_host}; run `printf %s \"$TOKEN\" | git-credential-githosted login{}`",
                settings.api_url_flag()
            ),
        );
        return Vec::new();
    }
    let mut parents = Vec::new();
    for account in ours {
        match keychain::read(&account) {
            Ok(Some(token)) => {
                report.line(
                    Level::Ok,
                    format!("keychain ({BACKEND}): {account} holds {token}"),
                );
                parents.push((format!("the keychain entry {account}"), token));
            }
            Ok(None) => {}
            Err(e) => report.line(Level::Fail, format!("keychain: {account}: {e}")),
        }
    }
    parents
}

fn check_agent(report: &mut Report) {
    match Agent::connect().and_then(|mut a| a.request(&Request::Status, LOOKUP_TIMEOUT)) {
        Ok(Response::Status(s)) => report.line(
            Level::Ok,
            format!(
                "agent: pid {}, {} cached tokens, {} exchanges",
                s.pid,
                s.entries.len(),
                s.exchanges
            ),
        ),
        Ok(_) => report.line(
            Level::Warn,
            "agent: answered something unexpected; kill it, the next get starts a new one",
        ),
        Err(e) if e.is_alarming() => report.line(Level::Fail, format!("agent: {e}")),
        Err(_) => report.line(Level::Ok, "agent: not running (the next get starts it)"),
    }
}

fn check_tokens(report: &mut Report, settings: &Settings, parents: Vec<(String, Secret)>) {
    let api_host = settings.service.api_host();
    let client = match api::Client::new(
        settings.service.api_url(),
        api_host,
        &api::Network::from_env(),
    ) {
        Ok(c) => c,
        Err(e) => return report.line(Level::Fail, format!("API: {e}")),
    };
    let Ok(runtime) = api::runtime() else {
        return report.line(Level::Fail, "API: cannot start the I/O runtime");
    };
    for (label, token) in parents {
        let deadline = api::deadline_in(settings.timeout);
        match runtime.block_on(client.list_tokens(&token, 1, deadline)) {
            Ok(_) => report.line(Level::Ok, format!("API {api_host}: reachable; {label} ({token}) is a live workspace token")),
            Err(e) => match e.code() {
                Some(Code::Unauthenticated) => report.line(
                    Level::Fail,
                    format!("API {api_host}: {label} ({token}) is expired or revoked; store a new one with `git-credential-githosted login{}`", settings.api_url_flag()),
                ),
                Some(Code::PermissionDenied) => report.line(
                    Level::Fail,
                    format!("API {api_host}: {label} ({token}) is not a workspace token; create a gw_ token and `login`"),
                ),
                _ => report.line(Level::Fail, format!("API {api_host}: {e}; check the network or --api-url")),
            },
        }
    }
}
