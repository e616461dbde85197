//! The `githosted-broker` binary: parse the command line, serve or check,
//! turn failures into one line on stderr and an exit code.

use std::io;
use std::process::ExitCode;

use clap::Parser;
use git_credential_githosted::ui::{self, is_broken_pipe, one_line};
use git_credential_githosted::{harden, settings, token::Permission};
use githosted_broker::cli::{BrokerArgs, BrokerCommand, BrokerPermission};
use githosted_broker::cmd::broker;
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
    let args = BrokerArgs::parse();
    init_tracing();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            git_credential_githosted::say!("{}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn run(a: &BrokerArgs) -> anyhow::Result<bool> {
    if let Some(BrokerCommand::Check {
        policy,
        claims,
        repo,
        permission,
        workspace,
    }) = &a.check
    {
        let permission = match permission {
            BrokerPermission::Read => Permission::Read,
            BrokerPermission::Write => Permission::Write,
        };
        return broker::check(
            policy,
            claims.as_deref(),
            repo.as_deref(),
            permission,
            workspace.as_deref(),
            &mut io::stdout().lock(),
        );
    }
    let Some(policy) = a.policy.as_deref() else {
        anyhow::bail!(
            "the broker needs a policy: githosted-broker --policy FILE (see `githosted-broker check --help`)"
        );
    };
    let api_url = a.api_url.clone().or_else(settings::env_api_url);
    broker::serve(&broker::Serve {
        listen: &a.listen,
        policy,
        audience: &a.audience,
        api_url: api_url.as_deref(),
        token_file: a.token_file.as_deref(),
        workspace: a.workspace.as_deref(),
        behind_proxy: a.behind_proxy,
        tls: a.tls_cert.as_deref().zip(a.tls_key.as_deref()),
    })?;
    Ok(true)
}

/// `GITHOSTED_LOG` takes `LEVEL` (the broker's and the shared library's
/// events) or `target=LEVEL,…`; without it, no subscriber is installed.
fn init_tracing() {
    const CRATES: [&str; 2] = ["githosted_broker", "git_credential_githosted"];
    let Some(filter) = settings::env_log().and_then(|v| match v.trim().parse::<Level>() {
        Ok(level) => Some(
            CRATES
                .iter()
                .fold(Targets::new(), |t, c| t.with_target(*c, level)),
        ),
        Err(_) => v.parse().ok(),
    }) else {
        return;
    };
    ui::log_to_stderr(filter);
}

/// A token pasted as an argument is refused without being shown (clap would
/// repeat it in its error), as the helper's core does: the broker's own token
/// comes from --token-file, `GITHOSTED_TOKEN` or the keychain.
fn refuse_token_arguments() -> Option<ExitCode> {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    ui::pastes_a_token(args.iter().map(|a| a.as_os_str())).then(|| {
        git_credential_githosted::say!(
            "a token was given as an argument, where every user can see it (`ps`): mount it and pass --token-file PATH, or set GITHOSTED_TOKEN"
        );
        ExitCode::from(2)
    })
}
