//! Everything a run needs to know, gathered from the command line and the
//! environment into one [`Settings`] value.

use std::io::IsTerminal;
use std::sync::OnceLock;

use crate::secret::Secret;
use crate::target::{ApiUrlError, Service};
use crate::token::Permission;

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
    /// Tokens come from a broker (CI), not from a workspace token.
    pub broker: Option<BrokerSettings>,
    /// The workspace declared for a parent the API cannot place
    /// (`--workspace` on the helper line, else `GITHOSTED_WORKSPACE`).
    pub declared_workspace: Option<String>,
    /// Inside `exec`: its renewal channel, the only source of tokens there
    /// ([`EXEC_CHANNEL_ENV`]).
    pub exec_channel: Option<std::path::PathBuf>,
    /// The front looked the key up in the agent already (and missed): do not
    /// ask again.
    pub agent_missed: bool,
    /// `--git-prompt`: after a failure the helper explained, let git go on to
    /// its own `Username for …` prompt instead of answering `quit=1`.
    pub git_prompt: bool,
}

/// Where a CI job's tokens come from: a broker, for the job's OIDC ID token.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// As given (`--broker` or `GITHOSTED_BROKER`), to repeat in config and hints.
    pub url_arg: String,
    pub url: url::Url,
    /// `--oidc-token-file`.
    pub token_file: Option<std::path::PathBuf>,
    /// `--oidc-token-env`.
    pub token_env: Option<String>,
    /// The audience asked for; `githosted-broker` unless told.
    pub audience: String,
}

/// Names the API when `--api-url` does not.
pub const API_URL_ENV: &str = "GITHOSTED_API_URL";

/// Logging: `LEVEL` or `target=LEVEL,…` (like `-v`).
pub const LOG_ENV: &str = "GITHOSTED_LOG";

/// How long an idle, empty agent waits before it exits (seconds).
pub const AGENT_IDLE_ENV: &str = "GITHOSTED_AGENT_IDLE_SECS";

/// A variable's value, when set to something other than blanks.
fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The API named by `GITHOSTED_API_URL`.
pub fn env_api_url() -> Option<String> {
    env_value(API_URL_ENV)
}

/// What `GITHOSTED_LOG` asks for.
pub fn env_log() -> Option<String> {
    env_value(LOG_ENV)
}

/// `GITHOSTED_NO_AGENT` set (to anything but `0`).
pub fn env_no_agent() -> bool {
    env_value(NO_AGENT_ENV).is_some_and(|v| v.trim() != "0")
}

/// `GITHOSTED_BROKER` set (a CI job configured for a broker).
pub fn env_broker_set() -> bool {
    env_value(BROKER_ENV).is_some()
}

/// Inside `exec`: `GITHOSTED_EXEC_CHANNEL` set.
pub fn env_in_exec() -> bool {
    std::env::var_os(EXEC_CHANNEL_ENV).is_some_and(|v| !v.is_empty())
}

/// `GITHOSTED_AGENT_IDLE_SECS`, when it is a number.
pub fn env_agent_idle_secs() -> Option<u64> {
    env_value(AGENT_IDLE_ENV).and_then(|v| v.trim().parse().ok())
}

/// Declares the workspace of `GITHOSTED_TOKEN` when the API cannot say (like `--workspace`).
pub const WORKSPACE_ENV: &str = "GITHOSTED_WORKSPACE";

/// Set by `exec` for its command: the socket of its renewal channel.
pub const EXEC_CHANNEL_ENV: &str = "GITHOSTED_EXEC_CHANNEL";

/// Names the broker when `--broker` does not.
pub const BROKER_ENV: &str = "GITHOSTED_BROKER";

/// A workspace token (CI, sandboxes) that overrides the keychain.
pub const TOKEN_ENV: &str = "GITHOSTED_TOKEN";

/// `GITHOSTED_TOKEN`, once taken out of the environment.
static TAKEN_TOKEN: OnceLock<Option<Secret>> = OnceLock::new();

/// Takes `GITHOSTED_TOKEN` out of the environment (and the bytes of the
/// environment block) for good; [`env_token`] answers from memory afterwards.
/// Call it first thing in `main`, while the process has one thread (later,
/// the variable stays where it is: see [`crate::harden::take_env_var`]).
pub fn take_env_token() {
    let token = crate::harden::take_env_var(TOKEN_ENV);
    let _ = TAKEN_TOKEN.set(token);
}

/// The token from `GITHOSTED_TOKEN`, if set and not blank.
pub fn env_token() -> Option<Secret> {
    TAKEN_TOKEN
        .get_or_init(|| {
            // Not taken (a library user, a test): read it where it is.
            let value = zeroize::Zeroizing::new(std::env::var(TOKEN_ENV).ok()?);
            let trimmed = value.trim();
            (!trimmed.is_empty()).then(|| Secret::new(trimmed.to_owned()))
        })
        .clone()
}
/// The audience ID tokens are asked for by default.
pub const DEFAULT_OIDC_AUDIENCE: &str = "githosted-broker";

/// What `--broker` and its options asked for.
#[derive(Debug, Clone, Default)]
pub struct BrokerRequested {
    pub url: Option<String>,
    pub token_file: Option<std::path::PathBuf>,
    pub token_env: Option<String>,
    pub audience: Option<String>,
}

/// What a run was asked for, before defaults and checks: the options as the
/// command line gave them (every field optional).
#[derive(Debug, Clone, Default)]
pub struct Requested {
    pub api_url: Option<String>,
    /// `None`: write (git does not say whether it will push).
    pub permission: Option<Permission>,
    /// `--permission auto` (then `permission` holds what it decided).
    pub auto_permission: bool,
    /// `None` or 0: the default (`default_ttl_secs`).
    pub ttl_secs: Option<u64>,
    pub min_ttl_secs: Option<u64>,
    pub no_agent: bool,
    /// `--workspace` on the helper line.
    pub workspace: Option<String>,
    /// (internal) the front's lookup missed.
    pub agent_missed: bool,
    pub timeout_secs: Option<u64>,
    pub broker: BrokerRequested,
    /// `--git-prompt`.
    pub git_prompt: bool,
}

impl Settings {
    /// The settings for `requested`, with `default_ttl_secs` when it names none.
    pub fn new(requested: &Requested, default_ttl_secs: u64) -> Result<Settings, ApiUrlError> {
        let api_url = requested.api_url.as_deref();
        let broker = broker_settings(&requested.broker)?;
        Ok(Settings {
            broker,
            declared_workspace: requested
                .workspace
                .clone()
                .or_else(|| env_value(WORKSPACE_ENV))
                .map(|ws| ws.trim().to_owned())
                .filter(|ws| !ws.is_empty()),
            agent_missed: requested.agent_missed,
            exec_channel: std::env::var_os(EXEC_CHANNEL_ENV)
                .filter(|v| !v.is_empty())
                .map(std::path::PathBuf::from),
            service: Service::new(api_url)?,
            api_url_arg: api_url.map(str::to_owned),
            permission: requested.permission.unwrap_or(Permission::Write),
            auto_permission: requested.auto_permission,
            // 0 means the default, as it does for the API.
            ttl_secs: match requested.ttl_secs.unwrap_or(0) {
                0 => default_ttl_secs,
                n => n.min(MAX_TTL_SECS),
            },
            min_ttl_secs: requested.min_ttl_secs,
            no_agent: requested.no_agent || env_no_agent(),
            timeout: std::time::Duration::from_secs(
                requested
                    .timeout_secs
                    .unwrap_or(DEFAULT_TIMEOUT_SECS)
                    .clamp(1, MAX_TIMEOUT_SECS),
            ),
            git_prompt: requested.git_prompt,
        })
    }

    /// ` --broker URL` when tokens come from a broker.
    pub fn broker_flag(&self) -> String {
        self.broker
            .as_ref()
            .map(|b| format!(" --broker {}", b.url_arg))
            .unwrap_or_default()
    }

    /// The settings for an API URL and nothing else (tests, examples).
    pub fn for_api(api_url: Option<&str>) -> Result<Settings, ApiUrlError> {
        Settings::new(
            &Requested {
                api_url: api_url.map(str::to_owned),
                ..Requested::default()
            },
            DEFAULT_TTL_SECS,
        )
    }

    /// ` --api-url URL` when one was given, for commands printed to the user.
    pub fn api_url_flag(&self) -> String {
        self.api_url_arg
            .as_deref()
            .map(|url| format!(" --api-url {url}"))
            .unwrap_or_default()
    }
}

/// The broker settings asked for, from the options or `GITHOSTED_BROKER`.
fn broker_settings(requested: &BrokerRequested) -> Result<Option<BrokerSettings>, ApiUrlError> {
    let url_arg = match requested.url.clone().or_else(|| {
        std::env::var(BROKER_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty())
    }) {
        Some(url) => url.trim().to_owned(),
        None => return Ok(None),
    };
    // The broker gets an ID token: https, or http on this machine only.
    let url = url::Url::parse(&url_arg)
        .ok()
        .filter(|u| crate::target::is_secure_url(u.as_str()))
        .ok_or_else(|| ApiUrlError::Broker(url_arg.clone()))?;
    // `join` keeps the last path segment only with a trailing slash.
    let url = if url.path().ends_with('/') {
        url
    } else {
        let mut u = url.clone();
        u.set_path(&format!("{}/", url.path()));
        u
    };
    Ok(Some(BrokerSettings {
        url_arg,
        url,
        token_file: requested.token_file.clone(),
        token_env: requested.token_env.clone(),
        audience: requested
            .audience
            .clone()
            .unwrap_or_else(|| DEFAULT_OIDC_AUDIENCE.to_owned()),
    }))
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
    fn ttl_is_clamped_and_zero_means_the_default() {
        let ttl = |secs| {
            let requested = Requested {
                ttl_secs: Some(secs),
                ..Requested::default()
            };
            Settings::new(&requested, DEFAULT_TTL_SECS)
                .unwrap()
                .ttl_secs
        };
        assert_eq!(ttl(10 * MAX_TTL_SECS), MAX_TTL_SECS);
        assert_eq!(ttl(0), DEFAULT_TTL_SECS);
        assert_eq!(ttl(60), 60);
        assert_eq!(Settings::for_api(None).unwrap().api_url_flag(), "");
        assert_eq!(
            Settings::for_api(Some("http://127.0.0.1:1"))
                .unwrap()
                .api_url_flag(),
            " --api-url http://127.0.0.1:1"
        );
    }

    #[test]
    fn timeout_is_clamped() {
        let requested = Requested {
            timeout_secs: Some(u64::MAX),
            ..Requested::default()
        };
        let s = Settings::new(&requested, DEFAULT_TTL_SECS).unwrap();
        assert_eq!(s.timeout.as_secs(), MAX_TIMEOUT_SECS);
    }
}
