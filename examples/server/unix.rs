//! The example itself (Unix only; see the file above).

use std::path::PathBuf;
use std::process::ExitCode;

use githosted_testkit::server::{Server, TokenSpec};

const USAGE: &str = "usage: cargo run --example server [-- PORT [--state DIR]]";

pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut port = None;
    let mut state = None;
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        match (arg.as_str(), args.get(i + 1)) {
            ("--state", Some(dir)) => state = Some(PathBuf::from(dir)),
            (arg, _) if port.is_none() && arg.parse::<u16>().is_ok() => {
                port = arg.parse::<u16>().ok();
                i += 1;
                continue;
            }
            _ => {
                eprintln!("server: {USAGE} (PORT is a port number, e.g. 8787)");
                return ExitCode::from(2);
            }
        }
        i += 2;
    }
    // On a fixed port the state lasts (the helper's configuration names the
    // port); on a random one it would be for a URL nobody uses again.
    let state = state.or_else(|| port.map(default_state));
    let started = match &state {
        Some(dir) => Server::start_with_state(port.unwrap_or(0), dir),
        None => Ok(Server::start()),
    };
    let server = match started {
        Ok(server) => server,
        Err(e) => {
            eprintln!("server: {e}");
            return ExitCode::FAILURE;
        }
    };
    server.add_workspace("acme");
    for repo in ["app", "lib"] {
        if !server.repo_path("acme", repo).exists() {
            server.add_repo("acme", repo);
        }
    }
    let token = server.seed_token("acme", TokenSpec::workspace_write());
    let url = server.base_url();
    println!("A local githosted API at {url} (workspace acme, repos app and lib).");
    if let Some(dir) = &state {
        println!(
            "Its workspaces, repos and tokens are kept in {} and survive a restart (delete it to start afresh).",
            dir.display()
        );
    }
    println!();
    println!("A workspace token for acme (a test token of this server, nothing else):");
    println!("  {token}");
    println!();
    println!("Try it:");
    println!("  git-credential-githosted configure --api-url {url}");
    println!("  git-credential-githosted login --api-url {url}      # paste the token above");
    println!("  git clone {url}/acme/app.git");
    println!("  git-credential-githosted status");
    println!();
    println!(
        "Ctrl-C stops it; then `git-credential-githosted configure --remove --api-url {url}` undoes the configure."
    );
    loop {
        std::thread::park();
    }
}

/// `<target>/githosted-local-server-PORT`, beside the build (this program is
/// `<target>/<profile>/examples/server`): gone with `cargo clean`, never in
/// the checkout or the home directory.
fn default_state(port: u16) -> PathBuf {
    let name = format!("githosted-local-server-{port}");
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join(&name)))
        .unwrap_or_else(|| std::env::temp_dir().join(name))
}
