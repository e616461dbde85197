//! `broker` (run the CI token broker) and `broker check` (explain a policy).

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, bail};

use crate::broker::{self, Broker, Config};
use crate::keychain;
use crate::policy::{Ask, Policy};
use crate::secret::{Secret, TokenKind};
use crate::target::Service;
use crate::token::Permission;

/// What `broker` is asked to do.
pub struct Serve<'a> {
    pub listen: &'a str,
    pub policy: &'a Path,
    pub audience: &'a str,
    pub api_url: Option<&'a str>,
    pub token_file: Option<&'a Path>,
    /// `--workspace`.
    pub workspace: Option<&'a str>,
    pub behind_proxy: bool,
    /// `--tls-cert` and `--tls-key`.
    pub tls: Option<(&'a Path, &'a Path)>,
}

/// Runs the broker until it is stopped.
pub fn serve(args: &Serve<'_>) -> anyhow::Result<()> {
    let listen: SocketAddr = args.listen.parse().with_context(|| {
        format!(
            "--listen {} is not an address: give IP:PORT, e.g. 127.0.0.1:8700",
            args.listen
        )
    })?;
    let tls = match args.tls {
        Some((cert, key)) => {
            Some(broker::tls::config(cert, key).map_err(|e| anyhow::anyhow!("{e}"))?)
        }
        None => None,
    };
    if tls.is_none() && !broker::is_loopback(&listen) && !args.behind_proxy {
        bail!(
            "refusing to serve plain http on {listen}: ID tokens and repo tokens would cross the network in clear; give --tls-cert and --tls-key, or put a TLS-terminating proxy in front and add --behind-proxy, or listen on 127.0.0.1"
        );
    }
    let policy = Policy::load(args.policy).map_err(|e| anyhow::anyhow!("policy: {e}"))?;
    let service = Service::new(args.api_url)?;
    let (parent, parent_source) = parent(args.token_file, service.api_host())?;
    let config = Config {
        policy,
        audience: args.audience.to_owned(),
        api_url: service.api_url().clone(),
        parent,
        workspace: args.workspace.map(str::to_owned),
        parent_source,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let broker = runtime
        .block_on(Broker::start(config))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    runtime
        .block_on(broker::serve(broker, listen, tls))
        .with_context(|| format!("serving on {listen}"))
}

/// The broker's workspace token (`--token-file`, `GITHOSTED_TOKEN`, or the
/// keychain) and where it came from.
fn parent(token_file: Option<&Path>, api_host: &str) -> anyhow::Result<(Secret, String)> {
    let (token, source) = if let Some(path) = token_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the workspace token from {}", path.display()))?;
        (
            Secret::new(text.trim().to_owned()),
            format!("--token-file {}", path.display()),
        )
    } else if let Some(token) = keychain::env_token() {
        (token, keychain::ENV_TOKEN.to_owned())
    } else {
        let account = keychain::account(api_host, None);
        let found = keychain::read(&account)?.or_else(|| {
            // A single workspace entry for this host will do.
            let entries = keychain::list().ok()?;
            let mut ours = entries
                .iter()
                .filter(|(account, _)| account.starts_with(&format!("{api_host}/")));
            match (ours.next(), ours.next()) {
                (Some((account, _)), None) => keychain::read(account).ok().flatten(),
                _ => None,
            }
        });
        let token = found.with_context(|| {
            format!(
                "no workspace token for the broker: mount one and pass --token-file PATH, set {}, or run `git-credential-githosted login --api-url {api_host}`",
                keychain::ENV_TOKEN
            )
        })?;
        (token, format!("the keychain ({api_host})"))
    };
    if token.kind() != TokenKind::Workspace {
        bail!(
            "the broker's token from {source} is not a workspace token (gw_…): create one in the workspace's Tokens page"
        );
    }
    Ok((token, source))
}

/// `broker check`: the policy's rules, one line each; warnings about its
/// issuers (checked over the network when it can be: unreachable is a
/// warning) and, with `workspace`, rules for other workspaces; with a
/// request, which rule allows it or why none does. Only a policy that cannot
/// be used, or a refused request, is `Err`/`false`.
pub fn check(
    policy: &Path,
    claims: Option<&Path>,
    repo: Option<&str>,
    permission: Permission,
    workspace: Option<&str>,
    out: &mut dyn Write,
) -> anyhow::Result<bool> {
    let policy = Policy::load(policy).map_err(|e| anyhow::anyhow!("policy: {e}"))?;
    if policy.rules.is_empty() {
        writeln!(out, "no rules: every request is refused")?;
    }
    for rule in &policy.rules {
        writeln!(out, "{}", rule.explain())?;
    }
    if let Some(ws) = workspace {
        for (rule, pattern) in policy.foreign_repos(ws) {
            writeln!(
                out,
                "warning: rule {rule} names {pattern}, not in workspace {ws}: the broker refuses those requests"
            )?;
        }
    }
    for warning in issuer_warnings(&policy.issuers()) {
        writeln!(out, "warning: {warning}")?;
    }
    let Some(claims_path) = claims else {
        return Ok(true);
    };
    let Some(repo) = repo else {
        bail!("--claims needs --repo WS/REPO (and --permission, default write)");
    };
    let text = std::fs::read_to_string(claims_path)
        .with_context(|| format!("reading {}", claims_path.display()))?;
    let claims: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a JSON object of claims", claims_path.display()))?;
    let field = |name: &str| {
        claims
            .get(name)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let (issuer, subject) = (field("iss"), field("sub"));
    if issuer.is_empty() {
        writeln!(
            out,
            "refused (subject): {} has no \"iss\" claim: an ID token without one is refused",
            claims_path.display()
        )?;
        return Ok(false);
    }
    let decision = policy.decide(&Ask {
        issuer: &issuer,
        subject: &subject,
        claims: &claims,
        repo,
        permission,
    });
    match decision {
        Ok(rule) => {
            writeln!(
                out,
                "allowed by rule {}: {} {repo} for {subject:?}, up to {} s",
                rule.number,
                permission.as_str(),
                rule.max_ttl_seconds
            )?;
            Ok(true)
        }
        Err(denied) => {
            writeln!(
                out,
                "refused ({}): {}",
                denied.dimension.as_str(),
                denied.message
            )?;
            Ok(false)
        }
    }
}

/// What would make every job from these issuers fail: a trailing slash (`iss`
/// is compared exactly and issuers do not send one), or a discovery document
/// naming another issuer; an issuer that cannot be asked is a warning too.
fn issuer_warnings(issuers: &[String]) -> Vec<String> {
    let mut warnings = Vec::new();
    for issuer in issuers {
        if issuer.ends_with('/') {
            warnings.push(format!(
                "issuer {issuer} ends in /: ID tokens' iss is compared exactly and issuers send none (GitHub: https://token.actions.githubusercontent.com, GitLab: https://gitlab.com)"
            ));
        }
    }
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return warnings;
    };
    for issuer in issuers {
        match runtime.block_on(crate::oidc::discovered_issuer(issuer)) {
            Ok(named) if named != *issuer => warnings.push(format!(
                "issuer {issuer}: its discovery document names issuer {:?}; ID tokens carry that one, so write it exactly",
                crate::ui::printable(&named, 200)
            )),
            Ok(_) => {}
            Err(e) => warnings.push(format!(
                "issuer {issuer} could not be checked (offline?): {e}"
            )),
        }
    }
    warnings
}
