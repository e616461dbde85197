//! Performance of the helper and its agent, against git's own credential cache.
//!
//! `cargo bench --locked --bench agent` prints one compact report:
//! - (a) warm `git credential fill` — what git does before every fetch and push — with
//!   `helper = cache` holding a stored credential, with our configured helper line (the agent
//!   holding a token), and with a std-only floor program (`agent/floor.rs`: read stdin, one
//!   Unix-socket round trip, two lines out); interleaved, ratios per round;
//! - (b) a cold `get` (one ExchangeToken) minus the test server's own handler time: with a
//!   running agent, with `--no-agent`, and with no agent running yet;
//! - (c) 64 simultaneous cold `get`s for one repo: exchanges made, distinct tokens answered;
//! - (d) the agent's memory with 1 and with 1000 cached tokens.
//!
//! Every process runs in a testkit `World` (cleared environment, private HOME and runtime dir);
//! the agents exit when those go. No token is ever printed.
//!
//! The helper measured is `target/release/git-credential-githosted` (and the core beside it)
//! as cargo builds it for the bench: the front (what answers warm) has no dev-dependency in it;
//! the core is built with the dev-dependencies' features unified (a little bigger). To measure
//! an installed copy: `GITHOSTED_BENCH_HELPER=~/.local/bin/git-credential-githosted cargo bench
//! --locked --bench agent` (the core must sit beside it).

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
