//! Which githosted repository git is asking about.
//!
//! A githosted clone URL names a workspace and a repo, in one of two forms:
//!
//! - `https://githosted.dev/<workspace>/<repo>.git`
//! - `https://api.githosted.dev/git/<workspace>/<repo>.git`
//!
//! Both belong to the API at `https://api.githosted.dev`. With `--api-url URL`
//! the helper serves the API's own host (either path form) and, when the API host
//! is `api.X`, also `X`, mirroring githosted.dev. Plain `http` is accepted only
//! for loopback hosts, for the API and for git alike.

use std::net::IpAddr;

use url::Url;

/// The public githosted API.
pub const DEFAULT_API_URL: &str = "https://api.githosted.dev";

/// Why an API URL cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ApiUrlError {
    #[error("`{0}` is not a URL: {1}")]
    Invalid(String, url::ParseError),
    #[error("`{0}` has no host")]
    NoHost(String),
    #[error(
        "`{0}` uses plain http on a host that is not loopback: use https (http is only for 127.0.0.1, ::1 or localhost)"
    )]
    InsecureHttp(String),
    #[error("`{0}` must use https (or http on a loopback host)")]
    Scheme(String),
    #[error("broker URL `{0}` must be https (or http on 127.0.0.1, ::1 or localhost)")]
    Broker(String),
}

/// An https URL with a host, or http on loopback: where a token may be sent.
pub fn is_secure_url(text: &str) -> bool {
    match Url::parse(text) {
        Ok(u) if u.scheme() == "https" => u.host_str().is_some_and(|h| !h.is_empty()),
        Ok(u) if u.scheme() == "http" => match u.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        },
        _ => false,
    }
}

/// One githosted API and the git hosts it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    api_url: Url,
    api_host: String,
    git_hosts: Vec<String>,
}

/// A repository on a githosted service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub workspace: String,
    pub repo: String,
}

/// What a request is, from this helper's point of view.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Another protocol or host: stay silent so other helpers can answer.
    NotOurs,
    /// Our host, but git sent no path (`credential.useHttpPath` is off).
    NoPath,
    /// Our host, but the path does not name `<workspace>/<repo>`.
    BadPath(String),
    /// A repository we can mint a token for.
    Repo(Target),
}

impl Service {
    /// The service at `api_url`, or the public one.
    pub fn new(api_url: Option<&str>) -> Result<Service, ApiUrlError> {
        let raw = api_url.unwrap_or(DEFAULT_API_URL);
        let url = Url::parse(raw).map_err(|e| ApiUrlError::Invalid(raw.to_owned(), e))?;
        let host = url
            .host_str()
            .ok_or_else(|| ApiUrlError::NoHost(raw.to_owned()))?
            .to_ascii_lowercase();
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&host) => {}
            "http" => return Err(ApiUrlError::InsecureHttp(raw.to_owned())),
            _ => return Err(ApiUrlError::Scheme(raw.to_owned())),
        }
        let with_port = |h: &str| match url.port() {
            Some(port) => format!("{h}:{port}"),
            None => h.to_owned(),
        };
        let api_host = with_port(&host);
        let mut git_hosts = vec![api_host.clone()];
        if let Some(bare) = host.strip_prefix("api.") {
            git_hosts.insert(0, with_port(bare));
        }
        Ok(Service {
            api_url: url,
            api_host,
            git_hosts,
        })
    }

    /// The API base URL, e.g. `https://api.githosted.dev/`.
    pub fn api_url(&self) -> &Url {
        &self.api_url
    }

    /// The API host with a non-default port, e.g. `api.githosted.dev` or
    /// `127.0.0.1:8080`: the keychain account and the name in messages.
    pub fn api_host(&self) -> &str {
        &self.api_host
    }

    /// The git hosts (with port) whose repositories this service holds.
    pub fn git_hosts(&self) -> &[String] {
        &self.git_hosts
    }

    /// The URL scheme git uses for these hosts.
    pub fn scheme(&self) -> &str {
        self.api_url.scheme()
    }

    /// Classifies a request by protocol, host and path.
    pub fn resolve(
        &self,
        protocol: Option<&str>,
        host: Option<&str>,
        path: Option<&str>,
    ) -> Resolution {
        let (Some(protocol), Some(host)) = (protocol, host) else {
            return Resolution::NotOurs;
        };
        if !matches!(protocol, "https" | "http") {
            return Resolution::NotOurs;
        }
        // git's `host` is `name[:port]`: normalised as a URL would be (case,
        // default port); anything else in it (a user, a path) is not ours.
        let Some(url) = Url::parse(&format!("{protocol}://{host}/"))
            .ok()
            .filter(|u| u.username().is_empty() && u.path() == "/")
        else {
            return Resolution::NotOurs;
        };
        let Some(name) = url.host_str() else {
            return Resolution::NotOurs;
        };
        let host = match url.port() {
            Some(port) => format!("{name}:{port}"),
            None => name.to_owned(),
        };
        let protocol_ok = protocol == "https" || is_loopback(name);
        if !protocol_ok || !self.git_hosts.contains(&host) {
            return Resolution::NotOurs;
        }
        match path {
            None => Resolution::NoPath,
            Some(path) => match parse_repo_path(path) {
                Some(target) => Resolution::Repo(target),
                None => Resolution::BadPath(path.to_owned()),
            },
        }
    }
}

impl Target {
    /// `WS/REPO` as typed on the command line (`acme/app`), or a URL path.
    pub fn parse(text: &str) -> Option<Target> {
        parse_repo_path(text)
    }
}

/// `acme/app.git`, `acme/app`, `git/acme/app.git` → workspace `acme`, repo `app`.
/// So is git-lfs's endpoint for that repository, `acme/app.git/info/lfs`, and
/// anything below it (`…/info/lfs/objects/batch`, `…/info/lfs/objects/<oid>`):
/// git-lfs asks for those itself when its endpoint is not the remote's URL (an
/// `ssh://` origin with `lfs.url` set to the HTTP endpoint).
fn parse_repo_path(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    fn ws_repo<'a>(segments: &[&'a str]) -> Option<(&'a str, &'a str)> {
        match *segments {
            [workspace, repo] => Some((workspace, repo)),
            [workspace, repo, "info", "lfs", ref below @ ..]
                if repo.ends_with(".git") && !below.iter().any(|s| matches!(*s, "." | "..")) =>
            {
                Some((workspace, repo))
            }
            _ => None,
        }
    }
    let (workspace, repo) = match segments.as_slice() {
        ["git", rest @ ..] => ws_repo(rest).or_else(|| ws_repo(&segments))?,
        all => ws_repo(all)?,
    };
    let repo = repo.strip_suffix(".git").unwrap_or(repo);
    (is_slug(workspace) && is_slug(repo)).then(|| Target {
        workspace: workspace.to_owned(),
        repo: repo.to_owned(),
    })
}

/// githosted slugs: letters, digits, `-`, `_`, `.`, not starting with a dot.
fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// 127.0.0.0/8, ::1 and `localhost`.
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public() -> Service {
        Service::new(None).unwrap()
    }

    fn repo(ws: &str, repo: &str) -> Resolution {
        Resolution::Repo(Target {
            workspace: ws.into(),
            repo: repo.into(),
        })
    }

    #[test]
    fn both_public_url_forms() {
        let s = public();
        assert_eq!(s.api_host(), "api.githosted.dev");
        assert_eq!(
            s.resolve(Some("https"), Some("githosted.dev"), Some("acme/app.git")),
            repo("acme", "app")
        );
        assert_eq!(
            s.resolve(Some("https"), Some("githosted.dev"), Some("acme/app")),
            repo("acme", "app")
        );
        assert_eq!(
            s.resolve(
                Some("https"),
                Some("api.githosted.dev"),
                Some("git/acme/app.git")
            ),
            repo("acme", "app")
        );
        assert_eq!(
            s.resolve(
                Some("https"),
                Some("GitHosted.dev:443"),
                Some("acme/app.git")
            ),
            repo("acme", "app")
        );
    }

    #[test]
    fn other_protocols_and_hosts_are_not_ours() {
        let s = public();
        assert_eq!(
            s.resolve(Some("http"), Some("githosted.dev"), Some("a/b.git")),
            Resolution::NotOurs
        );
        assert_eq!(
            s.resolve(Some("ssh"), Some("githosted.dev"), Some("a/b.git")),
            Resolution::NotOurs
        );
        assert_eq!(
            s.resolve(Some("https"), Some("github.com"), Some("a/b.git")),
            Resolution::NotOurs
        );
        assert_eq!(
            s.resolve(Some("https"), Some("evil.githosted.dev"), Some("a/b.git")),
            Resolution::NotOurs
        );
        assert_eq!(
            s.resolve(Some("https"), Some("githosted.dev:8443"), Some("a/b.git")),
            Resolution::NotOurs
        );
        assert_eq!(
            s.resolve(None, Some("githosted.dev"), Some("a/b.git")),
            Resolution::NotOurs
        );
        assert_eq!(
            s.resolve(Some("https"), None, Some("a/b.git")),
            Resolution::NotOurs
        );
        for odd in [
            "evil@githosted.dev",
            "githosted.dev/x",
            "githosted.dev:notaport",
            "",
        ] {
            assert_eq!(
                s.resolve(Some("https"), Some(odd), Some("a/b.git")),
                Resolution::NotOurs,
                "{odd}"
            );
        }
    }

    #[test]
    fn missing_or_odd_paths() {
        let s = public();
        assert_eq!(
            s.resolve(Some("https"), Some("githosted.dev"), None),
            Resolution::NoPath
        );
        for bad in [
            "acme",
            "a/b/c/d.git",
            "../b.git",
            "acme/.git",
            "x/acme/app.git",
            "a/b c.git",
        ] {
            assert_eq!(
                s.resolve(Some("https"), Some("githosted.dev"), Some(bad)),
                Resolution::BadPath(bad.into()),
                "{bad}"
            );
        }
    }

    /// git-lfs asks for its endpoint (and the transfers below it) by path when
    /// the remote is not that HTTP URL (issue 21, item 8).
    #[test]
    fn git_lfs_endpoint_and_below_map_to_the_repo() {
        let s = public();
        for path in [
            "acme/app.git/info/lfs",
            "acme/app.git/info/lfs/",
            "acme/app.git/info/lfs/objects/batch",
            "acme/app.git/info/lfs/locks/verify",
            "acme/app.git/info/lfs/objects/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "git/acme/app.git/info/lfs",
            "git/acme/app.git/info/lfs/objects/batch",
        ] {
            assert_eq!(
                s.resolve(Some("https"), Some("githosted.dev"), Some(path)),
                repo("acme", "app"),
                "{path}"
            );
        }
        for bad in [
            "acme/app/info/lfs",
            "acme/app.git/info",
            "acme/app.git/info/refs",
            "acme/app.git/lfs",
            "acme/app.git/info/lfs/../../../other/x.git",
            "x/acme/app.git/info/lfs",
            "acme/.git/info/lfs",
        ] {
            assert_eq!(
                s.resolve(Some("https"), Some("githosted.dev"), Some(bad)),
                Resolution::BadPath(bad.into()),
                "{bad}"
            );
        }
    }

    #[test]
    fn local_api_serves_its_own_host_over_http() {
        let s = Service::new(Some("http://127.0.0.1:8080")).unwrap();
        assert_eq!(s.api_host(), "127.0.0.1:8080");
        assert_eq!(s.git_hosts(), ["127.0.0.1:8080".to_string()]);
        assert_eq!(
            s.resolve(Some("http"), Some("127.0.0.1:8080"), Some("acme/app.git")),
            repo("acme", "app")
        );
        assert_eq!(
            s.resolve(
                Some("http"),
                Some("127.0.0.1:8080"),
                Some("git/acme/app.git")
            ),
            repo("acme", "app")
        );
        assert_eq!(
            s.resolve(Some("http"), Some("127.0.0.1:9090"), Some("acme/app.git")),
            Resolution::NotOurs
        );
        assert_eq!(
            s.resolve(Some("https"), Some("githosted.dev"), Some("acme/app.git")),
            Resolution::NotOurs
        );
    }

    #[test]
    fn self_hosted_api_serves_its_sibling_host() {
        let s = Service::new(Some("https://api.corp.example:8443/")).unwrap();
        assert_eq!(s.api_host(), "api.corp.example:8443");
        assert_eq!(
            s.git_hosts(),
            [
                "corp.example:8443".to_string(),
                "api.corp.example:8443".to_string()
            ]
        );
    }

    #[test]
    fn plain_http_only_on_loopback() {
        assert!(matches!(
            Service::new(Some("http://api.githosted.dev")),
            Err(ApiUrlError::InsecureHttp(_))
        ));
        assert!(matches!(
            Service::new(Some("ftp://127.0.0.1")),
            Err(ApiUrlError::Scheme(_))
        ));
        assert!(Service::new(Some("http://localhost:1")).is_ok());
        assert!(Service::new(Some("http://[::1]:1")).is_ok());
        assert!(matches!(
            Service::new(Some("not a url")),
            Err(ApiUrlError::Invalid(..))
        ));
    }

    #[test]
    fn loopback_detection() {
        assert!(is_loopback("127.0.0.1"));
        assert!(is_loopback("127.1.2.3"));
        assert!(is_loopback("[::1]"));
        assert!(is_loopback("LOCALHOST"));
        assert!(!is_loopback("10.0.0.1"));
        assert!(!is_loopback("localhost.evil.example"));
    }
}
