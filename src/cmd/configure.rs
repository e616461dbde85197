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

use anyhow::{Context, bail};

use crate::git::Config;
pub use crate::git::Scope;

use crate::settings::{DEFAULT_TTL_SECS, Settings};

/// Whether a URL can go into a helper line, which git runs through the shell.
pub fn shell_safe_url(url: &str) -> bool {
    url.chars()
        .all(|c| c.is_ascii_alphanumeric() || ":/._~%-[]".contains(c))
}

/// The `helper = …` value: the helper's name and the options worth repeating.
/// Git runs it through the shell, so the URL may hold no shell syntax.
pub fn helper_line(settings: &Settings) -> anyhow::Result<String> {
    let mut line = helper_program(&installed_program()?)?;
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
    } else if settings.permission == crate::token::Permission::Read {
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
    if settings.git_prompt {
        line.push_str(" --git-prompt");
    }
    if let Some(broker) = &settings.broker {
        for (flag, value) in [
            ("--broker", Some(broker.url.as_str().to_owned())),
            (
                "--oidc-token-file",
                broker
                    .token_file
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned()),
            ),
            ("--oidc-token-env", broker.token_env.clone()),
            ("--oidc-audience", Some(broker.audience.clone())),
        ] {
            if let Some(value) = value {
                let Ok(quoted) = shlex::try_quote(&value) else {
                    bail!("{flag} {value:?} cannot be written into git config (it holds a NUL)");
                };
                line.push_str(&format!(" {flag} {quoted}"));
            }
        }
    }
    Ok(line)
}

/// The program git should run: this one, by absolute path (no second git
/// process, no other `git-credential-githosted` on PATH answering instead).
/// The full program calls itself `…-core`; git runs the front beside it.
pub fn installed_program() -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("finding this program's path")?;
    Ok(front_for(exe).to_string_lossy().into_owned())
}

/// The program git should run for the program at `exe`: the front beside
/// it when `exe` is the full program (`…-core`, `…-core.exe`), else `exe`.
pub fn front_for(exe: std::path::PathBuf) -> std::path::PathBuf {
    let core = format!("{PROGRAM}-core{}", std::env::consts::EXE_SUFFIX);
    match exe.file_name().and_then(|n| n.to_str()) {
        Some(name) if name == core || name.ends_with("-core") => {
            exe.with_file_name(format!("{PROGRAM}{}", std::env::consts::EXE_SUFFIX))
        }
        _ => exe,
    }
}

/// The name git knows the helper by.
pub const PROGRAM: &str = "git-credential-githosted";

/// The first word of a helper line: `program` (an absolute path) as git
/// runs it. Git runs a helper value as a command only when it is an absolute
/// path, and then through the shell (`sh -c "<value> get"`, git for Windows
/// too: its own `sh`): quoted for the shell on Unix; on Windows see
/// [`git_for_windows_path`].
pub fn helper_program(program: &str) -> anyhow::Result<String> {
    if cfg!(windows) {
        return git_for_windows_path(program);
    }
    match shlex::try_quote(program) {
        Ok(quoted) => Ok(quoted.into_owned()),
        Err(_) => {
            bail!("the helper's path {program} cannot be written into git config (it holds a NUL)")
        }
    }
}

/// A Windows path as git for Windows runs it as a helper: git takes a value
/// as a path only when it starts with a drive (`C:`) or a slash
/// (`is_absolute_path` in its `credential.c`; a value starting with a quote
/// becomes `git credential-"…"`), then hands `<value> get` to `sh -c`, where
/// `\` is the escape character. So: `/` for `\`, and each character the
/// shell would read as syntax (a space, quotes, `$`, `&`, `(`…) escaped with
/// `\`: `C:/Program\ Files/…`. A `\\?\` prefix goes (MSYS's `sh` does not
/// know it).
pub fn git_for_windows_path(program: &str) -> anyhow::Result<String> {
    let plain = program
        .strip_prefix(r"\\?\UNC\")
        .map(|rest| format!(r"\\{rest}"))
        .or_else(|| program.strip_prefix(r"\\?\").map(str::to_owned))
        .unwrap_or_else(|| program.to_owned());
    let slashed = plain.replace('\\', "/");
    let bytes = slashed.as_bytes();
    let absolute = bytes.first() == Some(&b'/')
        || (bytes.first().is_some_and(u8::is_ascii_alphabetic) && bytes.get(1) == Some(&b':'));
    if !absolute {
        bail!(
            "the helper's path {program} is not absolute, so git would not run it; run configure from the installed program"
        );
    }
    let mut word = String::with_capacity(slashed.len() + 8);
    for c in slashed.chars() {
        if c.is_control() {
            bail!(
                "the helper's path {program:?} holds a control character and cannot be written into git config; install it under another directory"
            );
        }
        if c.is_ascii() && !c.is_ascii_alphanumeric() && !"/._-:+,@%".contains(c) {
            word.push('\\');
        }
        word.push(c);
    }
    Ok(word)
}

/// A helper value this program's `configure` wrote: `githosted…` (older
/// versions), or a `git-credential-githosted` (`.exe` on Windows) by path.
pub fn is_ours(value: &str) -> bool {
    let first = shlex::split(value)
        .and_then(|words| words.into_iter().next())
        .unwrap_or_default();
    first == "githosted"
        || first.ends_with(&format!("/{PROGRAM}"))
        || first.ends_with(&format!("/{PROGRAM}.exe"))
}

/// Writes (or with `remove`, removes) the helper config for each host.
pub fn run(
    settings: &Settings,
    hosts: &[String],
    scope: Scope,
    remove: bool,
) -> anyhow::Result<()> {
    let explicit_hosts = !hosts.is_empty();
    let hosts: Vec<String> = if hosts.is_empty() {
        settings.service.git_hosts().to_vec()
    } else {
        hosts.to_vec()
    };
    let config = Config::new(scope);
    if remove && !explicit_hosts {
        return remove_everywhere(settings, &config, scope);
    }
    let line = helper_line(settings)?;
    for host in &hosts {
        let section = format!("credential.{}://{host}", settings.service.scheme());
        if remove {
            remove_host(&config, &section)?;
            crate::say!("removed the helper for {host} ({} config)", scope.name());
        } else {
            configure_host(&config, &section, &line)?;
            crate::say!("{host} uses `{line}` ({} config)", scope.name());
        }
    }
    Ok(())
}

fn configure_host(config: &Config, section: &str, line: &str) -> anyhow::Result<()> {
    let key = format!("{section}.helper");
    // Ours go last: the reset silences any helper listed before it for this
    // host (that is its purpose), then ours.
    let mut values = without_ours(&config.get_all(&key)?);
    values.extend([String::new(), line.to_owned()]);
    let path_key = format!("{section}.useHttpPath");
    if config.set_all(&key, &values)? {
        // Rewritten after the helper lines, so every configure writes the same file.
        config.unset_all(&path_key)?;
    }
    config.set_all(&path_key, &["true".to_owned()])?;
    Ok(())
}

/// `values` without what `configure` added: each helper line of ours and the
/// empty reset written just before it. A reset of the user's own (one not
/// followed by ours) stays, as does everything else.
fn without_ours(values: &[String]) -> Vec<String> {
    let mut kept: Vec<String> = Vec::with_capacity(values.len());
    for (i, value) in values.iter().enumerate() {
        let reset_of_ours = value.is_empty() && values.get(i + 1).is_some_and(|v| is_ours(v));
        if !is_ours(value) && !reset_of_ours {
            kept.push(value.clone());
        }
    }
    kept
}

/// `--remove` without `--host`: every helper line of ours in this scope's
/// `credential.*.helper` keys (whatever host it is for), with the reset just
/// before it and the section's `useHttpPath`; for one API when `--api-url`
/// names it, else for every API. Nothing of the user's own is touched.
fn remove_everywhere(settings: &Settings, config: &Config, scope: Scope) -> anyhow::Result<()> {
    let flag = format!("--{}", scope.name());
    let out = crate::git::run(&[
        "config",
        &flag,
        "--get-regexp",
        "-z",
        r"^credential\..*helper$",
    ])?;
    // Exit 1: no such key at all.
    if !out.status.success() && out.status.code() != Some(1) {
        bail!(
            "`git config {flag} --get-regexp credential.*.helper` failed: {}",
            crate::ui::printable(String::from_utf8_lossy(&out.stderr).trim(), 300)
        );
    }
    let only_api = settings
        .api_url_arg
        .as_ref()
        .map(|_| settings.service.api_url().clone());
    // A line of ours, for the API asked about (any, when none was).
    let ours = |value: &str| {
        is_ours(value)
            && only_api
                .as_ref()
                .is_none_or(|api| api_of_line(value).as_ref() == Some(api))
    };
    let mut keys: Vec<String> = Vec::new();
    for entry in String::from_utf8_lossy(&out.stdout).split('\0') {
        let (key, value) = entry.split_once('\n').unwrap_or((entry, ""));
        if key.to_ascii_lowercase().ends_with(".helper")
            && ours(value)
            && !keys.iter().any(|k| k == key)
        {
            keys.push(key.to_owned());
        }
    }
    if keys.is_empty() {
        crate::say!(
            "no helper line of git-credential-githosted{} in the {} config: nothing to remove",
            only_api
                .as_ref()
                .map(|api| format!(" for {api}"))
                .unwrap_or_default(),
            scope.name()
        );
    }
    for key in keys {
        let Some(section) = key.strip_suffix(".helper") else {
            continue;
        };
        // Ours and the empty reset written just before each; a reset of the
        // user's own (not followed by ours) and everything else stay.
        let values = config.get_all(&key)?;
        let kept: Vec<String> = values
            .iter()
            .enumerate()
            .filter(|&(i, value)| {
                let reset_of_ours =
                    value.is_empty() && values.get(i + 1).is_some_and(|next| ours(next));
                !ours(value) && !reset_of_ours
            })
            .map(|(_, value)| value.clone())
            .collect();
        let _ = config.set_all(&key, &kept)?;
        // `credential.useHttpPath` of the user's own (no URL) is never ours.
        if section.starts_with("credential.") {
            config.unset_all(&format!("{section}.useHttpPath"))?;
        }
        config.remove_section_if_empty(section)?;
        let host = section.strip_prefix("credential.").unwrap_or(section);
        crate::say!("removed the helper for {host} ({} config)", scope.name());
    }
    Ok(())
}

/// The API a helper line of ours serves: its `--api-url`, or the public API.
fn api_of_line(line: &str) -> Option<url::Url> {
    let words = shlex::split(line)?;
    let mut url = None;
    let mut words = words.iter();
    while let Some(word) = words.next() {
        if word == "--api-url" {
            url = words.next().cloned();
        } else if let Some(value) = word.strip_prefix("--api-url=") {
            url = Some(value.to_owned());
        }
    }
    crate::target::Service::new(url.as_deref())
        .ok()
        .map(|s| s.api_url().clone())
}

fn remove_host(config: &Config, section: &str) -> anyhow::Result<()> {
    let key = format!("{section}.helper");
    let _ = config.set_all(&key, &without_ours(&config.get_all(&key)?))?;
    config.unset_all(&format!("{section}.useHttpPath"))?;
    // Drop the section header when nothing else is left in it.
    config.remove_section_if_empty(section)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Permission;

    /// Default settings for an API URL.
    fn settings_for(url: Option<&str>) -> Result<Settings, crate::target::ApiUrlError> {
        Settings::for_api(url)
    }

    #[test]
    fn helper_line_repeats_only_non_defaults() {
        let program = helper_program(&installed_program().unwrap()).unwrap();
        let s = settings_for(None).unwrap();
        assert_eq!(helper_line(&s).unwrap(), program);
        let requested = crate::settings::Requested {
            api_url: Some("http://127.0.0.1:9".into()),
            permission: Some(Permission::Read),
            ttl_secs: Some(600),
            min_ttl_secs: Some(60),
            no_agent: true,
            ..Default::default()
        };
        let s = Settings::new(&requested, DEFAULT_TTL_SECS).unwrap();
        assert_eq!(
            helper_line(&s).unwrap(),
            format!(
                "{program} --api-url http://127.0.0.1:9 --permission read --ttl 600 --min-ttl 60 --no-agent"
            )
        );
    }

    #[test]
    fn git_prompt_is_repeated_on_the_helper_line() {
        let requested = crate::settings::Requested {
            git_prompt: true,
            ..Default::default()
        };
        let s = Settings::new(&requested, DEFAULT_TTL_SECS).unwrap();
        assert!(helper_line(&s).unwrap().ends_with(" --git-prompt"));
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
        assert!(
            helper_line(&s)
                .unwrap()
                .ends_with(" --api-url http://[::1]:8080/base")
        );
    }

    #[test]
    fn a_path_with_spaces_is_quoted_for_the_shell_and_still_ours() {
        let quoted = shlex::try_quote("/home/a b/bin/git-credential-githosted").unwrap();
        assert_eq!(quoted, "'/home/a b/bin/git-credential-githosted'");
        assert!(is_ours(&format!("{quoted} --permission auto")));
        assert!(is_ours("githosted --api-url http://127.0.0.1:1"));
        assert!(!is_ours("cache --timeout 900"));
        assert!(!is_ours("/usr/bin/git-credential-githostedx"));
    }

    #[test]
    fn windows_paths_are_written_as_git_for_windows_runs_them() {
        for (path, word) in [
            (
                r"C:\Program Files\githosted\git-credential-githosted.exe",
                r"C:/Program\ Files/githosted/git-credential-githosted.exe",
            ),
            (
                r"Z:\work\a'b$(c)&d\git-credential-githosted.exe",
                r"Z:/work/a\'b\$\(c\)\&d/git-credential-githosted.exe",
            ),
            (
                r"\\?\C:\Users\Zoë\bin\git-credential-githosted.exe",
                r"C:/Users/Zoë/bin/git-credential-githosted.exe",
            ),
            (
                r"\\server\share\git-credential-githosted.exe",
                r"//server/share/git-credential-githosted.exe",
            ),
        ] {
            let written = git_for_windows_path(path).unwrap();
            assert_eq!(written, word, "{path}");
            // Ours, and the shell reads back the path git for Windows runs.
            let line = format!("{written} --permission auto");
            assert!(is_ours(&line), "{line}");
            let first = shlex::split(&line).unwrap().remove(0);
            assert_eq!(first, path.trim_start_matches(r"\\?\").replace('\\', "/"));
        }
        for path in [
            r"git-credential-githosted.exe",
            "\"C:\\x\"",
            "C:\\a\nb\\x.exe",
        ] {
            assert!(git_for_windows_path(path).is_err(), "{path}");
        }
    }

    #[test]
    fn windows_helper_lines_are_ours() {
        assert!(is_ours(
            r"C:/Program\ Files/githosted/git-credential-githosted.exe --permission auto"
        ));
        assert!(is_ours("/c/tools/git-credential-githosted.exe"));
        assert!(!is_ours("C:/tools/git-credential-githosted-core.exe"));
        assert!(!is_ours("manager"));
    }

    /// Windows: the helper line is an absolute path in git for Windows'
    /// sense (a drive, then `/`), not a quoted string git would run as
    /// `git credential-"…"`, and the shell reads this program's path from it.
    #[cfg(windows)]
    #[test]
    fn the_helper_line_is_a_path_git_for_windows_runs() {
        let line = helper_line(&settings_for(None).unwrap()).unwrap();
        let bytes = line.as_bytes();
        assert!(
            bytes[0].is_ascii_alphabetic() && bytes[1] == b':' && bytes[2] == b'/',
            "{line}"
        );
        assert!(!line.contains("\\\\"), "{line}");
        let program = installed_program().unwrap();
        assert_eq!(shlex::split(&line).unwrap()[0], program.replace('\\', "/"));
    }

    /// Windows: the full program (`…-core.exe`) points git at the front
    /// beside it, never at itself.
    #[cfg(windows)]
    #[test]
    fn the_core_points_git_at_the_front_exe_beside_it() {
        let front = front_for(r"C:\Program Files\gh\git-credential-githosted-core.exe".into());
        assert_eq!(
            front,
            std::path::PathBuf::from(r"C:\Program Files\gh\git-credential-githosted.exe")
        );
        let other = std::path::PathBuf::from(r"C:\x\git-credential-githosted.exe");
        assert_eq!(front_for(other.clone()), other);
    }

    #[test]
    fn only_what_configure_added_is_removed() {
        let v = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // The user's reset and cache stay; our reset+line go.
        assert_eq!(
            without_ours(&v(&[
                "",
                "cache",
                "",
                "githosted --api-url http://127.0.0.1:1"
            ])),
            v(&["", "cache"])
        );
        assert_eq!(
            without_ours(&v(&["", "", "/home/a/.local/bin/git-credential-githosted"])),
            v(&[""])
        );
        assert_eq!(without_ours(&v(&["store", ""])), v(&["store", ""]));
        assert!(without_ours(&v(&["", "githosted"])).is_empty());
    }
}
