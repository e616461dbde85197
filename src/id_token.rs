//! The job's side of OIDC: where a CI job gets its ID token for the broker
//! (GitHub Actions' request endpoint, a file, or a variable), and what
//! identifies the job without asking anyone. The broker's side (verifying ID
//! tokens) is the broker's verifier (`broker/src/oidc.rs`); the two share nothing.

use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::secret::Secret;

/// The longest one request to GitHub's ID-token endpoint may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The most of GitHub's answer that is read.
const MAX_ANSWER: usize = 64 * 1024;

/// Where a CI job gets its ID token.
#[derive(Debug, Clone)]
pub enum Source {
    /// GitHub Actions: `ACTIONS_ID_TOKEN_REQUEST_URL` + `ACTIONS_ID_TOKEN_REQUEST_TOKEN`.
    GithubActions,
    /// A file the platform writes (GitLab `id_tokens`, Kubernetes projected tokens).
    File(std::path::PathBuf),
    /// An environment variable holding the token.
    Env(String),
}

impl Source {
    /// The source to use: the one asked for, else GitHub Actions when its variables are set.
    pub fn choose(file: Option<&std::path::Path>, env: Option<&str>) -> Option<Source> {
        if let Some(f) = file {
            return Some(Source::File(f.to_owned()));
        }
        if let Some(e) = env {
            return Some(Source::Env(e.to_owned()));
        }
        if std::env::var_os("ACTIONS_ID_TOKEN_REQUEST_URL").is_some() {
            return Some(Source::GithubActions);
        }
        None
    }

    pub fn describe(&self) -> String {
        match self {
            Source::GithubActions => "GitHub Actions' ID-token endpoint".into(),
            Source::File(p) => format!("the file {}", p.display()),
            Source::Env(n) => format!("${n}"),
        }
    }

    /// What identifies this job without asking anyone (it keys the agent's
    /// cache, as a keyed hash): GitHub's request token, the file's or the
    /// variable's token. `None` when it cannot be read.
    pub fn identity(&self) -> Option<Secret> {
        let value = match self {
            Source::GithubActions => std::env::var("ACTIONS_ID_TOKEN_REQUEST_TOKEN").ok()?,
            Source::File(path) => std::fs::read_to_string(path).ok()?,
            Source::Env(name) => std::env::var(name).ok()?,
        };
        let value = Secret::new(value.trim().to_owned());
        (!value.expose().is_empty()).then_some(value)
    }

    /// The job's ID token for `audience`.
    pub async fn fetch(&self, audience: &str, deadline: Instant) -> Result<Secret, String> {
        match self {
            Source::File(path) => std::fs::read_to_string(path)
                .map(|t| Secret::new(t.trim().to_owned()))
                .map_err(|e| format!("cannot read the ID token from {}: {e}", path.display())),
            Source::Env(name) => std::env::var(name)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .map(|v| Secret::new(v.trim().to_owned()))
                .ok_or_else(|| format!("${name} is empty or not set")),
            Source::GithubActions => {
                let url = std::env::var("ACTIONS_ID_TOKEN_REQUEST_URL")
                    .map_err(|_| "ACTIONS_ID_TOKEN_REQUEST_URL is not set".to_owned())?;
                let bearer = std::env::var("ACTIONS_ID_TOKEN_REQUEST_TOKEN").map_err(|_| {
                    "ACTIONS_ID_TOKEN_REQUEST_TOKEN is not set: give the job `permissions: id-token: write`"
                        .to_owned()
                })?;
                let bearer = Secret::new(bearer);
                let mut url = url::Url::parse(&url)
                    .map_err(|e| format!("ACTIONS_ID_TOKEN_REQUEST_URL is not a URL: {e}"))?;
                url.query_pairs_mut().append_pair("audience", audience);
                let left = deadline.saturating_duration_since(Instant::now());
                let http = crate::net::http_client(&url, left.min(FETCH_TIMEOUT))?;
                #[derive(Deserialize)]
                struct Answer {
                    value: Option<String>,
                }
                let response = http
                    .get(url)
                    .bearer_auth(bearer.expose())
                    .send()
                    .await
                    .map_err(|e| format!("GitHub's ID-token endpoint: {e}"))?;
                if !response.status().is_success() {
                    return Err(format!(
                        "GitHub's ID-token endpoint answered {}",
                        response.status()
                    ));
                }
                let body = crate::net::read_capped(response, MAX_ANSWER)
                    .await
                    .map_err(|e| format!("GitHub's ID-token endpoint: {e}"))?;
                let answer: Answer = serde_json::from_slice(&body)
                    .map_err(|e| format!("GitHub's ID-token endpoint: {e}"))?;
                answer
                    .value
                    .map(Secret::new)
                    .ok_or_else(|| "GitHub's ID-token endpoint sent no token".to_owned())
            }
        }
    }
}
