//! `git-credential-githosted`: a git credential helper that never gives git a
//! long-lived token.
//!
//! The workspace token (`gw_…`) stays in the OS keychain, or in
//! `GITHOSTED_TOKEN` for CI. When git asks for credentials for
//! `https://githosted.dev/<ws>/<repo>.git`, the helper exchanges it for a
//! short-lived `gr_` limited to that repo and answers git with that. A per-user
//! agent keeps minted tokens in memory until shortly before they expire.
//!
//! # Layers
//!
//! Dependencies point down only (`tests/architecture.rs` checks every `use crate::…`):
//!
//! | layer | modules | what they know |
//! |---|---|---|
//! | 1 vocabulary | [`secret`], [`token`], [`ui`], [`protocol`], [`target`], [`flags`] | values and formats; no I/O but stderr |
//! | 2 the outside world | [`harden`], [`wipe`], [`settings`], [`permission`], [`keychain`], [`net`], [`api`], [`id_token`], [`broker_client`], [`git`], [`supervise`], [`tty`], [`pty`], [`unix`], `win32` | one outside thing each: the process, options, the parent processes, the keychain, the network (proxies, CA certificates, HTTP clients, deadlines, the runtime and its one blocking bridge), githosted's API (Connect requests, answers, errors), a CI job's ID token, a token broker, git, child processes, the terminal, `exec`'s pseudo-terminal; the Unix calls that need `unsafe` (fork to exec, the environment block, the user database, BSD process facts); Windows' users, pipes and job objects |
//! | 3 policy | [`plan`], [`minter`], [`cache`] | the one decision (where a token comes from, its key, agent or not); the one minter (a grant exchanged for a repo token, the workspace check); what is cached for how long, one mint per key |
//! | 4 transport | [`agent`], [`channel`] | the background process around the cache: socket or named pipe, peer checks, its wire; `exec`'s renewal channel to its command |
//! | 5 use cases | [`issuer`], [`sandbox`] | a token for git (agent, fallback, direct, broker), revoking; `exec`'s confinement |
//! | 6 commands | [`cmd`] | one module per command: what it prints and how it fails |
//! | 7 entry | [`cli`] | the command line |
//!
//! `unsafe` is denied (`[lints]` in `Cargo.toml`) but in [`unix`] and `win32`,
//! where each call is a small safe function with its `SAFETY:` argument, and
//! [`wipe`] (a global allocator cannot be written without it).
//!
//! The CI token broker (HTTP server, ID-token verifier, policy, TLS) is its own
//! package and program, `broker/` (`githosted-broker`), built on this library: a
//! laptop's programs carry no web server.
//!
//! Where a new behaviour goes: a fact about a format or a value → layer 1; a
//! new outside system → its own layer-2 module; a new option of git's helper
//! line → [`flags`] (its name) and [`cli`] (its help); how a request travels
//! (proxies, certificates, timeouts) and entering async code from blocking
//! code → [`net`] (a command calls `net::block_on` once; the use cases below
//! it are async); a new API method → [`api`]; deciding where a token
//! comes from, its cache key, agent or not → [`plan`] (one pure function, with
//! its table tests); how a grant becomes a repo token, and the workspace check
//! → [`minter`]; caching rules → [`cache`]; anything the agent must do →
//! [`agent`] (and [`cache`] for the logic); what `exec`'s command may ask for →
//! `cmd::scoped::admits`, how it asks → [`channel`]; carrying out a plan
//! (agent, fallback, broker, revoking) → [`issuer`]; wording and exit codes →
//! the command's module in [`cmd`]. The CI token broker is its own package,
//! `broker/`.

pub mod agent;
pub mod api;
pub mod broker_client;
pub mod cache;
pub mod channel;
pub mod cli;
pub mod cmd;
pub mod flags;
pub mod git;
pub mod harden;
pub mod id_token;
pub mod issuer;
pub mod keychain;
pub mod minter;
pub mod net;
pub mod permission;
pub mod plan;
pub mod protocol;
#[cfg(unix)]
pub mod pty;
pub mod sandbox;
pub mod secret;
pub mod settings;
#[cfg(unix)]
pub mod supervise;
pub mod target;
pub mod token;
#[cfg(unix)]
pub mod tty;
pub mod ui;
#[cfg(unix)]
pub mod unix;
#[cfg(windows)]
pub mod win32;
pub mod wipe;
