//! `githosted-broker`: the CI token broker, its own program so that a laptop
//! never carries a web server. A job's OIDC ID token in, a short-lived repo
//! token out.
//!
//! It shares the helper's library (`git_credential_githosted`) for what both
//! need — the githosted API client, secrets, targets, settings, the keychain —
//! and holds what only a server needs: the HTTP service and TLS ([`broker`]),
//! the ID-token verifier ([`oidc`]), the policy ([`policy`]) and the command
//! ([`cmd::broker`]) with its command line ([`cli`]).
//!
//! `git-credential-githosted broker ARGS…` runs this program from beside the
//! core (the same process, by `exec`, on Unix), so existing deployments keep
//! working.

// The shared layers, under the names the broker's modules use (`crate::api`, …).
use git_credential_githosted::{api, keychain, net, secret, target, token, ui};

pub mod broker;
pub mod cli;
pub mod oidc;
pub mod policy;

/// The broker's one command: serve, or `check`.
pub mod cmd {
    pub mod broker;
}
