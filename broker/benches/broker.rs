//! The token broker under load: 2,000 token requests from 64 concurrent clients
//! against the local githosted-compatible API, with ID tokens from a local OIDC
//! issuer. Prints throughput, latency (p50/p99) next to the API's own handler
//! time, exchanges per request, and the broker's memory.
//!
//! `cargo bench --locked --bench broker` (after the release build, a few seconds).

#[cfg(unix)]
#[path = "broker/unix.rs"]
mod unix;

#[cfg(unix)]
fn main() {
    unix::main();
}

#[cfg(not(unix))]
fn main() {
    eprintln!("the broker benchmark runs on Unix only, like the test harness it uses");
}
