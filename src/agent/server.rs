//! The agent process: binds the socket, checks every peer, serves the cache,
//! and exits when it has been idle and empty for a while.
//!
//! What a connection is asked and answers ([`converse`]), the idle rule and
//! the ready handshake are the same on every platform; the transport is a
//! Unix socket here ([`run`]) and a named pipe on Windows
//! ([`super::pipe::run`]).

use std::io::Write;
#[cfg(unix)]
use std::path::Path;
#[cfg(unix)]
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
#[cfg(unix)]
use rustix::fs::{AtFlags, Mode, OFlags};
use tokio::io::{AsyncRead, AsyncWrite};
#[cfg(unix)]
use tokio::net::{UnixListener, UnixStream};
#[cfg(unix)]
use tokio::sync::Semaphore;

use super::wire::{self, AgentStatus, Request, Response};
#[cfg(unix)]
use super::{AgentDir, LOCK_NAME, SOCKET_NAME};
use crate::cache::{Cache, MintParams, SystemClock};
use crate::minter::ApiMinter;

/// How long the agent stays up with nothing cached, by default.
pub const DEFAULT_IDLE_SECS: u64 = 300;
/// The environment variable that sets it (seconds).
pub use crate::settings::AGENT_IDLE_ENV as IDLE_ENV;
/// How long a connection may sit before its first frame.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(2);
/// How long it may sit between frames (a helper reads the keychain, which may
/// take up to its own 5 s deadline, between its lookup and its mint).
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a mint asked for by a client may take.
const MAX_MINT_TIME: Duration = Duration::from_secs(600);
/// Connections served at once; more wait in the listen backlog.
pub(super) const MAX_CONNECTIONS: usize = 64;

/// The line the agent prints on stdout once it serves.
pub const READY: &str = "ready";
/// The line it prints when another agent already holds the lock.
pub const BUSY: &str = "busy";

pub(super) type AgentCache = Cache<SystemClock, ApiMinter>;

/// Runs the agent in `dir` until it is idle and empty for `idle`.
#[cfg(unix)]
pub fn run(dir: &Path, idle: Duration) -> anyhow::Result<()> {
    harden();
    let dir = AgentDir::open_at(dir)?;

    // One agent serves: the one holding the lock. Others say so and leave.
    let lock = std::fs::File::from(
        rustix::fs::openat(
            dir.fd(),
            LOCK_NAME,
            OFlags::CREATE | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(std::io::Error::from)
        .with_context(|| format!("opening the agent lock in {}", dir.path().display()))?,
    );
    if lock.try_lock().is_err() {
        announce(BUSY);
        return Ok(());
    }
    // We hold the lock: any socket file left here belongs to a dead agent.
    let _ = rustix::fs::unlinkat(dir.fd(), SOCKET_NAME, AtFlags::empty());
    let listener = std::os::unix::net::UnixListener::bind(dir.entry(SOCKET_NAME))
        .with_context(|| format!("binding the agent socket in {}", dir.path().display()))?;
    listener.set_nonblocking(true)?;
    let inode = socket_inode(&dir);

    let runtime = crate::net::Blocking::new()?;
    let cache = Arc::new(Cache::new(SystemClock, ApiMinter::default()));
    let result = runtime.run(serve(listener, cache.clone(), &dir, inode, idle));
    // Zeroize every token before leaving, and leave no socket behind.
    cache.clear();
    if inode.is_some() && socket_inode(&dir) == inode {
        let _ = rustix::fs::unlinkat(dir.fd(), SOCKET_NAME, AtFlags::empty());
    }
    drop(lock);
    result
}

/// The inode of the socket file in the agent's directory, if there is one.
#[cfg(unix)]
fn socket_inode(dir: &AgentDir) -> Option<u64> {
    rustix::fs::statat(dir.fd(), SOCKET_NAME, AtFlags::SYMLINK_NOFOLLOW)
        .ok()
        .map(|st| st.st_ino)
}

#[cfg(unix)]
async fn serve(
    listener: std::os::unix::net::UnixListener,
    cache: Arc<AgentCache>,
    dir: &AgentDir,
    inode: Option<u64>,
    idle: Duration,
) -> anyhow::Result<()> {
    let listener = UnixListener::from_std(listener)?;
    announce(READY);
    let started = Instant::now();
    let last_activity = Arc::new(Mutex::new(Instant::now()));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut accept_failures: u32 = 0;
    loop {
        tokio::select! {
            // A free slot first: past the cap, connections wait in the backlog.
            accepted = async {
                let slot = slots.clone().acquire_owned().await;
                (slot, listener.accept().await)
            } => {
                let (Ok(slot), accepted) = accepted else { continue };
                let stream = match accepted {
                    Ok((stream, _)) => {
                        accept_failures = 0;
                        stream
                    }
                    Err(e) => {
                        // Out of descriptors, say: wait instead of spinning on it.
                        accept_failures = accept_failures.saturating_add(1);
                        let pause = Duration::from_millis(10u64 << accept_failures.min(7));
                        tracing::debug!("accept failed ({e}); pausing {pause:?}");
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                };
                touch(&last_activity);
                let cache = cache.clone();
                let activity = last_activity.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, &cache, started).await {
                        tracing::debug!("agent connection ended: {e}");
                    }
                    touch(&activity);
                    drop(slot);
                });
            }
            _ = tick.tick() => {
                cache.purge_expired();
                if inode.is_none() || socket_inode(dir) != inode {
                    tracing::info!("the agent socket was removed or replaced: exiting");
                    return Ok(());
                }
                if idle_and_empty(&cache, &last_activity, idle) {
                    return Ok(());
                }
            }
        }
    }
}

/// Notes that a client came or went.
pub(super) fn touch(activity: &Mutex<Instant>) {
    if let Ok(mut t) = activity.lock() {
        *t = Instant::now();
    }
}

/// Time to go: nothing cached and no client for `idle`.
pub(super) fn idle_and_empty(
    cache: &AgentCache,
    activity: &Mutex<Instant>,
    idle: Duration,
) -> bool {
    let quiet = activity.lock().map(|t| t.elapsed()).unwrap_or_default();
    let done = cache.is_idle() && quiet >= idle;
    if done {
        tracing::info!("idle and empty: exiting");
    }
    done
}

/// Serves one connection: a peer of another uid is dropped unanswered.
#[cfg(unix)]
async fn handle(
    mut stream: UnixStream,
    cache: &AgentCache,
    started: Instant,
) -> anyhow::Result<()> {
    let me = rustix::process::getuid().as_raw();
    let peer = stream
        .peer_cred()
        .context("reading the peer's credentials")?;
    if peer.uid() != me {
        tracing::warn!(
            peer_uid = peer.uid(),
            "refused a connection from another user"
        );
        return Ok(());
    }
    if !same_pid_namespace(peer.pid()) {
        tracing::warn!(
            peer_pid = peer.pid(),
            "refused a connection from another pid namespace (a sandbox or container)"
        );
        return Ok(());
    }
    converse(&mut stream, cache, started).await
}

/// Whether the peer runs in the agent's own pid namespace (Linux): a process
/// in a sandbox (`exec`'s, or any other) gets nothing, even if a socket
/// reached it. Read from `/proc/PID/status` (`NSpid` lists one pid per
/// namespace level; a nested process has more than the agent): unknown means no.
#[cfg(target_os = "linux")]
fn same_pid_namespace(peer: Option<i32>) -> bool {
    fn depth(pid: &str) -> Option<usize> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
        Some(line.split_whitespace().count())
    }
    // The agent's own depth does not change: read once.
    static OWN: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    let own = *OWN.get_or_init(|| depth("self"));
    match peer.filter(|&pid| pid > 0) {
        Some(pid) => own.is_some() && depth(&pid.to_string()) == own,
        None => false,
    }
}

#[cfg(all(unix, not(target_os = "linux")))]
fn same_pid_namespace(_: Option<i32>) -> bool {
    true
}

/// Answers a checked peer's requests, in order, until it hangs up or goes
/// quiet (whatever the transport).
pub(super) async fn converse(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    cache: &AgentCache,
    started: Instant,
) -> anyhow::Result<()> {
    let mut wait = FIRST_FRAME_TIMEOUT;
    loop {
        let request: Option<Request> = tokio::time::timeout(wait, wire::receive_async(stream))
            .await
            .context("the client went quiet")??;
        wait = READ_TIMEOUT;
        let Some(request) = request else {
            return Ok(());
        };
        let response = respond(request, cache, started).await;
        wire::send_async(stream, &response).await?;
    }
}

async fn respond(request: Request, cache: &AgentCache, started: Instant) -> Response {
    match request {
        Request::Get { key, min_ttl } => match cache.lookup(&key, min_ttl) {
            Some(issued) => token(issued),
            None => Response::Miss,
        },
        Request::Mint {
            key,
            ttl,
            min_ttl,
            subject,
            timeout_ms,
            network,
            grant,
        } => match cache
            .get_or_mint(
                &key,
                min_ttl,
                &MintParams {
                    ttl,
                    subject,
                    // A client's number: bounded, whatever it says.
                    timeout: Duration::from_millis(timeout_ms).min(MAX_MINT_TIME),
                    network: *network,
                },
                grant,
            )
            .await
        {
            Ok(issued) => token(issued),
            Err(e) => Response::Failed(e),
        },
        Request::Erase {
            api,
            workspace,
            repo,
            password,
            origin,
        } => Response::Dropped(cache.erase(
            &api,
            workspace.as_deref(),
            repo.as_deref(),
            password.as_ref(),
            origin.as_ref(),
        )),
        Request::Drain { api, workspace } => {
            Response::Dropped(cache.erase(&api, workspace.as_deref(), None, None, None))
        }
        Request::Status => Response::Status(AgentStatus {
            pid: std::process::id(),
            uptime_secs: started.elapsed().as_secs(),
            exchanges: cache.exchanges(),
            entries: cache.entries(),
        }),
    }
}

/// A cached token as the wire carries it (the cache always knows the expiry).
fn token(issued: crate::token::Issued) -> Response {
    Response::Token {
        token: issued.token,
        expires_at: issued.expires_at.unwrap_or_default(),
    }
}

/// Tells the spawning helper how it went, then lets go of its pipe.
pub(super) fn announce(line: &str) {
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
    // Point stdout at the null device so the helper's pipe closes and it can return to git.
    #[cfg(unix)]
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = rustix::stdio::dup2_stdout(&null);
    }
    #[cfg(windows)]
    crate::win32::stdout_to_null();
}

/// No core dumps, no ptrace by other processes of the user, own session.
#[cfg(unix)]
fn harden() {
    // Done by `main` for every command already; again here for library users.
    crate::harden::process();
    #[cfg(target_os = "macos")]
    crate::unix::deny_debugger();
    let _ = rustix::process::setsid();
}

/// The idle period from the environment, or the default.
pub fn idle_from_env() -> Duration {
    let secs = crate::settings::env_agent_idle_secs().unwrap_or(DEFAULT_IDLE_SECS);
    Duration::from_secs(secs)
}
