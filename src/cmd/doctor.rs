//! `doctor`: find what would go wrong before git does. One line per check —
//! `OK`, `WARN` or `FAIL` with the fix — and a non-zero exit on any `FAIL`.
//! `--json`: `{"ok": bool, "checks": [{"level": "ok"|"warn"|"fail", "text": …}]}`.
//! Never prints a secret.

use std::io::Write;
use std::process::ExitCode;

use crate::agent::client::Agent;
use crate::api::{self, Code};
use crate::keychain::{self, BACKEND};
use crate::net;
use crate::secret::Secret;
use crate::settings::Settings;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Level {
    Ok,
    Warn,
    Fail,
}

/// How to print.
#[derive(Debug, Clone, Copy, Default)]
pub struct Output {
    pub json: bool,
    pub color: bool,
}

/// One check's outcome (`--json`: `{"level": "ok"|"warn"|"fail", "text": …}`).
#[derive(serde::Serialize)]
struct Check {
    level: Level,
    text: String,
}

struct Report<'a> {
    worst: Level,
    output: Output,
    out: &'a mut dyn Write,
    checks: Vec<Check>,
    /// The first failure to write (a closed pipe): reported once at the end.
    broken: Option<std::io::Error>,
}

impl Report<'_> {
    fn line(&mut self, level: Level, text: impl AsRef<str>) {
        self.worst = self.worst.max(level);
        let text = crate::ui::printable(text.as_ref(), 400);
        if self.output.json {
            self.checks.push(Check { level, text });
            return;
        }
        let tag = match (level, self.output.color) {
            (Level::Ok, false) => "OK  ",
            (Level::Warn, false) => "WARN",
            (Level::Fail, false) => "FAIL",
            (Level::Ok, true) => "\x1b[32mOK\x1b[0m  ",
            (Level::Warn, true) => "\x1b[33mWARN\x1b[0m",
            (Level::Fail, true) => "\x1b[31;1mFAIL\x1b[0m",
        };
        if self.broken.is_none()
            && let Err(e) = writeln!(self.out, "{tag} {text}")
        {
            self.broken = Some(e);
        }
    }
}

/// Runs every check for each API (each with its broker, if it has one): one
/// report, or with several APIs one per API under its URL (`--json`: an array
/// of `{"api": URL, "ok": …, "checks": …}`). Fails when any API fails.
pub fn run_each(all: &[Settings], output: Output, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    net::block_on(each(all, output, out))?
}

/// [`run_each`], in the command's one crossing into async I/O.
async fn each(all: &[Settings], output: Output, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    if let [one] = all {
        return run(one, one.broker.as_ref(), output, out).await;
    }
    let mut failed = false;
    let mut reports = Vec::new();
    for settings in all {
        let api = settings.service.api_url().as_str().trim_end_matches('/');
        if output.json {
            let mut buffer = Vec::new();
            failed |= run(settings, settings.broker.as_ref(), output, &mut buffer).await?
                != ExitCode::SUCCESS;
            let mut report: serde_json::Value = serde_json::from_slice(&buffer)?;
            if let Some(fields) = report.as_object_mut() {
                fields.insert("api".into(), api.into());
            }
            reports.push(report);
        } else {
            writeln!(out, "{api}:")?;
            failed |=
                run(settings, settings.broker.as_ref(), output, out).await? != ExitCode::SUCCESS;
        }
    }
    if output.json {
        serde_json::to_writer_pretty(&mut *out, &reports)?;
        writeln!(out)?;
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Runs every check for the configured API and its git hosts.
pub async fn run(
    settings: &Settings,
    broker: Option<&crate::settings::BrokerSettings>,
    output: Output,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let mut report = Report {
        worst: Level::Ok,
        output,
        out,
        checks: Vec::new(),
        broken: None,
    };
    check_git(&mut report);
    for host in settings.service.git_hosts() {
        check_helper_chain(&mut report, settings, host);
    }
    check_path_for_others(&mut report);
    if let Some(broker) = broker {
        // CI through a broker: no workspace token here, by design.
        check_broker(&mut report, settings, broker).await;
    } else {
        let parents = check_parent_sources(&mut report, settings);
        check_agent(&mut report);
        check_tokens(&mut report, settings, parents).await;
    }
    if let Some(e) = report.broken {
        return Err(e.into());
    }
    if output.json {
        let json = serde_json::json!({
            "ok": report.worst != Level::Fail,
            "checks": report.checks,
        });
        serde_json::to_writer_pretty(&mut *report.out, &json)?;
        writeln!(report.out)?;
    }
    Ok(if report.worst == Level::Fail {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The broker answers `/healthz`, and this machine has an ID token to show it.
async fn check_broker(
    report: &mut Report<'_>,
    settings: &Settings,
    broker: &crate::settings::BrokerSettings,
) {
    let health = async {
        let url = broker.url.join("healthz").map_err(|e| e.to_string())?;
        let client = net::http_client(&url, std::time::Duration::from_secs(5))?;
        let response = client.get(url).send().await.map_err(|e| e.to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("/healthz answered {}", response.status()))
        }
    }
    .await;
    match health {
        Ok(()) => report.line(Level::Ok, format!("the broker {} is up", broker.url_arg)),
        Err(e) => report.line(
            Level::Fail,
            format!(
                "the broker {} does not answer ({e}): check the URL (`git-credential-githosted configure --broker URL`) and that the broker runs",
                broker.url_arg
            ),
        ),
    }
    use crate::id_token::Source;
    match Source::choose(broker.token_file.as_deref(), broker.token_env.as_deref()) {
        None => report.line(
            Level::Warn,
            "no OIDC ID token here: on GitHub Actions give the job `permissions: id-token: write`; elsewhere configure --oidc-token-file PATH or --oidc-token-env NAME",
        ),
        Some(Source::File(path)) if !path.is_file() => report.line(
            Level::Fail,
            format!(
                "the ID-token file {} does not exist: check --oidc-token-file (GitLab: id_tokens; Kubernetes: the projected volume)",
                path.display()
            ),
        ),
        Some(Source::Env(name)) if std::env::var_os(&name).is_none_or(|v| v.is_empty()) => report
            .line(
                Level::Fail,
                format!("${name} is not set: check --oidc-token-env (GitLab: id_tokens)"),
            ),
        Some(source) => {
            report.line(
                Level::Ok,
                format!("the job's ID token comes from {}", source.describe()),
            );
            // In a clone: what the broker would decide for its repo.
            if let Ok(repo) = crate::cmd::scoped::repo_of_this_clone(settings) {
                dry_run(report, broker, &source, &repo).await;
            }
        }
    }
}

/// Asks the broker, without minting, whether this job may read and write `repo`.
async fn dry_run(
    report: &mut Report<'_>,
    broker: &crate::settings::BrokerSettings,
    source: &crate::id_token::Source,
    repo: &str,
) {
    use crate::broker_client as client;
    use crate::token::Permission;
    let deadline = net::deadline_in(std::time::Duration::from_secs(10));
    let answers = async {
        let id_token = source.fetch(&broker.audience, deadline).await?;
        let read = client::check(&broker.url, &id_token, repo, Permission::Read, deadline).await;
        let write = client::check(&broker.url, &id_token, repo, Permission::Write, deadline).await;
        Ok::<_, String>((read, write))
    };
    let (read, write) = match answers.await {
        Ok(answers) => answers,
        Err(e) => {
            report.line(Level::Fail, format!("cannot get the job's ID token: {e}"));
            return;
        }
    };
    match (read, write) {
        (Ok(_), Ok((rule, ttl))) => report.line(
            Level::Ok,
            format!("the broker would give this job read and write tokens for {repo} (rule {rule}, up to {ttl} s)"),
        ),
        (Ok((rule, _)), Err(why)) => report.line(
            Level::Warn,
            format!("the broker gives this job read tokens for {repo} (rule {rule}), not write: {why}"),
        ),
        (Err(why), _) => report.line(
            Level::Fail,
            format!("the broker refuses this job {repo}: {why}; the broker's policy decides (`git-credential-githosted broker check`)"),
        ),
    }
}

fn check_git(report: &mut Report) {
    let Some(((major, minor), version)) = crate::git::version() else {
        report.line(Level::Fail, "git: not found on PATH; install git");
        return;
    };
    match (major, minor) {
        v if v >= (2, 46) => report.line(
            Level::Ok,
            format!("git {version}: Bearer tokens (authtype), password_expiry_utc"),
        ),
        v if v >= (2, 40) => report.line(
            Level::Ok,
            format!("git {version}: Basic auth with password_expiry_utc (Bearer needs git 2.46+)"),
        ),
        _ => report.line(
            Level::Warn,
            format!("git {version}: older than 2.40, it ignores token expiry; upgrade git"),
        ),
    }
}

use super::configure::is_ours;

/// Whether the helper git runs for this host is this program, by path.
fn check_helper_program(report: &mut Report, settings: &Settings, url: &str, helper: &str) {
    let program = shlex::split(helper)
        .and_then(|w| w.into_iter().next())
        .unwrap_or_default();
    let fix = format!(
        "run `git-credential-githosted configure{}`",
        settings.api_url_flag()
    );
    if program == "githosted" {
        report.line(
            Level::Warn,
            format!("{url}: `helper = githosted` runs whichever git-credential-githosted comes first on PATH (and a second git process each time); {fix} to name this one by path"),
        );
        return;
    }
    let path = std::path::Path::new(&program);
    if !path.is_file() {
        report.line(
            Level::Fail,
            format!("{url}: the configured helper {program} does not exist (moved, or uninstalled?); {fix}"),
        );
        return;
    }
    let theirs = std::process::Command::new(path)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let ours = format!("git-credential-githosted {}", env!("CARGO_PKG_VERSION"));
    if theirs != ours {
        report.line(
            Level::Fail,
            format!(
                "{url}: the configured helper {program} is `{theirs}`, not this `{ours}`; {fix}"
            ),
        );
    }
}

/// `git-credential-githosted` programs on PATH that are neither this one nor
/// one git runs for any API (every `credential….helper` line of ours, whatever
/// `--api-url` doctor checks), by canonical path.
fn check_path_for_others(report: &mut Report) {
    let Some(path) = std::env::var_os("PATH") else {
        return;
    };
    let canonical = |p: &std::path::Path| std::fs::canonicalize(p).ok();
    let on_path: Vec<_> = std::env::split_paths(&path)
        .map(|dir| dir.join(super::configure::PROGRAM))
        .filter(|candidate| candidate.is_file())
        .collect();
    let mut mine: Vec<_> = crate::git::config_list()
        .into_iter()
        .filter(|(key, value)| {
            key.starts_with("credential.") && key.ends_with(".helper") && is_ours(value)
        })
        .filter_map(|(_, line)| shlex::split(&line).and_then(|w| w.into_iter().next()))
        .filter_map(|program| match program.contains(['/', '\\']) {
            true => canonical(std::path::Path::new(&program)),
            // `helper = githosted`: git runs the first one on PATH.
            false => on_path.first().and_then(|p| canonical(p)),
        })
        .collect();
    mine.extend(
        std::env::current_exe()
            .ok()
            .and_then(|exe| canonical(&super::configure::front_for(exe))),
    );
    for candidate in on_path {
        if candidate.is_file() && !canonical(&candidate).is_some_and(|c| mine.contains(&c)) {
            report.line(
                Level::Warn,
                format!(
                    "another git-credential-githosted is on PATH: {} (git runs the configured one by path; a `helper = githosted` line elsewhere would run that one)",
                    candidate.display()
                ),
            );
        }
    }
}

fn check_helper_chain(report: &mut Report, settings: &Settings, host: &str) {
    let scheme = settings.service.scheme();
    let url = format!("{scheme}://{host}/");
    let (helpers, use_path) = crate::git::credential_config(&url);
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
    check_helper_program(report, settings, &url, &helpers[position]);
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
            format!(
                "{url}: credential.useHttpPath is off, so git does not say which repo; run `git-credential-githosted configure{}`",
                settings.api_url_flag()
            ),
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

/// A parent token to probe: what to call it, and the command that replaces it.
struct Probe {
    label: String,
    token: Secret,
    fix: String,
}

/// Where parent tokens come from; returns each to probe.
fn check_parent_sources(report: &mut Report, settings: &Settings) -> Vec<Probe> {
    let api_host = settings.service.api_host();
    if let Some(token) = keychain::env_token() {
        report.line(
            Level::Ok,
            format!(
                "{}: set ({token}); used instead of the keychain",
                keychain::ENV_TOKEN
            ),
        );
        return vec![Probe {
            label: keychain::ENV_TOKEN.to_owned(),
            token,
            fix: format!(
                "set {} to a live workspace token (gw_…)",
                keychain::ENV_TOKEN
            ),
        }];
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
                "keychain ({BACKEND}): no workspace token for {api_host}; run `git-credential-githosted login{}` (paste the token when asked)",
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
                let workspace = account
                    .split_once('/')
                    .map(|(_, ws)| format!(" --workspace {ws}"))
                    .unwrap_or_default();
                parents.push(Probe {
                    label: format!("the keychain entry {account}"),
                    token,
                    fix: format!(
                        "store a new one: `git-credential-githosted login{}{workspace}`",
                        settings.api_url_flag()
                    ),
                });
            }
            Ok(None) => {}
            Err(e) => report.line(Level::Fail, format!("keychain: {account}: {e}")),
        }
    }
    parents
}

fn check_agent(report: &mut Report) {
    match Agent::connect().and_then(|mut a| a.status()) {
        Ok(s) => report.line(
            Level::Ok,
            format!(
                "agent: pid {}, {}, {}",
                s.pid,
                crate::ui::count(
                    u64::try_from(s.entries.len()).unwrap_or(u64::MAX),
                    "cached token"
                ),
                crate::ui::count(s.exchanges, "exchange")
            ),
        ),
        Err(e) if e.is_alarming() => report.line(Level::Fail, format!("agent: {e}")),
        Err(crate::agent::client::AgentError::NotRunning) => {
            report.line(Level::Ok, "agent: not running (the next get starts it)")
        }
        Err(e) => report.line(Level::Warn, format!("agent: {e}")),
    }
}

async fn check_tokens(report: &mut Report<'_>, settings: &Settings, parents: Vec<Probe>) {
    let api_host = settings.service.api_host();
    let client = match api::Client::new(
        settings.service.api_url(),
        api_host,
        &net::Network::from_env(),
    ) {
        Ok(c) => c,
        Err(e) => return report.line(Level::Fail, format!("API: {e}")),
    };
    for Probe { label, token, fix } in parents {
        let deadline = net::deadline_in(settings.timeout);
        let checked = async {
            client.list_tokens(&token, 1, deadline).await?;
            client.workspace_of(&token, deadline).await
        }
        .await;
        match checked {
            Ok(workspace) => {
                let of = match workspace {
                    Some(ws) => format!(
                        " of {} ({})",
                        ws.slug,
                        ws.permission().map_or("?", |p| p.as_str())
                    ),
                    None => String::new(),
                };
                report.line(
                    Level::Ok,
                    format!(
                        "API {api_host}: reachable; {label} ({token}) is a live workspace token{of}"
                    ),
                )
            }
            Err(e) => match e.code() {
                Some(Code::Unauthenticated) => report.line(
                    Level::Fail,
                    format!("API {api_host}: {label} ({token}) is expired or revoked; {fix}"),
                ),
                Some(Code::PermissionDenied) => report.line(
                    Level::Fail,
                    format!("API {api_host}: {label} ({token}) is not a workspace token; {fix}"),
                ),
                _ => report.line(
                    Level::Fail,
                    format!("API {api_host}: {e}; check the network or --api-url"),
                ),
            },
        }
    }
}
