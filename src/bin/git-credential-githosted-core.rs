//! `git-credential-githosted-core`: the core, the full program behind the
//! front (`src/bin/git-credential-githosted.rs`, the program git runs, which
//! hands it every command it does not answer itself). It parses the command
//! line, dispatches to the command's module, and turns failures into one line
//! on stderr and an exit code.

use std::io;
use std::process::ExitCode;

use git_credential_githosted::cli;
use git_credential_githosted::cli::{ApiChoice, ApiFacts, ApiOptions, Cli, Command, HelperOptions};
use git_credential_githosted::cmd::configure::{self, Scope};
use git_credential_githosted::cmd::{doctor, helper, login, scoped, status};
use git_credential_githosted::settings::{self, DEFAULT_TTL_SECS, Settings};
use git_credential_githosted::ui::{self, is_broken_pipe, one_line};
use git_credential_githosted::{agent, harden, keychain};
use tracing::Level;
use tracing_subscriber::filter::Targets;

/// Freed memory holds no token (see `wipe`).
#[global_allocator]
static ALLOC: git_credential_githosted::wipe::ZeroingAlloc =
    git_credential_githosted::wipe::ZeroingAlloc;

fn main() -> ExitCode {
    // Before anything reads a token or starts a thread.
    harden::process();
    // While no other thread exists (checked): the environment can change.
    settings::take_env_token();
    if let Some(code) = refuse_token_arguments() {
        return code;
    }
    let cli = cli::parse();
    init_tracing(verbosity(&cli));
    let runs_a_command = matches!(cli.command, Command::Exec(_) | Command::SandboxInit { .. });
    match run(cli) {
        Ok(code) => code,
        // Whoever read our output stopped (`status | head -1`): nothing to say.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            git_credential_githosted::say!("{}", one_line(&e));
            ExitCode::from(cli::exit_status(&e, runs_a_command))
        }
    }
}

fn verbosity(cli: &Cli) -> u8 {
    let own = match &cli.command {
        Command::Get(o) | Command::Store(o) | Command::Erase(o) => o.api.verbose,
        Command::Login(a) => a.api.verbose,
        Command::Logout(a) => a.api.verbose,
        Command::Configure(a) => a.helper.api.verbose,
        Command::Status(a) | Command::Doctor(a) => a.api.verbose,
        Command::Token(a) => a.helper.api.verbose,
        Command::Exec(a) => a.helper.api.verbose,
        _ => 0,
    };
    cli.options.api.verbose.saturating_add(own)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let top = &cli.options;
    // Options that make tokens mean nothing to commands that make none.
    let no_token_options = |command: &str| -> anyhow::Result<()> {
        if top.names_token_options() {
            anyhow::bail!(
                "--permission, --ttl, --min-ttl and --no-agent do not apply to `{command}`: leave them out"
            );
        }
        Ok(())
    };
    // git's own operations get their options from the helper line; a person's
    // commands act on the API `cli::choose_api` picks (the clone's remote, the
    // configured API, the API with a stored token).
    let for_git = |later: &HelperOptions| top.and(later).or_defaults(|| None);
    let choose = |later: &HelperOptions| {
        let options = top.and(later);
        let facts = api_facts(&options);
        cli::choose_api(&options, &facts, stored_api_accounts)
    };
    let for_person = |command: &str, later: &HelperOptions| match choose(later) {
        ApiChoice::One(options) => Ok(*options),
        ApiChoice::Several(apis) => {
            let args: Vec<String> = std::env::args_os()
                .skip(1)
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            Err(anyhow::anyhow!(cli::several_apis(command, &args, &apis)))
        }
    };
    // `status` and `doctor` cover every API that could be meant.
    let for_each = |later: &ApiOptions| -> Vec<HelperOptions> {
        let options = HelperOptions {
            api: top.api.and(later),
            ..HelperOptions::default()
        };
        match choose(&options) {
            ApiChoice::One(options) => vec![*options],
            ApiChoice::Several(apis) => apis
                .into_iter()
                .filter_map(|url| {
                    let mut one = options.clone();
                    one.api.api_url = Some(url);
                    match choose(&one) {
                        ApiChoice::One(options) => Some(*options),
                        ApiChoice::Several(_) => None,
                    }
                })
                .collect(),
        }
    };
    let helper =
        |options: HelperOptions, default_ttl| Settings::new(&options.requested(), default_ttl);
    // `status` and `doctor`: the settings of every API they cover.
    let each = |later: &ApiOptions| -> anyhow::Result<Vec<Settings>> {
        Ok(for_each(later)
            .into_iter()
            .map(|o| helper(o, DEFAULT_TTL_SECS))
            .collect::<Result<Vec<_>, _>>()?)
    };
    let api = |command: &str, later: &ApiOptions| -> anyhow::Result<Settings> {
        let options = HelperOptions {
            api: top.api.and(later),
            ..HelperOptions::default()
        };
        let chosen = for_person(command, &options)?;
        Ok(Settings::new(&chosen.api.requested(), DEFAULT_TTL_SECS)?)
    };
    let ok = match &cli.command {
        Command::Get(o) => {
            let settings = helper(for_git(o), DEFAULT_TTL_SECS)?;
            helper::get(&settings, &mut io::stdin().lock(), &mut io::stdout().lock())?
        }
        Command::Store(_) => helper::store(&mut io::stdin().lock()).map(|()| true)?,
        Command::Erase(o) => {
            let settings = helper(for_git(o), DEFAULT_TTL_SECS)?;
            helper::erase(&settings, &mut io::stdin().lock()).map(|()| true)?
        }
        Command::Token(a) => {
            let settings = helper(for_person("token", &a.helper)?, DEFAULT_TTL_SECS)?;
            scoped::token(&settings, a.repo.as_deref(), &mut io::stdout().lock())?;
            true
        }
        Command::Exec(a) => {
            let settings = helper(for_person("exec", &a.helper)?, scoped::EXEC_TTL_SECS)?;
            let max_session = a.max_session.map(std::time::Duration::from_secs);
            return scoped::exec(
                &settings,
                &a.repos,
                &a.command,
                !a.no_isolate,
                &a.rw,
                max_session,
            );
        }
        Command::Configure(a) => {
            // Running it again keeps what it wrote before, unless told otherwise.
            // Several configured and none named: the public API, as `configure`
            // always did (`--remove` then takes out every API's lines).
            // The keychain does not choose what `configure` writes: a token
            // stored for some API is no reason to point git at it.
            let options = top.and(&a.helper);
            let facts = api_facts(&options);
            let given = match cli::choose_api(&options, &facts, Vec::new) {
                ApiChoice::One(options) => *options,
                ApiChoice::Several(_) => top.and(&a.helper).or_defaults(|| None),
            };
            let key = cli::api_key(given.api.api_url.as_deref());
            let before = cli::configured_apis(git_credential_githosted::git::helper_lines())
                .into_iter()
                .find(|o| cli::api_key(o.api.api_url.as_deref()) == key);
            let options = match before {
                Some(before) => before.and(&given),
                None => given,
            };
            let settings = helper(options, DEFAULT_TTL_SECS)?;
            let scope = if a.local { Scope::Local } else { Scope::Global };
            configure::run(&settings, &a.hosts, scope, a.remove)?;
            true
        }
        Command::Login(a) => {
            no_token_options("login")?;
            let settings = api("login", &a.api)?;
            let workspace = a.workspace.as_deref().or(top.workspace.as_deref());
            login::login(&settings, workspace, !a.no_verify)?;
            true
        }
        Command::Logout(a) => {
            no_token_options("logout")?;
            // With the broker configured for the API (a job's logout revokes through it).
            let later = HelperOptions {
                api: a.api.clone(),
                ..HelperOptions::default()
            };
            let settings = helper(for_person("logout", &later)?, DEFAULT_TTL_SECS)?;
            match a.all {
                true => login::logout_all(&settings)?,
                false => login::logout(
                    &settings,
                    a.workspace.as_deref().or(top.workspace.as_deref()),
                )?,
            }
            true
        }
        Command::Status(a) => {
            no_token_options("status")?;
            let output = status::Output {
                json: a.json,
                color: a.color.enabled(),
            };
            status::run(&each(&a.api)?, output, &mut io::stdout().lock())?;
            true
        }
        Command::Doctor(a) => {
            no_token_options("doctor")?;
            let output = doctor::Output {
                json: a.json,
                color: a.color.enabled(),
            };
            return doctor::run_each(&each(&a.api)?, output, &mut io::stdout().lock());
        }
        // The broker is its own program: this process becomes it.
        Command::Broker { args } => return Ok(broker_program(args)),
        Command::Completions { shell } => {
            cli::completions(*shell, &mut io::stdout().lock());
            true
        }
        Command::Man => {
            cli::man_page(&mut io::stdout().lock())?;
            true
        }
        #[cfg(unix)]
        Command::SandboxInit { command } => {
            return git_credential_githosted::sandbox::init(command);
        }
        #[cfg(not(unix))]
        Command::SandboxInit { .. } => anyhow::bail!("no sandbox on this platform"),
        #[cfg(unix)]
        Command::Agent { dir } => {
            let dir = match dir {
                Some(dir) => dir.clone(),
                None => agent::dir()?,
            };
            agent::server::run(&dir, agent::server::idle_from_env())?;
            true
        }
        #[cfg(windows)]
        Command::Agent { dir } => {
            if dir.is_some() {
                anyhow::bail!(
                    "--dir is for Unix: on Windows the agent serves a pipe of its user's"
                );
            }
            agent::pipe::run(agent::server::idle_from_env())?;
            true
        }
        Command::Other(words) => {
            // Git may invent operations: those stay silent. A person typing gets told.
            if settings::stdin_is_terminal() {
                let word = words.first().map(String::as_str).unwrap_or_default();
                git_credential_githosted::say!("{}", cli::unknown_command(word));
                return Ok(ExitCode::from(2));
            }
            tracing::debug!(operation = ?words.first(), "unknown operation: ignored");
            true
        }
    };
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The CI token broker's program, beside this one.
const BROKER: &str = "githosted-broker";

/// Runs `githosted-broker ARGS…` from beside this program: on Unix by `exec`
/// (the same process: pid, signals, limits, stdout, stderr and exit status), on
/// Windows as a child whose status is passed on. `GITHOSTED_TOKEN`, taken out of
/// this process's environment at start, is put back for it: the same process,
/// started as it was.
fn broker_program(args: &[std::ffi::OsString]) -> ExitCode {
    let program = std::env::current_exe()
        .map(|exe| exe.with_file_name(format!("{BROKER}{}", std::env::consts::EXE_SUFFIX)))
        .unwrap_or_else(|_| std::path::PathBuf::from(BROKER));
    let mut command = std::process::Command::new(&program);
    command.args(args);
    if let Some(token) = keychain::env_token() {
        command.env(keychain::ENV_TOKEN, token.expose());
    }
    let missing = |e: io::Error| {
        git_credential_githosted::say!(
            "cannot run {} ({e}): the broker is its own program; install it with ./install, or build it with `cargo build --release -p githosted-broker` and put it beside {}",
            program.display(),
            std::env::current_exe()
                .map_or_else(|_| "this program".to_owned(), |p| p.display().to_string())
        );
        ExitCode::FAILURE
    };
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        missing(command.exec())
    }
    #[cfg(not(unix))]
    match command.status() {
        Ok(status) => ExitCode::from(u8::try_from(status.code().unwrap_or(1)).unwrap_or(1)),
        Err(e) => missing(e),
    }
}

/// What `cli::choose_api` decides from: the API given, this clone's remotes
/// (`origin` first) and the APIs `configure` wrote lines for. Nothing is
/// read when `--api-url` or `GITHOSTED_API_URL` names the API.
fn api_facts(options: &HelperOptions) -> ApiFacts {
    let given = options.api.api_url.clone().or_else(settings::env_api_url);
    let broker_env = settings::env_broker_set();
    let lines = git_credential_githosted::git::helper_lines();
    let configured = cli::configured_apis(lines);
    let remotes = match given {
        Some(_) => Vec::new(),
        None => {
            let listing = git_credential_githosted::git::output(&[
                "config",
                "--get-regexp",
                r"^remote\..*\.url$",
            ])
            .unwrap_or_default();
            let mut remotes: Vec<(bool, String)> = listing
                .lines()
                .filter_map(|line| line.split_once(' '))
                .map(|(key, url)| (key != "remote.origin.url", url.trim().to_owned()))
                .collect();
            // `origin` first, the others in config order.
            remotes.sort_by_key(|(not_origin, _)| *not_origin);
            remotes.into_iter().map(|(_, url)| url).collect()
        }
    };
    ApiFacts {
        given,
        remotes,
        configured,
        broker_env,
    }
}

/// The keychain accounts that hold a token (none when there is no keychain).
fn stored_api_accounts() -> Vec<String> {
    keychain::list()
        .map(|entries| entries.into_iter().map(|(account, _)| account).collect())
        .unwrap_or_default()
}

/// `-v` shows info, `-vv` debug; `GITHOSTED_LOG` takes `LEVEL` or
/// `target=LEVEL,…`. Without either, no subscriber is installed at all (a warm
/// `get` should not pay for one). Tokens appear in logs only as fingerprints.
fn init_tracing(verbose: u8) {
    const CRATE: &str = "git_credential_githosted";
    let filter: Option<Targets> = match verbose {
        0 => git_credential_githosted::settings::env_log().and_then(|v| {
            match v.trim().parse::<Level>() {
                // A bare level means this crate's events at that level.
                Ok(level) => Some(Targets::new().with_target(CRATE, level)),
                Err(_) => v.parse().ok(),
            }
        }),
        1 => Some(Targets::new().with_target(CRATE, Level::INFO)),
        _ => Some(Targets::new().with_target(CRATE, Level::DEBUG)),
    };
    let Some(filter) = filter else { return };
    ui::log_to_stderr(filter);
}

/// A token pasted as an argument is refused without being shown (clap would
/// repeat it in its error), whatever the command.
fn refuse_token_arguments() -> Option<ExitCode> {
    let args: Vec<_> = std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .collect();
    ui::pastes_a_token(args.iter().map(|a| a.as_os_str())).then(|| {
        git_credential_githosted::say!(
            "a token was given as an argument, where every user can see it (`ps`); tokens are read from stdin: printf %s \"$TOKEN\" | git-credential-githosted login"
        );
        ExitCode::from(2)
    })
}
