//! The command line: what can be typed, and the help text for it.
//!
//! Git runs a helper as `git credential-githosted [options] get|store|erase`, so
//! the helper's options come before the operation; they are also accepted after
//! it. Options that belong to one command (`--repo`, `--remove`, `--workspace`…)
//! are that command's own, and each command's `--help` lists only what it takes.

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::flags;
use crate::settings::Requested;
use crate::token::Permission;

#[derive(Debug, Parser)]
#[command(
    name = "git-credential-githosted",
    bin_name = "git-credential-githosted",
    version,
    about = "A git credential helper that gives git short-lived, repo-scoped githosted tokens",
    long_about = "A git credential helper that gives git short-lived, repo-scoped githosted tokens.\n\n\
        The long-lived workspace token (gw_…) stays in the OS keychain, or in GITHOSTED_TOKEN in CI. \
        For each repository git asks about, it is exchanged for a gr_ token limited to that repo \
        and one permission, and only that reaches git.",
    after_help = "Set up on a laptop:\n  \
        git-credential-githosted configure\n  \
        git-credential-githosted login                  # paste a workspace token (input hidden)\n  \
        git clone https://githosted.dev/acme/app.git"
)]
pub struct Cli {
    /// The helper's options, as git passes them before the operation.
    #[command(flatten)]
    pub options: HelperOptions,
    #[command(subcommand)]
    pub command: Command,
}

/// The options of the helper itself (on git's helper line).
#[derive(Debug, Clone, Default, Args)]
pub struct HelperOptions {
    #[command(flatten)]
    pub api: ApiOptions,
    /// Permission of the tokens (auto: read for fetch/clone/pull/ls-remote, write for push) [default: write]
    #[arg(long = flags::PERMISSION, value_enum, value_name = "PERMISSION")]
    pub permission: Option<PermissionArg>,
    /// Requested token lifetime in seconds; the server clamps to 24 h [default: 3600; exec: 900]
    #[arg(long = flags::TTL, value_name = "SECS")]
    pub ttl: Option<u64>,
    /// Minimum remaining lifetime of a token handed out [default: min(300, ttl/4)]
    #[arg(long = flags::MIN_TTL, value_name = "SECS")]
    pub min_ttl: Option<u64>,
    /// Mint directly, without the background agent (also: GITHOSTED_NO_AGENT=1)
    #[arg(long = flags::NO_AGENT)]
    pub no_agent: bool,
    /// The workspace GITHOSTED_TOKEN belongs to, when the API cannot say (also: GITHOSTED_WORKSPACE)
    #[arg(long = flags::WORKSPACE, value_name = "WS")]
    pub workspace: Option<String>,
    /// (internal) the front has looked the key up in the agent and missed
    #[arg(long = flags::AGENT_MISSED, hide = true)]
    pub agent_missed: bool,
    /// After a failure the helper explained, let git ask for a username and password (git's own prompt) instead of stopping
    #[arg(long)]
    pub git_prompt: bool,
    #[command(flatten)]
    pub broker: BrokerOptions,
}

/// CI: tokens from a broker, for the job's OIDC ID token (no workspace token at all).
#[derive(Debug, Clone, Default, Args)]
pub struct BrokerOptions {
    /// Get tokens from this token broker with the job's OIDC ID token (also: GITHOSTED_BROKER)
    #[arg(long = flags::BROKER, value_name = "URL")]
    pub broker: Option<String>,
    /// Read the job's ID token from this file (GitLab id_tokens, Kubernetes) [default: GitHub Actions' endpoint]
    #[arg(long = flags::OIDC_TOKEN_FILE, value_name = "PATH")]
    pub oidc_token_file: Option<std::path::PathBuf>,
    /// Read the job's ID token from this environment variable
    #[arg(long = flags::OIDC_TOKEN_ENV, value_name = "NAME")]
    pub oidc_token_env: Option<String>,
    /// The audience to ask the ID token for [default: githosted-broker]
    #[arg(long = flags::OIDC_AUDIENCE, value_name = "AUD")]
    pub oidc_audience: Option<String>,
}

impl BrokerOptions {
    fn and(&self, later: &BrokerOptions) -> BrokerOptions {
        BrokerOptions {
            broker: later.broker.clone().or_else(|| self.broker.clone()),
            oidc_token_file: later
                .oidc_token_file
                .clone()
                .or_else(|| self.oidc_token_file.clone()),
            oidc_token_env: later
                .oidc_token_env
                .clone()
                .or_else(|| self.oidc_token_env.clone()),
            oidc_audience: later
                .oidc_audience
                .clone()
                .or_else(|| self.oidc_audience.clone()),
        }
    }
}

/// The options of every command that talks to the API.
#[derive(Debug, Clone, Default, Args)]
pub struct ApiOptions {
    /// githosted API base URL (self-hosted or local servers) [default: https://api.githosted.dev]
    #[arg(long = flags::API_URL, value_name = "URL")]
    pub api_url: Option<String>,
    /// The longest a command may wait for the API, retries included (1–600) [default: 20]
    #[arg(long = flags::TIMEOUT, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Log what happens to stderr (tokens appear only as fingerprints); or set GITHOSTED_LOG=debug
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PermissionArg {
    Read,
    Write,
    /// read for fetch, clone, pull and ls-remote; write for push (and when unsure)
    Auto,
}

impl HelperOptions {
    /// These options with `later`'s (given after the command word) on top.
    pub fn and(&self, later: &HelperOptions) -> HelperOptions {
        HelperOptions {
            api: self.api.and(&later.api),
            permission: later.permission.or(self.permission),
            ttl: later.ttl.or(self.ttl),
            min_ttl: later.min_ttl.or(self.min_ttl),
            no_agent: self.no_agent || later.no_agent,
            workspace: later.workspace.clone().or_else(|| self.workspace.clone()),
            agent_missed: self.agent_missed || later.agent_missed,
            git_prompt: self.git_prompt || later.git_prompt,
            broker: self.broker.and(&later.broker),
        }
    }

    /// What they ask for; `--permission auto` looks at the git command that started us.
    pub fn requested(&self) -> Requested {
        let permission = self.permission.map(|p| match p {
            PermissionArg::Read => Permission::Read,
            PermissionArg::Write => Permission::Write,
            PermissionArg::Auto => crate::permission::from_git_command(),
        });
        Requested {
            permission,
            auto_permission: self.permission == Some(PermissionArg::Auto),
            ttl_secs: self.ttl,
            min_ttl_secs: self.min_ttl,
            no_agent: self.no_agent,
            workspace: self.workspace.clone(),
            agent_missed: self.agent_missed,
            git_prompt: self.git_prompt,
            broker: crate::settings::BrokerRequested {
                url: self.broker.broker.clone(),
                token_file: self.broker.oidc_token_file.clone(),
                token_env: self.broker.oidc_token_env.clone(),
                audience: self.broker.oidc_audience.clone(),
            },
            ..self.api.requested()
        }
    }

    /// Whether any of the token options (`--permission`, `--ttl`, `--min-ttl`,
    /// `--no-agent`) was given: commands that make no token refuse them.
    pub fn names_token_options(&self) -> bool {
        self.permission.is_some() || self.ttl.is_some() || self.min_ttl.is_some() || self.no_agent
    }
}

impl ApiOptions {
    /// These options with `later`'s on top.
    pub fn and(&self, later: &ApiOptions) -> ApiOptions {
        ApiOptions {
            api_url: later.api_url.clone().or_else(|| self.api_url.clone()),
            timeout: later.timeout.or(self.timeout),
            verbose: self.verbose.saturating_add(later.verbose),
        }
    }

    pub fn requested(&self) -> Requested {
        Requested {
            api_url: self.api_url.clone(),
            timeout_secs: self.timeout,
            ..Requested::default()
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// (git) Answer a credential request on stdin with a short-lived repo token
    #[command(
        after_help = "Example:\n  printf 'protocol=https\\nhost=githosted.dev\\npath=acme/app.git\\n' | git-credential-githosted get"
    )]
    Get(HelperOptions),
    /// (git) A credential worked: nothing is ever written
    #[command(after_help = "git runs this; it writes nothing, ever.")]
    Store(HelperOptions),
    /// (git) A credential was rejected: forget it and revoke it
    #[command(
        after_help = "Example (what git does after a 401):\n  printf 'protocol=https\\nhost=githosted.dev\\npath=acme/app.git\\npassword=gr_…\\n' | git-credential-githosted erase"
    )]
    Erase(HelperOptions),
    /// Store a workspace token (read from stdin, never from argv) in the OS keychain
    #[command(
        after_help = "Examples:\n  git-credential-githosted login                         # paste the token (input hidden)\n  git-credential-githosted login < token-file             # or from a file or pipe"
    )]
    Login(LoginArgs),
    /// Revoke the tokens minted from the stored workspace token, then delete it
    #[command(after_help = "Example:\n  git-credential-githosted logout --workspace acme")]
    Logout(LogoutArgs),
    /// Configure git to use this helper for githosted hosts
    #[command(
        after_help = "Examples:\n  git-credential-githosted configure\n  git-credential-githosted configure --api-url http://127.0.0.1:8080 --local\n  git-credential-githosted configure --remove"
    )]
    Configure(ConfigureArgs),
    /// Show what is stored, cached and configured (fingerprints only)
    #[command(
        after_help = "Examples:\n  git-credential-githosted status\n  git-credential-githosted status --json | jq .agent"
    )]
    Status(ReportArgs),
    /// Check git, the helper chain, the keychain, the agent, the API and the token; say the fix
    #[command(
        after_help = "Examples:\n  git-credential-githosted doctor\n  git-credential-githosted doctor --api-url http://127.0.0.1:8080 --json"
    )]
    Doctor(ReportArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    #[command(
        after_help = "Example:\n  git-credential-githosted completions bash > ~/.local/share/bash-completion/completions/git-credential-githosted"
    )]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// (internal) Print the man page (roff); ./install puts it in place
    #[command(hide = true)]
    Man,
    /// Print one short-lived repo token (for scripts, http.extraHeader, SDK clients)
    #[command(
        after_help = "Examples:\n  git-credential-githosted token --repo acme/app --permission read --ttl 600\n\n  \
            # A header for git, through the environment (git 2.31+): never in argv, where `ps` shows it to every user\n  \
            GITHOSTED_AUTH=\"Authorization: Bearer $(git-credential-githosted token --repo acme/app)\" \\\n    \
            git --config-env=http.extraHeader=GITHOSTED_AUTH clone https://githosted.dev/acme/app.git"
    )]
    Token(TokenArgs),
    /// Run a command, confined, with a fresh token for the --repo repos only, revoked when it exits
    #[command(
        after_help = "The command gets GITHOSTED_TOKEN (a gr_ token for the named repos) and git configured to use it. \
            On Linux it runs in its own namespaces (bubblewrap): it cannot see this user's keychain, D-Bus session, \
            agent or other processes, and dies with `exec`.\n\n\
            Examples:\n  git-credential-githosted exec --repo acme/app -- git clone https://githosted.dev/acme/app.git\n  git-credential-githosted exec --repo acme/app --repo acme/lib --permission read --ttl 600 -- ./agent-sandbox.sh"
    )]
    Exec(ExecArgs),
    /// Run the CI token broker (the program githosted-broker, beside this one; `broker --help` is its help)
    #[command(
        disable_help_flag = true,
        after_help = "Examples:\n  git-credential-githosted broker --policy policy.toml --workspace acme --audience https://broker.example.com --token-file /run/secrets/githosted-token\n  git-credential-githosted broker check --policy policy.toml"
    )]
    Broker {
        /// Everything after `broker`, passed to githosted-broker as it is
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<std::ffi::OsString>,
    },
    /// (internal) Run the background agent; the helper starts it on demand
    #[command(hide = true)]
    Agent {
        /// The agent's directory (the helper passes the one it checked; it is
        /// also on the command line so `ps` shows which agent serves where)
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
    /// (internal) Process 1 inside `exec`'s sandbox
    #[command(name = "sandbox-init", hide = true)]
    SandboxInit {
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Any other operation git may invent: ignored
    #[command(external_subcommand)]
    Other(Vec<String>),
}

/// `status` and `doctor`: what they look at, and how they print it.
#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub api: ApiOptions,
    /// Print JSON (stable fields, documented in the README) instead of lines
    #[arg(long)]
    pub json: bool,
    /// Colour the output: auto (on a terminal, unless NO_COLOR is set), always, never
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    pub color: ColorChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// Whether to colour what goes to stdout.
    pub fn enabled(self) -> bool {
        use std::io::IsTerminal;
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                    && std::io::stdout().is_terminal()
            }
        }
    }
}

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    use clap::CommandFactory;
    clap_complete::generate(shell, &mut Cli::command(), "git-credential-githosted", out);
}

/// The man page, in roff.
pub fn man_page(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    use clap::CommandFactory;
    let cli = Cli::command();
    let man = clap_mangen::Man::new(cli.clone());
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    // One page: each command here, with a pointer to its `--help` (clap_mangen
    // would point at git-credential-githosted-COMMAND(1) pages nobody installs).
    writeln!(out, ".SH COMMANDS")?;
    for command in cli.get_subcommands().filter(|c| !c.is_hide_set()) {
        let name = command.get_name();
        writeln!(out, ".TP\n\\fB{}\\fR", roff_text(name))?;
        if let Some(about) = command.get_about() {
            writeln!(out, "{}", roff_text(&about.to_string()))?;
        }
        writeln!(
            out,
            ".br\nOptions and examples: \\fBgit\\-credential\\-githosted {} \\-\\-help\\fR",
            roff_text(name)
        )?;
    }
    man.render_extra_section(out)?;
    man.render_version_section(out)
}

/// Text for one roff line: backslashes and hyphens escaped, no control line.
fn roff_text(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\e")
        .replace('-', "\\-")
        .replace('\n', " ");
    match escaped.starts_with(['.', '\'']) {
        true => format!("\\&{escaped}"),
        false => escaped,
    }
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    #[command(flatten)]
    pub api: ApiOptions,
    /// The workspace this token belongs to [default: any workspace on this API host]
    #[arg(long, value_name = "WS")]
    pub workspace: Option<String>,
    /// Store the token without checking it with the API
    #[arg(long)]
    pub no_verify: bool,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    #[command(flatten)]
    pub api: ApiOptions,
    /// The workspace whose token to delete [default: the one for any workspace on this API host]
    #[arg(long, value_name = "WS")]
    pub workspace: Option<String>,
    /// Every workspace token stored for this API host (./install --uninstall runs this)
    #[arg(long, conflicts_with = "workspace")]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct ConfigureArgs {
    /// The options to put on git's helper line
    #[command(flatten)]
    pub helper: HelperOptions,
    /// A git host to configure (repeatable) [default: the API's hosts, e.g. githosted.dev and api.githosted.dev]
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Write the repository's config instead of the user's
    #[arg(long, conflicts_with = "global")]
    pub local: bool,
    /// Write the user's config (the default)
    #[arg(long)]
    pub global: bool,
    /// Remove what `configure` wrote, and nothing else
    #[arg(long)]
    pub remove: bool,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(flatten)]
    pub helper: HelperOptions,
    /// The repository, as WORKSPACE/REPO [default: this clone's githosted remote: origin, or the only one]
    #[arg(long = "repo", value_name = "WS/REPO")]
    pub repo: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub helper: HelperOptions,
    /// A repository the command may use, as WORKSPACE/REPO (repeatable; one workspace)
    #[arg(long = "repo", value_name = "WS/REPO", required = true)]
    pub repos: Vec<String>,
    /// Run the command unconfined: it can then reach everything this user can (keychain, agent, processes)
    #[arg(long)]
    pub no_isolate: bool,
    /// Stop renewing the command's token after this many seconds [default: renew while it runs]
    #[arg(long, value_name = "SECS")]
    pub max_session: Option<u64>,
    /// A directory or file the confined command may also write (repeatable; besides the directory it starts in and a private /tmp)
    #[arg(long = "rw", value_name = "PATH")]
    pub rw: Vec<std::path::PathBuf>,
    /// The command and its arguments (after `--`)
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Names the API when `--api-url` does not.
pub use crate::settings::API_URL_ENV;

/// The helper options on a helper line this program's `configure` wrote
/// (`/path/git-credential-githosted --api-url X --permission auto`); `None`
/// for any other helper.
pub fn options_of_line(line: &str) -> Option<HelperOptions> {
    let words = shlex::split(line)?;
    let (_, rest) = words.split_first()?;
    if !crate::cmd::configure::is_ours(line) {
        return None;
    }
    let args = std::iter::once("x")
        .chain(rest.iter().map(String::as_str))
        .chain(std::iter::once("get"));
    let cli = Cli::try_parse_from(args).ok()?;
    match &cli.command {
        Command::Get(later) => Some(cli.options.and(later)),
        _ => None,
    }
}

/// The options `configure` wrote into git's config, when it configured
/// exactly one API.
pub fn configured(helper_lines: impl IntoIterator<Item = String>) -> Option<HelperOptions> {
    let found = configured_apis(helper_lines);
    match found.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    }
}

/// Every API `configure` wrote a helper line for, once each (the first line
/// for an API wins), in config order.
pub fn configured_apis(helper_lines: impl IntoIterator<Item = String>) -> Vec<HelperOptions> {
    let mut found: Vec<HelperOptions> = Vec::new();
    for options in helper_lines.into_iter().filter_map(|l| options_of_line(&l)) {
        let key = api_key(options.api.api_url.as_deref());
        if !found
            .iter()
            .any(|o| api_key(o.api.api_url.as_deref()) == key)
        {
            found.push(options);
        }
    }
    found
}

/// What decides which API a command typed by a person acts on.
#[derive(Debug, Default, Clone)]
pub struct ApiFacts {
    /// `--api-url`, else `GITHOSTED_API_URL`.
    pub given: Option<String>,
    /// This clone's remote URLs, `origin` first (empty outside a clone).
    pub remotes: Vec<String>,
    /// The helper options on the lines `configure` wrote, one per API.
    pub configured: Vec<HelperOptions>,
    /// Whether `GITHOSTED_BROKER` names a broker (then a configured broker is not merged).
    pub broker_env: bool,
}

/// Which API a command acts on.
#[derive(Debug, Clone)]
pub enum ApiChoice {
    /// This one: the options to run with (`api_url: None` is the public API).
    One(Box<HelperOptions>),
    /// Several could be meant, none decides: their URLs, for the person to pick.
    Several(Vec<String>),
}

/// The API a person's command acts on (one pure decision):
/// `--api-url`/`GITHOSTED_API_URL` when given; else, inside a clone, the API
/// whose git hosts hold the first githosted remote (`origin` first); else the
/// only configured API; else (nothing configured) the only API with a stored
/// token (`stored`: keychain accounts, `HOST[:PORT][/WS]`, asked only then);
/// else the public API when nothing names any. Several candidates: `Several`,
/// never a silent default. The chosen API's configured line supplies its
/// broker, unless one is named.
pub fn choose_api(
    options: &HelperOptions,
    facts: &ApiFacts,
    stored: impl FnOnce() -> Vec<String>,
) -> ApiChoice {
    let configured_for = |key: &str| {
        facts
            .configured
            .iter()
            .find(|o| api_key(o.api.api_url.as_deref()) == key)
    };
    let with = |api_url: Option<String>| {
        let key = api_key(api_url.as_deref());
        let mut chosen = options.clone();
        chosen.api.api_url = api_url;
        // A job configured for a broker keeps using it (`token` in CI).
        if let Some(c) = configured_for(&key)
            && c.broker.broker.is_some()
            && chosen.broker.broker.is_none()
            && !facts.broker_env
        {
            chosen.broker = c.broker.and(&chosen.broker);
        }
        ApiChoice::One(Box::new(chosen))
    };
    let given = options.api.api_url.clone().or_else(|| facts.given.clone());
    if given.is_some() {
        return with(given);
    }
    // Inside a clone: the API whose hosts serve its githosted remote.
    let mut candidates: Vec<Option<String>> = facts
        .configured
        .iter()
        .map(|o| o.api.api_url.clone())
        .collect();
    if !candidates.iter().any(Option::is_none) {
        candidates.push(None);
    }
    for remote in &facts.remotes {
        let serving: Vec<&Option<String>> = candidates
            .iter()
            .filter(|api| serves(api.as_deref(), remote))
            .collect();
        if let Some(first) = serving.first() {
            return with((*first).clone());
        }
    }
    match facts.configured.as_slice() {
        [one] => return with(one.api.api_url.clone()),
        [] => {}
        several => {
            // The person picks; those holding a token are named first.
            let with_token: Vec<String> = stored_hosts(stored())
                .iter()
                .map(|h| api_key(Some(&url_of_api_host(h))))
                .collect();
            let mut apis: Vec<String> = several
                .iter()
                .map(|o| api_key(o.api.api_url.as_deref()))
                .collect();
            apis.sort_by_key(|api| !with_token.contains(api));
            return ApiChoice::Several(apis);
        }
    }
    let hosts = stored_hosts(stored());
    match hosts.as_slice() {
        [] => with(None),
        [host] => {
            let url = url_of_api_host(host);
            match api_key(Some(&url)) == api_key(None) {
                true => with(None),
                false => with(Some(url)),
            }
        }
        several => ApiChoice::Several(several.iter().map(|h| url_of_api_host(h)).collect()),
    }
}

/// The API hosts of keychain accounts (`<api host>/<workspace>`), each once.
fn stored_hosts(accounts: Vec<String>) -> Vec<String> {
    let mut hosts: Vec<String> = accounts
        .into_iter()
        .map(|account| match account.split_once('/') {
            Some((host, _)) => host.to_owned(),
            None => account,
        })
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

/// The API's URL as one string to compare and show (`https://api.githosted.dev`).
pub fn api_key(api_url: Option<&str>) -> String {
    match crate::target::Service::new(api_url) {
        Ok(s) => s.api_url().as_str().trim_end_matches('/').to_owned(),
        Err(_) => api_url.unwrap_or_default().trim_end_matches('/').to_owned(),
    }
}

/// The API URL of a keychain account's host: http on loopback, else https.
fn url_of_api_host(host: &str) -> String {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    let loopback = name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match loopback {
        true => format!("http://{host}"),
        false => format!("https://{host}"),
    }
}

/// Whether the API at `api_url` holds the repository at the remote URL `remote`.
fn serves(api_url: Option<&str>, remote: &str) -> bool {
    let Ok(service) = crate::target::Service::new(api_url) else {
        return false;
    };
    let Ok(url) = url::Url::parse(remote.trim()) else {
        return false;
    };
    let host = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        _ => return false,
    };
    matches!(
        service.resolve(Some(url.scheme()), Some(&host), Some(url.path())),
        crate::target::Resolution::Repo(_)
    )
}

/// The one line a command that needs one API says when several could be meant:
/// the person's own command line (`args`, without the program) again, with
/// `--api-url` after `command`, for the first of `apis`.
pub fn several_apis(command: &str, args: &[String], apis: &[String]) -> String {
    let first = apis.first().map_or("URL", String::as_str);
    format!(
        "several githosted APIs are configured or hold tokens ({}): say which one: {}",
        apis.join(", "),
        with_api_url(command, args, first)
    )
}

/// `git-credential-githosted ARGS` with `--api-url API` right after `command`
/// (so before a `--`), quoted for a POSIX shell. What follows `--` (the
/// command `exec` runs, whose arguments nobody checked for secrets) is shown
/// as `COMMAND…`, never repeated.
fn with_api_url(command: &str, args: &[String], api: &str) -> String {
    let all = args.len();
    let args = match args.iter().position(|a| a == "--") {
        Some(end) => &args[..end],
        None => args,
    };
    let at = args
        .iter()
        .position(|a| a == command)
        .map_or(args.len(), |i| i.saturating_add(1));
    let mut line: Vec<&str> = vec!["git-credential-githosted"];
    line.extend(args.iter().take(at).map(String::as_str));
    if at == 0 {
        line.push(command);
    }
    line.extend(["--api-url", api]);
    line.extend(args.iter().skip(at).map(String::as_str));
    let quoted = shlex::try_join(line.iter().copied()).unwrap_or_else(|_| line.join(" "));
    match args.len() < all {
        true => format!("{quoted} -- COMMAND…"),
        false => quoted,
    }
}

impl HelperOptions {
    /// These options, with the API named by `GITHOSTED_API_URL`, then by
    /// `configured`, when none was given.
    pub fn or_defaults(
        mut self,
        configured: impl FnOnce() -> Option<HelperOptions>,
    ) -> HelperOptions {
        let from_env = crate::settings::env_api_url();
        let wants_api = self.api.api_url.is_none() && from_env.is_none();
        // A job configured for a broker keeps using it (`token` in CI).
        let wants_broker = self.broker.broker.is_none() && !crate::settings::env_broker_set();
        let configured = if wants_api || wants_broker {
            configured()
        } else {
            None
        };
        if self.api.api_url.is_none() {
            self.api.api_url =
                from_env.or_else(|| configured.as_ref().and_then(|o| o.api.api_url.clone()));
        }
        if wants_broker && let Some(c) = configured.filter(|c| c.broker.broker.is_some()) {
            self.broker = c.broker.and(&self.broker);
        }
        self
    }
}

/// The command line of this process, parsed; a mistake is said with a hint
/// where one helps (a command after `exec` without `--`, an option typo) and
/// ends the process with status 2.
pub fn parse() -> Cli {
    use clap::CommandFactory;
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let error = match Cli::try_parse_from(&args) {
        Ok(cli) => return cli,
        Err(error) => error,
    };
    let hint = match error.kind() {
        ErrorKind::UnknownArgument => {
            let typed = match error.get(ContextKind::InvalidArg) {
                Some(ContextValue::String(arg)) => arg.clone(),
                _ => String::new(),
            };
            let words: Vec<String> = args
                .iter()
                .skip(1)
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            hint_for_unknown(&Cli::command(), &words, &typed)
        }
        _ => None,
    };
    let _ = error.print();
    if let Some(hint) = hint {
        crate::ui::say(hint);
    }
    std::process::exit(error.exit_code())
}

/// A hint for an argument clap did not expect: `exec` without `--` before
/// the command, or the closest option of the command typed.
fn hint_for_unknown(cli: &clap::Command, words: &[String], typed: &str) -> Option<String> {
    let subcommand = words
        .iter()
        .find_map(|w| cli.find_subcommand(w).map(|c| (w.as_str(), c)));
    if let Some(("exec", _)) = subcommand
        && !words.iter().any(|w| w == "--")
        && !typed.starts_with('-')
    {
        return Some(format!(
            "`exec` runs the command given after `--`: git-credential-githosted exec --repo WS/REPO -- {} …",
            crate::ui::printable(typed, 60)
        ));
    }
    let flag = typed.split_once('=').map_or(typed, |(flag, _)| flag);
    let name = flag.strip_prefix("--")?;
    let options: Vec<&str> = subcommand
        .map_or(cli, |(_, c)| c)
        .get_arguments()
        .chain(cli.get_arguments())
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| a.get_long())
        .collect();
    let closest = crate::ui::closest(name, options)?;
    Some(format!(
        "did you mean `--{closest}`? (see `git-credential-githosted {}--help`)",
        subcommand.map(|(w, _)| format!("{w} ")).unwrap_or_default()
    ))
}

/// The exit status for a command that failed with `error`: 130 after Ctrl-C
/// at a prompt; for `exec`, 127 when the command does not exist and 126 when
/// it cannot be run (as a shell says); else 1.
pub fn exit_status(error: &anyhow::Error, runs_a_command: bool) -> u8 {
    if error
        .chain()
        .any(|cause| cause.downcast_ref::<crate::ui::Interrupted>().is_some())
    {
        return crate::ui::INTERRUPTED_STATUS;
    }
    let spawn_failed = error
        .chain()
        .any(|cause| cause.to_string().starts_with("cannot run `"));
    let io_kind = error
        .chain()
        .find_map(|cause| cause.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    match (runs_a_command && spawn_failed, io_kind) {
        (true, Some(std::io::ErrorKind::NotFound)) => 127,
        (true, Some(std::io::ErrorKind::PermissionDenied)) => 126,
        _ => 1,
    }
}

/// The line for a command nobody knows, with the closest one when there is one.
pub fn unknown_command(word: &str) -> String {
    use clap::CommandFactory;
    let cli = Cli::command();
    let closest = crate::ui::closest(
        word,
        cli.get_subcommands()
            .filter(|c| !c.is_hide_set())
            .map(|c| c.get_name()),
    );
    let word = crate::ui::printable(word, 60);
    match closest {
        Some(name) => format!(
            "unknown command `{word}`; did you mean `{name}`? (see `git-credential-githosted --help`)"
        ),
        None => format!("unknown command `{word}`: see `git-credential-githosted --help`"),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// With several APIs, the line to type is the person's own command with
    /// `--api-url` for the first API (before `exec`'s `--`), quoted.
    #[test]
    fn several_apis_repeats_the_command_with_an_api() {
        let args = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let apis = args(&["http://127.0.0.1:8787", "https://api.githosted.dev"]);
        let line = several_apis(
            "exec",
            &args(&[
                "-v",
                "exec",
                "--repo",
                "acme/app",
                "--",
                "./run",
                "gw_secret",
            ]),
            &apis,
        );
        assert!(
            line.ends_with(
                "say which one: git-credential-githosted -v exec --api-url http://127.0.0.1:8787 --repo acme/app -- COMMAND…"
            ),
            "{line}"
        );
        assert!(
            line.contains("(http://127.0.0.1:8787, https://api.githosted.dev)"),
            "{line}"
        );
        let line = several_apis("status", &[], &apis);
        assert!(
            line.ends_with("git-credential-githosted status --api-url http://127.0.0.1:8787"),
            "{line}"
        );
    }

    /// The front reads `get`'s options by [`flags::GET_VALUES`]: each is an
    /// option of clap's `get` that takes a value, and every option of `get`
    /// that takes a value is there (the others send the line to the core).
    #[test]
    fn the_fronts_options_are_gets_own() {
        let cli = Cli::command();
        let get = cli.find_subcommand("get").unwrap();
        let mut taking_values: Vec<&str> = get
            .get_arguments()
            .filter(|a| a.get_action().takes_values() && !a.is_hide_set())
            .filter_map(|a| a.get_long())
            .collect();
        taking_values.sort_unstable();
        let mut front: Vec<&str> = flags::GET_VALUES.to_vec();
        front.sort_unstable();
        assert_eq!(taking_values, front);
        // The same options before the command word (git's place for them).
        for name in flags::GET_VALUES {
            assert!(
                cli.get_arguments().any(|a| a.get_long() == Some(name)),
                "--{name} before the command word"
            );
        }
    }

    #[test]
    fn unknown_commands_get_the_closest_one() {
        for (typed, meant) in [
            ("statsu", "status"),
            ("doctr", "doctor"),
            ("loginn", "login"),
        ] {
            let line = unknown_command(typed);
            assert!(line.contains(&format!("did you mean `{meant}`")), "{line}");
        }
        assert!(!unknown_command("frobnicate").contains("did you mean"));
    }

    #[test]
    fn configure_wrote_options_are_read_back() {
        let line = "/home/a/.local/bin/git-credential-githosted --api-url http://127.0.0.1:9 --permission auto";
        let o = options_of_line(line).unwrap();
        assert_eq!(o.api.api_url.as_deref(), Some("http://127.0.0.1:9"));
        assert_eq!(o.permission, Some(PermissionArg::Auto));
        assert!(options_of_line("store").is_none());
        assert!(options_of_line("!f() { echo; }; f").is_none());
        let one = configured(vec![line.to_owned(), "cache".into(), line.to_owned()]);
        assert_eq!(
            one.unwrap().api.api_url.as_deref(),
            Some("http://127.0.0.1:9")
        );
        let two = configured(vec![
            line.to_owned(),
            "githosted --api-url https://api.corp.example".into(),
        ]);
        assert!(two.is_none(), "two APIs: no default");
    }

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn options_before_and_after_the_operation_combine() {
        let cli = Cli::parse_from([
            "x",
            "--api-url",
            "http://127.0.0.1:1",
            "--ttl",
            "60",
            "get",
            "--ttl",
            "90",
        ]);
        let Command::Get(later) = &cli.command else {
            panic!("{cli:?}")
        };
        let both = cli.options.and(later);
        assert_eq!(both.api.api_url.as_deref(), Some("http://127.0.0.1:1"));
        assert_eq!(both.ttl, Some(90));
    }

    #[test]
    fn command_only_options_belong_to_their_command() {
        assert!(Cli::try_parse_from(["x", "get", "--remove"]).is_err());
        assert!(Cli::try_parse_from(["x", "--repo", "a/b", "status"]).is_err());
        assert!(Cli::try_parse_from(["x", "login", "--repo", "a/b"]).is_err());
        assert!(Cli::try_parse_from(["x", "configure", "--remove"]).is_ok());
        assert!(Cli::try_parse_from(["x", "token", "--repo", "a/b"]).is_ok());
    }
}
