//! The helper's side of the token broker (`--broker`): ask it for a token,
//! a dry-run decision, or a revocation, with the job's OIDC ID token.
//!
//! Failures are [`ApiError::Broker`]: one line naming the broker and its reason.

use std::time::Instant;

use serde::Deserialize;

use crate::api::ApiError;
use crate::net::Network;
use crate::secret::Secret;
use crate::token::Permission;

/// A token from the broker.
pub struct Granted {
    pub token: Secret,
    /// Unix seconds.
    pub expires_at: i64,
    /// What `/v1/revoke` takes: the broker's revocation handle for the token
    /// (`gbr1.<record id>.<expiry>.<mac>`; older brokers sent the record id).
    pub id: String,
}

#[derive(Deserialize)]
struct Answer {
    token: Secret,
    expires_at: String,
    id: String,
}

#[derive(Deserialize)]
struct Refusal {
    error: Option<String>,
    message: Option<String>,
}

/// `POST /v1/token`: a token for `repo` (`WS/REPO`) and `permission`.
pub async fn request(
    broker: &url::Url,
    id_token: &Secret,
    repo: &str,
    permission: Permission,
    ttl_seconds: Option<u64>,
    deadline: Instant,
    network: &Network,
) -> Result<Granted, ApiError> {
    let mut body = serde_json::json!({"repo": repo, "permission": permission.as_str()});
    if let Some(ttl) = ttl_seconds {
        body["ttl_seconds"] = ttl.into();
    }
    let bytes = post(broker, "v1/token", id_token, &body, deadline, network).await?;
    let answer: Answer = serde_json::from_slice(&bytes).map_err(|e| not_understood(broker, e))?;
    let expires_at = time::OffsetDateTime::parse(
        &answer.expires_at,
        &time::format_description::well_known::Rfc3339,
    )
    .map_err(|e| not_understood(broker, e))?
    .unix_timestamp();
    Ok(Granted {
        token: answer.token,
        expires_at,
        id: answer.id,
    })
}

/// `POST /v1/check`: the rule that would allow `repo` and `permission`,
/// and the TTL it grants, without minting anything.
pub async fn check(
    broker: &url::Url,
    id_token: &Secret,
    repo: &str,
    permission: Permission,
    deadline: Instant,
) -> Result<(u64, u64), ApiError> {
    #[derive(Deserialize)]
    struct Decision {
        rule: u64,
        ttl_seconds: u64,
    }
    let body = serde_json::json!({"repo": repo, "permission": permission.as_str()});
    let network = Network::from_env();
    let bytes = post(broker, "v1/check", id_token, &body, deadline, &network).await?;
    let decision: Decision =
        serde_json::from_slice(&bytes).map_err(|e| not_understood(broker, e))?;
    Ok((decision.rule, decision.ttl_seconds))
}

/// `POST /v1/revoke`: revokes a token this broker minted for the same identity;
/// `id` is what `/v1/token` answered as the token's `id` (a revocation handle).
pub async fn revoke(
    broker: &url::Url,
    id_token: &Secret,
    id: &str,
    deadline: Instant,
) -> Result<(), ApiError> {
    let body = serde_json::json!({ "id": id });
    let network = Network::from_env();
    post(broker, "v1/revoke", id_token, &body, deadline, &network).await?;
    Ok(())
}

fn not_understood(broker: &url::Url, e: impl std::fmt::Display) -> ApiError {
    ApiError::Broker {
        status: None,
        reason: format!("the broker {broker} sent an answer this helper does not understand: {e}"),
    }
}

/// One POST with the ID token; the body of a 2xx, or why not.
async fn post(
    broker: &url::Url,
    path: &str,
    id_token: &Secret,
    body: &serde_json::Value,
    deadline: Instant,
    network: &Network,
) -> Result<zeroize::Zeroizing<Vec<u8>>, ApiError> {
    let unreachable = |reason: String| ApiError::Broker {
        status: None,
        reason,
    };
    let url = broker
        .join(path)
        .map_err(|e| unreachable(format!("broker URL {broker}: {e}")))?;
    let left = deadline.saturating_duration_since(Instant::now());
    let http = crate::net::http_client_with(&url, left, network).map_err(unreachable)?;
    let response = http
        .post(url)
        .bearer_auth(id_token.expose())
        .json(body)
        .send()
        .await
        .map_err(|e| unreachable(format!("the broker {broker} did not answer: {e}")))?;
    let status = response.status();
    let too_big = || {
        unreachable(format!(
            "the broker {broker} sent an answer larger than {} KiB",
            crate::api::MAX_BODY / 1024
        ))
    };
    if response
        .content_length()
        .is_some_and(|n| n > crate::api::MAX_BODY as u64)
    {
        return Err(too_big());
    }
    let mut response = response;
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| unreachable(format!("the broker {broker}: {e}")))?
    {
        if bytes.len().saturating_add(chunk.len()) > crate::api::MAX_BODY {
            return Err(too_big());
        }
        bytes.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        let refusal: Option<Refusal> = serde_json::from_slice(&bytes).ok();
        let (code, message) = refusal
            .map(|r| (r.error.unwrap_or_default(), r.message.unwrap_or_default()))
            .unwrap_or_default();
        return Err(ApiError::Broker {
            status: Some(status.as_u16()),
            reason: format!(
                "the broker {broker} refused ({} {}): {}",
                status.as_u16(),
                crate::ui::printable(&code, 64),
                crate::ui::printable(&message, 400)
            ),
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A broker stand-in whose every answer is `bytes` of JSON-ish padding,
    /// streamed without a length.
    async fn huge_broker(bytes: usize) -> url::Url {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut head = [0u8; 4096];
                    let _ = stream.read(&mut head).await;
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n")
                        .await;
                    let chunk = vec![b' '; 64 * 1024];
                    let mut sent = 0;
                    while sent < bytes {
                        if stream.write_all(&chunk).await.is_err() {
                            return;
                        }
                        sent += chunk.len();
                    }
                });
            }
        });
        url::Url::parse(&format!("http://{addr}/")).unwrap()
    }

    #[tokio::test]
    async fn an_answer_larger_than_a_mebibyte_is_refused_not_read() {
        let broker = huge_broker(64 * 1024 * 1024).await;
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        let id_token = Secret::new("x.y.z".into());
        let error = request(
            &broker,
            &id_token,
            "acme/app",
            Permission::Read,
            None,
            deadline,
            &Network::default(),
        )
        .await
        .err()
        .expect("a 64 MiB answer was accepted");
        assert!(
            error.to_string().contains("larger than 1024 KiB"),
            "{error}"
        );
    }
}
