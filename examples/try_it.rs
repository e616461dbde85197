//! Try the helper without a githosted account: starts the local
//! githosted-compatible test server, configures a throwaway HOME for it, and runs
//! a real `git clone` through the helper.
//!
//! ```sh
//! cargo run --example try_it
//! ```
//!
//! It prints what the server saw: one exchange of the workspace token for a
//! repo token, and git presenting only that repo token. Tokens are shown as
//! fingerprints only.

#[cfg(unix)]
#[path = "try_it/unix.rs"]
mod unix;

#[cfg(unix)]
fn main() -> std::process::ExitCode {
    unix::main()
}

#[cfg(not(unix))]
fn main() -> std::process::ExitCode {
    eprintln!(
        "try_it runs on Unix only, like the tests (the agent listens on a Unix socket there)"
    );
    std::process::ExitCode::FAILURE
}
