//! `exec`'s confinement of the command (Linux, with bubblewrap).
//!
//! The command runs in its own user, mount and pid namespaces, where:
//! - the runtime directory (the agent's socket, the D-Bus session bus, keyring
//!   and other user sockets), `/run/user/UID`, the agent's directory, the keyring
//!   files and the D-Bus session socket named in `DBUS_SESSION_BUS_ADDRESS` are
//!   empty (a tmpfs, or `/dev/null`, mounted over them);
//! - `/proc` shows only the command's own processes: `exec`, which holds the
//!   workspace token, and every other process of the user are out of sight and
//!   out of reach of ptrace and signals;
//! - it has no controlling terminal (it cannot push keystrokes into the shell
//!   that started `exec`) and cannot create further user namespaces (bwrap
//!   0.8+);
//! - on kernels with Landlock ABI 6 (Linux 6.12+), it cannot connect to abstract
//!   Unix sockets created outside (a D-Bus session listening on one).
//!
//! Process 1 inside is this binary (`sandbox-init`), which passes signals on to
//! the command and reaps; bubblewrap kills everything inside when `exec` dies.
//! bubblewrap (Flatpak's sandbox, in every distribution) does the mounts: it is
//! the reviewed tool for exactly this, and on Ubuntu 24.04+ it is the program
//! AppArmor lets create user namespaces.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The hidden subcommand that runs as process 1 inside the sandbox.
pub const INIT_COMMAND: &str = "sandbox-init";

/// Why the command cannot be confined; `exec` then refuses (before minting).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "`exec` confines the command with bubblewrap, and `bwrap` is not on PATH: install it (`apt install bubblewrap`, `dnf install bubblewrap`), or run `exec --no-isolate` to accept that the command can reach your keychain, your agent and your other processes"
    )]
    NoBwrap,
    #[error(
        "`exec` cannot confine the command here: bubblewrap failed ({0}); user namespaces may be disabled (sysctl kernel.unprivileged_userns_clone, user.max_user_namespaces); fix that, or run `exec --no-isolate` to accept that the command can reach your keychain and agent"
    )]
    Unavailable(String),
    #[error(
        "`exec` cannot hide the D-Bus session `{0}` from the command (only unix:path= sessions can be hidden); unset DBUS_SESSION_BUS_ADDRESS, or run `exec --no-isolate` to accept that the command can reach your keychain"
    )]
    DbusAddress(String),
    #[error(
        "`exec` confines the command only on Linux (namespaces); here, run `exec --no-isolate` to accept that the command can reach your keychain, your agent and your other processes"
    )]
    Unsupported,
}

/// A prepared confinement: bubblewrap and what it hides.
#[derive(Debug)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub struct Sandbox {
    bwrap: PathBuf,
    /// bwrap's options before the command.
    options: Vec<OsString>,
}

/// What the command must not see.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Hidden {
    /// Directories replaced by an empty tmpfs.
    pub dirs: Vec<PathBuf>,
    /// Files (sockets) replaced by `/dev/null`.
    pub files: Vec<PathBuf>,
}

impl Hidden {
    /// What to hide, from the environment (`var`) and the user's uid.
    pub fn from_env(
        var: impl Fn(&str) -> Option<OsString>,
        uid: u32,
    ) -> Result<Hidden, SandboxError> {
        let path = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let mut dirs = Vec::new();
        if let Some(runtime) = path("XDG_RUNTIME_DIR") {
            dirs.push(runtime);
        }
        dirs.push(PathBuf::from(format!("/run/user/{uid}")));
        if let Ok(agent) = crate::agent::dir() {
            dirs.push(agent);
        }
        let data = path("XDG_DATA_HOME").or_else(|| path("HOME").map(|h| h.join(".local/share")));
        if let Some(data) = data {
            // gnome-keyring's and KWallet's files.
            dirs.push(data.join("keyrings"));
            dirs.push(data.join("kwalletd"));
        }
        let files = match var("DBUS_SESSION_BUS_ADDRESS") {
            Some(address) => dbus_socket_paths(&address.to_string_lossy())?,
            None => Vec::new(),
        };
        let mut hidden = Hidden { dirs, files };
        hidden.keep_existing();
        Ok(hidden)
    }

    /// Only what exists, and nothing inside a directory hidden already.
    fn keep_existing(&mut self) {
        self.dirs.retain(|d| d.is_dir());
        self.dirs.sort();
        self.dirs.dedup();
        let dirs = self.dirs.clone();
        self.dirs
            .retain(|d| !dirs.iter().any(|o| o != d && d.starts_with(o)));
        self.files.retain(|f| f.exists());
        self.files
            .retain(|f| !dirs.iter().any(|o| f.starts_with(o)));
    }
}

/// The socket paths of a D-Bus address (`unix:path=…;…`); any transport that
/// cannot be hidden by a mount (abstract sockets, TCP) is refused.
pub fn dbus_socket_paths(address: &str) -> Result<Vec<PathBuf>, SandboxError> {
    let mut paths = Vec::new();
    for entry in address.split(';').filter(|e| !e.trim().is_empty()) {
        let refuse = || SandboxError::DbusAddress(crate::ui::printable(entry, 200));
        let (transport, params) = entry.split_once(':').ok_or_else(refuse)?;
        if transport != "unix" {
            return Err(refuse());
        }
        for param in params.split(',') {
            match param.split_once('=') {
                Some(("path", value)) => {
                    let decoded = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
                    paths.push(PathBuf::from(decoded.as_ref()));
                }
                Some(("abstract", _)) => return Err(refuse()),
                // guid=…, and listen-only keys (dir, tmpdir, runtime) that name no socket.
                _ => {}
            }
        }
    }
    Ok(paths)
}

#[cfg(target_os = "linux")]
impl Sandbox {
    /// Finds bubblewrap, works out what to hide and checks that namespaces can
    /// be made here, so `exec` refuses before it mints anything. `also`: more
    /// the command must not read (a CI job's ID-token file).
    pub fn prepare(also: Hidden) -> Result<Sandbox, SandboxError> {
        let bwrap = find_on_path("bwrap").ok_or(SandboxError::NoBwrap)?;
        let uid = rustix::process::getuid().as_raw();
        // Hidden only if it exists: an agent started after this must not be
        // reachable inside, so its directory is made now.
        if let Err(e) = crate::agent::AgentDir::open() {
            tracing::debug!("no agent directory to hide: {e}");
        }
        let mut hidden = Hidden::from_env(|name| std::env::var_os(name), uid)?;
        hidden.dirs.extend(also.dirs);
        hidden.files.extend(also.files);
        hidden.keep_existing();
        let mut sandbox = Sandbox {
            bwrap,
            options: options(&hidden, true),
        };
        if let Err(first) = sandbox.probe() {
            // bubblewrap before 0.8 has no --disable-userns: do without it.
            sandbox.options = options(&hidden, false);
            sandbox.probe().map_err(|_| first)?;
        }
        Ok(sandbox)
    }

    /// Runs `true` (this binary's `--version`) in the sandbox once.
    fn probe(&self) -> Result<(), SandboxError> {
        let exe = std::env::current_exe().map_err(|e| SandboxError::Unavailable(e.to_string()))?;
        let out = std::process::Command::new(&self.bwrap)
            .args(&self.options)
            .arg("--")
            .arg(exe)
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| SandboxError::Unavailable(e.to_string()))?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().next().unwrap_or("no message");
        Err(SandboxError::Unavailable(crate::ui::printable(first, 200)))
    }

    /// The bubblewrap command that runs `command` under `sandbox-init`;
    /// bubblewrap writes its JSON info (with `child-pid`) to `info_fd`.
    pub fn command(&self, exe: &Path, info_fd: i32, command: &[String]) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.bwrap);
        cmd.args(&self.options);
        if let Ok(cwd) = std::env::current_dir() {
            cmd.arg("--chdir").arg(cwd);
        }
        cmd.arg("--info-fd")
            .arg(info_fd.to_string())
            .arg("--")
            .arg(exe)
            .arg(INIT_COMMAND)
            .arg("--")
            .args(command);
        cmd
    }
}

#[cfg(not(target_os = "linux"))]
impl Sandbox {
    pub fn prepare(_: Hidden) -> Result<Sandbox, SandboxError> {
        Err(SandboxError::Unsupported)
    }

    pub fn command(&self, _: &Path, _: i32, _: &[String]) -> std::process::Command {
        std::process::Command::new(&self.bwrap)
    }
}

/// bubblewrap's options for these hidden paths.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn options(hidden: &Hidden, disable_userns: bool) -> Vec<OsString> {
    let mut o: Vec<OsString> = [
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
        "--as-pid-1",
        "--dev-bind",
        "/",
        "/",
        "--proc",
        "/proc",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    if disable_userns {
        o.push("--disable-userns".into());
    }
    for dir in &hidden.dirs {
        o.push("--tmpfs".into());
        o.push(dir.into());
    }
    for file in &hidden.files {
        o.extend(["--ro-bind".into(), "/dev/null".into(), file.into()]);
    }
    o
}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Process 1 inside the sandbox: restrict IPC to the sandbox where the kernel
/// can, start the command, pass signals on, reap, and exit with its status.
#[cfg(unix)]
pub fn init(command: &[String]) -> anyhow::Result<std::process::ExitCode> {
    use anyhow::Context;
    let Some((program, args)) = command.split_first() else {
        anyhow::bail!("{INIT_COMMAND}: no command");
    };
    scope_ipc();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut forwarding = crate::supervise::Forwarding::install()?;
        let mut cmd = std::process::Command::new(program);
        cmd.args(args);
        // `main` took the (repo) token out of our environment: hand it on.
        if let Some(token) = crate::keychain::env_token() {
            cmd.env(crate::keychain::ENV_TOKEN, token.expose());
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot run `{program}`"))?;
        let pid = rustix::process::Pid::from_child(&child);
        let code = forwarding.wait(pid, || None, true).await?;
        Ok(crate::supervise::as_exit_code(code))
    })
}

/// Landlock scoping (Linux 6.12+): no connecting to abstract Unix sockets, and
/// no signals, outside the sandbox. Best effort: older kernels go without.
#[cfg(target_os = "linux")]
fn scope_ipc() {
    use landlock::{Ruleset, RulesetAttr, Scope};
    let status = Ruleset::default()
        .scope(Scope::AbstractUnixSocket | Scope::Signal)
        .and_then(|r| r.create())
        .and_then(|r| r.restrict_self());
    tracing::debug!(?status, "landlock scoping");
}

#[cfg(all(unix, not(target_os = "linux")))]
fn scope_ipc() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dbus_paths_are_parsed_and_other_transports_refused() {
        assert_eq!(
            dbus_socket_paths("unix:path=/tmp/dbus-abc,guid=123").unwrap(),
            vec![PathBuf::from("/tmp/dbus-abc")]
        );
        assert_eq!(
            dbus_socket_paths("unix:path=/run/user/1000/bus;unix:path=/tmp/a%2cb").unwrap(),
            vec![
                PathBuf::from("/run/user/1000/bus"),
                PathBuf::from("/tmp/a,b")
            ]
        );
        assert!(dbus_socket_paths("").unwrap().is_empty());
        for bad in [
            "unix:abstract=/tmp/dbus-x,guid=1",
            "tcp:host=127.0.0.1,port=1234",
            "nonsense",
        ] {
            let err = dbus_socket_paths(bad).unwrap_err();
            assert!(err.to_string().contains("--no-isolate"), "{err}");
        }
    }

    #[test]
    fn hides_runtime_agent_keyrings_and_the_bus_socket() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run");
        let home = tmp.path().join("home");
        let keyrings = home.join(".local/share/keyrings");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::create_dir_all(&keyrings).unwrap();
        let bus = tmp.path().join("bus");
        std::fs::write(&bus, b"").unwrap();
        let inside = run.join("bus");
        std::fs::write(&inside, b"").unwrap();
        let address = format!("unix:path={};unix:path={}", bus.display(), inside.display());
        let var = |name: &str| -> Option<OsString> {
            match name {
                "XDG_RUNTIME_DIR" => Some(run.clone().into()),
                "HOME" => Some(home.clone().into()),
                "DBUS_SESSION_BUS_ADDRESS" => Some(address.clone().into()),
                _ => None,
            }
        };
        let hidden = Hidden::from_env(var, u32::MAX).unwrap();
        assert!(hidden.dirs.contains(&run), "{hidden:?}");
        assert!(hidden.dirs.contains(&keyrings), "{hidden:?}");
        // The bus in the runtime dir is hidden with it; the other one by itself.
        assert_eq!(hidden.files, vec![bus]);
        let o = options(&hidden, true);
        let shown: Vec<String> = o.iter().map(|s| s.to_string_lossy().into_owned()).collect();
        for flag in [
            "--unshare-user",
            "--unshare-pid",
            "--new-session",
            "--die-with-parent",
            "--disable-userns",
        ] {
            assert!(shown.iter().any(|s| s == flag), "{flag} in {shown:?}");
        }
    }
}
