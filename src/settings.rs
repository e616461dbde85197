//! Everything a run needs to know, gathered from the command line and the
//! environment into one [`Settings`] value.

use std::io::IsTerminal;

use crate::api::Permission;
use crate::target::{ApiUrlError, Service};

/// How long a whole `get` may take by default, whatever the server or keychain does.
pub const DEFAULT_TIMEOUT_SECS: u64 = 20;

/// The longest `--timeout` honoured (a larger one is cut to this).
pub const MAX_TIMEOUT_SECS: u64 = 600;

/// Requested lifetime of a minted token when `--ttl` is not given.
pub const DEFAULT_TTL_SECS: u64 = 3600;
/// The server clamps longer requests to this.
pub const MAX_TTL_SECS: u64 = 24 * 3600;

/// Set (to anything but `0`) to run without the agent, like `--no-agent`.
pub const NO_AGENT_ENV: &str = "GITHOSTED_NO_AGENT";

/// The settings of one helper run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub service: Service,
    /// The API URL as the user gave it, to repeat in hints and config.
    pub api_url_arg: Option<String>,
    pub permission: Permission,
    /// `--permission auto` was asked for (`permission` holds what it decided).
    pub auto_permission: bool,
    pub ttl_secs: u64,
    /// Minimum remaining lifetime of a token handed to git.
    pub min_ttl_secs: Option<u64>,
    pub no_agent: bool,
    /// The longest a `get` may take, retries included.
    pub timeout: std::time::Duration,
}

impl Settings {
    pub fn new(
        api_url: Option<&str>,
        permission: Permission,
        ttl_secs: u64,
        min_ttl_secs: Option<u64>,
        no_agent: bool,
        timeout_secs: u64,
    ) -> Result<Settings, ApiUrlError> {
        Ok(Settings {
            service: Service::new(api_url)?,
            api_url_arg: api_url.map(str::to_owned),
            permission,
            auto_permission: false,
            // 0 means the default, as it does for the API.
            ttl_secs: match ttl_secs {
                0 => DEFAULT_TTL_SECS,
                n => n.min(MAX_TTL_SECS),
            },
            min_ttl_secs,
            no_agent: no_agent
                || std::env::var_os(NO_AGENT_ENV).is_some_and(|v| !v.is_empty() && v != "0"),
            timeout: std::time::Duration::from_secs(timeout_secs.clamp(1, MAX_TIMEOUT_SECS)),
        })
    }

    /// ` --api-url URL` when one was given, for commands printed to the user.
    pub fn api_url_flag(&self) -> String {
        self.api_url_arg
            .as_deref()
            .map(|url| format!(" --api-url {url}"))
            .unwrap_or_default()
    }
}

/// The audit `subject` sent with every exchange: helper, local user and host.
pub fn subject() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| format!("uid{}", uid()));
    let host = hostname();
    format!("git-credential-githosted:{user}@{host}")
}

#[cfg(unix)]
fn uid() -> u32 {
    rustix::process::getuid().as_raw()
}

#[cfg(not(unix))]
fn uid() -> u32 {
    0
}

#[cfg(unix)]
fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

#[cfg(not(unix))]
fn hostname() -> String {
    std::env::var("COMPUTERNAME").unwrap_or_else(|_| "unknown-host".into())
}

/// Whether a person could answer a prompt: there is a terminal, and neither git
/// (`GIT_TERMINAL_PROMPT=0`) nor a CI system (`CI`) says otherwise.
pub fn interactive() -> bool {
    if std::env::var("GIT_TERMINAL_PROMPT")
        .is_ok_and(|v| v == "0" || v.eq_ignore_ascii_case("false"))
    {
        return false;
    }
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        return false;
    }
    has_terminal()
}

#[cfg(unix)]
fn has_terminal() -> bool {
    std::fs::File::open("/dev/tty").is_ok()
}

#[cfg(not(unix))]
fn has_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// Whether stdin is a terminal (then tokens are read without echo).
pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_names_helper_user_and_host() {
        let s = subject();
        assert!(s.starts_with("git-credential-githosted:"), "{s}");
        assert!(s.contains('@'), "{s}");
    }

    #[test]
    fn ttl_is_clamped() {
        let s = Settings::new(
            None,
            Permission::Write,
            10 * MAX_TTL_SECS,
            None,
            false,
            DEFAULT_TIMEOUT_SECS,
        )
        .unwrap();
        assert_eq!(s.ttl_secs, MAX_TTL_SECS);
        let s = Settings::new(
            None,
            Permission::Write,
            0,
            None,
            false,
            DEFAULT_TIMEOUT_SECS,
        )
        .unwrap();
        assert_eq!(s.ttl_secs, DEFAULT_TTL_SECS);
        assert_eq!(s.api_url_flag(), "");
        let s = Settings::new(
            Some("http://127.0.0.1:1"),
            Permission::Read,
            60,
            None,
            false,
            DEFAULT_TIMEOUT_SECS,
        )
        .unwrap();
        assert_eq!(s.api_url_flag(), " --api-url http://127.0.0.1:1");
    }
}
