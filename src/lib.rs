//! `git-credential-githosted`: a git credential helper that never gives git a
//! long-lived token.
//!
//! The workspace token (`gw_…`) stays in the OS keychain ([`keychain`]), or in
//! `GITHOSTED_TOKEN` for CI. When git asks for credentials for
//! `https://githosted.dev/<ws>/<repo>.git`, the helper reads git's request
//! ([`protocol`]), works out the repository ([`target`]), exchanges the workspace
//! token for a short-lived `gr_` token limited to that repo ([`api`]) and answers
//! git with it ([`helper`]). Tokens are held in [`secret::Secret`], which zeroizes
//! itself and shows only a fingerprint.
//!
//! Where things live:
//!
//! | module | owns |
//! |---|---|
//! | [`protocol`] | git's `key=value` wire format, limits, injection rules |
//! | [`target`] | URL → API, workspace, repo; which hosts are served |
//! | [`settings`] | options and environment → one settings value |
//! | [`keychain`] | the parent token: environment, OS keychain |
//! | [`api`] | the githosted Connect-JSON client and its error classes |
//! | [`helper`] | `get`/`store`/`erase` and the messages for their failures |
//! | [`broker`] | the cache policy: lifetime margin, one mint per key, erase |
//! | [`agent`] | the background process that holds the cache, its socket and wire format |
//! | [`status`] | `status`: what is stored, cached, configured |
//! | [`doctor`] | `doctor`: checks git, helper chain, keychain, agent, API, token |
//! | [`scoped`] | `token` and `exec`: tokens for scripts, CI and sandboxes |
//! | [`sandbox`] | `exec`'s confinement of the command (bubblewrap) |
//! | [`supervise`] | running a command: signals passed on, exit status, reaping |
//! | [`permission`] | `--permission auto`: read or write from the git command |
//! | [`login`] | `login`/`logout` |
//! | [`configure`] | git config for the helper |
//! | [`git`] | running git, its config, credential URL matching as git does it |
//! | [`secret`] | the token type |
//! | [`harden`] | no core dumps, not dumpable, the token out of the environment |
//! | [`wipe`] | the allocator that zeroes freed memory |
//! | [`cli`] | the command line |
//! | [`ui`] | lines for the person at the terminal: sanitised, prefixed |

pub mod agent;
pub mod api;
pub mod broker;
pub mod cli;
pub mod configure;
pub mod doctor;
pub mod git;
pub mod harden;
pub mod helper;
pub mod keychain;
pub mod login;
pub mod permission;
pub mod protocol;
pub mod sandbox;
pub mod scoped;
pub mod secret;
pub mod settings;
pub mod status;
#[cfg(unix)]
pub mod supervise;
pub mod target;
pub mod ui;
pub mod wipe;
