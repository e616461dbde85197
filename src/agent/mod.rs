//! The per-user background agent that keeps minted tokens in memory.
//!
//! The helper process lives for one `get`; the agent lives as long as it holds
//! tokens (and a short idle period after), so a thousand `git fetch`es cost one
//! exchange. It is the same binary, started on demand by the helper
//! ([`client::connect_or_spawn`]) and serving [`wire`] frames on a Unix socket
//! ([`server::run`]); on Windows, on a per-user named pipe (`pipe`).
//!
//! Its socket lives in a directory only the user can enter:
//! `$XDG_RUNTIME_DIR/git-credential-githosted/`, else
//! `~/.cache/git-credential-githosted/` (`$XDG_CACHE_HOME` if set). The directory is
//! created 0700 and refused if it is looser or owned by someone else; the agent
//! also checks the uid of every connecting peer.

pub mod client;
#[cfg(windows)]
pub mod pipe;
pub mod server;
pub mod wire;

#[cfg(unix)]
use std::path::Path;
use std::path::PathBuf;

/// The directory name under the runtime or cache directory.
pub const DIR_NAME: &str = "git-credential-githosted";
/// The socket's file name. Each version has its own agent: an upgraded helper
/// never speaks to an older agent (the old one exits when idle).
pub const SOCKET_NAME: &str = concat!("agent-", env!("CARGO_PKG_VERSION"), ".sock");
/// The lock held by the one agent (of this version) that serves.
pub const LOCK_NAME: &str = concat!("agent-", env!("CARGO_PKG_VERSION"), ".lock");

/// Why the agent's directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("no place for the agent's socket: neither XDG_RUNTIME_DIR nor HOME is set")]
    NoBase,
    #[error(
        "{0} is a symlink: the agent's socket is never put behind one; set XDG_RUNTIME_DIR to a directory only you can write"
    )]
    BaseSymlink(PathBuf),
    #[error(
        "{path} is writable by other users and has no sticky bit, so they could swap the agent's directory; set XDG_RUNTIME_DIR to a directory only you can write, or run `chmod o-w,g-w {path}`"
    )]
    BaseWritable { path: PathBuf },
    #[error(
        "{path} belongs to uid {owner}, who could swap the agent's directory; set XDG_RUNTIME_DIR to a directory of your own"
    )]
    BaseNotOwned { path: PathBuf, owner: u32 },
    #[error("the agent directory {0} is not a directory (a symlink?); remove it")]
    NotADir(PathBuf),
    #[error(
        "the agent directory {path} is mode {mode:o}, not 700: others could reach the agent; run `chmod 700 {path}`"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("the agent directory {path} belongs to uid {owner}, not to you (uid {me}); remove it")]
    NotOwned { path: PathBuf, owner: u32, me: u32 },
    #[error("cannot use the agent directory {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
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

/// The agent's directory, opened and checked through its file descriptor, so
/// a directory swapped after the check (a rename by someone who can write the
/// parent) is never the one used.
#[cfg(unix)]
#[derive(Debug)]
pub struct AgentDir {
    fd: std::os::fd::OwnedFd,
    path: PathBuf,
}

#[cfg(unix)]
impl AgentDir {
    /// The directory named by the environment ([`dir`]).
    pub fn open() -> Result<AgentDir, DirError> {
        AgentDir::open_at(&dir()?)
    }

    /// Opens `path`, creating it 0700 if missing. Refused: a parent that is a
    /// symlink, that others can write without the sticky bit, or that belongs
    /// to another user (but root); a directory that is a symlink, looser than
    /// 0700, or not ours. Every check is made on the opened descriptor.
    pub fn open_at(path: &Path) -> Result<AgentDir, DirError> {
        use rustix::fs::{Mode, OFlags, fstat, mkdirat, open, openat};
        use rustix::io::Errno;
        let io = |p: &Path, e: Errno| DirError::Io {
            path: p.to_owned(),
            error: e.into(),
        };
        let (Some(base), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(DirError::NotADir(path.to_owned()));
        };
        let me = rustix::process::getuid().as_raw();
        // ~/.cache may not exist yet; intermediate symlinks are the user's own business.
        if !base.exists() {
            std::fs::create_dir_all(base).map_err(|error| DirError::Io {
                path: base.to_owned(),
                error,
            })?;
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let base_fd = match open(base, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::LOOP | Errno::NOTDIR) => return Err(DirError::BaseSymlink(base.to_owned())),
            Err(e) => return Err(io(base, e)),
        };
        let st = fstat(&base_fd).map_err(|e| io(base, e))?;
        let mode = st.st_mode as u32;
        if st.st_uid != me && st.st_uid != 0 {
            return Err(DirError::BaseNotOwned {
                path: base.to_owned(),
                owner: st.st_uid,
            });
        }
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return Err(DirError::BaseWritable {
                path: base.to_owned(),
            });
        }
        match mkdirat(&base_fd, name, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(io(path, e)),
        }
        let fd = match openat(&base_fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::LOOP | Errno::NOTDIR) => return Err(DirError::NotADir(path.to_owned())),
            Err(e) => return Err(io(path, e)),
        };
        let st = fstat(&fd).map_err(|e| io(path, e))?;
        if st.st_uid != me {
            return Err(DirError::NotOwned {
                path: path.to_owned(),
                owner: st.st_uid,
                me,
            });
        }
        let mode = st.st_mode as u32 & 0o777;
        if mode & 0o077 != 0 {
            return Err(DirError::TooOpen {
                path: path.to_owned(),
                mode,
            });
        }
        Ok(AgentDir {
            fd,
            path: path.to_owned(),
        })
    }

    /// The directory's path, for messages and for `ps`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The opened directory.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    /// A path to `name` inside the checked directory that a rename cannot
    /// redirect: `/proc/self/fd/N/name` on Linux (short, too, whatever the
    /// directory's length), the plain path elsewhere.
    pub fn entry(&self, name: &str) -> PathBuf {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let via_fd = PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()));
            if via_fd.is_dir() {
                return via_fd.join(name);
            }
        }
        self.path.join(name)
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn creates_0700_and_refuses_looser() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b").join(DIR_NAME);
        AgentDir::open_at(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        AgentDir::open_at(&dir).unwrap();
        chmod(&dir, 0o755);
        let err = AgentDir::open_at(&dir).unwrap_err();
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
        chmod(&real, 0o700);
        let link = tmp.path().join(DIR_NAME);
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(matches!(
            AgentDir::open_at(&link),
            Err(DirError::NotADir(_))
        ));
    }

    #[test]
    fn refuses_a_symlinked_or_world_writable_base() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("run");
        std::fs::create_dir(&real).unwrap();
        chmod(&real, 0o700);
        let link = tmp.path().join("run-link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = AgentDir::open_at(&link.join(DIR_NAME)).unwrap_err();
        assert!(matches!(err, DirError::BaseSymlink(_)), "{err}");
        assert!(err.to_string().contains("XDG_RUNTIME_DIR"), "{err}");

        chmod(&real, 0o777);
        let err = AgentDir::open_at(&real.join(DIR_NAME)).unwrap_err();
        assert!(matches!(err, DirError::BaseWritable { .. }), "{err}");
        assert!(!real.join(DIR_NAME).exists(), "nothing created there");
        // With the sticky bit (like /tmp) others cannot rename our entries.
        chmod(&real, 0o1777);
        AgentDir::open_at(&real.join(DIR_NAME)).unwrap();
    }

    #[test]
    fn entries_go_through_the_checked_descriptor() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(DIR_NAME);
        let opened = AgentDir::open_at(&dir).unwrap();
        std::fs::write(opened.entry("probe"), b"x").unwrap();
        // Swap the directory away: the descriptor still names the checked one.
        std::fs::rename(&dir, tmp.path().join("moved")).unwrap();
        std::fs::create_dir(&dir).unwrap();
        let read = std::fs::read(opened.entry("probe"));
        if cfg!(target_os = "linux") {
            assert_eq!(read.unwrap(), b"x");
        }
    }
}
