//! OIDC ID tokens: checking them (the broker) and getting one (a CI job).
//!
//! Checking: the issuer must be one the policy names; its keys come from
//! `<issuer>/.well-known/openid-configuration` → `jwks_uri`, cached, fetched
//! again at most once per [`REFETCH_COOLDOWN`] when a token names an unknown
//! `kid` or the last fetch failed (one fetch at a time per issuer; a token
//! whose key is cached never waits for one); RS256 and ES256 only; `iss` exact, `aud` containing the audience,
//! `exp`/`nbf`/`iat` with [`LEEWAY_SECS`] of leeway. Every fetch is bounded in
//! time and size; an issuer that is down leaves its cached keys in use.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::secret::Secret;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// The most of a `kid` echoed in a refusal.
const KID_SHOWN: usize = 64;

/// Clock skew allowed on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: u64 = 60;
/// The least time between two fetches of an issuer's keys for an unknown `kid`.
pub const REFETCH_COOLDOWN: Duration = Duration::from_secs(30);
/// The most of a discovery document or key set read.
const MAX_DOCUMENT: usize = 256 * 1024;
/// Each fetch from an issuer.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an ID token is refused: the check that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the ID token is not a JWT")]
    Malformed,
    #[error("alg: only RS256 and ES256 are accepted, not {0}")]
    Alg(String),
    #[error("iss: {0}")]
    Iss(String),
    #[error("kid: {0}")]
    Kid(String),
    #[error("signature: the ID token's signature does not verify")]
    Signature,
    #[error("aud: the ID token is not for audience {0:?}")]
    Aud(String),
    #[error("exp: the ID token has expired")]
    Exp,
    #[error("nbf: the ID token is not valid yet")]
    Nbf,
    #[error("iat: the ID token was issued in the future")]
    Iat,
    #[error("claims: {0}")]
    Claims(String),
    /// The issuer's keys could not be had (and none are cached).
    #[error("the keys of {issuer} are unavailable: {reason}")]
    KeysUnavailable { issuer: String, reason: String },
}

impl Refusal {
    /// The check's short name (the API's `error` code after `invalid_`).
    pub fn check(&self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::Alg(_) => "alg",
            Refusal::Iss(_) => "iss",
            Refusal::Kid(_) => "kid",
            Refusal::Signature => "signature",
            Refusal::Aud(_) => "aud",
            Refusal::Exp => "exp",
            Refusal::Nbf => "nbf",
            Refusal::Iat => "iat",
            Refusal::Claims(_) => "claims",
            Refusal::KeysUnavailable { .. } => "keys_unavailable",
        }
    }
}

/// A verified ID token's identity and claims.
#[derive(Debug, Clone)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// An issuer's keys: what is cached (never locked across a fetch), and the
/// lock a fetch holds (one at a time).
#[derive(Default)]
struct Keys {
    state: std::sync::Mutex<KeyState>,
    fetch: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct KeyState {
    set: Option<std::sync::Arc<JwkSet>>,
    /// The last refetch for an unknown kid, or the last failed fetch (a first
    /// fetch that works does not count).
    last_refetch: Option<Instant>,
    /// Why the last fetch failed.
    last_error: Option<String>,
}

impl Keys {
    fn cached(&self) -> Option<std::sync::Arc<JwkSet>> {
        self.state.lock().ok().and_then(|s| s.set.clone())
    }
}

/// Checks ID tokens against the issuers a policy names.
pub struct Verifier {
    http: reqwest::Client,
    audience: String,
    issuers: HashMap<String, Keys>,
    refreshes: std::sync::atomic::AtomicU64,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

impl Verifier {
    pub fn new(issuers: &[String], audience: &str) -> Result<Verifier, String> {
        let http = client()?;
        Ok(Verifier {
            http,
            audience: audience.to_owned(),
            issuers: issuers
                .iter()
                .map(|i| (i.clone(), Keys::default()))
                .collect(),
            refreshes: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// How many times keys were fetched.
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Verifies `token` and returns who it names.
    pub async fn verify(&self, token: &Secret) -> Result<Identity, Refusal> {
        let token = token.expose();
        // A header the library cannot read may still name an alg (`none`, `HS999`).
        let header = jsonwebtoken::decode_header(token).map_err(|_| match alg_of(token) {
            Some(alg) if alg != "RS256" && alg != "ES256" => Refusal::Alg(alg),
            _ => Refusal::Malformed,
        })?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(Refusal::Alg(format!("{:?}", header.alg)));
        }
        #[derive(Deserialize)]
        struct Unverified {
            iss: Option<String>,
        }
        let unverified: Unverified = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|_| Refusal::Malformed)?;
        let issuer = unverified
            .iss
            .ok_or_else(|| Refusal::Iss("the ID token names no issuer".into()))?;
        let keys = self.issuers.get(&issuer).ok_or_else(|| {
            Refusal::Iss(format!(
                "{:?} is not an issuer the policy trusts",
                crate::ui::printable(&issuer, 200)
            ))
        })?;
        let kid = header
            .kid
            .clone()
            .ok_or_else(|| Refusal::Kid("the ID token names no key (kid)".into()))?;
        let shown = crate::ui::printable(&kid, KID_SHOWN);
        let key = self.key_for(&issuer, keys, &kid).await?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key,
            &validation,
        )
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => Refusal::Signature,
            ErrorKind::ExpiredSignature => Refusal::Exp,
            ErrorKind::ImmatureSignature => Refusal::Nbf,
            ErrorKind::InvalidAudience => Refusal::Aud(self.audience.clone()),
            ErrorKind::InvalidIssuer => Refusal::Iss("iss does not match".into()),
            ErrorKind::InvalidAlgorithm => Refusal::Alg(format!(
                "{:?} (the key {shown} is for another algorithm)",
                header.alg
            )),
            ErrorKind::MissingRequiredClaim(c) if c == "aud" => Refusal::Aud(self.audience.clone()),
            ErrorKind::MissingRequiredClaim(c) => Refusal::Claims(format!("no {c} claim")),
            _ => Refusal::Signature,
        })?;
        let claims = data.claims;
        if let Some(iat) = claims.get("iat").and_then(serde_json::Value::as_u64) {
            let now = jsonwebtoken::get_current_timestamp();
            if iat > now.saturating_add(LEEWAY_SECS) {
                return Err(Refusal::Iat);
            }
        }
        let subject = claims
            .get("sub")
            .and_then(serde_json::Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Refusal::Claims("sub is not a string".into()))?
            .to_owned();
        Ok(Identity {
            issuer,
            subject,
            claims,
        })
    }

    /// The key `kid` of `issuer`: cached, or fetched (one fetch at a time;
    /// after a refetch or a failed fetch, not again within the cooldown).
    async fn key_for(&self, issuer: &str, keys: &Keys, kid: &str) -> Result<DecodingKey, Refusal> {
        let shown = crate::ui::printable(kid, KID_SHOWN);
        let usable = |jwk: &jsonwebtoken::jwk::Jwk| {
            DecodingKey::from_jwk(jwk)
                .map_err(|_| Refusal::Kid(format!("key {shown} of {issuer} is not usable")))
        };
        if let Some(jwk) = keys.cached().as_ref().and_then(|s| s.find(kid)) {
            return usable(jwk);
        }
        let _fetching = match keys.fetch.try_lock() {
            Ok(guard) => guard,
            // Another request is fetching: use what it gets, fetch nothing more.
            Err(_) => {
                let _done = keys.fetch.lock().await;
                return match keys.cached() {
                    Some(set) => match set.find(kid) {
                        Some(jwk) => usable(jwk),
                        None => Err(Refusal::Kid(format!("{issuer} has no key {shown}"))),
                    },
                    None => Err(self.unavailable(issuer, keys)),
                };
            }
        };
        {
            let Ok(mut state) = keys.state.lock() else {
                return Err(self.unavailable(issuer, keys));
            };
            if let Some(jwk) = state.set.as_ref().and_then(|s| s.find(kid)) {
                return usable(jwk);
            }
            if state
                .last_refetch
                .is_some_and(|t| t.elapsed() < REFETCH_COOLDOWN)
            {
                drop(state);
                return Err(match keys.cached() {
                    Some(_) => Refusal::Kid(format!(
                        "{issuer} has no key {shown} (its keys were fetched less than {} s ago)",
                        REFETCH_COOLDOWN.as_secs()
                    )),
                    None => self.unavailable(issuer, keys),
                });
            }
            if state.set.is_some() {
                state.last_refetch = Some(Instant::now());
            }
        }
        self.refreshes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let fetched = self.fetch_keys(issuer).await;
        let set = {
            let Ok(mut state) = keys.state.lock() else {
                return Err(self.unavailable(issuer, keys));
            };
            match fetched {
                Ok(set) => {
                    state.set = Some(std::sync::Arc::new(set));
                    state.last_error = None;
                }
                // Keep what is cached: an issuer that is down does not stop
                // tokens signed by keys already known.
                Err(reason) => {
                    state.last_refetch = Some(Instant::now());
                    state.last_error = Some(reason);
                }
            }
            state.set.clone()
        };
        match set {
            Some(set) => match set.find(kid) {
                Some(jwk) => usable(jwk),
                None => Err(Refusal::Kid(format!("{issuer} has no key {shown}"))),
            },
            None => Err(self.unavailable(issuer, keys)),
        }
    }

    /// No keys of `issuer` cached: why.
    fn unavailable(&self, issuer: &str, keys: &Keys) -> Refusal {
        let reason = keys
            .state
            .lock()
            .ok()
            .and_then(|s| s.last_error.clone())
            .unwrap_or_else(|| "they could not be fetched".into());
        Refusal::KeysUnavailable {
            issuer: issuer.to_owned(),
            reason: format!(
                "{reason} (fetched again at most every {} s)",
                REFETCH_COOLDOWN.as_secs()
            ),
        }
    }

    async fn fetch_keys(&self, issuer: &str) -> Result<JwkSet, String> {
        fetch_keys_with(&self.http, issuer).await
    }
}

/// The `issuer` that `issuer`'s discovery document names (`broker check`).
pub async fn discovered_issuer(issuer: &str) -> Result<String, String> {
    let http = client()?;
    let discovery: Discovery = fetch_json(&http, &discovery_url(issuer)).await?;
    Ok(discovery.issuer)
}

fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

fn client() -> Result<reqwest::Client, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(FETCH_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

async fn fetch_keys_with(http: &reqwest::Client, issuer: &str) -> Result<JwkSet, String> {
    let discovery: Discovery = fetch_json(http, &discovery_url(issuer)).await?;
    if discovery.issuer != issuer {
        return Err(format!(
            "its discovery document names issuer {:?}",
            discovery.issuer
        ));
    }
    if !crate::target::is_secure_url(&discovery.jwks_uri) {
        return Err("its jwks_uri is not https".into());
    }
    fetch_json(http, &discovery.jwks_uri).await
}

async fn fetch_json<T: for<'de> Deserialize<'de>>(
    http: &reqwest::Client,
    url: &str,
) -> Result<T, String> {
    let mut response = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {}", crate::ui::printable(&e.to_string(), 300)))?;
    if !response.status().is_success() {
        return Err(format!("{url} answered {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("{url}: {e}"))? {
        if body.len().saturating_add(chunk.len()) > MAX_DOCUMENT {
            return Err(format!("{url}: larger than {MAX_DOCUMENT} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| format!("{url}: not the JSON expected: {e}"))
}

/// The `alg` a header names, when it is not one the JWT library knows (e.g. `none`).
fn alg_of(token: &str) -> Option<String> {
    use base64::Engine;
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value
        .get("alg")
        .and_then(serde_json::Value::as_str)
        .map(|s| crate::ui::printable(s, 16))
}
