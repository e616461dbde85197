//! Git itself: running it, reading and writing its config, and matching
//! `credential.<url>.*` sections to a URL the way git does.
//!
//! Every git child runs with this process's environment, which holds no token
//! (`main` took `GITHOSTED_TOKEN` out of it; see [`crate::harden`]).

use std::process::{Command, Output};

use anyhow::{Context, bail};
use url::Url;

/// Which config file to read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `~/.gitconfig` (or `$XDG_CONFIG_HOME/git/config`).
    Global,
    /// The repository's `.git/config`.
    Local,
}

impl Scope {
    fn flag(self) -> &'static str {
        match self {
            Scope::Global => "--global",
            Scope::Local => "--local",
        }
    }

    /// `global` or `local`, for messages.
    pub fn name(self) -> &'static str {
        &self.flag()[2..]
    }
}

/// `git ARGS…`, its output captured.
pub fn run(args: &[&str]) -> anyhow::Result<Output> {
    Command::new("git")
        .env_remove(crate::keychain::ENV_TOKEN)
        .args(args)
        .output()
        .context("running git (is git installed and on PATH?)")
}

/// `git ARGS…`'s stdout when it succeeds.
pub fn output(args: &[&str]) -> Option<String> {
    let out = run(args).ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// git's version as (major, minor), and the text it printed.
pub fn version() -> Option<((u32, u32), String)> {
    let text = output(&["--version"])?;
    let version = text.trim().trim_start_matches("git version ").to_owned();
    let mut numbers = version.split('.').filter_map(|n| n.parse::<u32>().ok());
    Some(((numbers.next()?, numbers.next()?), version))
}

/// One config file, through `git config`.
pub struct Config {
    scope: Scope,
}

impl Config {
    pub fn new(scope: Scope) -> Config {
        Config { scope }
    }

    fn git(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut all = vec!["config", self.scope.flag()];
        all.extend_from_slice(args);
        run(&all)
    }

    /// Every value of `key`, in file order.
    pub fn get_all(&self, key: &str) -> anyhow::Result<Vec<String>> {
        let out = self.git(&["--get-all", "-z", key])?;
        match out.status.code() {
            Some(0) => Ok(nul_terminated(&out.stdout)),
            // 1: the key is not set.
            Some(1) => Ok(Vec::new()),
            _ => bail!("{}", failure(&out, key)),
        }
    }

    /// Replaces every value of `key` with `values`, in this order (nothing is
    /// written when they are the same already). Returns whether it wrote.
    pub fn set_all(&self, key: &str, values: &[String]) -> anyhow::Result<bool> {
        if self.get_all(key)? == values {
            return Ok(false);
        }
        self.unset_all(key)?;
        for value in values {
            let out = self.git(&["--add", key, value])?;
            if !out.status.success() {
                bail!("{}", failure(&out, key));
            }
        }
        Ok(true)
    }

    /// Removes every value of `key` (none is fine).
    pub fn unset_all(&self, key: &str) -> anyhow::Result<()> {
        let out = self.git(&["--unset-all", key])?;
        // 5: nothing to unset.
        if out.status.success() || out.status.code() == Some(5) {
            return Ok(());
        }
        bail!("{}", failure(&out, key))
    }

    /// Removes `section` when nothing is left in it.
    pub fn remove_section_if_empty(&self, section: &str) -> anyhow::Result<()> {
        let list = self.git(&["--list", "-z"])?;
        let prefix = format!("{}.", section.to_ascii_lowercase());
        let left = String::from_utf8_lossy(&list.stdout)
            .split('\0')
            .any(|entry| entry.to_ascii_lowercase().starts_with(&prefix));
        if !left {
            let _ = self.git(&["--remove-section", section])?;
        }
        Ok(())
    }
}

/// `-z` output: every value ends with a NUL, so an empty value (the helper
/// list's reset) is an empty field before its NUL.
fn nul_terminated(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let mut values: Vec<String> = text.split('\0').map(str::to_owned).collect();
    values.pop();
    values
}

fn failure(out: &Output, key: &str) -> String {
    format!(
        "`git config {key}` failed: {}",
        crate::ui::printable(String::from_utf8_lossy(&out.stderr).trim(), 300)
    )
}

/// The effective config, in the order git reads it (system, global, local,
/// command line): (key, value) pairs, keys as git prints them.
pub fn config_list() -> Vec<(String, String)> {
    let Some(listing) = output(&["config", "--list", "-z"]) else {
        return Vec::new();
    };
    listing
        .split('\0')
        .filter(|e| !e.is_empty())
        .map(|entry| match entry.split_once('\n') {
            Some((key, value)) => (key.to_owned(), value.to_owned()),
            None => (entry.to_owned(), String::new()),
        })
        .collect()
}

/// Every credential helper value in the effective config, in order.
pub fn helper_lines() -> Vec<String> {
    config_list()
        .into_iter()
        .filter(|(key, _)| {
            let key = key.to_ascii_lowercase();
            key.starts_with("credential.") && key.ends_with(".helper")
        })
        .map(|(_, value)| value)
        .collect()
}

/// What git will use for credentials for `url`: the helpers it asks, in
/// order (an empty `helper =` clears the list so far), and `useHttpPath`.
pub fn credential_config(url: &str) -> (Vec<String>, bool) {
    credential_config_in(&config_list(), url)
}

fn credential_config_in(entries: &[(String, String)], url: &str) -> (Vec<String>, bool) {
    let Ok(url) = Url::parse(url) else {
        return (Vec::new(), false);
    };
    let mut helpers = Vec::new();
    let mut use_path = false;
    for (key, value) in entries {
        let Some(rest) = key.strip_prefix("credential.") else {
            continue;
        };
        // `credential.helper` or `credential.<url>.helper`: the name is after the last dot.
        let (pattern, name) = match rest.rsplit_once('.') {
            Some((pattern, name)) => (Some(pattern), name),
            None => (None, rest),
        };
        if pattern.is_some_and(|p| !url_matches(p, &url)) {
            continue;
        }
        match name.to_ascii_lowercase().as_str() {
            "helper" if value.is_empty() => helpers.clear(),
            "helper" => helpers.push(value.clone()),
            "usehttppath" => use_path = is_true(value),
            _ => {}
        }
    }
    (helpers, use_path)
}

fn is_true(value: &str) -> bool {
    matches!(
        value.to_ascii_lowercase().as_str(),
        "true" | "1" | "yes" | "on" | ""
    )
}

/// Whether a `credential.<pattern>` section applies to `url`, as git's
/// urlmatch does it: same scheme; same host, where a `*` in the pattern stands
/// for one whole label (`*.example.com`); same port (default ports
/// normalised); the pattern's user, if any, equal to the URL's; the pattern's
/// path a prefix of the URL's at a `/`. A pattern without a scheme
/// (`githosted.dev`) is a partial URL that matches any scheme, as in git.
pub fn url_matches(pattern: &str, url: &Url) -> bool {
    let full = match pattern.contains("://") {
        true => pattern.to_owned(),
        false => format!("{}://{pattern}", url.scheme()),
    };
    let Ok(p) = Url::parse(&full) else {
        return false;
    };
    if p.scheme() != url.scheme() || p.port_or_known_default() != url.port_or_known_default() {
        return false;
    }
    if !p.username().is_empty() && p.username() != url.username() {
        return false;
    }
    let (Some(ph), Some(uh)) = (p.host_str(), url.host_str()) else {
        return false;
    };
    let (pl, ul): (Vec<&str>, Vec<&str>) = (ph.split('.').collect(), uh.split('.').collect());
    if pl.len() != ul.len() || pl.iter().zip(&ul).any(|(a, b)| *a != "*" && a != b) {
        return false;
    }
    let pp = p.path().trim_end_matches('/');
    let up = url.path();
    pp.is_empty() || up == pp || up.starts_with(&format!("{pp}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, url: &str) -> bool {
        url_matches(pattern, &Url::parse(url).unwrap())
    }

    /// Each case was checked against git 2.47 (`git -c credential.<pattern>.helper=…
    /// credential fill`).
    #[test]
    fn urls_match_as_git_matches_them() {
        assert!(m(
            "https://githosted.dev",
            "https://githosted.dev/acme/app.git"
        ));
        assert!(m(
            "https://GitHosted.dev:443/",
            "https://githosted.dev/a/b.git"
        ));
        assert!(m(
            "https://*.githosted.dev",
            "https://api.githosted.dev/git/a/b.git"
        ));
        assert!(!m(
            "https://*.githosted.dev",
            "https://githosted.dev/a/b.git"
        ));
        assert!(m(
            "https://githosted.dev/acme",
            "https://githosted.dev/acme/app.git"
        ));
        assert!(!m(
            "https://githosted.dev/acm",
            "https://githosted.dev/acme/app.git"
        ));
        assert!(m(
            "https://me@githosted.dev",
            "https://me@githosted.dev/a/b.git"
        ));
        assert!(!m(
            "https://me@githosted.dev",
            "https://githosted.dev/a/b.git"
        ));
        assert!(m(
            "https://githosted.dev",
            "https://me@githosted.dev/a/b.git"
        ));
        assert!(!m("http://githosted.dev", "https://githosted.dev/a/b.git"));
        assert!(!m(
            "https://githosted.dev:8443",
            "https://githosted.dev/a/b.git"
        ));
        assert!(m("githosted.dev", "https://githosted.dev/a/b.git"));
        assert!(m("githosted.dev", "https://me@githosted.dev/a/b.git"));
        assert!(!m("githosted.dev", "https://api.githosted.dev/a/b.git"));
        assert!(!m("https://evil.dev", "https://githosted.dev/a/b.git"));
    }

    #[test]
    fn nul_terminated_values_keep_empty_ones() {
        assert_eq!(nul_terminated(b"a\0\0b c\0"), ["a", "", "b c"]);
        assert_eq!(nul_terminated(b"\0"), [""]);
        assert!(nul_terminated(b"").is_empty());
    }

    #[test]
    fn helper_lists_follow_config_order_and_resets() {
        let entries: Vec<(String, String)> = [
            ("credential.helper", "store"),
            ("credential.https://*.githosted.dev.helper", "cache"),
            ("credential.https://githosted.dev.helper", ""),
            (
                "credential.https://githosted.dev.helper",
                "/usr/bin/git-credential-githosted",
            ),
            ("credential.https://githosted.dev.usehttppath", "true"),
            ("credential.https://other.dev.helper", "osxkeychain"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let (helpers, path) = credential_config_in(&entries, "https://githosted.dev/");
        assert_eq!(helpers, ["/usr/bin/git-credential-githosted"]);
        assert!(path);
        let (helpers, path) = credential_config_in(&entries, "https://api.githosted.dev/");
        assert_eq!(helpers, ["store", "cache"]);
        assert!(!path);
    }
}
