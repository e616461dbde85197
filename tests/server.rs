#[path = "support/server.rs"]
mod server;

#[test]
fn smoke() {
    let s = server::Server::start();
    s.add_workspace("acme");
    s.add_repo("acme", "app");
    let _ = s.seed_token("acme", server::TokenSpec::workspace_write());
}
