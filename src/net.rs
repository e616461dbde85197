//! The network and the runtime: the settings a request travels with
//! (proxies, CA certificates), the one place HTTP clients are built (rustls
//! with ring, no redirects, no idle connections), timeouts and deadlines, and
//! the one blocking bridge into async I/O ([`block_on`], [`Blocking`]).
//!
//! The API's own client (requests, answers, errors) is [`crate::api`]; it and
//! every other HTTP caller (a broker, an ID-token endpoint) build their
//! clients here. Only this module and the programs' entries build or enter a
//! runtime (`tests/it/architecture.rs` checks it).

use std::future::Future;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use url::Url;

/// How long to wait for a TCP+TLS connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one whole call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// `after` from now, saturating: a deadline that is never in the past and
/// never overflows, however large `after` is.
pub fn deadline_in(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(now)
}

/// The `User-Agent` of every request.
const CLIENT_NAME: &str = concat!("git-credential-githosted/", env!("CARGO_PKG_VERSION"));

/// What changes how a request travels in this environment: proxies and CA
/// certificates, from the usual variables. The helper sends its own with every
/// mint, so the agent applies the asker's settings, never those of whichever
/// process happened to start it; a loopback API is never proxied.
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Network {
    pub https_proxy: Option<String>,
    pub http_proxy: Option<String>,
    pub all_proxy: Option<String>,
    pub no_proxy: Option<String>,
    /// `SSL_CERT_FILE`: the CA certificates to trust instead of the system's.
    pub ca_file: Option<std::path::PathBuf>,
    /// `SSL_CERT_DIR`: a directory of them.
    pub ca_dir: Option<std::path::PathBuf>,
}

impl Network {
    /// This process's settings (lower-case names first, as curl and reqwest read them).
    pub fn from_env() -> Network {
        let var = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| std::env::var(n).ok())
                .filter(|v| !v.trim().is_empty())
        };
        Network {
            https_proxy: var(&["https_proxy", "HTTPS_PROXY"]),
            http_proxy: var(&["http_proxy", "HTTP_PROXY"]),
            all_proxy: var(&["all_proxy", "ALL_PROXY"]),
            no_proxy: var(&["no_proxy", "NO_PROXY"]),
            ca_file: var(&["SSL_CERT_FILE"]).map(Into::into),
            ca_dir: var(&["SSL_CERT_DIR"]).map(Into::into),
        }
    }

    /// Whether a request to `url` goes through one of these proxies (a
    /// loopback host never does; then a refused connection is the proxy's).
    pub fn proxies(&self, url: &Url) -> bool {
        !crate::target::is_loopback(url.host_str().unwrap_or_default())
            && (self.https_proxy.is_some() || self.http_proxy.is_some() || self.all_proxy.is_some())
    }

    /// Applies these settings to a client for `base`, whose host (with port)
    /// is `host`: proxies unless it is loopback, CA certificates if it is https.
    fn apply(
        &self,
        mut builder: reqwest::ClientBuilder,
        base: &Url,
        host: &str,
    ) -> Result<reqwest::ClientBuilder, String> {
        // Never the process's variables: only what this value says.
        builder = builder.no_proxy();
        let host_name = host.rsplit_once(':').map_or(host, |(h, p)| {
            if p.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        });
        if !crate::target::is_loopback(host_name) {
            let no_proxy = self
                .no_proxy
                .as_deref()
                .and_then(reqwest::NoProxy::from_string);
            let proxies = [
                (&self.https_proxy, "https_proxy"),
                (&self.http_proxy, "http_proxy"),
                (&self.all_proxy, "all_proxy"),
            ];
            for (value, name) in proxies {
                let Some(url) = value.as_deref() else {
                    continue;
                };
                let proxy = match name {
                    "https_proxy" => reqwest::Proxy::https(url),
                    "http_proxy" => reqwest::Proxy::http(url),
                    _ => reqwest::Proxy::all(url),
                }
                .map_err(|_| format!("{name} is not a proxy URL"))?;
                builder = builder.proxy(proxy.no_proxy(no_proxy.clone()));
            }
        }
        if base.scheme() == "https" && (self.ca_file.is_some() || self.ca_dir.is_some()) {
            let mut certs = Vec::new();
            let mut files: Vec<std::path::PathBuf> = self.ca_file.iter().cloned().collect();
            if let Some(dir) = &self.ca_dir {
                let entries = std::fs::read_dir(dir)
                    .map_err(|e| format!("SSL_CERT_DIR {}: {e}", dir.display()))?;
                files.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_file()));
            }
            for file in files {
                let pem = std::fs::read(&file)
                    .map_err(|e| format!("reading CA certificates {}: {e}", file.display()))?;
                // Certificates the file holds; anything else in it is skipped.
                if let Ok(found) = reqwest::Certificate::from_pem_bundle(&pem) {
                    certs.extend(found);
                }
            }
            if certs.is_empty() {
                return Err("SSL_CERT_FILE/SSL_CERT_DIR hold no CA certificate: point them at a CA bundle (Debian: /etc/ssl/certs/ca-certificates.crt) or unset them".into());
            }
            builder = builder.tls_certs_only(certs);
        }
        Ok(builder)
    }
}

/// Proxy URLs may hold a password: only whether each is set is shown.
impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("https_proxy", &self.https_proxy.is_some())
            .field("http_proxy", &self.http_proxy.is_some())
            .field("all_proxy", &self.all_proxy.is_some())
            .field("no_proxy", &self.no_proxy)
            .field("ca_file", &self.ca_file)
            .field("ca_dir", &self.ca_dir)
            .finish()
    }
}

/// A plain HTTP client for one request to `url` (a broker, an ID-token
/// endpoint), with this process's proxies and CA certificates applied as for
/// the API — loopback never proxied — no redirects, no idle connections (their
/// buffers would keep a bearer token), at most `timeout`.
pub fn http_client(url: &Url, timeout: Duration) -> Result<reqwest::Client, String> {
    http_client_with(url, timeout, &Network::from_env())
}

/// [`http_client`] with the asker's network settings (the agent keeps none of its own).
pub fn http_client_with(
    url: &Url,
    timeout: Duration,
    network: &Network,
) -> Result<reqwest::Client, String> {
    client_for(url, url.host_str().unwrap_or_default(), timeout, network)
}

/// The one place an HTTP client is built: rustls with ring, `network`'s
/// proxies (unless `host`, with or without its port, is loopback) and CA
/// certificates, [`CONNECT_TIMEOUT`] (or less), at most `timeout` per request,
/// no redirects, and no idle connections: their buffers would keep the last
/// request's `Authorization` (a token) in memory; closed, they are wiped.
pub fn client_for(
    url: &Url,
    host: &str,
    timeout: Duration,
    network: &Network,
) -> Result<reqwest::Client, String> {
    // reqwest is built without a default crypto provider; ring is ours.
    // An error only means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = network.apply(reqwest::Client::builder(), url, host)?;
    if url.scheme() == "http" {
        // Plain http (loopback only) has no TLS to verify: the system's CA
        // certificates are not loaded, so a host without any (a `scratch`
        // image) still reaches a local API.
        builder = builder.tls_certs_only(Vec::new());
    }
    builder
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .timeout(timeout)
        .user_agent(CLIENT_NAME)
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|e| build_failure(&e))
}

/// Why no client could be built, with the fix when it is the usual one: a
/// machine without CA certificates.
fn build_failure(e: &reqwest::Error) -> String {
    let mut chain = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        chain = format!("{chain}: {cause}");
        source = cause.source();
    }
    if chain.contains("CA certificates") {
        "this machine has no CA certificates to check HTTPS with: install them (Debian/Ubuntu: apt-get install ca-certificates; Alpine: apk add ca-certificates) or set SSL_CERT_FILE=/path/to/ca-bundle.pem".to_owned()
    } else {
        format!("cannot build the HTTP client: {chain}")
    }
}

/// An HTTP answer's body, at most `max` bytes, in memory that is wiped (it
/// may hold a token): for callers outside the API's own client.
pub async fn read_capped(
    mut response: reqwest::Response,
    max: usize,
) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
    let too_big = || format!("the answer is larger than {} KiB", max / 1024);
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_big());
    }
    let mut body = zeroize::Zeroizing::new(Vec::new());
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len().saturating_add(chunk.len()) > max {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The runtime could not be started (out of file descriptors, say).
#[derive(Debug, thiserror::Error)]
#[error("cannot start the I/O runtime: {0}")]
pub struct NoRuntime(#[from] std::io::Error);

/// The one bridge from blocking code into async I/O (as mini-redis's blocking
/// client): a runtime on the calling thread, with timers and I/O. A command
/// crosses it once ([`block_on`]); a program that serves until it ends (the
/// agent) holds one for its life.
pub struct Blocking {
    runtime: tokio::runtime::Runtime,
}

impl Blocking {
    pub fn new() -> Result<Blocking, NoRuntime> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Blocking { runtime })
    }

    /// Runs `work` to its end on this thread.
    pub fn run<F: Future>(&self, work: F) -> F::Output {
        self.runtime.block_on(work)
    }

    /// Makes the runtime current on this thread (for what must be made in
    /// it, outside [`Blocking::run`]), until the guard is dropped.
    pub fn enter(&self) -> tokio::runtime::EnterGuard<'_> {
        self.runtime.enter()
    }
}

/// Runs `work` to its end on a runtime made for it: a command's one crossing
/// from blocking code into async I/O.
pub fn block_on<F: Future>(work: F) -> Result<F::Output, NoRuntime> {
    Ok(Blocking::new()?.run(work))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_debug_hides_proxy_credentials() {
        let net = Network {
            https_proxy: Some("http://user:hunter2@proxy:3128".into()),
            ..Network::default()
        };
        let shown = format!("{net:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("https_proxy: true"), "{shown}");
    }

    #[test]
    fn deadlines_saturate() {
        let far = deadline_in(Duration::from_secs(u64::MAX));
        assert!(far > Instant::now());
    }

    #[test]
    fn the_bridge_runs_timers_and_io() {
        let slept = block_on(async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            tokio::net::TcpListener::bind("127.0.0.1:0").await.is_ok()
        })
        .unwrap();
        assert!(slept);
    }
}
