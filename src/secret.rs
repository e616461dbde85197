//! A token value that never shows itself.
//!
//! [`Secret`] holds a githosted token (`gw_…` or `gr_…`). Its memory is zeroized
//! when it is dropped, and its `Debug`/`Display` print only a [fingerprint]: the
//! token's prefix and a short SHA-256 digest, enough to tell two tokens apart in a
//! log line and nothing more. The only way to read the value is
//! [`Secret::expose`], which is called where the value must leave the process:
//! the HTTP `Authorization` header, the answer to git, and the keychain.
//!
//! [fingerprint]: Secret::fingerprint

use std::fmt;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// A token value, zeroized on drop, shown only as a fingerprint.
///
/// There is deliberately no `PartialEq`: compare with [`Secret::ct_eq`].
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

/// The kind of githosted token, read from its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// `gw_…`: every repo of one workspace, can mint repo tokens.
    Workspace,
    /// `gr_…`: only the repos in its allowlist.
    Repo,
    /// Anything else.
    Unknown,
}

impl Secret {
    /// Wraps a value, taking ownership so no copy is left behind.
    pub fn new(value: String) -> Self {
        Secret(Zeroizing::new(value))
    }

    /// The raw value. Call only where the token must leave the process.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Which kind of token this is, from its prefix.
    pub fn kind(&self) -> TokenKind {
        if self.0.starts_with("gw_") {
            TokenKind::Workspace
        } else if self.0.starts_with("gr_") {
            TokenKind::Repo
        } else {
            TokenKind::Unknown
        }
    }

    /// `gw_…1a2b3c4d`: the prefix and the first 8 hex digits of the value's
    /// SHA-256. A value that is not a githosted token (say, another site's
    /// password that git passed along) gets no digest at all: a short hash of a
    /// human password could be brute-forced.
    pub fn fingerprint(&self) -> String {
        let prefix = match self.kind() {
            TokenKind::Workspace => "gw_",
            TokenKind::Repo => "gr_",
            TokenKind::Unknown => return "(not a githosted token)".to_owned(),
        };
        let digest = Sha256::digest(self.0.as_bytes());
        let mut short = String::with_capacity(8);
        for byte in &digest[..4] {
            short.push_str(&format!("{byte:02x}"));
        }
        format!("{prefix}…{short}")
    }

    /// An identifier only the token's holder can compute: HMAC-SHA-256 keyed
    /// with the token over a fixed label, in hex. The agent files tokens minted
    /// from `GITHOSTED_TOKEN` under it; unlike the [fingerprint](Secret::fingerprint),
    /// nothing ever printed lets anyone derive it.
    pub fn holder_id(&self) -> String {
        self.keyed_hex(b"git-credential-githosted agent cache key v1")
    }

    /// HMAC-SHA-256 of `message` keyed with this secret, in hex: an identifier
    /// only the secret's holder can compute.
    pub fn keyed_hex(&self, message: &[u8]) -> String {
        use hmac::Mac;
        let Ok(mut mac) = hmac::Hmac::<Sha256>::new_from_slice(self.0.as_bytes()) else {
            // HMAC takes keys of any length; this cannot happen.
            return String::new();
        };
        mac.update(message);
        let digest = mac.finalize().into_bytes();
        let mut hex = String::with_capacity(64);
        for byte in digest {
            hex.push_str(&format!("{byte:02x}"));
        }
        hex
    }

    /// Compares with another value in time independent of where they differ.
    pub fn ct_eq(&self, other: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(other.as_bytes()).into()
    }
}

/// Serialized as the raw value: only for the agent's socket, between two
/// processes of the same user. Never serialize a `Secret` anywhere else.
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.expose())
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.fingerprint())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fingerprint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAW: &str = "gw_abcdefghijklmnopqrstuvwxyz0123456789";

    #[test]
    fn debug_and_display_show_only_a_fingerprint() {
        let s = Secret::new(RAW.to_string());
        let shown = format!("{s} {s:?} {:?}", Some(&s));
        assert!(!shown.contains("abcdefgh"), "{shown}");
        assert!(shown.starts_with("gw_…"), "{shown}");
        assert_eq!(s.fingerprint().len(), "gw_…".len() + 8);
    }

    #[test]
    fn fingerprints_tell_tokens_apart() {
        let a = Secret::new("gr_one".into());
        let b = Secret::new("gr_two".into());
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), Secret::new("gr_one".into()).fingerprint());
    }

    #[test]
    fn other_values_get_no_digest() {
        let s = Secret::new("hunter2".into());
        assert_eq!(s.fingerprint(), "(not a githosted token)");
        assert!(!format!("{s:?}{s}").contains("hunter2"));
    }

    #[test]
    fn kind_from_prefix() {
        assert_eq!(Secret::new("gw_x".into()).kind(), TokenKind::Workspace);
        assert_eq!(Secret::new("gr_x".into()).kind(), TokenKind::Repo);
        assert_eq!(Secret::new("ghp_x".into()).kind(), TokenKind::Unknown);
    }

    #[test]
    fn holder_id_is_not_derivable_from_the_fingerprint() {
        let s = Secret::new(RAW.to_string());
        let id = s.holder_id();
        assert_eq!(id.len(), 64);
        assert_eq!(id, Secret::new(RAW.to_string()).holder_id());
        assert_ne!(id, Secret::new("gw_other".into()).holder_id());
        // Not the plain digest the fingerprint is cut from.
        let fp = &s.fingerprint()["gw_…".len()..];
        assert!(!id.starts_with(fp), "{id} {fp}");
        assert!(!id.contains("abcdefgh"));
    }

    #[test]
    fn constant_time_equality() {
        let s = Secret::new("gr_same".into());
        assert!(s.ct_eq("gr_same"));
        assert!(!s.ct_eq("gr_samf"));
        assert!(!s.ct_eq("gr_sam"));
    }
}
