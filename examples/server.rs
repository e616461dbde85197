//! A local githosted-compatible server, for trying the helper (and for
//! self-hosters checking a setup): the test suite's server, with workspace
//! `acme`, repos `app` and `lib`, and a fresh workspace token.
//!
//! ```sh
//! cargo run --example server            # then follow what it prints
//! cargo run --example server -- 8080    # on a fixed port
//! ```
//!
//! It runs until Ctrl-C. Everything lives in memory and a temporary directory.

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
