//! The example itself (Unix only; see the file above).

use std::process::ExitCode;

use githosted_testkit::server::{Server, TokenSpec};

pub fn main() -> ExitCode {
    let port = std::env::args().nth(1).map(|p| p.parse::<u16>());
    let server = match port {
        None => Server::start(),
        Some(Ok(port)) => Server::start_on(port),
        Some(Err(_)) => {
            eprintln!("server: the argument is a port number, e.g. 8080");
            return ExitCode::from(2);
        }
    };
    server.add_workspace("acme");
    server.add_repo("acme", "app");
    server.add_repo("acme", "lib");
    let token = server.seed_token("acme", TokenSpec::workspace_write());
    let url = server.base_url();
    println!("A local githosted API at {url} (workspace acme, repos app and lib).");
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
        "Ctrl-C stops it; then `git-credential-githosted configure --remove` undoes the configure."
    );
    loop {
        std::thread::park();
    }
}
