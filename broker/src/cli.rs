//! The broker's command line: what `githosted-broker` (and
//! `git-credential-githosted broker`, which runs it) takes.

use clap::{Parser, Subcommand, ValueEnum};

/// `githosted-broker`: serve, or `githosted-broker check`.
#[derive(Debug, Parser)]
#[command(
    name = "githosted-broker",
    version,
    about = "The CI token broker of git-credential-githosted: a job's OIDC ID token in, a short-lived repo token out",
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  githosted-broker --policy policy.toml --workspace acme --audience https://broker.example.com --token-file /run/secrets/githosted-token\n  githosted-broker check --policy policy.toml\n  githosted-broker check --policy policy.toml --claims claims.json --repo acme/app --permission write\n\n\
        `git-credential-githosted broker ARGS…` runs this program too."
)]
pub struct BrokerArgs {
    #[command(subcommand)]
    pub check: Option<BrokerCommand>,
    /// Address to listen on (plain http: loopback only, unless --behind-proxy)
    #[arg(long, value_name = "ADDR", default_value = crate::broker::DEFAULT_LISTEN)]
    pub listen: String,
    /// The policy file (TOML): which identities may have which repo tokens
    #[arg(long, value_name = "FILE")]
    pub policy: Option<std::path::PathBuf>,
    /// The audience ID tokens must be for
    #[arg(long, value_name = "AUD", default_value = crate::broker::DEFAULT_AUDIENCE)]
    pub audience: String,
    /// githosted API base URL [default: https://api.githosted.dev]
    #[arg(long, value_name = "URL")]
    pub api_url: Option<String>,
    /// Read the workspace token from this file (a mounted secret) [default: GITHOSTED_TOKEN, then the keychain]
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<std::path::PathBuf>,
    /// The workspace of the broker's token: tokens only for its repos (required when the API cannot tell)
    #[arg(long, value_name = "WS")]
    pub workspace: Option<String>,
    /// Serve plain http on a non-loopback address: TLS ends at a proxy in front
    #[arg(long)]
    pub behind_proxy: bool,
    /// Serve https with this PEM certificate chain (with --tls-key)
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum BrokerCommand {
    /// Check a policy file and explain each rule; with --claims, say which rule allows a request
    Check {
        /// The policy file (TOML)
        #[arg(long, value_name = "FILE", required = true)]
        policy: std::path::PathBuf,
        /// A JSON object of ID-token claims (iss, sub, …) to decide for
        #[arg(long, value_name = "FILE")]
        claims: Option<std::path::PathBuf>,
        /// The repository asked for, as WS/REPO
        #[arg(long, value_name = "WS/REPO")]
        repo: Option<String>,
        /// The permission asked for
        #[arg(long, value_enum, default_value_t = BrokerPermission::Write)]
        permission: BrokerPermission,
        /// The broker's --workspace: flag rules naming another
        #[arg(long, value_name = "WS")]
        workspace: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BrokerPermission {
    Read,
    Write,
}
