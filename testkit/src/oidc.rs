//! A local OIDC issuer for the broker's tests: discovery, a JWKS, and a
//! GitHub-Actions-compatible ID-token request endpoint. Keys (ES256, and
//! RS256 on request) are generated at test time; tokens are signed on demand
//! with any claims and header, so tests can forge exactly the token an
//! attacker would.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

/// The audience the helper asks for by default.
pub const AUDIENCE: &str = "githosted-broker";

/// One signing key: ES256 (P-256) or RS256 (RSA 2048).
#[derive(Clone)]
pub struct Key {
    pub kid: String,
    alg: Algorithm,
    /// The private key: PKCS#8 (EC) or PKCS#1 (RSA) DER.
    der: Vec<u8>,
    /// The public half as the JWKS publishes it.
    jwk: Value,
    /// The public key's bytes (EC: 0x04 ‖ x ‖ y; RSA: the modulus), to forge
    /// an HMAC token "signed" with what the JWKS shows.
    pub public: Vec<u8>,
}

impl Key {
    /// A fresh ES256 key.
    fn generate(kid: &str) -> Key {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("generate a P-256 key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("read the key back");
        let public = pair.public_key().as_ref().to_vec();
        Key {
            kid: kid.to_owned(),
            alg: Algorithm::ES256,
            der: pkcs8.as_ref().to_vec(),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(&public[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&public[33..65]),
            }),
            public,
        }
    }

    /// A fresh RS256 key (2048 bits).
    fn generate_rsa(kid: &str) -> Key {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::traits::PublicKeyParts;
        let key = rsa::PrivateKey::new(&mut OsRandom, 2048).expect("generate an RSA key");
        let n = key.n().as_ref().to_be_bytes_trimmed_vartime().to_vec();
        let e = key.e().to_be_bytes_trimmed_vartime().to_vec();
        let der = key.to_pkcs1_der().expect("encode the RSA key");
        Key {
            kid: kid.to_owned(),
            alg: Algorithm::RS256,
            der: der.as_bytes().to_vec(),
            jwk: json!({
                "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                "n": URL_SAFE_NO_PAD.encode(&n), "e": URL_SAFE_NO_PAD.encode(&e),
            }),
            public: n,
        }
    }

    fn jwk(&self) -> Value {
        self.jwk.clone()
    }

    /// Signs `claims` as a JWT naming this key.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        let key = match self.alg {
            Algorithm::RS256 => EncodingKey::from_rsa_der(&self.der),
            _ => EncodingKey::from_ec_der(&self.der),
        };
        jsonwebtoken::encode(&header, claims, &key).expect("sign")
    }
}

/// The operating system's random numbers, as the `rsa` crate asks for them.
struct OsRandom;

impl rsa::rand_core::TryRng for OsRandom {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut bytes = [0; 4];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut bytes = [0; 8];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        ring::rand::SecureRandom::fill(&SystemRandom::new(), dst).expect("system randomness");
        Ok(())
    }
}

impl rsa::rand_core::TryCryptoRng for OsRandom {}

struct Shared {
    issuer: Mutex<String>,
    /// Keys published in the JWKS.
    published: Mutex<Vec<Key>>,
    /// The key tokens are signed with.
    current: Mutex<Key>,
    down: AtomicBool,
    jwks_fetches: AtomicUsize,
    request_token: String,
    /// The `sub` of tokens from the Actions endpoint.
    job_subject: Mutex<String>,
    /// Discovery requests, answered or not.
    discovery_requests: AtomicUsize,
    /// JWKS requests held until released (or 20 s).
    hang: AtomicBool,
    /// JWKS requests being held.
    hanging: AtomicUsize,
}

/// A running issuer on a loopback port.
pub struct Issuer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Issuer {
    pub fn start() -> Issuer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let key = Key::generate("key-1");
        let shared = Arc::new(Shared {
            issuer: Mutex::new(format!("http://{addr}")),
            published: Mutex::new(vec![key.clone()]),
            current: Mutex::new(key),
            down: AtomicBool::new(false),
            jwks_fetches: AtomicUsize::new(0),
            request_token: format!("actions-request-{}", rand::random::<u64>()),
            job_subject: Mutex::new("repo:acme-org/app:ref:refs/heads/main".into()),
            discovery_requests: AtomicUsize::new(0),
            hang: AtomicBool::new(false),
            hanging: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/actions-token", get(actions_token))
            .with_state(shared.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let serve = std::future::IntoFuture::into_future(axum::serve(listener, app));
                tokio::select! {
                    _ = serve => {}
                    _ = rx => {}
                }
            });
            rt.shutdown_timeout(Duration::from_secs(1));
        });
        Issuer {
            shared,
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// The issuer URL (`iss`), `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.shared.issuer.lock().unwrap().clone()
    }

    /// Claims of a valid token for `sub`, now.
    pub fn claims(&self, sub: &str) -> Value {
        let now = now();
        json!({
            "iss": self.url(), "sub": sub, "aud": AUDIENCE,
            "iat": now, "nbf": now, "exp": now + 300,
            "repository_owner": "acme-org",
        })
    }

    /// A valid ID token for `sub`.
    pub fn token(&self, sub: &str) -> String {
        self.sign(&self.claims(sub))
    }

    /// Signs any claims with the current key.
    pub fn sign(&self, claims: &Value) -> String {
        self.shared.current.lock().unwrap().sign(claims)
    }

    /// The current signing key (to forge with its public half).
    pub fn key(&self) -> Key {
        self.shared.current.lock().unwrap().clone()
    }

    /// Signs with a new ES256 key: published in the JWKS when `publish`, else unknown.
    pub fn rotate(&self, kid: &str, publish: bool) {
        self.use_key(Key::generate(kid), publish);
    }

    /// Signs with a new, published RS256 key (as GitHub and GitLab do).
    pub fn rotate_to_rsa(&self, kid: &str) {
        self.use_key(Key::generate_rsa(kid), true);
    }

    fn use_key(&self, key: Key, publish: bool) {
        if publish {
            self.shared.published.lock().unwrap().push(key.clone());
        }
        *self.shared.current.lock().unwrap() = key;
    }

    /// Makes every endpoint answer 503 (or recover).
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// How many times the discovery document was asked for (also while down).
    pub fn discovery_requests(&self) -> usize {
        self.shared.discovery_requests.load(Ordering::SeqCst)
    }

    /// Makes the JWKS endpoint hang (until `set_hang(false)`, at most 20 s).
    pub fn set_hang(&self, hang: bool) {
        self.shared.hang.store(hang, Ordering::SeqCst);
    }

    /// JWKS requests being held by [`Issuer::set_hang`] right now.
    pub fn hanging(&self) -> usize {
        self.shared.hanging.load(Ordering::SeqCst)
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    /// The `sub` of tokens the Actions endpoint hands out.
    pub fn set_job_subject(&self, sub: &str) {
        *self.shared.job_subject.lock().unwrap() = sub.to_owned();
    }

    /// What GitHub Actions puts in a job's environment for `id-token: write`.
    pub fn actions_env(&self) -> [(&'static str, String); 2] {
        [
            (
                "ACTIONS_ID_TOKEN_REQUEST_URL",
                format!("http://{}/actions-token?api-version=2.0", self.addr),
            ),
            (
                "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
                self.shared.request_token.clone(),
            ),
        ]
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn unavailable() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "down").into_response()
}

async fn discovery(State(s): State<Arc<Shared>>) -> Response {
    s.discovery_requests.fetch_add(1, Ordering::SeqCst);
    if s.down.load(Ordering::SeqCst) {
        return unavailable();
    }
    let issuer = s.issuer.lock().unwrap().clone();
    Json(json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")})).into_response()
}

async fn jwks(State(s): State<Arc<Shared>>) -> Response {
    if s.hang.load(Ordering::SeqCst) {
        s.hanging.fetch_add(1, Ordering::SeqCst);
        for _ in 0..200 {
            if !s.hang.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        s.hanging.fetch_sub(1, Ordering::SeqCst);
    }
    if s.down.load(Ordering::SeqCst) {
        return unavailable();
    }
    s.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let keys: Vec<Value> = s.published.lock().unwrap().iter().map(Key::jwk).collect();
    Json(json!({ "keys": keys })).into_response()
}

async fn actions_token(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let expected = format!("Bearer {}", s.request_token);
    if headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v != expected)
    {
        return (StatusCode::UNAUTHORIZED, "bad request token").into_response();
    }
    let now = now();
    let claims = json!({
        "iss": s.issuer.lock().unwrap().clone(),
        "sub": s.job_subject.lock().unwrap().clone(),
        "aud": query.get("audience").cloned().unwrap_or_default(),
        "iat": now, "nbf": now, "exp": now + 300,
        "repository_owner": "acme-org",
    });
    let token = s.current.lock().unwrap().sign(&claims);
    Json(json!({ "count": 1, "value": token })).into_response()
}

/// A running `githosted-broker`, its audit lines collected from stdout.
pub struct Broker {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    audit: std::path::PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Broker {
    /// The audit lines so far.
    pub fn audit(&self) -> String {
        std::fs::read_to_string(&self.audit).unwrap_or_default()
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Starts a broker in `world` with `policy` (TOML text), a fresh `acme`
/// workspace token in its environment only; `Err` holds what it printed when
/// it refused to start.
pub fn start_broker(world: &crate::World, policy: &str) -> Result<Broker, String> {
    start_broker_with(world, policy, &[])
}

/// [`start_broker`] with more options (`--tls-cert`, …).
pub fn start_broker_with(
    world: &crate::World,
    policy: &str,
    options: &[&str],
) -> Result<Broker, String> {
    start_broker_configured(world, policy, options, |_| {})
}

/// [`start_broker_with`], with `configure` applied to the command last (an
/// rlimit in `pre_exec`, another `GITHOSTED_TOKEN`, …).
pub fn start_broker_configured(
    world: &crate::World,
    policy: &str,
    options: &[&str],
    configure: impl FnOnce(&mut std::process::Command),
) -> Result<Broker, String> {
    use std::io::{BufRead, BufReader};
    let parent = world
        .server
        .seed_token("acme", crate::TokenSpec::workspace_write());
    let path = world.path(&format!("policy-{}.toml", rand::random::<u32>()));
    std::fs::write(&path, policy).expect("write the policy");
    let audit = world.path(&format!("audit-{}.jsonl", rand::random::<u32>()));
    let mut cmd = world.command(crate::broker_program());
    cmd.args(["--listen", "127.0.0.1:0", "--policy"])
        .arg(&path)
        .args(["--api-url", &world.server.base_url()])
        .args(options)
        .env("GITHOSTED_TOKEN", &parent)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&audit).expect("audit file"))
        .stderr(std::process::Stdio::piped());
    configure(&mut cmd);
    let mut child = cmd.spawn().expect("start the broker");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    let _ = stderr.read_line(&mut line);
    assert!(!line.contains(&parent), "the broker printed its token");
    let Some(url) = line
        .trim()
        .rsplit(' ')
        .next()
        .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
        .map(str::to_owned)
    else {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
        let _ = child.wait();
        return Err(format!("{line}{rest}"));
    };
    // Keep draining stderr so the broker never blocks on it.
    std::thread::spawn(move || for _ in stderr.lines() {});
    Ok(Broker { child, url, audit })
}
