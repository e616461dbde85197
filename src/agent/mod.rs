//! The per-user background agent that keeps minted tokens in memory.
//!
//! The helper process lives for one `get`; the agent lives as long as it holds
//! tokens (and a short idle period after), so a thousand `git fetch`es cost one
//! exchange. It is the same binary, started on demand by the helper
//! ([`client::connect_or_spawn`]) and serving [`wire`] frames on a Unix socket
//! ([`server::run`]).
//!
//! Its socket lives in a directory only the user can enter:
//! `$XDG_RUNTIME_DIR/git-credential-githosted/`, else
//! `~/.cache/git-credential-githosted/` (`$XDG_CACHE_HOME` if set). The directory is
//! created 0700 and refused if it is looser or owned by someone else; the agent
//! also checks the uid of every connecting peer.

#[cfg(unix)]
pub mod client;
#[cfg(unix)]
pub mod server;
pub mod wire;

/// No agent off Unix: every `get` mints directly.
#[cfg(not(unix))]
pub mod client {
    use std::time::Duration;

    use super::wire::{Request, Response};

    pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

    #[derive(Debug, thiserror::Error)]
    pub enum AgentError {
        #[error(transparent)]
        Dir(#[from] super::DirError),
        #[error("the agent runs only on Unix")]
        NotRunning,
    }

    pub struct Agent;

    impl Agent {
        pub fn connect() -> Result<Agent, AgentError> {
            Err(AgentError::NotRunning)
        }
        pub fn connect_or_spawn() -> Result<Agent, AgentError> {
            Err(AgentError::NotRunning)
        }
        pub fn request(&mut self, _: &Request, _: Duration) -> Result<Response, AgentError> {
            Err(AgentError::NotRunning)
        }
    }
}

/// No agent off Unix.
#[cfg(not(unix))]
pub mod server {
    use std::path::Path;
    use std::time::Duration;

    pub fn run(_dir: &Path, _idle: Duration) -> anyhow::Result<()> {
        anyhow::bail!("the agent runs only on Unix")
    }

    pub fn idle_from_env() -> Duration {
        Duration::ZERO
    }
}

use std::path::{Path, PathBuf};

/// The directory name under the runtime or cache directory.
pub const DIR_NAME: &str = "git-credential-githosted";
/// The socket's file name.
pub const SOCKET_NAME: &str = "agent.sock";
/// The lock held by the one agent that serves.
pub const LOCK_NAME: &str = "agent.lock";

/// Why the agent's directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("no place for the agent's socket: neither XDG_RUNTIME_DIR nor HOME is set")]
    NoBase,
    #[error("the agent directory {0} is not a directory (a symlink?); remove it")]
    NotADir(PathBuf),
    #[error(
        "the agent directory {path} is mode {mode:o}, not 700: others could reach the agent; run `chmod 700 {path}`"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("the agent directory {path} belongs to uid {owner}, not to you (uid {me}); remove it")]
    NotOwned { path: PathBuf, owner: u32, me: u32 },
    #[error("cannot create the agent directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where the agent's directory is, from the environment.
pub fn dir() -> Result<PathBuf, DirError> {
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(runtime).join(DIR_NAME));
    }
    if let Some(cache) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(cache).join(DIR_NAME));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .ok_or(DirError::NoBase)?;
    Ok(PathBuf::from(home).join(".cache").join(DIR_NAME))
}

/// Creates the directory 0700 if missing; refuses one that is looser, not a
/// directory, or owned by another user.
#[cfg(unix)]
pub fn ensure_private_dir(path: &Path) -> Result<(), DirError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let io = |source| DirError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(e)),
    }
    let meta = std::fs::symlink_metadata(path).map_err(io)?;
    if !meta.is_dir() {
        return Err(DirError::NotADir(path.to_owned()));
    }
    let me = rustix::process::getuid().as_raw();
    if meta.uid() != me {
        return Err(DirError::NotOwned {
            path: path.to_owned(),
            owner: meta.uid(),
            me,
        });
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(DirError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn creates_0700_and_refuses_looser() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b").join(DIR_NAME);
        ensure_private_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        ensure_private_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = ensure_private_dir(&dir).unwrap_err();
        assert!(
            matches!(err, DirError::TooOpen { mode: 0o755, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 700"), "{err}");
    }

    #[test]
    fn refuses_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = tmp.path().join(DIR_NAME);
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(matches!(
            ensure_private_dir(&link),
            Err(DirError::NotADir(_))
        ));
    }
}
