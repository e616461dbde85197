//! Where the long-lived workspace token (`gw_…`) lives.
//!
//! Lookup order for the parent token of `<api host>/<workspace>`:
//!
//! 1. `GITHOSTED_TOKEN` in the environment (CI jobs, sandboxes);
//! 2. the OS keychain, service `git-credential-githosted`, account
//!    `<api host>/<workspace>`;
//! 3. the same service, account `<api host>`.
//!
//! The keychain is the Secret Service on Linux (over D-Bus), the login Keychain
//! on macOS and the Credential Manager on Windows, all through `keyring-core`.
//! Every keychain call runs on its own thread with a deadline, so a locked or hung
//! keychain cannot hang git.

use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

use keyring_core::{Entry, Error as KrError};

use crate::secret::Secret;

/// The keychain service name of every entry this helper writes.
pub const SERVICE: &str = "git-credential-githosted";

/// The environment variable that overrides the keychain.
pub const ENV_TOKEN: &str = crate::settings::TOKEN_ENV;

/// The longest a keychain call may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The keychain this build talks to, as named in messages.
#[cfg(target_os = "linux")]
pub const BACKEND: &str = "Secret Service keyring (D-Bus)";
#[cfg(target_os = "macos")]
pub const BACKEND: &str = "macOS Keychain";
#[cfg(target_os = "windows")]
pub const BACKEND: &str = "Windows Credential Manager";
#[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
pub const BACKEND: &str = "OS keychain";

/// Why the keychain could not be used. Messages never hold a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KeychainError {
    #[error(
        "the {BACKEND} is not reachable ({0}); store the token with `login` in a desktop session, or set {ENV_TOKEN}"
    )]
    Unavailable(String),
    #[error(
        "no Secret Service is running on the D-Bus session (start gnome-keyring or KeePassXC), or set {ENV_TOKEN}"
    )]
    NoService,
    #[error("the {BACKEND} is locked ({0}); unlock it, or set {ENV_TOKEN}")]
    Locked(String),
    #[error("the {BACKEND} did not answer within {}s; check it, or set {ENV_TOKEN}", TIMEOUT.as_secs())]
    Timeout,
    #[error(
        "the {BACKEND} entry `{0}` does not hold a text token; run `git-credential-githosted login` again"
    )]
    BadValue(String),
    #[error("the {BACKEND} failed: {0}")]
    Other(String),
}

/// Where a parent token came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Env,
    Keychain { account: String },
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Env => write!(f, "{ENV_TOKEN}"),
            Source::Keychain { account } => write!(f, "the {BACKEND} entry `{account}`"),
        }
    }
}

/// A parent token and where it came from.
#[derive(Debug)]
pub struct Parent {
    pub token: Secret,
    pub source: Source,
}

/// The keychain account for an API host and, optionally, one workspace.
pub fn account(api_host: &str, workspace: Option<&str>) -> String {
    match workspace {
        Some(ws) => format!("{api_host}/{ws}"),
        None => api_host.to_owned(),
    }
}

/// The token from `GITHOSTED_TOKEN`, if set and not blank (read by
/// [`crate::settings::env_token`]).
pub fn env_token() -> Option<Secret> {
    crate::settings::env_token()
}

/// The parent token for a workspace on an API host: environment first, then keychain.
pub fn parent_token(api_host: &str, workspace: &str) -> Result<Option<Parent>, KeychainError> {
    if let Some(token) = env_token() {
        return Ok(Some(Parent {
            token,
            source: Source::Env,
        }));
    }
    for account in [account(api_host, Some(workspace)), account(api_host, None)] {
        if let Some(token) = read(&account)? {
            return Ok(Some(Parent {
                token,
                source: Source::Keychain { account },
            }));
        }
    }
    Ok(None)
}

/// Reads one entry; `None` when there is none.
pub fn read(account: &str) -> Result<Option<Secret>, KeychainError> {
    let owned = account.to_owned();
    with_deadline(move || match entry(&owned)?.get_password() {
        Ok(value) => Ok(Some(Secret::new(value))),
        Err(KrError::NoEntry) => Ok(None),
        Err(e) => Err(classify(e, &owned)),
    })
}

/// Writes (or replaces) one entry.
pub fn write(account: &str, token: &Secret) -> Result<(), KeychainError> {
    let owned = account.to_owned();
    let token = token.clone();
    with_deadline(move || {
        entry(&owned)?
            .set_password(token.expose())
            .map_err(|e| classify(e, &owned))
    })
}

/// Deletes one entry; `false` when there was none.
pub fn delete(account: &str) -> Result<bool, KeychainError> {
    let owned = account.to_owned();
    with_deadline(move || match entry(&owned)?.delete_credential() {
        Ok(()) => Ok(true),
        Err(KrError::NoEntry) => Ok(false),
        Err(e) => Err(classify(e, &owned)),
    })
}

/// The accounts of every entry this helper stored, with their fingerprints.
pub fn list() -> Result<Vec<(String, String)>, KeychainError> {
    with_deadline(|| {
        default_store()?;
        let pattern = search_pattern();
        let spec = search_spec(&pattern);
        let entries = Entry::search(&spec).map_err(|e| classify(e, ""))?;
        let mut found = Vec::new();
        for entry in entries {
            // Only this helper's entries (a store may match more loosely).
            let Some(account) = our_account(&entry) else {
                continue;
            };
            let fingerprint = match entry.get_password() {
                Ok(value) => Secret::new(value).fingerprint(),
                Err(_) => "(unreadable)".to_owned(),
            };
            found.push((account, fingerprint));
        }
        found.sort();
        Ok(found)
    })
}

/// What the store's search needs to find this helper's entries (each store
/// has its own keys: the Secret Service matches attributes, the Credential
/// Manager only a regular expression over each credential's target name).
#[cfg(not(windows))]
fn search_spec(_: &str) -> std::collections::HashMap<&str, &str> {
    std::collections::HashMap::from([("service", SERVICE)])
}

#[cfg(windows)]
fn search_spec(pattern: &str) -> std::collections::HashMap<&str, &str> {
    std::collections::HashMap::from([("pattern", pattern)])
}

/// The Credential Manager's target names are `<account>.<service>`
/// (windows-native-keyring-store's default store: no prefix or suffix, `.`
/// between): this matches those of [`SERVICE`].
fn search_pattern() -> String {
    // SERVICE holds letters and `-` only (a test checks): only the `.` before
    // it needs escaping.
    format!("^.+\\.{SERVICE}$")
}

/// The account of an entry this helper stored; `None` for anyone else's.
fn our_account(entry: &Entry) -> Option<String> {
    match entry.get_specifiers() {
        Some((service, account)) if service == SERVICE => Some(account),
        Some(_) => None,
        // Stores that do not say: the `username` attribute, as they write it.
        None => entry
            .get_attributes()
            .ok()
            .and_then(|mut a| a.remove("username")),
    }
}

fn entry(account: &str) -> Result<Entry, KeychainError> {
    default_store()?;
    Entry::new(SERVICE, account).map_err(|e| classify(e, account))
}

/// Connects to the platform store once per process.
fn default_store() -> Result<(), KeychainError> {
    static STORE: OnceLock<Result<(), KeychainError>> = OnceLock::new();
    STORE
        .get_or_init(|| {
            let store = platform_store().map_err(|e| classify(e, ""))?;
            keyring_core::set_default_store(store);
            Ok(())
        })
        .clone()
}

#[cfg(target_os = "linux")]
fn platform_store() -> keyring_core::Result<std::sync::Arc<keyring_core::CredentialStore>> {
    Ok(dbus_secret_service_keyring_store::Store::new()?)
}

#[cfg(target_os = "macos")]
fn platform_store() -> keyring_core::Result<std::sync::Arc<keyring_core::CredentialStore>> {
    Ok(apple_native_keyring_store::keychain::Store::new()?)
}

#[cfg(target_os = "windows")]
fn platform_store() -> keyring_core::Result<std::sync::Arc<keyring_core::CredentialStore>> {
    Ok(windows_native_keyring_store::Store::new()?)
}

#[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
fn platform_store() -> keyring_core::Result<std::sync::Arc<keyring_core::CredentialStore>> {
    Err(KrError::NotSupportedByStore(
        "no keychain on this platform".into(),
    ))
}

/// Maps a keyring error to a message that names the backend and holds no data.
fn classify(e: KrError, account: &str) -> KeychainError {
    match e {
        KrError::NoStorageAccess(err) => KeychainError::Locked(one_line(&err.to_string())),
        KrError::PlatformFailure(err) => {
            let detail = one_line(&err.to_string());
            if detail.contains("ServiceUnknown") || detail.contains("was not provided by any") {
                KeychainError::NoService
            } else {
                KeychainError::Unavailable(detail)
            }
        }
        KrError::NoDefaultStore => KeychainError::Unavailable("no store".into()),
        // These carry the stored bytes: never print them.
        KrError::BadEncoding(_) | KrError::BadDataFormat(..) => {
            KeychainError::BadValue(account.to_owned())
        }
        KrError::Ambiguous(items) => KeychainError::Other(format!(
            "{} entries match `{account}`; delete the extra ones",
            items.len()
        )),
        other => KeychainError::Other(one_line(&other.to_string())),
    }
}

fn one_line(s: &str) -> String {
    crate::ui::printable(s, 200)
}

/// Runs a keychain call on its own thread and gives up after [`TIMEOUT`].
fn with_deadline<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, KeychainError> + Send + 'static,
) -> Result<T, KeychainError> {
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("keychain".into())
        .spawn(move || {
            let _ = tx.send(call());
        })
        .map_err(|e| KeychainError::Other(format!("cannot start a thread: {e}")))?;
    rx.recv_timeout(TIMEOUT)
        .unwrap_or(Err(KeychainError::Timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts() {
        assert_eq!(
            account("api.githosted.dev", Some("acme")),
            "api.githosted.dev/acme"
        );
        assert_eq!(account("127.0.0.1:8080", None), "127.0.0.1:8080");
    }

    #[test]
    fn bad_encoding_never_shows_the_bytes() {
        let e = classify(KrError::BadEncoding(b"gw_secretbytes".to_vec()), "h/ws");
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("secretbytes"), "{shown}");
        assert!(shown.contains("h/ws"), "{shown}");
    }

    #[test]
    fn the_search_pattern_finds_only_this_helpers_target_names() {
        assert!(SERVICE.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'));
        let pattern = regex::Regex::new(&search_pattern()).unwrap();
        assert!(pattern.is_match("127.0.0.1:9/wc.git-credential-githosted"));
        assert!(pattern.is_match("api.githosted.dev.git-credential-githosted"));
        for other in [
            "git-credential-githosted",
            ".git-credential-githosted",
            "h/ws.git-credential-githostedx",
            "h/ws.gitXcredential-githosted",
            "git:https://github.com",
        ] {
            assert!(!pattern.is_match(other), "{other}");
        }
    }

    /// The Credential Manager lists what `write` stored, under its account
    /// (one credential at a time: Wine's `CredEnumerateW` misaligns every
    /// entry after the first, which a debug build's alignment check aborts on).
    #[cfg(windows)]
    #[test]
    fn list_finds_what_write_stored_in_the_credential_manager() {
        let account = format!("127.0.0.1:1/list-{}", std::process::id());
        let token = Secret::new("gw_listtest0123456789abcdef".to_owned());
        write(&account, &token).unwrap();
        let listed = list();
        let removed = delete(&account);
        let listed = listed.unwrap();
        assert!(
            listed.contains(&(account.clone(), token.fingerprint())),
            "{listed:?}"
        );
        assert!(removed.unwrap());
        assert!(!list().unwrap().iter().any(|(a, _)| *a == account));
    }

    #[test]
    fn a_call_that_hangs_times_out() {
        let started = std::time::Instant::now();
        let r: Result<(), _> = with_deadline(|| {
            std::thread::sleep(TIMEOUT * 3);
            Ok(())
        });
        assert!(matches!(r, Err(KeychainError::Timeout)));
        assert!(started.elapsed() < TIMEOUT * 2);
    }
}
