//! The one minter: a grant (a workspace token, or a CI job's ID token for a
//! broker) exchanged for a repo token, for the agent, the no-agent fallback and
//! `exec` alike.
//!
//! The workspace check lives here and only here. A workspace token's repo
//! slugs are relative to its own workspace, so before any exchange the parent's
//! workspace must be established and equal the one asked for:
//! - the API's answer (`ListWorkspaces`) when it gives one;
//! - else the workspace declared for the parent (`GITHOSTED_WORKSPACE`,
//!   `--workspace` on the helper line, the keychain entry `login` stored);
//! - else nothing is minted ([`ApiError::WorkspaceUnknown`]): fail closed.
//!
//! A declared workspace that the API contradicts is refused, never preferred;
//! and a new token whose record names another workspace id than the API's is
//! revoked and never handed out.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::api::{ApiError, Client, ExchangeRequest, Minted, Workspace};
use crate::net::{Network, deadline_in};
use crate::secret::Secret;
use crate::token::Permission;

/// What a mint is paid with: a workspace token, or a CI job's ID token for a broker.
/// The agent drops it after the mint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Grant {
    /// A workspace token (`gw_…`), exchanged at the githosted API, and the
    /// workspace declared for it, if any (see the module's documentation).
    Parent {
        token: Secret,
        workspace: Option<String>,
    },
    /// The job's OIDC ID token, presented to the token broker at `broker`.
    Broker { broker: url::Url, id_token: Secret },
}

/// What one mint is for: repos of one workspace on one API, one permission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The API base URL.
    pub api: String,
    pub workspace: String,
    /// One repo for git; `exec` may grant several.
    pub repos: Vec<String>,
    pub permission: Permission,
}

/// What a mint asks for besides the scope.
#[derive(Debug, Clone)]
pub struct MintParams {
    pub ttl: u64,
    pub subject: String,
    /// How long the mint may take, retries included.
    pub timeout: Duration,
    /// The asker's proxies and CA certificates.
    pub network: Network,
}

/// Something that exchanges a grant for a repo token (the API or a broker, or a fake).
pub trait Minter: Send + Sync + 'static {
    fn mint(
        &self,
        scope: &Scope,
        params: &MintParams,
        grant: &Grant,
    ) -> impl Future<Output = Result<Minted, ApiError>> + Send;
}

/// The workspace rule (pure): may a parent whose workspace the API reports as
/// `reported` (`None`: the API cannot say) and which was declared as
/// `declared` mint for `wanted`?
pub fn check_workspace(
    wanted: &str,
    declared: Option<&str>,
    reported: Option<&str>,
    api_host: &str,
) -> Result<(), ApiError> {
    let known = match (reported, declared) {
        (Some(reported), Some(declared)) if reported != declared => {
            return Err(ApiError::DeclaredWorkspace {
                declared: declared.to_owned(),
                actual: reported.to_owned(),
            });
        }
        (Some(known), _) | (None, Some(known)) => known,
        (None, None) => {
            return Err(ApiError::WorkspaceUnknown {
                host: api_host.to_owned(),
                wanted: wanted.to_owned(),
            });
        }
    };
    if known != wanted {
        return Err(ApiError::WrongWorkspace {
            token_workspace: known.to_owned(),
            wanted: wanted.to_owned(),
        });
    }
    Ok(())
}

/// Mints through the githosted API (or the broker), one HTTP client per API base.
#[derive(Default)]
pub struct ApiMinter {
    clients: Mutex<HashMap<(String, Network), Client>>,
    /// Each parent's workspace as the API reports it (`None`: the server
    /// cannot say), by holder id.
    workspaces: Mutex<HashMap<String, Option<Workspace>>>,
}

impl ApiMinter {
    /// The parent's workspace, asked once per parent (by its keyed hash).
    async fn workspace_of(
        &self,
        client: &Client,
        parent: &Secret,
        deadline: Instant,
    ) -> Result<Option<Workspace>, ApiError> {
        let id = parent.holder_id();
        if let Some(known) = self.lock_workspaces().get(&id) {
            return Ok(known.clone());
        }
        let found = client.workspace_of(parent, deadline).await?;
        self.lock_workspaces().insert(id, found.clone());
        Ok(found)
    }

    fn lock_workspaces(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<Workspace>>> {
        self.workspaces.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The client for an API base with the asker's network settings.
    pub fn client(&self, base: &str, network: &Network) -> Result<Client, ApiError> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let id = (base.to_owned(), network.clone());
        if let Some(client) = clients.get(&id) {
            return Ok(client.clone());
        }
        let service = crate::target::Service::new(Some(base)).map_err(|e| ApiError::Transport {
            host: base.to_owned(),
            reason: e.to_string(),
        })?;
        let client = Client::new(service.api_url(), service.api_host(), network)?;
        clients.insert(id, client.clone());
        Ok(client)
    }

    /// `ExchangeToken` with a workspace token, checked to be for the scope's workspace.
    async fn exchange(
        &self,
        scope: &Scope,
        params: &MintParams,
        parent: &Secret,
        declared: Option<&str>,
    ) -> Result<Minted, ApiError> {
        let client = self.client(&scope.api, &params.network)?;
        let deadline = deadline_in(params.timeout);
        let reported = self.workspace_of(&client, parent, deadline).await?;
        check_workspace(
            &scope.workspace,
            declared,
            reported.as_ref().map(|ws| ws.slug.as_str()),
            client.host(),
        )?;
        let request = ExchangeRequest {
            repo_allowlist: scope.repos.iter().map(String::as_str).collect(),
            permission: scope.permission,
            ttl_seconds: params.ttl,
            subject: &params.subject,
        };
        let minted = client.exchange_token(parent, &request, deadline).await?;
        if let Some(ws) = &reported
            && !minted.record.workspace_id.is_empty()
            && minted.record.workspace_id != ws.id
        {
            // Never handed out: revoked at once (best effort).
            let revoked = client
                .revoke_token(parent, &minted.record.id, deadline_in(REVOKE_AT_ONCE))
                .await;
            tracing::warn!(token = %minted.token, revoked = revoked.is_ok(), "the API minted a token for another workspace");
            return Err(ApiError::BadResponse {
                host: client.host().to_owned(),
                reason: format!(
                    "the new token is for workspace {}, not {} (it was revoked)",
                    crate::ui::printable(&minted.record.workspace_id, 80),
                    ws.id
                ),
            });
        }
        Ok(minted)
    }
}

/// How long revoking a token minted for the wrong workspace may take.
const REVOKE_AT_ONCE: Duration = Duration::from_secs(3);

impl Minter for ApiMinter {
    async fn mint(
        &self,
        scope: &Scope,
        params: &MintParams,
        grant: &Grant,
    ) -> Result<Minted, ApiError> {
        let (minted, host) = match grant {
            Grant::Parent { token, workspace } => (
                self.exchange(scope, params, token, workspace.as_deref())
                    .await?,
                scope.api.clone(),
            ),
            Grant::Broker { broker, id_token } => {
                let [repo] = scope.repos.as_slice() else {
                    return Err(ApiError::Broker {
                        status: None,
                        reason: "a broker mints one repo per request".into(),
                    });
                };
                let granted = crate::broker_client::request(
                    broker,
                    id_token,
                    &format!("{}/{repo}", scope.workspace),
                    scope.permission,
                    Some(params.ttl),
                    deadline_in(params.timeout),
                    &params.network,
                )
                .await?;
                let minted = Minted {
                    token: granted.token,
                    record: crate::api::TokenRecord {
                        id: granted.id,
                        ..Default::default()
                    },
                    expires_at: granted.expires_at,
                };
                (minted, broker.to_string())
            }
        };
        if minted.expires_at <= now() {
            return Err(ApiError::BadResponse {
                host,
                reason: "the new token has already expired (is this machine's clock right?)".into(),
            });
        }
        tracing::info!(token = %minted.token, workspace = %scope.workspace, repos = ?scope.repos, "minted a token");
        Ok(minted)
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_rule() {
        let check = |wanted, declared, reported| {
            check_workspace(wanted, declared, reported, "api.example").map_err(|e| e.to_string())
        };
        // The API's answer decides.
        assert!(check("acme", None, Some("acme")).is_ok());
        assert!(check("acme", Some("acme"), Some("acme")).is_ok());
        let e = check("globex", None, Some("acme")).unwrap_err();
        assert_eq!(e, "your token is for acme, not globex");
        // A declared workspace the API contradicts is refused, never preferred.
        let e = check("globex", Some("globex"), Some("acme")).unwrap_err();
        assert!(e.contains("globex") && e.contains("acme"), "{e}");
        // The API cannot say: the declared workspace decides.
        assert!(check("acme", Some("acme"), None).is_ok());
        let e = check("globex", Some("acme"), None).unwrap_err();
        assert_eq!(e, "your token is for acme, not globex");
        // Nobody can say: nothing is minted.
        let e = check("acme", None, None).unwrap_err();
        assert!(e.contains("api.example") && e.contains("acme"), "{e}");
    }
}
