//! Performance of the helper and its agent, against git's own credential cache.
//!
//! `cargo bench --locked --bench agent` prints one compact report:
//! - (a) a warm `get` (served from the agent's cache) against `git credential-cache get`
//!   holding a stored credential, as whole-process wall times, interleaved;
//! - (b) a cold `get` (one ExchangeToken) minus the test server's own handler time: with a
//!   running agent, with `--no-agent`, and with no agent running yet;
//! - (c) 64 simultaneous cold `get`s for one repo: exchanges made, distinct tokens answered;
//! - (d) the agent's memory with 1 and with 1000 cached tokens.
//!
//! Every process runs with a cleared environment, a private HOME and XDG_RUNTIME_DIR in a
//! temp dir; removing those at the end makes the agents exit. No token is ever printed.
//!
//! The helper measured is the one cargo builds for the bench, which has the dev-dependencies'
//! features unified in (tokio `full`, hyper's server side for axum): a bigger binary than a
//! plain `cargo build --release`, and a little slower to start. To measure what ships, copy a
//! release build elsewhere (`cargo bench` rebuilds `target/release`) and name it:
//! `GITHOSTED_BENCH_HELPER=/tmp/git-credential-githosted cargo bench --locked --bench agent`.

#[cfg(unix)]
#[path = "agent/unix.rs"]
mod unix;

#[cfg(unix)]
fn main() {
    unix::main();
}

#[cfg(not(unix))]
fn main() {
    eprintln!("the agent benchmark runs on Unix only (the agent there listens on a Unix socket)");
}
