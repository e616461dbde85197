//! The helper line's options, named once. `cli` defines them for clap (help,
//! parsing, completions, man page) with these names; the front's small parser
//! reads [`GET_VALUES`] by the same names and hands any other line to the core.
//! Their defaults and bounds are applied once, by `settings::Settings::new`.
//! A test in `cli` checks that clap's `get` and this table agree.

pub const API_URL: &str = "api-url";
pub const TIMEOUT: &str = "timeout";
pub const PERMISSION: &str = "permission";
pub const TTL: &str = "ttl";
pub const MIN_TTL: &str = "min-ttl";
pub const NO_AGENT: &str = "no-agent";
pub const WORKSPACE: &str = "workspace";
pub const BROKER: &str = "broker";
pub const OIDC_TOKEN_FILE: &str = "oidc-token-file";
pub const OIDC_TOKEN_ENV: &str = "oidc-token-env";
pub const OIDC_AUDIENCE: &str = "oidc-audience";
/// (internal) set by the front when it hands a `get` over after a miss in
/// the agent, so the core does not look the key up again.
pub const AGENT_MISSED: &str = "agent-missed";

/// The options of `get` that the front answers with itself (each takes a
/// value). Every other option of `get` (`--no-agent`, `-v`, …) sends the line
/// to the core, which knows them all.
pub const GET_VALUES: &[&str] = &[
    API_URL,
    TIMEOUT,
    PERMISSION,
    TTL,
    MIN_TTL,
    WORKSPACE,
    BROKER,
    OIDC_TOKEN_FILE,
    OIDC_TOKEN_ENV,
    OIDC_AUDIENCE,
];
