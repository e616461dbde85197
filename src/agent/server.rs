//! The agent process: binds the socket, checks every peer, serves the broker,
//! and exits when it has been idle and empty for a while.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::{UnixListener, UnixStream};

use super::wire::{self, AgentStatus, Request, Response};
use super::{LOCK_NAME, SOCKET_NAME};
use crate::api::ApiMinter;
use crate::broker::{Broker, MintParams, SystemClock};

/// How long the agent stays up with nothing cached, by default.
pub const DEFAULT_IDLE_SECS: u64 = 300;
/// The environment variable that sets it (seconds).
pub const IDLE_ENV: &str = "GITHOSTED_AGENT_IDLE_SECS";
/// How long one connection may sit between frames.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The line the agent prints on stdout once it serves.
pub const READY: &str = "ready";
/// The line it prints when another agent already holds the lock.
pub const BUSY: &str = "busy";

type AgentBroker = Broker<SystemClock, ApiMinter>;

/// Runs the agent in `dir` until it is idle and empty for `idle`.
pub fn run(dir: &Path, idle: Duration) -> anyhow::Result<()> {
    harden();
    super::ensure_private_dir(dir)?;

    // One agent serves: the one holding the lock. Others say so and leave.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_NAME))
        .with_context(|| format!("opening the agent lock in {}", dir.display()))?;
    if lock.try_lock().is_err() {
        announce(BUSY);
        return Ok(());
    }
    let socket = dir.join(SOCKET_NAME);
    // We hold the lock: any socket file left here belongs to a dead agent.
    let _ = std::fs::remove_file(&socket);
    let listener = std::os::unix::net::UnixListener::bind(&socket)
        .with_context(|| format!("binding the agent socket {}", socket.display()))?;
    listener.set_nonblocking(true)?;
    let inode = std::fs::metadata(&socket)?.ino();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let broker = Arc::new(Broker::new(SystemClock, ApiMinter::default()));
    let result = runtime.block_on(serve(listener, broker.clone(), &socket, inode, idle));
    // Zeroize every token before leaving, and leave no socket behind.
    broker.clear();
    if std::fs::metadata(&socket).is_ok_and(|m| m.ino() == inode) {
        let _ = std::fs::remove_file(&socket);
    }
    drop(lock);
    result
}

async fn serve(
    listener: std::os::unix::net::UnixListener,
    broker: Arc<AgentBroker>,
    socket: &Path,
    inode: u64,
    idle: Duration,
) -> anyhow::Result<()> {
    let listener = UnixListener::from_std(listener)?;
    announce(READY);
    let started = Instant::now();
    let last_activity = Arc::new(Mutex::new(Instant::now()));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                touch(&last_activity);
                let broker = broker.clone();
                let activity = last_activity.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, &broker, started).await {
                        tracing::debug!("agent connection ended: {e}");
                    }
                    touch(&activity);
                });
            }
            _ = tick.tick() => {
                broker.purge_expired();
                if !still_ours(socket, inode) {
                    tracing::info!("the agent socket was removed or replaced: exiting");
                    return Ok(());
                }
                let quiet = last_activity.lock().map(|t| t.elapsed()).unwrap_or_default();
                if broker.is_idle() && quiet >= idle {
                    tracing::info!("idle and empty: exiting");
                    return Ok(());
                }
            }
        }
    }
}

fn touch(activity: &Mutex<Instant>) {
    if let Ok(mut t) = activity.lock() {
        *t = Instant::now();
    }
}

fn still_ours(socket: &Path, inode: u64) -> bool {
    std::fs::metadata(socket).is_ok_and(|m| m.ino() == inode)
}

/// Serves one connection: a peer of another uid is dropped unanswered.
async fn handle(
    mut stream: UnixStream,
    broker: &AgentBroker,
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
    loop {
        let request: Option<Request> =
            tokio::time::timeout(READ_TIMEOUT, wire::receive_async(&mut stream))
                .await
                .context("the client went quiet")??;
        let Some(request) = request else {
            return Ok(());
        };
        let response = respond(request, broker, started).await;
        wire::send_async(&mut stream, &response).await?;
    }
}

async fn respond(request: Request, broker: &AgentBroker, started: Instant) -> Response {
    match request {
        Request::Get { key, min_ttl } => match broker.lookup(&key, min_ttl) {
            Some(issued) => Response::Token {
                token: issued.token,
                expires_at: issued.expires_at,
            },
            None => Response::Miss,
        },
        Request::Mint {
            key,
            ttl,
            min_ttl,
            subject,
            timeout_ms,
            parent,
        } => match broker
            .get_or_mint(
                &key,
                min_ttl,
                &MintParams {
                    ttl,
                    subject,
                    timeout: Duration::from_millis(timeout_ms),
                },
                parent,
            )
            .await
        {
            Ok(issued) => Response::Token {
                token: issued.token,
                expires_at: issued.expires_at,
            },
            Err(e) => Response::Failed(e),
        },
        Request::Erase {
            api,
            workspace,
            repo,
            password,
        } => Response::Dropped(broker.erase(
            &api,
            workspace.as_deref(),
            repo.as_deref(),
            password.as_ref(),
        )),
        Request::Drain { api, workspace } => {
            Response::Dropped(broker.erase(&api, workspace.as_deref(), None, None))
        }
        Request::Status => Response::Status(AgentStatus {
            pid: std::process::id(),
            uptime_secs: started.elapsed().as_secs(),
            exchanges: broker.exchanges(),
            entries: broker.entries(),
        }),
    }
}

/// Tells the spawning helper how it went, then lets go of its pipe.
fn announce(line: &str) {
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
    // Point stdout at /dev/null so the helper's pipe closes and it can return to git.
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = rustix::stdio::dup2_stdout(&null);
    }
}

/// No core dumps, no ptrace by other processes of the user, own session.
fn harden() {
    #[cfg(target_os = "linux")]
    {
        let _ =
            rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    }
    #[cfg(target_os = "macos")]
    {
        // SAFETY: PT_DENY_ATTACH takes no pointer arguments and only affects this process.
        unsafe {
            libc::ptrace(libc::PT_DENY_ATTACH, 0, std::ptr::null_mut(), 0);
        }
    }
    let _ = rustix::process::setsid();
}

/// The idle period from the environment, or the default.
pub fn idle_from_env() -> Duration {
    let secs = std::env::var(IDLE_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_IDLE_SECS);
    Duration::from_secs(secs)
}

/// The socket path inside the agent directory.
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join(SOCKET_NAME)
}
