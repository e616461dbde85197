//! `exec`'s confinement of the command: an allow-list. On Linux with
//! bubblewrap, on macOS with Seatbelt (`sandbox-exec`).
//!
//! On Linux the command runs in its own user, mount and pid namespaces, where:
//! - the whole filesystem is read-only (`--ro-bind / /`), but for the writable
//!   roots: the directory the command starts in and each `--rw PATH`; `/tmp` is
//!   a private empty tmpfs (`TMPDIR` points there);
//! - inside each writable root, what runs later *outside* the sandbox stays
//!   read-only: a clone's `.git/config`, `.git/hooks/` and `.git/info/` (and
//!   those of the git directory a `.git` file names); `.git` itself cannot be
//!   renamed away (objects, refs, the index and logs stay writable);
//! - `/dev` is private (no other terminal of the user is there);
//! - every directory an agent of the user can live in, the runtime directory,
//!   `/run/user/UID`, the keyring files and the D-Bus session socket are empty
//!   (a tmpfs, or `/dev/null`, mounted over them), whatever exec's own
//!   environment says;
//! - `/proc` shows only the command's own processes: `exec`, which holds the
//!   workspace token, and every other process of the user are out of sight and
//!   out of reach of ptrace and signals;
//! - the controlling terminal, if any, is the command's own pseudo-terminal
//!   ([`crate::pty`]), or none (a new session); it cannot create further user
//!   namespaces (bwrap 0.8+);
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
        "`exec --rw {0}`: no such directory or file here; create it first, or leave out that --rw"
    )]
    NoSuchPath(String),
    #[error(
        "`exec` cannot find the directory it runs in ({0}); cd to an existing directory and run it again"
    )]
    NoWorkingDir(String),
    #[error(
        "`exec` confines the command only on Linux (namespaces) and macOS (Seatbelt); here, run `exec --no-isolate` to accept that the command can reach your keychain, your agent and your other processes"
    )]
    Unsupported,
}

/// What `exec` asks of the sandbox, beyond what it always does.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Spec {
    /// More the command must not read (a CI job's ID-token file).
    pub hidden: Hidden,
    /// `--rw` paths: writable inside, besides the working directory.
    pub writable: Vec<PathBuf>,
    /// A directory `exec` made (0700) that the command reaches read-write at
    /// the same path, bound after everything else, so it shows through the
    /// private `/tmp` and any hidden directory.
    pub channel: Option<PathBuf>,
}

/// What to hide.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Hidden {
    /// Directories replaced by an empty tmpfs.
    pub dirs: Vec<PathBuf>,
    /// Files (sockets) replaced by `/dev/null`.
    pub files: Vec<PathBuf>,
}

impl Hidden {
    /// What to hide, from the environment (`var`), the user's uid and home
    /// directory in the user database (`passwd_home`, which an agent started
    /// by cron or `su` takes as HOME).
    pub fn from_env(
        var: impl Fn(&str) -> Option<OsString>,
        uid: u32,
        passwd_home: Option<&Path>,
    ) -> Result<Hidden, SandboxError> {
        let mut dirs = Vec::new();
        if let Some(runtime) = path_var(&var, "XDG_RUNTIME_DIR") {
            dirs.push(runtime);
        }
        dirs.push(PathBuf::from(format!("/run/user/{uid}")));
        dirs.extend(agent_dirs(&var, passwd_home));
        let homes = path_var(&var, "HOME")
            .into_iter()
            .chain(passwd_home.map(Path::to_path_buf));
        let mut data: Vec<PathBuf> = homes.map(|h| h.join(".local/share")).collect();
        data.extend(path_var(&var, "XDG_DATA_HOME"));
        for data in data {
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
        self.files.sort();
        self.files.dedup();
        self.files
            .retain(|f| !dirs.iter().any(|o| f.starts_with(o)));
    }
}

fn path_var(var: &impl Fn(&str) -> Option<OsString>, name: &str) -> Option<PathBuf> {
    var(name).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// Every directory an agent of this user can live in, whatever environment it
/// was started with: `$XDG_RUNTIME_DIR/…`, `$XDG_CACHE_HOME/…`,
/// `~/.cache/…` (of `$HOME` and of the user database), and the temporary
/// directory's.
pub fn agent_dirs(
    var: &impl Fn(&str) -> Option<OsString>,
    passwd_home: Option<&Path>,
) -> Vec<PathBuf> {
    let name = crate::agent::DIR_NAME;
    let mut bases: Vec<PathBuf> = Vec::new();
    bases.extend(path_var(var, "XDG_RUNTIME_DIR"));
    bases.extend(path_var(var, "XDG_CACHE_HOME"));
    bases.extend(path_var(var, "HOME").map(|h| h.join(".cache")));
    bases.extend(passwd_home.map(|h| h.join(".cache")));
    bases.extend(path_var(var, "TMPDIR"));
    bases.push(PathBuf::from("/tmp"));
    let mut dirs: Vec<PathBuf> = bases.into_iter().map(|b| b.join(name)).collect();
    dirs.dedup();
    dirs
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

/// The sandbox's filesystem, resolved: the input of [`options`] and
/// [`seatbelt_profile`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Writable roots (canonical): the working directory and the `--rw` paths.
    pub writable: Vec<PathBuf>,
    /// Home directories inside a writable root (the working directory) that
    /// no `--rw` names: read-only again.
    pub read_only_homes: Vec<PathBuf>,
    /// Writable roots inside those: writable again.
    pub writable_again: Vec<PathBuf>,
    /// Read-only paths shown on top of the private `/tmp` (the helper's programs).
    pub visible: Vec<PathBuf>,
    /// Git directories inside writable roots: bound on themselves, so they
    /// cannot be renamed away.
    pub git_dirs: Vec<PathBuf>,
    /// Re-bound read-only inside writable roots (git's config, hooks, info).
    pub protected: Vec<PathBuf>,
    pub hidden: Hidden,
    pub channel: Option<PathBuf>,
}

/// The helper's programs (the front, the core, the agent).
const PROGRAMS: [&str; 3] = [
    "git-credential-githosted",
    "git-credential-githosted-core",
    "git-credential-githosted-agent",
];

/// How deep below a writable root clones are looked for (`root/.git`,
/// `root/a/.git`, `root/a/b/.git`).
const GIT_SEARCH_DEPTH: usize = 2;
/// The command's own, empty /tmp (a tmpfs over the real one).
const PRIVATE_TMP: &str = "/tmp";
/// At most this many directories are read looking for clones, per root.
const GIT_SEARCH_BUDGET: usize = 2000;

impl Layout {
    /// Resolves `spec` for a command starting in `cwd`, with this program's
    /// directory `programs`, what to hide, and the user's home directories
    /// (`$HOME`, the user database's), which the working directory does not
    /// make writable (a `--rw` may: the user said so).
    pub fn resolve(
        spec: &Spec,
        cwd: &Path,
        programs: Option<&Path>,
        hidden: Hidden,
        homes: &[PathBuf],
    ) -> Result<Layout, SandboxError> {
        let cwd = std::fs::canonicalize(cwd)
            .map_err(|e| SandboxError::NoWorkingDir(format!("{}: {e}", cwd.display())))?;
        let mut named = Vec::new();
        for path in &spec.writable {
            let real = std::fs::canonicalize(path).map_err(|_| {
                SandboxError::NoSuchPath(crate::ui::printable(&path.to_string_lossy(), 200))
            })?;
            named.push(real);
        }
        let mut writable = named.clone();
        writable.push(cwd);
        writable.sort();
        writable.dedup();
        // A working directory that holds the home directory does not make it
        // writable: home is read-only again unless a --rw names it (or above).
        // A home under /tmp (below the private /tmp) is put back read-only, or
        // the command would lose its git identity and config.
        let tmp = Path::new(PRIVATE_TMP);
        let mut read_only_homes: Vec<PathBuf> = homes
            .iter()
            .filter_map(|h| std::fs::canonicalize(h).ok())
            .filter(|h| {
                writable.iter().any(|w| h.starts_with(w)) || (h.starts_with(tmp) && h != tmp)
            })
            .filter(|h| !named.iter().any(|n| h.starts_with(n)))
            .collect();
        read_only_homes.sort();
        read_only_homes.dedup();
        let writable_again: Vec<PathBuf> = writable
            .iter()
            .filter(|w| read_only_homes.iter().any(|h| w.starts_with(h) && *w != h))
            .cloned()
            .collect();
        let mut git_dirs = Vec::new();
        for root in &writable {
            for dir in git_dirs_under(root) {
                // One outside every writable root is read-only already (and
                // binding it on itself would make it writable).
                if writable.iter().any(|w| dir.starts_with(w)) {
                    git_dirs.push(dir);
                }
            }
        }
        git_dirs.sort();
        git_dirs.dedup();
        let mut protected = Vec::new();
        for dir in &git_dirs {
            protected.extend(git_metadata(dir));
        }
        protected.sort();
        protected.dedup();
        let visible: Vec<PathBuf> = programs
            .and_then(|p| std::fs::canonicalize(p).ok())
            .into_iter()
            .collect();
        // The helper's own programs stay read-only even inside a writable root.
        for dir in &visible {
            if writable.iter().any(|w| dir.starts_with(w)) {
                for name in PROGRAMS {
                    let program = dir.join(name);
                    if program.is_file() {
                        protected.push(program);
                    }
                }
            }
        }
        let mut hidden = hidden;
        hidden.keep_existing();
        Ok(Layout {
            writable,
            read_only_homes,
            writable_again,
            visible,
            git_dirs,
            protected,
            hidden,
            channel: spec.channel.clone(),
        })
    }
}

/// The git directories of the clones in `root` and a little below it (the
/// target of a `.git` file, and a worktree's common directory, too).
fn git_dirs_under(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut budget = GIT_SEARCH_BUDGET;
    let mut level = vec![root.to_path_buf()];
    for depth in 0..=GIT_SEARCH_DEPTH {
        let mut next = Vec::new();
        for dir in level {
            let dot_git = dir.join(".git");
            if let Ok(meta) = std::fs::symlink_metadata(&dot_git) {
                if meta.is_dir() {
                    found.push(dot_git.clone());
                } else if let Some(target) = gitdir_of_file(&dot_git) {
                    found.push(target);
                }
            }
            if depth == GIT_SEARCH_DEPTH {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if budget == 0 {
                    break;
                }
                budget -= 1;
                let name = entry.file_name();
                if name == ".git" {
                    continue;
                }
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    next.push(entry.path());
                }
            }
        }
        level = next;
    }
    let mut with_common = Vec::new();
    for dir in found {
        // A worktree's or submodule's git directory names its common one.
        if let Ok(common) = std::fs::read_to_string(dir.join("commondir")) {
            let common = dir.join(common.trim());
            if let Ok(common) = std::fs::canonicalize(common) {
                with_common.push(common);
            }
        }
        // Submodules' git directories.
        if let Ok(entries) = std::fs::read_dir(dir.join("modules")) {
            for entry in entries.flatten().take(GIT_SEARCH_BUDGET) {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    with_common.push(entry.path());
                }
            }
        }
        if let Ok(dir) = std::fs::canonicalize(&dir) {
            with_common.push(dir);
        }
    }
    with_common
}

/// The directory a `.git` file names (`gitdir: PATH`, relative to the file).
fn gitdir_of_file(file: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(file).ok()?;
    let target = text.lines().next()?.strip_prefix("gitdir:")?.trim();
    let base = file.parent()?;
    std::fs::canonicalize(base.join(target)).ok()
}

/// What, in git directory `dir`, runs or configures what runs outside the
/// sandbox later: its config, hooks and info (`hooks/` and `info/` are made
/// when missing, so that the command cannot make them).
fn git_metadata(dir: &Path) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    for name in ["hooks", "info"] {
        let path = dir.join(name);
        if !path.exists() {
            let _ = std::fs::create_dir(&path);
        }
        if path.is_dir() {
            paths.push(path);
        }
    }
    for name in ["config", "config.worktree"] {
        let path = dir.join(name);
        if path.is_file() {
            paths.push(path);
        }
    }
    paths
}

/// A prepared confinement: the program that confines (bubblewrap, or
/// `sandbox-exec`) and its options.
#[derive(Debug)]
#[cfg_attr(not(any(target_os = "linux", target_os = "macos")), allow(dead_code))]
pub struct Sandbox {
    program: PathBuf,
    /// Options before the command.
    options: Vec<OsString>,
    cwd: PathBuf,
    /// macOS: the command's private temporary directory (removed on drop).
    private_tmp: Option<PathBuf>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(tmp) = &self.private_tmp {
            let _ = std::fs::remove_dir_all(tmp);
        }
    }
}

/// This program's directory (where its sibling programs live).
#[cfg_attr(not(any(target_os = "linux", target_os = "macos")), allow(dead_code))]
fn programs_dir() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
}

/// The user's home directories: `$HOME` and the user database's.
#[cfg(unix)]
#[cfg_attr(not(any(target_os = "linux", target_os = "macos")), allow(dead_code))]
fn homes() -> Vec<PathBuf> {
    let mut homes: Vec<PathBuf> = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .into_iter()
        .collect();
    homes.extend(passwd_home(rustix::process::getuid().as_raw()));
    homes
}

/// The home directory of `uid` in the user database.
#[cfg(unix)]
pub use crate::unix::passwd_home;

/// Works out what to hide for this user (making the agent directories that
/// do not exist yet, so an agent started while the command runs is hidden too).
#[cfg(unix)]
#[cfg_attr(not(any(target_os = "linux", target_os = "macos")), allow(dead_code))]
fn hidden_here(also: Hidden) -> Result<Hidden, SandboxError> {
    let uid = rustix::process::getuid().as_raw();
    let home = passwd_home(uid);
    let var = |name: &str| std::env::var_os(name);
    for dir in agent_dirs(&var, home.as_deref()) {
        // Not in shared temporary directories: someone else could own the name.
        if dir.starts_with("/tmp") || path_var(&var, "TMPDIR").is_some_and(|t| dir.starts_with(t)) {
            continue;
        }
        if let Err(e) = crate::agent::AgentDir::open_at(&dir) {
            tracing::debug!("no agent directory to hide at {}: {e}", dir.display());
        }
    }
    let mut hidden = Hidden::from_env(var, uid, home.as_deref())?;
    hidden.dirs.extend(also.dirs);
    hidden.files.extend(also.files);
    hidden.keep_existing();
    Ok(hidden)
}

#[cfg(target_os = "linux")]
impl Sandbox {
    /// Finds bubblewrap, works out what is writable and what is hidden, and
    /// checks that namespaces can be made here, so `exec` refuses before it
    /// mints anything.
    pub fn prepare(spec: Spec) -> Result<Sandbox, SandboxError> {
        let bwrap = find_on_path("bwrap").ok_or(SandboxError::NoBwrap)?;
        let hidden = hidden_here(spec.hidden.clone())?;
        let cwd = std::env::current_dir().map_err(|e| SandboxError::NoWorkingDir(e.to_string()))?;
        let layout = Layout::resolve(&spec, &cwd, programs_dir().as_deref(), hidden, &homes())?;
        let mut sandbox = Sandbox {
            program: bwrap,
            options: options(&layout, true),
            cwd,
            private_tmp: None,
        };
        if let Err(first) = sandbox.probe() {
            // bubblewrap before 0.8 has no --disable-userns: do without it.
            sandbox.options = options(&layout, false);
            sandbox.probe().map_err(|_| first)?;
        }
        Ok(sandbox)
    }

    /// Runs `true` (this binary's `--version`) in the sandbox once.
    fn probe(&self) -> Result<(), SandboxError> {
        let exe = std::env::current_exe().map_err(|e| SandboxError::Unavailable(e.to_string()))?;
        let out = std::process::Command::new(&self.program)
            .args(&self.options)
            .arg("--new-session")
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
    /// bubblewrap writes its JSON info (with `child-pid`) to `info_fd`. With
    /// `own_terminal`, `exec` made the command's controlling terminal (a
    /// pseudo-terminal of its own); without, it gets a new session and none.
    pub fn command(
        &self,
        exe: &Path,
        info_fd: Option<i32>,
        command: &[String],
        own_terminal: bool,
    ) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.program);
        cmd.args(&self.options);
        if !own_terminal {
            cmd.arg("--new-session");
        }
        cmd.arg("--chdir").arg(&self.cwd);
        if let Some(fd) = info_fd {
            cmd.arg("--info-fd").arg(fd.to_string());
        }
        cmd.arg("--")
            .arg(exe)
            .arg(INIT_COMMAND)
            .arg("--")
            .args(command);
        cmd
    }
}

#[cfg(target_os = "macos")]
impl Sandbox {
    /// Writes the Seatbelt profile for this command (not run on a Mac yet:
    /// see the README).
    pub fn prepare(spec: Spec) -> Result<Sandbox, SandboxError> {
        let program = PathBuf::from("/usr/bin/sandbox-exec");
        if !program.is_file() {
            return Err(SandboxError::Unsupported);
        }
        let hidden = hidden_here(spec.hidden.clone())?;
        let cwd = std::env::current_dir().map_err(|e| SandboxError::NoWorkingDir(e.to_string()))?;
        let layout = Layout::resolve(&spec, &cwd, programs_dir().as_deref(), hidden, &homes())?;
        let tmp = std::env::temp_dir().join(format!(
            "githosted-exec-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&tmp)
                .map_err(|e| SandboxError::Unavailable(e.to_string()))?;
        }
        let tmp = std::fs::canonicalize(&tmp).unwrap_or(tmp);
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let profile = seatbelt_profile(&layout, &tmp, home.as_deref());
        Ok(Sandbox {
            program,
            options: vec!["-p".into(), profile.into()],
            cwd,
            private_tmp: Some(tmp),
        })
    }

    /// `sandbox-exec -p PROFILE CMD…` (no process 1 of our own on macOS).
    pub fn command(
        &self,
        _exe: &Path,
        _info_fd: Option<i32>,
        command: &[String],
        _own_terminal: bool,
    ) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.program);
        cmd.args(&self.options).args(command);
        cmd.current_dir(&self.cwd);
        if let Some(tmp) = &self.private_tmp {
            cmd.env("TMPDIR", tmp);
        }
        cmd
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
impl Sandbox {
    pub fn prepare(_: Spec) -> Result<Sandbox, SandboxError> {
        Err(SandboxError::Unsupported)
    }

    pub fn command(
        &self,
        _: &Path,
        _: Option<i32>,
        _: &[String],
        _: bool,
    ) -> std::process::Command {
        std::process::Command::new(&self.program)
    }
}

/// bubblewrap's options for `layout` (without `--new-session`, which
/// [`Sandbox::command`] adds when the command has no terminal of its own).
/// Order matters: later mounts cover earlier ones.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub fn options(layout: &Layout, disable_userns: bool) -> Vec<OsString> {
    let mut o: Vec<OsString> = [
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--as-pid-1",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    if disable_userns {
        o.push("--disable-userns".into());
    }
    let mut add = |flag: &str, paths: &[&Path]| {
        o.push(flag.into());
        o.extend(paths.iter().map(|p| OsString::from(p.as_os_str())));
    };
    // Everything read-only; a private /dev, /proc and /tmp.
    add("--ro-bind", &[Path::new("/"), Path::new("/")]);
    add("--dev", &[Path::new("/dev")]);
    add("--proc", &[Path::new("/proc")]);
    add("--tmpfs", &[Path::new(PRIVATE_TMP)]);
    add("--setenv", &[Path::new("TMPDIR"), Path::new(PRIVATE_TMP)]);
    // The helper's own programs, where they live (even under /tmp).
    for path in &layout.visible {
        add("--ro-bind", &[path, path]);
    }
    for path in &layout.writable {
        add("--bind", &[path, path]);
    }
    for path in &layout.read_only_homes {
        add("--ro-bind", &[path, path]);
    }
    for path in &layout.writable_again {
        add("--bind", &[path, path]);
    }
    // A mount point cannot be renamed or removed: `.git` stays where git
    // outside will look, with its config, hooks and info read-only.
    for path in &layout.git_dirs {
        add("--bind", &[path, path]);
    }
    for path in &layout.protected {
        add("--ro-bind", &[path, path]);
    }
    for dir in &layout.hidden.dirs {
        add("--tmpfs", &[dir]);
    }
    for file in &layout.hidden.files {
        add("--ro-bind", &[Path::new("/dev/null"), file]);
    }
    if let Some(channel) = &layout.channel {
        add("--bind", &[channel, channel]);
    }
    o
}

/// The Seatbelt profile (macOS `sandbox-exec -p`) for `layout`: writes only
/// under the writable roots, the private temporary directory `tmp` and the
/// channel, never to git's config, hooks and info; no keychain files, agent
/// directories or hidden paths; no Security server; no other terminal.
pub fn seatbelt_profile(layout: &Layout, tmp: &Path, home: Option<&Path>) -> String {
    fn quoted(path: &Path) -> String {
        let text = path.to_string_lossy();
        let mut out = String::with_capacity(text.len() + 2);
        out.push('"');
        for c in text.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
        out
    }
    let subpaths = |paths: &mut dyn Iterator<Item = &Path>| -> String {
        paths
            .map(|p| format!(" (subpath {})", quoted(p)))
            .collect::<String>()
    };
    let mut p = String::new();
    p.push_str("(version 1)\n(allow default)\n");
    p.push_str("(deny file-write*)\n");
    p.push_str("(allow file-write*");
    p.push_str(&subpaths(
        &mut layout
            .writable
            .iter()
            .map(PathBuf::as_path)
            .chain(std::iter::once(tmp)),
    ));
    p.push_str(" (literal \"/dev/null\") (literal \"/dev/zero\") (literal \"/dev/tty\") (literal \"/dev/dtracehelper\"))\n");
    let git: Vec<String> = layout
        .git_dirs
        .iter()
        .flat_map(|d| {
            [
                format!(" (literal {})", quoted(&d.join("config"))),
                format!(" (literal {})", quoted(&d.join("config.worktree"))),
                format!(" (literal {})", quoted(&d.join("commondir"))),
                format!(" (subpath {})", quoted(&d.join("hooks"))),
                format!(" (subpath {})", quoted(&d.join("info"))),
            ]
        })
        .collect();
    if !git.is_empty() {
        p.push_str("(deny file-write*");
        p.push_str(&git.concat());
        p.push_str(")\n");
    }
    let mut secret: Vec<PathBuf> = Vec::new();
    if let Some(home) = home {
        secret.push(home.join("Library/Keychains"));
    }
    secret.push(PathBuf::from("/Library/Keychains"));
    secret.extend(layout.hidden.dirs.iter().cloned());
    p.push_str("(deny file-read* file-write*");
    p.push_str(&subpaths(&mut secret.iter().map(PathBuf::as_path)));
    for file in &layout.hidden.files {
        p.push_str(&format!(" (literal {})", quoted(file)));
    }
    p.push_str(")\n");
    // Other terminals of the user; the command's own is open already.
    p.push_str(
        "(deny file-read* file-write* (regex #\"^/dev/ttys[0-9]+$\") (regex #\"^/dev/pty\"))\n",
    );
    p.push_str(
        "(deny mach-lookup (global-name \"com.apple.SecurityServer\") (global-name \"com.apple.securityd\") (global-name \"com.apple.security.agent\"))\n",
    );
    if let Some(channel) = &layout.channel {
        p.push_str(&format!(
            "(allow file-read* file-write* (subpath {}))\n",
            quoted(channel)
        ));
    }
    p
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
/// When the sandbox has a controlling terminal (`exec`'s pseudo-terminal), the
/// command gets a process group of its own in the terminal's foreground, so
/// Ctrl-C reaches it (and not bubblewrap).
#[cfg(unix)]
pub fn init(command: &[String]) -> anyhow::Result<std::process::ExitCode> {
    use anyhow::Context;
    let Some((program, args)) = command.split_first() else {
        anyhow::bail!("{INIT_COMMAND}: no command");
    };
    scope_ipc();
    let runtime = crate::net::Blocking::new()?;
    let on_terminal = crate::pty::stdin_is_controlling_terminal();
    runtime.run(async {
        let mut forwarding = crate::supervise::Forwarding::install()?;
        let mut cmd = std::process::Command::new(program);
        cmd.args(args);
        // `main` took the (repo) token out of our environment: hand it on.
        if let Some(token) = crate::keychain::env_token() {
            cmd.env(crate::keychain::ENV_TOKEN, token.expose());
        }
        if on_terminal {
            crate::unix::before_exec(
                &mut cmd,
                crate::unix::BeforeExec {
                    session: crate::unix::Session::ForegroundOnStdinTerminal,
                    ..Default::default()
                },
            );
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

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn shown(o: &[OsString]) -> Vec<String> {
        o.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }

    /// Where `flag a b…` first appears in `o`.
    fn at(o: &[String], words: &[&str]) -> usize {
        o.windows(words.len())
            .position(|w| w.iter().zip(words).all(|(a, b)| a == b))
            .unwrap_or_else(|| panic!("{words:?} not in {o:?}"))
    }

    /// Where `flag a b…` last appears in `o`.
    fn last_at(o: &[String], words: &[&str]) -> usize {
        o.windows(words.len())
            .rposition(|w| w.iter().zip(words).all(|(a, b)| a == b))
            .unwrap_or_else(|| panic!("{words:?} not in {o:?}"))
    }

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
    fn hides_runtime_every_agent_dir_keyrings_and_the_bus_socket() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run");
        let home = tmp.path().join("home");
        let passwd_home = tmp.path().join("passwd-home");
        let keyrings = home.join(".local/share/keyrings");
        let cache = tmp.path().join("cache");
        let agent_in_cache = cache.join(crate::agent::DIR_NAME);
        let agent_in_home = home.join(".cache").join(crate::agent::DIR_NAME);
        let agent_in_passwd_home = passwd_home.join(".cache").join(crate::agent::DIR_NAME);
        for dir in [
            &run,
            &keyrings,
            &agent_in_cache,
            &agent_in_home,
            &agent_in_passwd_home,
        ] {
            std::fs::create_dir_all(dir).unwrap();
        }
        let bus = tmp.path().join("bus");
        std::fs::write(&bus, b"").unwrap();
        let inside = run.join("bus");
        std::fs::write(&inside, b"").unwrap();
        let address = format!("unix:path={};unix:path={}", bus.display(), inside.display());
        let var = |name: &str| -> Option<OsString> {
            match name {
                "XDG_RUNTIME_DIR" => Some(run.clone().into()),
                "XDG_CACHE_HOME" => Some(cache.clone().into()),
                "HOME" => Some(home.clone().into()),
                "DBUS_SESSION_BUS_ADDRESS" => Some(address.clone().into()),
                _ => None,
            }
        };
        let hidden = Hidden::from_env(var, u32::MAX, Some(&passwd_home)).unwrap();
        for dir in [
            &run,
            &keyrings,
            &agent_in_cache,
            &agent_in_home,
            &agent_in_passwd_home,
        ] {
            assert!(hidden.dirs.contains(dir), "{dir:?} in {hidden:?}");
        }
        // The bus in the runtime dir is hidden with it; the other one by itself.
        assert_eq!(hidden.files, vec![bus]);
    }

    #[test]
    fn the_filesystem_is_read_only_but_the_writable_roots_and_git_metadata_stays_read_only() {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        let clone = root.join("clone");
        std::fs::create_dir_all(clone.join(".git/objects")).unwrap();
        std::fs::write(clone.join(".git/config"), "[core]\n").unwrap();
        // A worktree elsewhere, whose .git is a file naming its git directory.
        let nested = clone.join("sub/wt");
        let wt_git = clone.join(".git/worktrees/wt");
        std::fs::create_dir_all(&nested).unwrap();
        std::fs::create_dir_all(&wt_git).unwrap();
        std::fs::write(wt_git.join("commondir"), "../..\n").unwrap();
        std::fs::write(nested.join(".git"), "gitdir: ../../.git/worktrees/wt\n").unwrap();
        let extra = root.join("extra");
        std::fs::create_dir_all(&extra).unwrap();
        // A worktree whose git directory is outside every writable root.
        let elsewhere = root.join("elsewhere/.git/worktrees/x");
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::create_dir_all(clone.join("wt2")).unwrap();
        std::fs::write(
            clone.join("wt2/.git"),
            format!("gitdir: {}\n", elsewhere.display()),
        )
        .unwrap();
        let channel = root.join("channel");
        let spec = Spec {
            hidden: Hidden {
                dirs: vec![clone.join("hidden-dir")],
                files: vec![],
            },
            writable: vec![extra.clone()],
            channel: Some(channel.clone()),
        };
        std::fs::create_dir_all(clone.join("hidden-dir")).unwrap();
        let layout = Layout::resolve(&spec, &clone, Some(&root), spec.hidden.clone(), &[]).unwrap();
        assert_eq!(layout.writable, vec![clone.clone(), extra.clone()]);
        let git = clone.join(".git");
        assert!(layout.git_dirs.contains(&git), "{layout:?}");
        assert!(layout.git_dirs.contains(&wt_git), "{layout:?}");
        assert!(
            layout
                .git_dirs
                .iter()
                .chain(&layout.protected)
                .all(|d| !d.starts_with(root.join("elsewhere"))),
            "{layout:?}"
        );
        for path in [
            git.join("config"),
            git.join("hooks"),
            git.join("info"),
            wt_git.join("hooks"),
        ] {
            assert!(layout.protected.contains(&path), "{path:?} in {layout:?}");
        }
        // hooks/ and info/ are made, so the command cannot make them.
        assert!(git.join("hooks").is_dir() && git.join("info").is_dir());

        let o = shown(&options(&layout, true));
        assert!(!o.iter().any(|s| s == "--dev-bind"), "{o:?}");
        assert!(!o.iter().any(|s| s == "--new-session"), "{o:?}");
        for flag in [
            "--unshare-user",
            "--unshare-pid",
            "--die-with-parent",
            "--disable-userns",
        ] {
            assert!(o.iter().any(|s| s == flag), "{flag} in {o:?}");
        }
        let s = |p: &Path| p.to_string_lossy().into_owned();
        let ro_root = at(&o, &["--ro-bind", "/", "/"]);
        let dev = at(&o, &["--dev", "/dev"]);
        let tmp_fs = at(&o, &["--tmpfs", "/tmp"]);
        let programs = at(&o, &["--ro-bind", &s(&root), &s(&root)]);
        let rw_clone = at(&o, &["--bind", &s(&clone), &s(&clone)]);
        let rw_extra = at(&o, &["--bind", &s(&extra), &s(&extra)]);
        let git_bind = at(&o, &["--bind", &s(&git), &s(&git)]);
        let config = s(&git.join("config"));
        let ro_config = at(&o, &["--ro-bind", &config, &config]);
        let hidden = s(&clone.join("hidden-dir"));
        let hide = at(&o, &["--tmpfs", &hidden]);
        let chan = at(&o, &["--bind", &s(&channel), &s(&channel)]);
        assert!(ro_root < dev && dev < tmp_fs && tmp_fs < programs);
        assert!(programs < rw_clone && rw_clone < git_bind && rw_extra < git_bind);
        assert!(git_bind < ro_config && ro_config < hide);
        // The channel is bound last of all.
        assert_eq!(chan + 3, o.len(), "{o:?}");
        assert_eq!(o[at(&o, &["--setenv", "TMPDIR"]) + 2], "/tmp");
    }

    #[test]
    fn a_missing_rw_path_is_refused_in_one_line() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = Spec {
            writable: vec![tmp.path().join("nope")],
            ..Spec::default()
        };
        let err = Layout::resolve(&spec, tmp.path(), None, Hidden::default(), &[]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("--rw") && text.contains("nope"), "{text}");
        assert!(!text.contains('\n'));
    }

    #[test]
    fn a_working_directory_holding_home_leaves_home_read_only() {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        let home = root.join("home");
        let project = home.join("src/app");
        std::fs::create_dir_all(&project).unwrap();
        let homes = std::slice::from_ref(&home);
        let spec = Spec {
            writable: vec![project.clone()],
            ..Spec::default()
        };
        let layout = Layout::resolve(&spec, &root, None, Hidden::default(), homes).unwrap();
        assert_eq!(layout.read_only_homes, vec![home.clone()]);
        assert_eq!(layout.writable_again, vec![project.clone()]);
        let o = shown(&options(&layout, true));
        let s = |p: &Path| p.to_string_lossy().into_owned();
        let rw_root = at(&o, &["--bind", &s(&root), &s(&root)]);
        let ro_home = at(&o, &["--ro-bind", &s(&home), &s(&home)]);
        let rw_project = last_at(&o, &["--bind", &s(&project), &s(&project)]);
        assert!(rw_root < ro_home && ro_home < rw_project, "{o:?}");
        // Starting in home itself: read-only too.
        let layout =
            Layout::resolve(&Spec::default(), &home, None, Hidden::default(), homes).unwrap();
        assert_eq!(layout.read_only_homes, vec![home.clone()]);
        assert!(layout.writable_again.is_empty());
        // Unless a --rw names it.
        let spec = Spec {
            writable: vec![home.clone()],
            ..Spec::default()
        };
        let layout = Layout::resolve(&spec, &project, None, Hidden::default(), homes).unwrap();
        assert!(layout.read_only_homes.is_empty());
    }

    /// A home under /tmp would vanish below the private /tmp (no git identity,
    /// no config): it is bound back read-only after the tmpfs, and a working
    /// directory inside it is writable again after that.
    #[test]
    fn a_home_under_tmp_is_put_back_read_only() {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        if !root.starts_with(PRIVATE_TMP) {
            eprintln!("the temporary directory is not under /tmp; skipped");
            return;
        }
        let home = root.join("home");
        let work = root.join("work");
        let clone = home.join("app");
        std::fs::create_dir_all(&work).unwrap();
        std::fs::create_dir_all(&clone).unwrap();
        let homes = std::slice::from_ref(&home);
        let layout =
            Layout::resolve(&Spec::default(), &work, None, Hidden::default(), homes).unwrap();
        assert_eq!(layout.read_only_homes, vec![home.clone()]);
        let o = shown(&options(&layout, true));
        let s = |p: &Path| p.to_string_lossy().into_owned();
        let private = at(&o, &["--tmpfs", PRIVATE_TMP]);
        let ro_home = at(&o, &["--ro-bind", &s(&home), &s(&home)]);
        assert!(private < ro_home, "{o:?}");
        // Working inside that home: the clone is writable again, after it.
        let layout =
            Layout::resolve(&Spec::default(), &clone, None, Hidden::default(), homes).unwrap();
        assert_eq!(layout.read_only_homes, vec![home.clone()]);
        assert_eq!(layout.writable_again, vec![clone.clone()]);
        let o = shown(&options(&layout, true));
        let ro_home = at(&o, &["--ro-bind", &s(&home), &s(&home)]);
        let rw_clone = last_at(&o, &["--bind", &s(&clone), &s(&clone)]);
        assert!(ro_home < rw_clone, "{o:?}");
        // /tmp itself as home stays private.
        let layout = Layout::resolve(
            &Spec::default(),
            &work,
            None,
            Hidden::default(),
            &[PathBuf::from(PRIVATE_TMP)],
        )
        .unwrap();
        assert!(layout.read_only_homes.is_empty());
    }

    #[test]
    fn the_helpers_programs_stay_read_only_inside_a_writable_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("git-credential-githosted-core"), "").unwrap();
        let layout =
            Layout::resolve(&Spec::default(), &root, Some(&bin), Hidden::default(), &[]).unwrap();
        assert!(
            layout
                .protected
                .contains(&bin.join("git-credential-githosted-core")),
            "{layout:?}"
        );
    }

    #[test]
    fn the_seatbelt_profile_allows_writes_only_to_the_writable_roots() {
        let layout = Layout {
            writable: vec![PathBuf::from("/Users/me/src/app")],
            read_only_homes: vec![],
            writable_again: vec![],
            visible: vec![],
            git_dirs: vec![PathBuf::from("/Users/me/src/app/.git")],
            protected: vec![],
            hidden: Hidden {
                dirs: vec![PathBuf::from(
                    "/Users/me/Library/Caches/git-credential-githosted",
                )],
                files: vec![PathBuf::from("/tmp/dbus-\"x\"")],
            },
            channel: Some(PathBuf::from("/tmp/githosted-channel")),
        };
        let p = seatbelt_profile(
            &layout,
            Path::new("/private/var/folders/x/T/githosted-exec-1"),
            Some(Path::new("/Users/me")),
        );
        let lines: Vec<&str> = p.lines().collect();
        let find = |needle: &str| {
            lines
                .iter()
                .position(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("{needle} not in\n{p}"))
        };
        assert_eq!(lines[0], "(version 1)");
        let deny_writes = find("(deny file-write*)");
        let allow = find("(allow file-write* (subpath \"/Users/me/src/app\")");
        assert!(lines[allow].contains("(subpath \"/private/var/folders/x/T/githosted-exec-1\")"));
        let git = find("(deny file-write* (literal \"/Users/me/src/app/.git/config\")");
        for part in [
            "(subpath \"/Users/me/src/app/.git/hooks\")",
            "(subpath \"/Users/me/src/app/.git/info\")",
        ] {
            assert!(lines[git].contains(part), "{part} in {}", lines[git]);
        }
        let secrets = find("(subpath \"/Users/me/Library/Keychains\")");
        assert!(lines[secrets].starts_with("(deny file-read* file-write*"));
        assert!(lines[secrets].contains("git-credential-githosted"));
        assert!(lines[secrets].contains("(literal \"/tmp/dbus-\\\"x\\\"\")"));
        let mach = find("com.apple.SecurityServer");
        assert!(
            lines[mach].starts_with("(deny mach-lookup")
                && lines[mach].contains("com.apple.securityd")
        );
        find("/dev/ttys");
        let chan = find("(allow file-read* file-write* (subpath \"/tmp/githosted-channel\"))");
        // Later rules win in Seatbelt: the order is the policy.
        assert!(deny_writes < allow && allow < git && git < secrets && secrets < chan);
        assert_eq!(chan, lines.len() - 1);
    }
}
