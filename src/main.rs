//! The `git-credential-githosted` binary: parse the command line, dispatch,
//! turn failures into one line on stderr and an exit code.

use std::io;
use std::process::ExitCode;

use clap::Parser;
use git_credential_githosted::cli::{Cli, Command, PermissionArg};
use git_credential_githosted::configure::{self, Scope};
use git_credential_githosted::settings::{DEFAULT_TTL_SECS, Settings};
use git_credential_githosted::{agent, doctor, harden, helper, keychain, login, scoped, status};
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

/// Freed memory holds no token (see `wipe`).
#[global_allocator]
static ALLOC: git_credential_githosted::wipe::ZeroingAlloc =
    git_credential_githosted::wipe::ZeroingAlloc;

fn main() -> ExitCode {
    // Before anything reads a token or starts a thread.
    harden::process();
    // SAFETY: no other thread exists yet.
    unsafe { keychain::take_env_token() };
    let cli = Cli::parse();
    init_tracing(cli.options.verbose);
    match run(cli) {
        Ok(code) => code,
        // Whoever read our output stopped (`status | head -1`): nothing to say.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            git_credential_githosted::say!("{}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let o = &cli.options;
    let default_ttl = match cli.command {
        Command::Exec { .. } => scoped::EXEC_TTL_SECS,
        _ => DEFAULT_TTL_SECS,
    };
    let mut settings = Settings::new(
        o.api_url.as_deref(),
        o.permission.resolve(),
        o.ttl.unwrap_or(default_ttl),
        o.min_ttl,
        o.no_agent,
        o.timeout,
    )?;
    settings.auto_permission = o.permission == PermissionArg::Auto;
    let ok = match cli.command {
        Command::Get => helper::get(&settings, &mut io::stdin().lock(), &mut io::stdout().lock()),
        Command::Store => helper::store(&mut io::stdin().lock()).map(|()| true),
        Command::Erase => helper::erase(&settings, &mut io::stdin().lock()).map(|()| true),
        Command::Status => status::run(&settings, &mut io::stdout().lock()).map(|()| true),
        Command::Doctor => return doctor::run(&settings, &mut io::stdout().lock()),
        Command::Token => {
            scoped::token(&settings, &o.repos, &mut io::stdout().lock()).map(|()| true)
        }
        Command::Exec {
            no_isolate,
            command,
        } => return scoped::exec(&settings, &o.repos, &command, !no_isolate),
        #[cfg(unix)]
        Command::SandboxInit { command } => {
            return git_credential_githosted::sandbox::init(&command);
        }
        #[cfg(not(unix))]
        Command::SandboxInit { .. } => anyhow::bail!("no sandbox on this platform"),
        Command::Agent { dir } => {
            let dir = match dir {
                Some(dir) => dir,
                None => agent::dir()?,
            };
            agent::server::run(&dir, agent::server::idle_from_env()).map(|()| true)
        }
        Command::Login => {
            login::login(&settings, o.workspace.as_deref(), !o.no_verify).map(|()| true)
        }
        Command::Logout => login::logout(&settings, o.workspace.as_deref()).map(|()| true),
        Command::Configure => {
            let scope = if o.local { Scope::Local } else { Scope::Global };
            configure::run(&settings, &o.hosts, scope, o.remove).map(|()| true)
        }
        Command::Other(words) => {
            tracing::debug!(operation = ?words.first(), "unknown operation: ignored");
            Ok(true)
        }
    }?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `-v` shows info, `-vv` debug; `GITHOSTED_LOG` takes `LEVEL` or
/// `target=LEVEL,…`. Without either, no subscriber is installed at all (a warm
/// `get` should not pay for one). Tokens appear in logs only as fingerprints.
fn init_tracing(verbose: u8) {
    const CRATE: &str = "git_credential_githosted";
    let filter: Option<Targets> = match verbose {
        0 => std::env::var("GITHOSTED_LOG")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .and_then(|v| match v.trim().parse::<Level>() {
                // A bare level means this crate's events at that level.
                Ok(level) => Some(Targets::new().with_target(CRATE, level)),
                Err(_) => v.parse().ok(),
            }),
        1 => Some(Targets::new().with_target(CRATE, Level::INFO)),
        _ => Some(Targets::new().with_target(CRATE, Level::DEBUG)),
    };
    let Some(filter) = filter else { return };
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(io::stderr)
                .with_target(false)
                .without_time(),
        )
        .with(filter)
        .init();
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// An error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        line.push_str(": ");
        line.push_str(&cause.to_string());
    }
    git_credential_githosted::ui::printable(&line.replace(['\n', '\r'], " "), 1000)
}
