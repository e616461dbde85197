//! A local githosted-compatible server, for trying the helper (and for
//! self-hosters checking a setup): the test suite's server, with workspace
//! `acme`, repos `app` and `lib`, and a fresh workspace token.
//!
//! ```sh
//! cargo run --example server -- 8787    # then follow what it prints
//! cargo run --example server -- 8787 --state DIR
//! cargo run --example server            # on a random port, nothing kept
//! ```
//!
//! It runs until Ctrl-C. On a fixed port its workspaces, repos and tokens are
//! kept in `target/githosted-local-server-PORT` (or `--state DIR`), so a token
//! from before a restart still works after it; on a random port everything
//! lives in memory and a temporary directory.

#[cfg(unix)]
#[path = "server/unix.rs"]
mod unix;

#[cfg(unix)]
fn main() -> std::process::ExitCode {
    unix::main()
}

#[cfg(not(unix))]
fn main() -> std::process::ExitCode {
    eprintln!("the local server example runs on Unix only, like the tests that use it");
    std::process::ExitCode::FAILURE
}
