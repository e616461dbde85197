//! The helper's side of the agent: connect (starting the agent if needed) and
//! ask. Blocking I/O with timeouts: a warm `get` needs no async runtime.
//!
//! The same API on every platform; the connection is a Unix socket, or on
//! Windows a named pipe ([`super::pipe`]).

use std::io::{BufRead, BufReader};
#[cfg(unix)]
use std::os::unix::net::UnixStream;
#[cfg(unix)]
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::server::{BUSY, IDLE_ENV, READY};
#[cfg(unix)]
use super::wire;
use super::wire::{AgentStatus, Request, Response};
#[cfg(unix)]
use super::{AgentDir, DirError, SOCKET_NAME};
use crate::api::ApiError;
use crate::cache::{Dropped, Grant, Key, MintParams, Origin};
use crate::secret::Secret;
use crate::token::Issued;

/// How long starting an agent may take before the helper mints directly.
pub const SPAWN_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a cache lookup may take.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// How long connecting may block (a listener whose backlog is full).
#[cfg(unix)]
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The environment an agent is started with: nothing else (no tokens, and no
/// proxy or CA settings: each request brings its asker's, see `net::Network`).
#[cfg(unix)]
const PASS_ENV: &[&str] = &[
    "HOME",
    "PATH",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "XDG_RUNTIME_DIR",
    "XDG_CACHE_HOME",
    IDLE_ENV,
];

/// The environment an agent is started with on Windows: what the system
/// itself needs (`SystemRoot` for sockets), the user's folders, nothing else.
#[cfg(windows)]
const PASS_ENV: &[&str] = &[
    "SystemRoot",
    "SystemDrive",
    "windir",
    "PATH",
    "USERPROFILE",
    "LOCALAPPDATA",
    "APPDATA",
    "USERNAME",
    "USERDOMAIN",
    "COMPUTERNAME",
    "TEMP",
    "TMP",
    IDLE_ENV,
];

/// Why the agent cannot be used (the helper then mints directly).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[cfg(unix)]
    #[error(transparent)]
    Dir(#[from] DirError),
    #[error("the agent is not running")]
    NotRunning,
    #[cfg(unix)]
    #[error(
        "the agent socket {path} is served by uid {uid}, not by you: nothing was sent to it; remove {dir} (someone else may control it)"
    )]
    Impostor {
        path: PathBuf,
        dir: PathBuf,
        uid: u32,
    },
    #[cfg(windows)]
    #[error(
        "the agent pipe {pipe} is served by a process of {owner}, not by you: nothing was sent to it (someone else may have created it; sign out and in, or restart, to clear it)"
    )]
    Impostor { pipe: String, owner: String },
    #[cfg(windows)]
    #[error(
        "cannot tell who serves the agent pipe {pipe} ({reason}): nothing was sent to it; if an agent of yours runs elevated, it exits when idle"
    )]
    Unverified { pipe: String, reason: String },
    #[error("cannot start the agent: {0}")]
    Spawn(String),
    #[error("talking to the agent: {0}")]
    Io(std::io::Error),
    #[error(
        "the agent answered something unexpected (an older version?); kill it, the next get starts a new one"
    )]
    Unexpected,
}

// Not `#[from]`: the message holds the cause already (no source, no repeats).
impl From<std::io::Error> for AgentError {
    fn from(e: std::io::Error) -> AgentError {
        AgentError::Io(e)
    }
}

impl AgentError {
    /// Worth telling the user about (not just "no agent yet").
    pub fn is_alarming(&self) -> bool {
        #[cfg(unix)]
        return matches!(self, AgentError::Dir(_) | AgentError::Impostor { .. });
        #[cfg(windows)]
        return matches!(
            self,
            AgentError::Impostor { .. } | AgentError::Unverified { .. }
        );
    }
}

/// A connection to the agent.
pub struct Agent {
    #[cfg(unix)]
    stream: UnixStream,
    #[cfg(windows)]
    pipe: super::pipe::Connection,
}

impl Agent {
    /// Connects to a running agent, without starting one.
    #[cfg(unix)]
    pub fn connect() -> Result<Agent, AgentError> {
        Agent::connect_in(&AgentDir::open()?)
    }

    /// Connects to a running agent, without starting one.
    #[cfg(windows)]
    pub fn connect() -> Result<Agent, AgentError> {
        Agent::connect_pipe(&super::pipe::name()?)
    }

    /// Connects to the agent running in `dir`, without starting one.
    #[cfg(unix)]
    pub fn connect_in(dir: &AgentDir) -> Result<Agent, AgentError> {
        connect_at(dir)?.ok_or(AgentError::NotRunning)
    }

    /// Connects to the agent serving the pipe `name`, without starting one.
    #[cfg(windows)]
    pub fn connect_pipe(name: &str) -> Result<Agent, AgentError> {
        let pipe = super::pipe::connect(name)?.ok_or(AgentError::NotRunning)?;
        Ok(Agent { pipe })
    }

    /// Connects to the agent, starting it first if none is running.
    pub fn connect_or_spawn() -> Result<Agent, AgentError> {
        #[cfg(unix)]
        let (place, args, try_connect) = {
            let dir = AgentDir::open()?;
            let args = vec!["--dir".into(), dir.path().as_os_str().to_owned()];
            (dir.path().display().to_string(), args, move || {
                connect_at(&dir)
            })
        };
        #[cfg(windows)]
        let (place, args, try_connect) = {
            let name = super::pipe::name()?;
            let connect = {
                let name = name.clone();
                move || -> Result<Option<Agent>, AgentError> {
                    Ok(super::pipe::connect(&name)?.map(|pipe| Agent { pipe }))
                }
            };
            (name, Vec::new(), connect)
        };
        if let Some(agent) = try_connect()? {
            return Ok(agent);
        }
        spawn(&args)?;
        // Ready (ours) or busy (another one is starting): either way, connect.
        let deadline = Instant::now() + SPAWN_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(agent) = try_connect()? {
                return Ok(agent);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(AgentError::Spawn(format!(
            "no agent answered in {place} in time"
        )))
    }

    /// A cached token for `key` with at least `min_ttl` seconds left.
    pub fn lookup(
        &mut self,
        key: &Key,
        min_ttl: Option<u64>,
    ) -> Result<Option<Issued>, AgentError> {
        let request = Request::Get {
            key: key.clone(),
            min_ttl,
        };
        match self.request(&request, LOOKUP_TIMEOUT)? {
            Response::Token { token, expires_at } => Ok(Some(issued(token, expires_at))),
            Response::Miss => Ok(None),
            _ => Err(AgentError::Unexpected),
        }
    }

    /// A token for `key`: the agent mints with `grant` (once, however many
    /// ask) unless it has one. The outer error is the agent's; the inner one
    /// the API's.
    pub fn mint(
        &mut self,
        key: &Key,
        min_ttl: Option<u64>,
        params: &MintParams,
        grant: &Grant,
    ) -> Result<Result<Issued, ApiError>, AgentError> {
        let request = Request::Mint {
            key: key.clone(),
            ttl: params.ttl,
            min_ttl,
            subject: params.subject.clone(),
            timeout_ms: u64::try_from(params.timeout.as_millis()).unwrap_or(u64::MAX),
            network: Box::new(params.network.clone()),
            grant: grant.clone(),
        };
        // The agent answers within the time it was given; allow it a moment more.
        let wait = params.timeout.saturating_add(Duration::from_secs(1));
        match self.request(&request, wait)? {
            Response::Token { token, expires_at } => Ok(Ok(issued(token, expires_at))),
            Response::Failed(error) => Ok(Err(error)),
            _ => Err(AgentError::Unexpected),
        }
    }

    /// Forgets tokens: the one equal to `password`, else every one for the
    /// API (and workspace, repo). Returns what it forgot, to be revoked.
    pub fn erase(
        &mut self,
        api: &str,
        workspace: Option<&str>,
        repo: Option<&str>,
        password: Option<&Secret>,
        origin: Option<&Origin>,
    ) -> Result<Vec<Dropped>, AgentError> {
        self.dropped(&Request::Erase {
            api: api.to_owned(),
            workspace: workspace.map(str::to_owned),
            repo: repo.map(str::to_owned),
            password: password.cloned(),
            origin: origin.cloned(),
        })
    }

    /// Forgets every token for the API (and workspace), e.g. on `logout`.
    pub fn drain(
        &mut self,
        api: &str,
        workspace: Option<&str>,
    ) -> Result<Vec<Dropped>, AgentError> {
        self.dropped(&Request::Drain {
            api: api.to_owned(),
            workspace: workspace.map(str::to_owned),
        })
    }

    /// What the agent holds, fingerprints only.
    pub fn status(&mut self) -> Result<AgentStatus, AgentError> {
        match self.request(&Request::Status, LOOKUP_TIMEOUT)? {
            Response::Status(status) => Ok(status),
            _ => Err(AgentError::Unexpected),
        }
    }

    fn dropped(&mut self, request: &Request) -> Result<Vec<Dropped>, AgentError> {
        match self.request(request, LOOKUP_TIMEOUT)? {
            Response::Dropped(dropped) => Ok(dropped),
            _ => Err(AgentError::Unexpected),
        }
    }

    /// Sends one request and waits up to `timeout` for the answer.
    #[cfg(unix)]
    fn request(&mut self, request: &Request, timeout: Duration) -> Result<Response, AgentError> {
        self.stream.set_write_timeout(Some(timeout))?;
        self.stream.set_read_timeout(Some(timeout))?;
        wire::send(&mut self.stream, request)?;
        Ok(wire::receive(&mut self.stream)?)
    }

    /// Sends one request and waits up to `timeout` for the answer.
    #[cfg(windows)]
    fn request(&mut self, request: &Request, timeout: Duration) -> Result<Response, AgentError> {
        Ok(self.pipe.request(request, timeout)?)
    }
}

fn issued(token: Secret, expires_at: i64) -> Issued {
    Issued {
        token,
        expires_at: Some(expires_at),
    }
}

/// Connects to the socket in `dir`; `None` when nothing listens there. Before
/// anything is sent, the listening peer must be this user: a socket served by
/// anyone else (a swapped directory, a stale path) is an impostor.
#[cfg(unix)]
fn connect_at(dir: &AgentDir) -> Result<Option<Agent>, AgentError> {
    use rustix::net::{SocketAddrUnix, connect, sockopt};
    let path = dir.entry(SOCKET_NAME);
    let socket = unix_socket().map_err(std::io::Error::from)?;
    // A connect to a listener whose backlog is full blocks for this long at most.
    sockopt::set_socket_timeout(&socket, sockopt::Timeout::Send, Some(CONNECT_TIMEOUT))
        .map_err(std::io::Error::from)?;
    let Ok(address) = SocketAddrUnix::new(&path) else {
        return Ok(None);
    };
    if connect(&socket, &address).is_err() {
        return Ok(None);
    }
    let me = rustix::process::getuid().as_raw();
    let uid = peer_uid(&socket)?;
    if uid != me {
        return Err(AgentError::Impostor {
            path: dir.path().join(SOCKET_NAME),
            dir: dir.path().to_owned(),
            uid,
        });
    }
    Ok(Some(Agent {
        stream: UnixStream::from(socket),
    }))
}

/// A Unix stream socket, closed on exec.
#[cfg(unix)]
fn unix_socket() -> rustix::io::Result<std::os::fd::OwnedFd> {
    use rustix::net::{AddressFamily, SocketType};
    #[cfg(not(any(target_os = "macos", target_os = "ios")))]
    {
        rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
    }
    #[cfg(any(target_os = "macos", target_os = "ios"))]
    {
        // No SOCK_CLOEXEC here: set it right after (the helper starts no
        // process concurrently).
        let socket = rustix::net::socket(AddressFamily::UNIX, SocketType::STREAM, None)?;
        rustix::io::fcntl_setfd(&socket, rustix::io::FdFlags::CLOEXEC)?;
        Ok(socket)
    }
}

/// The uid of the process at the other end of a Unix socket.
#[cfg(unix)]
pub use crate::unix::peer_uid;

/// The agent's own program, installed beside the helper's.
pub const AGENT_PROGRAM: &str = "git-credential-githosted-agent";

/// Starts the agent detached — its own program beside this one, else this
/// program's `agent` command — with `args`, and waits for its first line.
fn spawn(args: &[std::ffi::OsString]) -> Result<(), AgentError> {
    let exe = std::env::current_exe().map_err(|e| AgentError::Spawn(e.to_string()))?;
    let own = exe.with_file_name(format!("{AGENT_PROGRAM}{}", std::env::consts::EXE_SUFFIX));
    let mut command = Command::new(if own.is_file() { own } else { exe });
    #[cfg(windows)]
    {
        use std::os::windows::process::CommandExt;
        use windows_sys::Win32::System::Threading::{
            CREATE_NEW_PROCESS_GROUP, CREATE_NO_WINDOW, DETACHED_PROCESS,
        };
        // No console, no Ctrl-C from ours; and none of git's pipes inherited
        // (git would wait for the agent to close them).
        command.creation_flags(DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW);
        crate::win32::uninherit_std_handles();
    }
    command
        .arg("agent")
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for key in PASS_ENV {
        if let Some(value) = std::env::var_os(key) {
            command.env(key, value);
        }
    }
    let mut child = command
        .spawn()
        .map_err(|e| AgentError::Spawn(e.to_string()))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| AgentError::Spawn("no pipe to the agent".into()))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(SPAWN_TIMEOUT) {
        Ok(line) if line.trim() == READY || line.trim() == BUSY => Ok(()),
        Ok(_) => Err(AgentError::Spawn(
            "the agent exited before it was ready".into(),
        )),
        Err(_) => Err(AgentError::Spawn(
            "the agent did not get ready in time".into(),
        )),
    }
}
