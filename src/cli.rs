//! The command line: what can be typed, and the help text for it.
//!
//! Git runs a helper as `git credential-githosted [options] get|store|erase`, so
//! the operation is the last word; every option is also accepted after the
//! command word (`--api-url URL login` and `login --api-url URL` are the same).

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::api::Permission;
use crate::settings::DEFAULT_TIMEOUT_SECS;

#[derive(Debug, Parser)]
#[command(
    name = "git-credential-githosted",
    version,
    about = "A git credential helper that gives git short-lived, repo-scoped githosted tokens",
    long_about = "A git credential helper that gives git short-lived, repo-scoped githosted tokens.\n\n\
        The long-lived workspace token (gw_…) stays in the OS keychain, or in GITHOSTED_TOKEN in CI. \
        For each repository git asks about, it is exchanged for a gr_ token limited to that repo \
        and one permission, and only that reaches git.",
    after_help = "Set up on a laptop:\n  \
        git-credential-githosted configure\n  \
        printf %s \"$TOKEN\" | git-credential-githosted login\n  \
        git clone https://githosted.dev/acme/app.git"
)]
pub struct Cli {
    #[command(flatten)]
    pub options: Options,
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by every command; each may come before or after the command word.
#[derive(Debug, Args)]
pub struct Options {
    /// githosted API base URL (self-hosted or local servers) [default: https://api.githosted.dev]
    #[arg(long, global = true, value_name = "URL")]
    pub api_url: Option<String>,
    /// Permission of the tokens given to git (auto: read for fetch/clone/pull/ls-remote, write for push)
    #[arg(long, global = true, value_enum, default_value_t = PermissionArg::Write)]
    pub permission: PermissionArg,
    /// Requested token lifetime in seconds (the server clamps to 24 h) [default: 3600; `exec`: 900]
    #[arg(long, global = true, value_name = "SECS")]
    pub ttl: Option<u64>,
    /// Minimum remaining lifetime of a token handed to git [default: min(300, ttl/4)]
    #[arg(long, global = true, value_name = "SECS")]
    pub min_ttl: Option<u64>,
    /// The longest a `get` may take, retries included; then it fails with one clear line (at most 600)
    #[arg(long, global = true, value_name = "SECS", default_value_t = DEFAULT_TIMEOUT_SECS)]
    pub timeout: u64,
    /// Mint directly, without the background agent (also: GITHOSTED_NO_AGENT=1)
    #[arg(long, global = true)]
    pub no_agent: bool,
    /// Workspace whose token `login`/`logout` store or delete [default: any workspace on this API host]
    #[arg(long, global = true, value_name = "WS")]
    pub workspace: Option<String>,
    /// `login`: store the token without checking it with the API
    #[arg(long, global = true)]
    pub no_verify: bool,
    /// `configure`: a git host to configure (repeatable) [default: githosted.dev and api.githosted.dev]
    #[arg(long = "host", global = true, value_name = "HOST")]
    pub hosts: Vec<String>,
    /// `configure`: write the repository's config instead of the user's
    #[arg(long, global = true, conflicts_with = "global")]
    pub local: bool,
    /// `configure`: write the user's config (the default)
    #[arg(long, global = true)]
    pub global: bool,
    /// `configure`: remove what `configure` wrote
    #[arg(long, global = true)]
    pub remove: bool,
    /// `token`, `exec`: the repository, as WORKSPACE/REPO (repeatable for `exec`)
    #[arg(long = "repo", global = true, value_name = "WS/REPO")]
    pub repos: Vec<String>,
    /// Log what happens to stderr (tokens appear only as fingerprints); or set GITHOSTED_LOG=debug
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PermissionArg {
    Read,
    Write,
    /// read for fetch, clone, pull and ls-remote; write for push (and when unsure)
    Auto,
}

impl PermissionArg {
    /// The permission to ask for; `auto` looks at the git command that started us.
    pub fn resolve(self) -> Permission {
        match self {
            PermissionArg::Read => Permission::Read,
            PermissionArg::Write => Permission::Write,
            PermissionArg::Auto => crate::permission::from_git_command(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// (git) Answer a credential request on stdin with a short-lived repo token
    #[command(
        after_help = "Example:\n  printf 'protocol=https\\nhost=githosted.dev\\npath=acme/app.git\\n' | git-credential-githosted get"
    )]
    Get,
    /// (git) A credential worked: nothing is ever written
    #[command(after_help = "git runs this; it writes nothing, ever.")]
    Store,
    /// (git) A credential was rejected: forget it and revoke it
    #[command(
        after_help = "Example (what git does after a 401):\n  printf 'protocol=https\\nhost=githosted.dev\\npath=acme/app.git\\npassword=gr_…\\n' | git-credential-githosted erase"
    )]
    Erase,
    /// Store a workspace token (read from stdin, never from argv) in the OS keychain
    #[command(
        after_help = "Example:\n  printf %s \"$TOKEN\" | git-credential-githosted login --workspace acme"
    )]
    Login,
    /// Delete the stored workspace token
    #[command(after_help = "Example:\n  git-credential-githosted logout --workspace acme")]
    Logout,
    /// Configure git to use this helper for githosted hosts
    #[command(
        after_help = "Examples:\n  git-credential-githosted configure\n  git-credential-githosted configure --api-url http://127.0.0.1:8080 --local\n  git-credential-githosted configure --remove"
    )]
    Configure,
    /// Show what is stored, cached and configured (fingerprints only)
    #[command(after_help = "Example:\n  git-credential-githosted status")]
    Status,
    /// Check git, the helper chain, the keychain, the agent, the API and the token; say the fix
    #[command(
        after_help = "Example:\n  git-credential-githosted doctor\n  git-credential-githosted doctor --api-url http://127.0.0.1:8080"
    )]
    Doctor,
    /// Print one short-lived repo token (for scripts, http.extraHeader, SDK clients)
    #[command(
        after_help = "Examples:\n  git-credential-githosted token --repo acme/app --permission read --ttl 600\n\n  \
            # A header for git, through the environment (git 2.31+): never in argv, where `ps` shows it to every user\n  \
            GITHOSTED_AUTH=\"Authorization: Bearer $(git-credential-githosted token --repo acme/app)\" \\\n    \
            git --config-env=http.extraHeader=GITHOSTED_AUTH clone https://githosted.dev/acme/app.git"
    )]
    Token,
    /// Run a command, confined, with a fresh token for the --repo repos only, revoked when it exits
    #[command(
        after_help = "The command gets GITHOSTED_TOKEN (a gr_ token for the named repos) and git configured to use it. \
            On Linux it runs in its own namespaces (bubblewrap): it cannot see this user's keychain, D-Bus session, \
            agent or other processes, and dies with `exec`.\n\n\
            Examples:\n  git-credential-githosted exec --repo acme/app -- git clone https://githosted.dev/acme/app.git\n  git-credential-githosted exec --repo acme/app --repo acme/lib --permission read --ttl 600 -- ./agent-sandbox.sh"
    )]
    Exec {
        /// Run the command unconfined: it can then reach everything this user can (keychain, agent, processes)
        #[arg(long)]
        no_isolate: bool,
        /// The command and its arguments (after `--`)
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// (internal) Process 1 inside `exec`'s sandbox
    #[command(name = "sandbox-init", hide = true)]
    SandboxInit {
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// (internal) Run the background agent; the helper starts it on demand
    #[command(hide = true)]
    Agent {
        /// The agent's directory (the helper passes the one it checked; it is
        /// also on the command line so `ps` shows which agent serves where)
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
    /// Any other operation git may invent: ignored
    #[command(external_subcommand)]
    Other(Vec<String>),
}
