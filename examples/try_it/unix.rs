//! The example itself (Unix only; see the file above).

use githosted_testkit::server;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use git_credential_githosted::secret::Secret;
use server::{Server, TokenSpec};

pub fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("try_it: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let helper = build_helper()?;
    let server = Server::start();
    server.add_workspace("acme");
    server.add_repo("acme", "app");
    let parent = Secret::new(server.seed_token("acme", TokenSpec::workspace_write()));
    println!(
        "local githosted at {}, workspace token {parent}",
        server.base_url()
    );

    let home = tempfile::tempdir().map_err(|e| e.to_string())?;
    let url = server.base_url();
    let bin_dir = helper.parent().ok_or("helper has no directory")?;
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let command = |program: &Path| {
        let mut c = Command::new(program);
        c.env_clear()
            .env("PATH", &path)
            .env("HOME", home.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0");
        c
    };

    let configure = command(&helper)
        .args(["configure", "--api-url", &url])
        .status();
    check(configure, "git-credential-githosted configure")?;

    let clone_url = format!("{url}/acme/app.git");
    println!("$ GITHOSTED_TOKEN=<workspace token> git clone {clone_url}");
    let clone = command(Path::new("git"))
        .env("GITHOSTED_TOKEN", parent.expose())
        .args(["clone", &clone_url])
        .arg(home.path().join("app"))
        .status();
    check(clone, "git clone")?;

    println!("\nwhat the server saw:");
    for e in server.exchanges() {
        println!(
            "  ExchangeToken: workspace token → {} for {:?}, expires in {}s, subject {:?}",
            e.minted.prefix,
            e.minted.repo_allowlist,
            e.minted.expires_at.unwrap_or_default() - now(),
            e.subject
        );
    }
    for r in server.git_requests() {
        let token = r
            .token
            .as_ref()
            .map(|t| {
                format!(
                    "{}_ token for {:?} ({:?})",
                    t.prefix, t.repo_allowlist, t.permission
                )
            })
            .unwrap_or_else(|| "no token".into());
        println!(
            "  {} {:<45} {:?} {} → {}",
            r.method, r.path, r.auth_scheme, token, r.status
        );
    }
    let config = std::fs::read_to_string(home.path().join(".gitconfig")).unwrap_or_default();
    println!("\n~/.gitconfig written by `configure`:\n{config}");
    Ok(())
}

/// Builds the helper binary with the cargo that runs this example.
fn build_helper() -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        // Both programs: the one git runs and the core it hands misses to.
        .args(["build", "--quiet", "--locked", "--bins"])
        .status();
    check(status, "cargo build")?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // target/debug/examples/try_it → target/debug/git-credential-githosted
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot find the target directory")?;
    Ok(dir.join("git-credential-githosted"))
}

fn check(status: std::io::Result<std::process::ExitStatus>, what: &str) -> Result<(), String> {
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("{what} failed ({s})")),
        Err(e) => Err(format!("cannot run {what}: {e}")),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}
