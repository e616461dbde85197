//! The `git-credential-githosted` binary: parse the command line, dispatch,
//! turn failures into one line on stderr and an exit code.

use std::io;
use std::process::ExitCode;

use clap::Parser;
use git_credential_githosted::cli::{Cli, Command, PermissionArg};
use git_credential_githosted::configure::{self, Scope};
use git_credential_githosted::settings::Settings;
use git_credential_githosted::{agent, doctor, helper, login, scoped, status};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.options.verbose);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("git-credential-githosted: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let o = &cli.options;
    let mut settings = Settings::new(
        o.api_url.as_deref(),
        o.permission.resolve(),
        o.ttl,
        o.min_ttl,
        o.no_agent,
        o.timeout,
    )?;
    settings.auto_permission = o.permission == PermissionArg::Auto;
    let ok = match cli.command {
        Command::Get => helper::get(&settings, &mut io::stdin().lock(), &mut io::stdout().lock()),
        Command::Store => helper::store(&mut io::stdin().lock()).map(|()| true),
        Command::Erase => helper::erase(&settings, &mut io::stdin().lock()).map(|()| true),
        Command::Status => status::run(&settings).map(|()| true),
        Command::Doctor => return doctor::run(&settings),
        Command::Token => scoped::token(&settings, &o.repos).map(|()| true),
        Command::Exec { command } => return scoped::exec(&settings, &o.repos, &command),
        Command::Agent => {
            let dir = agent::dir()?;
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

/// `-v` shows info, `-vv` debug; `GITHOSTED_LOG` takes a tracing filter. Tokens
/// appear in logs only as fingerprints.
fn init_tracing(verbose: u8) {
    let filter = match verbose {
        0 => EnvFilter::try_from_env("GITHOSTED_LOG").unwrap_or_else(|_| EnvFilter::new("warn")),
        1 => EnvFilter::new("git_credential_githosted=info"),
        _ => EnvFilter::new("git_credential_githosted=debug"),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_target(false)
        .without_time()
        .init();
}

/// An error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        line.push_str(": ");
        line.push_str(&cause.to_string());
    }
    git_credential_githosted::secret::printable(&line.replace(['\n', '\r'], " "), 1000)
}
