//! The agent on Windows: the same cache and wire behind a per-user named pipe.
//!
//! The pipe, `\\.\pipe\git-credential-githosted-<version>-<SID>`, is created
//! by the agent with a security descriptor that admits only the user's SID
//! (`D:P(A;;GA;;;<SID>)`: no one else can open it or add an instance to it)
//! and refuses remote clients. The first instance is created with
//! `FILE_FLAG_FIRST_PIPE_INSTANCE`: a pipe of that name made by anyone before
//! (another user squatting on it) makes the agent refuse to start, unless an
//! agent of this user answers on it (then it is that agent's, and this one
//! says `busy` and leaves).
//!
//! The helper opens the pipe and, before sending anything, checks that the
//! process serving it runs as the same user (the impostor rule); the agent
//! checks every client's process the same way.

use std::fs::File;
use std::io;
use std::os::windows::fs::OpenOptionsExt;
use std::os::windows::io::AsHandle;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::windows::named_pipe::{NamedPipeServer, ServerOptions};
use tokio::sync::Semaphore;
use windows_sys::Win32::Foundation::{ERROR_ACCESS_DENIED, ERROR_PIPE_BUSY};

use super::client::{Agent, AgentError};
use super::server::{
    AgentCache, BUSY, MAX_CONNECTIONS, READY, announce, converse, idle_and_empty, touch,
};
use super::wire::{self, Request, Response};
use crate::cache::{Cache, SystemClock};
use crate::minter::ApiMinter;
use crate::win32::{self, SecurityDescriptor, Sid};

/// The pipe's name prefix; the version and the user's SID follow. Each version
/// has its own agent, as on Unix.
pub const PIPE_PREFIX: &str = concat!(
    r"\\.\pipe\git-credential-githosted-",
    env!("CARGO_PKG_VERSION"),
    "-"
);

/// How long opening a pipe whose instances are all busy may wait.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// This user's agent pipe.
pub fn name() -> io::Result<String> {
    Ok(format!(
        "{PIPE_PREFIX}{}",
        win32::current_user()?.to_string_form()?
    ))
}

/// Runs this user's agent until it is idle and empty for `idle`, telling the
/// spawning helper `ready` or `busy` on stdout.
pub fn run(idle: Duration) -> anyhow::Result<()> {
    let name = name().context("finding this user's SID")?;
    serve_at(&name, idle, announce)
}

/// Runs the agent on the pipe `name`; `tell` hears `ready` once it serves, or
/// `busy` when an agent of this user already does. A pipe of that name that
/// no agent of this user answers on is refused.
pub fn serve_at(name: &str, idle: Duration, tell: fn(&str)) -> anyhow::Result<()> {
    let me = Arc::new(win32::current_user().context("finding this user's SID")?);
    let descriptor =
        SecurityDescriptor::only(&me).context("building the agent pipe's security descriptor")?;
    let runtime = crate::net::Blocking::new()?;
    let first = {
        let _context = runtime.enter();
        create(name, &descriptor, true)
    };
    let first = match first {
        Ok(server) => server,
        Err(e) if e.raw_os_error() == Some(ERROR_ACCESS_DENIED as i32) => {
            // The name is taken: by an agent of ours (it answers), or not.
            return match Agent::connect_pipe(name).and_then(|mut agent| agent.status()) {
                Ok(_) => {
                    tell(BUSY);
                    Ok(())
                }
                Err(why) => Err(anyhow::anyhow!(
                    "the agent pipe {name} exists and no agent of yours answers on it ({why}): not starting; someone else may have created it"
                )),
            };
        }
        Err(e) => return Err(e).with_context(|| format!("creating the agent pipe {name}")),
    };
    let cache = Arc::new(Cache::new(SystemClock, ApiMinter::default()));
    let result = runtime.run(serve(
        first,
        name,
        &descriptor,
        me,
        cache.clone(),
        idle,
        tell,
    ));
    // Zeroize every token before leaving.
    cache.clear();
    result
}

/// One instance of the pipe, with the user-only descriptor, local clients only.
fn create(name: &str, descriptor: &SecurityDescriptor, first: bool) -> io::Result<NamedPipeServer> {
    let mut options = ServerOptions::new();
    options
        .first_pipe_instance(first)
        .reject_remote_clients(true);
    descriptor.create_pipe(&options, name)
}

async fn serve(
    mut server: NamedPipeServer,
    name: &str,
    descriptor: &SecurityDescriptor,
    me: Arc<Sid>,
    cache: Arc<AgentCache>,
    idle: Duration,
    tell: fn(&str),
) -> anyhow::Result<()> {
    tell(READY);
    let started = Instant::now();
    let last_activity = Arc::new(Mutex::new(Instant::now()));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut failures: u32 = 0;
    loop {
        tokio::select! {
            // A free slot first; `connect` is cancel-safe (a tick loses no client).
            connected = async {
                let slot = slots.clone().acquire_owned().await;
                (slot, server.connect().await)
            } => {
                let (Ok(slot), connected) = connected else { continue };
                if let Err(e) = connected {
                    failures = failures.saturating_add(1);
                    let pause = Duration::from_millis(10u64 << failures.min(7));
                    tracing::debug!("pipe connect failed ({e}); pausing {pause:?}");
                    tokio::time::sleep(pause).await;
                    // This instance may be broken: replace it.
                    server = create(name, descriptor, false)
                        .with_context(|| format!("creating the agent pipe {name}"))?;
                    continue;
                }
                failures = 0;
                // The next instance before serving this one, so the name never lapses.
                let next = create(name, descriptor, false)
                    .with_context(|| format!("creating the agent pipe {name}"))?;
                let stream = std::mem::replace(&mut server, next);
                touch(&last_activity);
                let cache = cache.clone();
                let activity = last_activity.clone();
                let me = me.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, &me, &cache, started).await {
                        tracing::debug!("agent connection ended: {e}");
                    }
                    touch(&activity);
                    drop(slot);
                });
            }
            _ = tick.tick() => {
                cache.purge_expired();
                if idle_and_empty(&cache, &last_activity, idle) {
                    return Ok(());
                }
            }
        }
    }
}

/// Serves one client: one whose process runs as another user (which the
/// descriptor should already have kept out) is dropped unanswered.
async fn handle(
    mut stream: NamedPipeServer,
    me: &Sid,
    cache: &AgentCache,
    started: Instant,
) -> anyhow::Result<()> {
    let pid = win32::pipe_client_pid(stream.as_handle()).context("finding the client process")?;
    let user = win32::process_user(pid).context("reading the client process's user")?;
    if !user.same_as(me) {
        tracing::warn!(client_pid = pid, "refused a connection from another user");
        return Ok(());
    }
    converse(&mut stream, cache, started).await
}

/// The helper's end of a pipe: blocking I/O, with timeouts kept by a thread
/// per request (a blocked pipe read cannot time out by itself).
pub struct Connection {
    file: Option<File>,
}

/// Opens the pipe `name`; `None` when nothing serves it. Before anything is
/// sent, the serving process must run as this user: anyone else is an
/// impostor and gets nothing.
pub fn connect(name: &str) -> Result<Option<Connection>, AgentError> {
    use windows_sys::Win32::Storage::FileSystem::SECURITY_IDENTIFICATION;
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let file = loop {
        // Identification only: the server may learn who we are, never act as us.
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .security_qos_flags(SECURITY_IDENTIFICATION)
            .open(name);
        match opened {
            Ok(file) => break file,
            Err(e) if e.raw_os_error() == Some(ERROR_PIPE_BUSY as i32) => {
                if Instant::now() >= deadline {
                    return Err(AgentError::Io(e));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => return Ok(None),
        }
    };
    let me = win32::current_user()?;
    let server = win32::pipe_server_pid(file.as_handle()).and_then(win32::process_user);
    match server {
        Ok(user) if user.same_as(&me) => Ok(Some(Connection { file: Some(file) })),
        Ok(user) => Err(AgentError::Impostor {
            pipe: name.to_owned(),
            owner: user
                .to_string_form()
                .unwrap_or_else(|_| "another user".to_owned()),
        }),
        Err(e) => Err(AgentError::Unverified {
            pipe: name.to_owned(),
            reason: e.to_string(),
        }),
    }
}

impl Connection {
    /// Sends one request and waits up to `timeout` for the answer. After a
    /// timeout the connection is spent (its thread may still be blocked).
    pub fn request(&mut self, request: &Request, timeout: Duration) -> io::Result<Response> {
        let mut file = self
            .file
            .take()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "the agent went quiet"))?;
        let frame = wire::encode(request)?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let answer = io::Write::write_all(&mut file, &frame)
                .and_then(|()| wire::receive::<Response>(&mut file));
            drop(frame);
            let _ = tx.send((file, answer));
        });
        match rx.recv_timeout(timeout) {
            Ok((file, answer)) => {
                self.file = Some(file);
                answer
            }
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the agent did not answer in time",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Key;

    fn unique_name(what: &str) -> String {
        format!(
            r"\\.\pipe\git-credential-githosted-test-{what}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        )
    }

    fn quiet(_: &str) {}

    fn key() -> Key {
        Key {
            api: "https://api.githosted.dev/".into(),
            workspace: "acme".into(),
            repo: "app".into(),
            permission: crate::token::Permission::Write,
            origin: crate::cache::Origin::Keychain,
        }
    }

    /// Connects once the agent on `name` serves.
    fn wait_for(name: &str) -> Agent {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Agent::connect_pipe(name) {
                Ok(agent) => return agent,
                Err(e) => {
                    assert!(Instant::now() < deadline, "the agent never served: {e}");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    #[test]
    fn round_trip_through_the_pipe_then_idle_exit() {
        let name = unique_name("round-trip");
        let server = {
            let name = name.clone();
            std::thread::spawn(move || serve_at(&name, Duration::from_secs(1), quiet))
        };
        let mut agent = wait_for(&name);
        let status = agent.status().unwrap();
        assert_eq!(status.pid, std::process::id());
        assert!(status.entries.is_empty());
        assert!(agent.lookup(&key(), None).unwrap().is_none());
        assert!(
            agent
                .drain("https://api.githosted.dev/", None)
                .unwrap()
                .is_empty()
        );
        // A second connection at the same time gets its own instance.
        let mut second = Agent::connect_pipe(&name).unwrap();
        assert_eq!(second.status().unwrap().exchanges, 0);
        drop((agent, second));
        // Empty and idle: it leaves on its own.
        server.join().unwrap().unwrap();
        assert!(matches!(
            Agent::connect_pipe(&name),
            Err(AgentError::NotRunning)
        ));
    }

    #[test]
    fn a_pipe_created_first_by_someone_else_makes_the_agent_refuse() {
        let name = unique_name("squatted");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Someone made the first instance, with a descriptor of their own, and
        // does not answer as an agent would.
        let squatter = {
            let _context = runtime.enter();
            ServerOptions::new()
                .first_pipe_instance(true)
                .create(&name)
                .unwrap()
        };
        let err = serve_at(&name, Duration::from_secs(1), quiet).unwrap_err();
        assert!(err.to_string().contains("not starting"), "{err:#}");
        drop(squatter);
    }

    #[test]
    fn a_second_agent_on_the_same_pipe_says_busy() {
        let name = unique_name("busy");
        let first = {
            let name = name.clone();
            std::thread::spawn(move || serve_at(&name, Duration::from_secs(1), quiet))
        };
        drop(wait_for(&name));
        static TOLD: Mutex<Vec<String>> = Mutex::new(Vec::new());
        fn remember(line: &str) {
            TOLD.lock().unwrap().push(line.to_owned());
        }
        serve_at(&name, Duration::from_secs(1), remember).unwrap();
        assert_eq!(TOLD.lock().unwrap().as_slice(), [BUSY]);
        first.join().unwrap().unwrap();
    }
}
