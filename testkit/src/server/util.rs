//! Small helpers shared by the parts of the server.

use super::*;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Only what git needs from the test's environment: PATH, plus a private HOME and no system
/// config, so the developer's git configuration cannot change the server.
pub(crate) fn clean_git_env(cmd: &mut StdCommand, home: &FsPath) {
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("LC_ALL", "C");
}

/// The `Authorization` header: its scheme and, for Basic, the password; for Bearer, the token.
pub(crate) fn credentials(headers: &HeaderMap) -> (AuthScheme, Option<String>) {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return (AuthScheme::None, None);
    };
    let Ok(value) = value.to_str() else {
        return (AuthScheme::Other, None);
    };
    let (scheme, param) = value.trim().split_once(' ').unwrap_or((value, ""));
    let param = param.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        (
            AuthScheme::Bearer,
            Some(param.to_string()).filter(|t| !t.is_empty()),
        )
    } else if scheme.eq_ignore_ascii_case("basic") {
        use base64::Engine;
        let password = base64::engine::general_purpose::STANDARD
            .decode(param.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.split_once(':').map(|(_, p)| p.to_string()))
            .filter(|p| !p.is_empty());
        (AuthScheme::Basic, password)
    } else {
        (AuthScheme::Other, None)
    }
}

pub(crate) fn valid_slug(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

pub(crate) fn random_alnum(n: usize) -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", random_alnum(16).to_ascii_lowercase())
}

pub(crate) fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// RFC 3339 in UTC without fractional seconds (rounded down), e.g. `2026-11-22T14:00:00Z`.
pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_default()
}
