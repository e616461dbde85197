//! `configure`: point git at this helper for githosted hosts.
//!
//! For each host it writes, in this order:
//!
//! ```text
//! [credential "https://githosted.dev"]
//!     helper =                      # forget helpers from broader config (e.g. `store`)
//!     helper = githosted [options]  # then ask only this one
//!     useHttpPath = true            # so git sends the repo path
//! ```
//!
//! Running it again changes nothing; `--remove` takes out exactly these lines.

use std::process::{Command, Output};

use anyhow::{Context, bail};

#[cfg(test)]
use crate::settings::DEFAULT_TIMEOUT_SECS;
use crate::settings::{DEFAULT_TTL_SECS, Settings};

/// Which git config file to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Global,
    Local,
}

impl Scope {
    fn flag(self) -> &'static str {
        match self {
            Scope::Global => "--global",
            Scope::Local => "--local",
        }
    }
}

/// Whether a URL can go into a helper line, which git runs through the shell.
pub fn shell_safe_url(url: &str) -> bool {
    url.chars()
        .all(|c| c.is_ascii_alphanumeric() || ":/._~%-[]".contains(c))
}

/// The `helper = …` value: the helper's name and the options worth repeating.
/// Git runs it through the shell, so the URL may hold no shell syntax.
pub fn helper_line(settings: &Settings) -> anyhow::Result<String> {
    let mut line = String::from("githosted");
    if let Some(url) = &settings.api_url_arg {
        if !shell_safe_url(url) {
            bail!(
                "refusing to write --api-url `{url}` into git config: git runs the helper line through the shell, and it holds characters other than letters, digits and :/._~%-[]"
            );
        }
        line.push_str(&format!(" --api-url {url}"));
    }
    if settings.auto_permission {
        line.push_str(" --permission auto");
    } else if settings.permission == crate::api::Permission::Read {
        line.push_str(" --permission read");
    }
    if settings.ttl_secs != DEFAULT_TTL_SECS {
        line.push_str(&format!(" --ttl {}", settings.ttl_secs));
    }
    if let Some(min) = settings.min_ttl_secs {
        line.push_str(&format!(" --min-ttl {min}"));
    }
    if settings.no_agent {
        line.push_str(" --no-agent");
    }
    Ok(line)
}

/// Writes (or with `remove`, removes) the helper config for each host.
pub fn run(
    settings: &Settings,
    hosts: &[String],
    scope: Scope,
    remove: bool,
) -> anyhow::Result<()> {
    let hosts: Vec<String> = if hosts.is_empty() {
        settings.service.git_hosts().to_vec()
    } else {
        hosts.to_vec()
    };
    let line = helper_line(settings)?;
    for host in &hosts {
        let section = format!("credential.{}://{host}", settings.service.scheme());
        if remove {
            remove_host(scope, &section)?;
            eprintln!(
                "git-credential-githosted: removed the helper for {host} ({} config)",
                &scope.flag()[2..]
            );
        } else {
            configure_host(scope, &section, &line)?;
            eprintln!(
                "git-credential-githosted: {host} uses `{line}` ({} config)",
                &scope.flag()[2..]
            );
        }
    }
    Ok(())
}

fn configure_host(scope: Scope, section: &str, line: &str) -> anyhow::Result<()> {
    let key = format!("{section}.helper");
    let current = git_config(scope, &["--get-all", &key])?;
    let current: Vec<&str> = if current.status.success() {
        std::str::from_utf8(&current.stdout)?.lines().collect()
    } else {
        Vec::new()
    };
    // Settled: our reset and our helper are the last two values and the only ones of
    // ours. (The reset also silences any helper listed before it for this host: that
    // is its purpose.)
    let settled =
        current.ends_with(&["", line]) && current.iter().filter(|v| is_ours(v)).count() == 2;
    let path_key = format!("{section}.useHttpPath");
    let path_set =
        String::from_utf8_lossy(&git_config(scope, &["--get", &path_key])?.stdout).trim() == "true";
    if settled && path_set {
        return Ok(());
    }
    if !settled {
        unset_ours(scope, &key)?;
        for value in ["", line] {
            check(git_config(scope, &["--add", &key, value])?, &key)?;
        }
    }
    // Always after the helper lines, so every configure writes the same file.
    allow_absent(git_config(scope, &["--unset-all", &path_key])?, &path_key)?;
    check(git_config(scope, &["--add", &path_key, "true"])?, &path_key)
}

/// The empty reset and `githosted…` lines are ours.
fn is_ours(value: &str) -> bool {
    value.is_empty() || value == "githosted" || value.starts_with("githosted ")
}

fn remove_host(scope: Scope, section: &str) -> anyhow::Result<()> {
    unset_ours(scope, &format!("{section}.helper"))?;
    let key = format!("{section}.useHttpPath");
    let out = git_config(scope, &["--unset-all", &key])?;
    allow_absent(out, &key)?;
    // Drop the section header when nothing else is left in it.
    let rest = git_config(
        scope,
        &["--get-regexp", &format!("^{}\\.", regex_escape(section))],
    )?;
    if !rest.status.success() {
        let _ = git_config(scope, &["--remove-section", section])?;
    }
    Ok(())
}

/// Removes the empty reset value and every `githosted…` helper value.
fn unset_ours(scope: Scope, key: &str) -> anyhow::Result<()> {
    let out = git_config(scope, &["--unset-all", key, "^(githosted( .*)?)?$"])?;
    allow_absent(out, key)
}

fn git_config(scope: Scope, args: &[&str]) -> anyhow::Result<Output> {
    Command::new("git")
        .env_remove(crate::keychain::ENV_TOKEN)
        .arg("config")
        .arg(scope.flag())
        .args(args)
        .output()
        .context("running `git config` (is git installed and on PATH?)")
}

fn check(out: Output, key: &str) -> anyhow::Result<()> {
    if !out.status.success() {
        bail!(
            "`git config {key}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `git config --unset` exits 5 when nothing matched: that is fine.
fn allow_absent(out: Output, key: &str) -> anyhow::Result<()> {
    if out.status.code() == Some(5) {
        return Ok(());
    }
    check(out, key)
}

fn regex_escape(s: &str) -> String {
    let mut escaped = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Permission;

    /// Default settings for an API URL.
    fn settings_for(url: Option<&str>) -> Result<Settings, crate::target::ApiUrlError> {
        Settings::new(
            url,
            Permission::Write,
            DEFAULT_TTL_SECS,
            None,
            false,
            DEFAULT_TIMEOUT_SECS,
        )
    }

    #[test]
    fn helper_line_repeats_only_non_defaults() {
        let s = settings_for(None).unwrap();
        assert_eq!(helper_line(&s).unwrap(), "githosted");
        let s = Settings::new(
            Some("http://127.0.0.1:9"),
            Permission::Read,
            600,
            Some(60),
            true,
            DEFAULT_TIMEOUT_SECS,
        )
        .unwrap();
        assert_eq!(
            helper_line(&s).unwrap(),
            "githosted --api-url http://127.0.0.1:9 --permission read --ttl 600 --min-ttl 60 --no-agent"
        );
    }

    #[test]
    fn shell_syntax_never_reaches_the_helper_line() {
        for url in [
            "http://127.0.0.1:8080/x;touch${IFS}/tmp/pwned",
            "http://127.0.0.1:1/$(id)",
            "http://127.0.0.1:1/a b",
        ] {
            if let Ok(s) = settings_for(Some(url)) {
                assert!(helper_line(&s).is_err(), "{url}");
            }
        }
        let s = settings_for(Some("http://[::1]:8080/base")).unwrap();
        assert_eq!(
            helper_line(&s).unwrap(),
            "githosted --api-url http://[::1]:8080/base"
        );
    }

    #[test]
    fn escapes_regex_metacharacters() {
        assert_eq!(
            regex_escape("credential.https://a.b:1"),
            "credential\\.https://a\\.b:1"
        );
    }
}
