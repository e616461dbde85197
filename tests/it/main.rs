//! The integration tests, as modules of one test program (ripgrep's way): a
//! change relinks one binary, not one per file. Run one file's tests with a
//! filter: `cargo test --test it -- e2e::`.
//!
//! Most modules are Unix-only (the harness runs processes as other users, uses
//! Unix sockets and `git http-backend`); `windows` is Windows-only.

mod agent;
mod architecture;
mod cli;
mod doctor;
mod e2e;
mod faults;
mod first_hour;
mod front;
mod install;
mod keychain;
mod leaks;
mod lfs;
mod other_clients;
mod protocol_props;
mod release_install;
mod scoped;
mod security;
mod uninstall;
mod which_api;
mod windows;
