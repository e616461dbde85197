//! The vocabulary every layer shares: what a repo token may do, and a token
//! given out with its expiry.

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// A permission on a repo token (as githosted's API spells it on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Permission {
    #[serde(rename = "PERMISSION_READ")]
    Read,
    #[serde(rename = "PERMISSION_WRITE")]
    Write,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
        }
    }
}

/// A token given out (to git, to a script), with its expiry in Unix seconds
/// when known (a `gr_` passed through from `GITHOSTED_TOKEN` has none).
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: Secret,
    pub expires_at: Option<i64>,
}
