//! `exec`'s renewal channel: how git (and `token`) inside an `exec`'d command
//! get a fresh token for the granted repos, and nothing else.
//!
//! `exec` creates a private directory (0700) with one Unix socket in it, binds
//! it into the sandbox at the same path and names it in
//! [`crate::settings::EXEC_CHANNEL_ENV`]. Inside, the helper asks the socket
//! instead of the agent or any parent; `exec`, outside, decides each ask
//! against its grant and mints with the parent it holds (the command never
//! sees it). One JSON line each way, bounded; the peer must be this user.
//! Unix only (on Windows `exec` runs unconfined and keeps no channel).

use serde::{Deserialize, Serialize};

use crate::secret::Secret;
use crate::token::Permission;

/// The longest line either side reads.
#[cfg(unix)]
const MAX_LINE: u64 = 64 * 1024;

/// What the command asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Ask {
    /// A token for this repo, fit to hand to git.
    Token {
        workspace: String,
        repo: String,
        permission: Permission,
    },
    /// git was refused with this token (a 401): do not hand it out again.
    Forget { password: Secret },
}

/// `exec`'s answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum Answer {
    Token {
        token: Secret,
        /// Unix seconds.
        expires_at: i64,
    },
    Forgotten,
    /// Forgotten; this one line tells the command's git what happened and what to do.
    Hint(String),
    /// Refused, with the one line that says why (and what to do).
    Refused(String),
}

/// Asks `exec` through the socket at `path`, within `timeout`.
#[cfg(unix)]
pub fn ask(
    path: &std::path::Path,
    ask: &Ask,
    timeout: std::time::Duration,
) -> std::io::Result<Answer> {
    use std::io::{BufRead, Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(path)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut line = zeroize::Zeroizing::new(serde_json::to_vec(ask)?);
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = zeroize::Zeroizing::new(Vec::new());
    std::io::BufReader::new(stream.take(MAX_LINE)).read_until(b'\n', &mut answer)?;
    Ok(serde_json::from_slice(&answer)?)
}

/// A served channel: the socket in its private directory, removed on drop.
#[cfg(unix)]
pub struct Channel {
    dir: std::path::PathBuf,
    listener: Option<tokio::net::UnixListener>,
}

#[cfg(unix)]
impl Channel {
    /// A new private directory under `parent` with a listening socket in it.
    /// Call from within a tokio runtime.
    pub fn open(parent: &std::path::Path) -> std::io::Result<Channel> {
        use std::os::unix::fs::DirBuilderExt;
        let mut attempt = 0;
        let dir = loop {
            let dir = parent.join(format!("githosted-exec-{:016x}", fastrand::u64(..)));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => break dir,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 8 => {
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        let mut channel = Channel {
            listener: None,
            dir,
        };
        // On failure, dropping `channel` removes the directory.
        channel.listener = Some(tokio::net::UnixListener::bind(channel.socket())?);
        Ok(channel)
    }

    /// The directory to make reachable inside the sandbox.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The socket's path, for [`crate::settings::EXEC_CHANNEL_ENV`].
    pub fn socket(&self) -> std::path::PathBuf {
        self.dir.join("socket")
    }

    /// Serves asks until the returned task is aborted: each from a peer of
    /// this user, answered by `decide`.
    pub fn serve<F, Fut>(&mut self, decide: F) -> Option<tokio::task::JoinHandle<()>>
    where
        F: Fn(Ask) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Answer> + Send + 'static,
    {
        let listener = self.listener.take()?;
        let decide = std::sync::Arc::new(decide);
        Some(tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let decide = decide.clone();
                tokio::spawn(async move {
                    if let Err(e) = converse(stream, &*decide).await {
                        tracing::debug!("exec channel: {e}");
                    }
                });
            }
        }))
    }
}

#[cfg(unix)]
async fn converse<F, Fut>(stream: tokio::net::UnixStream, decide: &F) -> std::io::Result<()>
where
    F: Fn(Ask) -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let me = rustix::process::getuid().as_raw();
    let peer = stream.peer_cred()?.uid();
    if peer != me {
        return Err(std::io::Error::other(format!(
            "refused a peer of uid {peer}"
        )));
    }
    let (read, mut write) = stream.into_split();
    let mut line = zeroize::Zeroizing::new(Vec::new());
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::io::BufReader::new(read.take(MAX_LINE)).read_until(b'\n', &mut line),
    )
    .await;
    if !matches!(read, Ok(Ok(n)) if n > 0) {
        return Ok(());
    }
    let answer = match serde_json::from_slice::<Ask>(&line) {
        Ok(ask) => decide(ask).await,
        Err(_) => Answer::Refused("exec's channel: a request it does not understand".into()),
    };
    let mut out = zeroize::Zeroizing::new(serde_json::to_vec(&answer)?);
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}

#[cfg(unix)]
impl Drop for Channel {
    fn drop(&mut self) {
        drop(self.listener.take());
        let _ = std::fs::remove_file(self.socket());
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn an_ask_and_its_answer_round_trip_through_the_socket() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let mut channel = runtime
            .block_on(async { Channel::open(tmp.path()) })
            .unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(channel.dir())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        let task = runtime
            .block_on(async {
                channel.serve(|ask| async move {
                    match ask {
                        Ask::Token { repo, .. } if repo == "app" => Answer::Token {
                            token: Secret::new("gr_fresh".into()),
                            expires_at: 7,
                        },
                        Ask::Token { repo, .. } => Answer::Refused(format!("not {repo}")),
                        Ask::Forget { .. } => Answer::Forgotten,
                    }
                })
            })
            .unwrap();
        let timeout = std::time::Duration::from_secs(5);
        let asked = |repo: &str| {
            ask(
                &channel.socket(),
                &Ask::Token {
                    workspace: "acme".into(),
                    repo: repo.into(),
                    permission: Permission::Write,
                },
                timeout,
            )
            .unwrap()
        };
        match asked("app") {
            Answer::Token { token, expires_at } => {
                assert_eq!((token.expose(), expires_at), ("gr_fresh", 7));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(asked("lib"), Answer::Refused(r) if r == "not lib"));
        task.abort();
        let dir = channel.dir().to_owned();
        drop(channel);
        assert!(!dir.exists(), "the channel's directory is removed");
    }
}
