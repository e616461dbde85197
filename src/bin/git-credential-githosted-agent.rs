//! `git-credential-githosted-agent`: the per-user agent, as its own program.
//!
//! The helper starts it (`agent --dir DIR`; on Windows `agent`, serving a
//! per-user named pipe) the first time a token is minted;
//! it lives in memory for hours, so it holds only what it runs: the cache, the
//! socket and the API client — no command line parser, keychain, D-Bus, log
//! formatting or CI broker. Smaller resident memory, quicker start (README,
//! Performance). `git-credential-githosted-core agent` runs the same code.

use std::path::PathBuf;
use std::process::ExitCode;

use git_credential_githosted::wipe::ZeroingAlloc;

/// Freed memory holds no token (see `wipe`).
#[global_allocator]
static ALLOC: ZeroingAlloc = ZeroingAlloc;

const USAGE: &str = "usage: git-credential-githosted-agent [agent] [--dir DIR] (the helper starts it; see `git-credential-githosted status`)";

fn main() -> ExitCode {
    git_credential_githosted::harden::process();
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if args.first().is_some_and(|a| a == "agent") {
        args.remove(0);
    }
    let dir = match args.as_slice() {
        [] => None,
        [flag, dir] if flag == "--dir" => Some(PathBuf::from(dir)),
        _ => {
            git_credential_githosted::say!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            git_credential_githosted::say!("agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(unix)]
fn run(dir: Option<PathBuf>) -> anyhow::Result<()> {
    use git_credential_githosted::agent;
    let dir = match dir {
        Some(dir) => dir,
        None => agent::dir()?,
    };
    agent::server::run(&dir, agent::server::idle_from_env())
}

#[cfg(windows)]
fn run(dir: Option<PathBuf>) -> anyhow::Result<()> {
    use git_credential_githosted::agent;
    if dir.is_some() {
        anyhow::bail!("--dir is for Unix: on Windows the agent serves a pipe of its user's");
    }
    agent::pipe::run(agent::server::idle_from_env())
}
