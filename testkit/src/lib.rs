//! The test harness of `git-credential-githosted` (dev-only): a local
//! githosted-compatible server ([`server`]), and a [`World`] for each test — a
//! private HOME for git, the helper on PATH, commands run with a deadline and
//! their output checked for leaked tokens, users without privileges for the
//! attacks that root would hide, a private Secret Service. Used by the
//! integration tests, the benchmark and `examples/try_it.rs`.
//!
//! Unix only, like the tests that use it (users, terminals and sockets of
//! Unix); on Windows the crate is empty (README, Platforms).
#![cfg(unix)]

pub mod oidc;
pub mod pty;
pub mod server;

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use server::{Kind, Permission, Server, TokenSpec};

/// The helper binary cargo built next to the running test, benchmark or
/// example (`target/<profile>/git-credential-githosted`).
pub fn helper() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        // The benchmark may measure an installed copy instead.
        if let Some(path) = std::env::var("GITHOSTED_BENCH_HELPER")
            .ok()
            .filter(|p| !p.is_empty())
        {
            return path;
        }
        let dir = built_dir();
        // The attacks run the helper as other users, who must reach it: from a
        // checkout under a private directory, run links to it from one they can.
        let dir = reachable_by_others(&dir).unwrap_or(dir);
        dir.join("git-credential-githosted")
            .to_string_lossy()
            .into_owned()
    })
}

/// Where cargo put the programs of the running test, benchmark or example
/// (`target/<profile>`).
fn built_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the running test's path");
    let mut dir = exe.parent().expect("a directory").to_path_buf();
    // Tests and benchmarks run from `deps/`, examples from `examples/`.
    if dir.ends_with("deps") || dir.ends_with("examples") {
        dir.pop();
    }
    dir
}

/// The CI token broker's program, its own package (`broker/`).
pub const BROKER: &str = "githosted-broker";

/// The broker's program beside [`helper`] (where `git-credential-githosted
/// broker` looks for it). Under cargo it is built first, once per test
/// process, in the running test's profile: the broker is another package, so
/// `cargo test` in this one would not build it, and a stale copy would be
/// tested silently. A benchmark measuring an installed copy
/// (`GITHOSTED_BENCH_HELPER`) uses the broker installed beside it.
pub fn broker_program() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let beside = Path::new(helper()).with_file_name(BROKER);
        if std::env::var_os("GITHOSTED_BENCH_HELPER").is_some_and(|p| !p.is_empty()) {
            return beside.to_string_lossy().into_owned();
        }
        let dir = built_dir();
        let built = dir.join(BROKER);
        if let Some(cargo) = std::env::var_os("CARGO") {
            let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../broker/Cargo.toml");
            let mut build = Command::new(cargo);
            build
                .args([
                    "build", "--locked", "--quiet", "-p", BROKER, "--bin", BROKER,
                ])
                .arg("--manifest-path")
                .arg(&manifest)
                .arg("--target-dir")
                .arg(dir.parent().expect("target/<profile>"));
            if dir.ends_with("release") {
                build.arg("--release");
            }
            let status = build.status().expect("run cargo to build githosted-broker");
            assert!(
                status.success(),
                "building githosted-broker failed: cargo build -p githosted-broker"
            );
        }
        assert!(
            built.exists(),
            "{} is missing: cargo build -p githosted-broker",
            built.display()
        );
        if beside != built {
            // The helper runs from a directory other users can reach: the broker joins it.
            let _ = std::fs::remove_file(&beside);
            if std::fs::hard_link(&built, &beside).is_err() {
                std::fs::copy(&built, &beside).expect("copy the broker");
            }
        }
        beside.to_string_lossy().into_owned()
    })
}

/// The helper's programs, as built.
const PROGRAMS: [&str; 4] = [
    "git-credential-githosted",
    "git-credential-githosted-core",
    "git-credential-githosted-agent",
    BROKER,
];

/// `None` if other users can reach `dir` (every directory on its path is
/// searchable by others); else a 0755 directory under the system's temporary
/// directory holding hard links (or copies) of the helper's programs, made
/// once per test process. Those of processes that have ended are removed.
#[cfg(unix)]
fn reachable_by_others(dir: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let searchable = dir
        .ancestors()
        .all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    if searchable {
        return None;
    }
    const PREFIX: &str = "githosted-testkit-bin-";
    let tmp = std::env::temp_dir();
    for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ended = |pid: &str| {
            pid.parse::<i32>()
                .ok()
                .and_then(rustix::process::Pid::from_raw)
                .is_some_and(|pid| {
                    rustix::process::test_kill_process(pid) == Err(rustix::io::Errno::SRCH)
                })
        };
        if name.strip_prefix(PREFIX).is_some_and(ended) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let linked = tmp.join(format!("{PREFIX}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&linked);
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(&linked)
        .expect("a directory for the helper's programs");
    std::fs::set_permissions(&linked, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for program in PROGRAMS {
        let (from, to) = (dir.join(program), linked.join(program));
        if from.exists() && std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).expect("copy the helper");
        }
    }
    Some(linked)
}

#[cfg(not(unix))]
fn reachable_by_others(_: &Path) -> Option<PathBuf> {
    None
}

/// The two git clients the helper must work with.
pub const GIT_NEW: &str = "/usr/local/bin/git";
pub const GIT_OLD: &str = "/usr/bin/git";
pub const GITS: [&str; 2] = [GIT_NEW, GIT_OLD];

/// How long any one command may run before the test calls it hung.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// What a finished command printed.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.status.success()
    }

    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert!(self.ok(), "command failed: {self:#?}");
        self
    }

    #[track_caller]
    pub fn assert_failed(&self) -> &Self {
        assert!(!self.ok(), "command unexpectedly succeeded: {self:#?}");
        self
    }
}

/// One test's world: a server with workspace `acme` and repo `app`, and a HOME
/// with nothing in it but what the test puts there.
pub struct World {
    pub server: Server,
    pub dir: tempfile::TempDir,
    pub home: PathBuf,
    /// Extra environment for every command (e.g. `GITHOSTED_TOKEN`).
    pub env: Vec<(String, String)>,
    /// The user every command runs as (`None`: the test's own user).
    pub user: Option<User>,
}

/// A local user without privileges (uid, gid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
}

/// A user without privileges, created once (`useradd`; the test must run as
/// root, as CI does). Security tests run their victim as this user: root would
/// hide what they test (root reads any process's memory, passes every check).
pub fn unprivileged_user() -> User {
    system_user("ghtest-victim")
}

/// A second such user, for attacks from another account.
pub fn other_user() -> User {
    system_user("ghtest-other")
}

fn system_user(name: &str) -> User {
    use std::sync::Mutex;
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    assert!(
        rustix::process::getuid().is_root(),
        "this test creates a user ({name}) and must run as root (CI does); run it with sudo or skip it"
    );
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").arg(flag).arg(name).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        let out = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ])
            .output()
            .expect("running useradd");
        assert!(
            out.status.success() || id("-u").is_some(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    User {
        uid: id("-u").expect("uid"),
        gid: id("-g").expect("gid"),
    }
}

/// Gives `path` and everything under it to `user`.
pub fn chown_tree(path: &Path, user: User) {
    let out = Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", user.uid, user.gid))
        .arg(path)
        .output()
        .expect("chown");
    assert!(out.status.success(), "chown: {out:?}");
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

impl World {
    pub fn new() -> World {
        let server = Server::start();
        server.add_workspace("acme");
        server.add_repo("acme", "app");
        let dir = tempfile::tempdir().expect("temp dir");
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).expect("home");
        let runtime = dir.path().join("run");
        std::fs::create_dir_all(&runtime).expect("runtime dir");
        std::fs::set_permissions(
            &runtime,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o700),
        )
        .expect("chmod");
        World {
            server,
            dir,
            home,
            env: Vec::new(),
            user: None,
        }
    }

    /// A world whose commands all run as `user`, who owns its directory.
    pub fn as_user(user: User) -> World {
        let mut world = World::new();
        chown_tree(world.dir.path(), user);
        world.user = Some(user);
        world
    }

    /// A world whose git is configured for the local server with these helper options.
    pub fn configured(options: &[&str]) -> World {
        let world = World::new();
        world.configure(options);
        world
    }

    pub fn configure(&self, options: &[&str]) {
        let mut args = vec!["configure", "--api-url"];
        let url = self.server.base_url();
        args.push(&url);
        args.extend_from_slice(options);
        self.helper(&args, None).assert_ok();
    }

    /// Every proxy variable (both spellings) pointing at `url`.
    pub fn set_proxies(&mut self, url: &str) {
        for var in [
            "http_proxy",
            "HTTP_PROXY",
            "https_proxy",
            "HTTPS_PROXY",
            "all_proxy",
            "ALL_PROXY",
        ] {
            self.set_env(var, url);
        }
    }

    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// A workspace token for `acme`, given to the helper through `GITHOSTED_TOKEN`.
    pub fn with_env_parent(&mut self) -> String {
        let parent = self.server.seed_token("acme", TokenSpec::workspace_write());
        self.set_env("GITHOSTED_TOKEN", &parent);
        parent
    }

    /// `$XDG_RUNTIME_DIR` of this world's commands.
    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// The agent's directory in this world.
    pub fn agent_dir(&self) -> PathBuf {
        self.runtime_dir().join("git-credential-githosted")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `http://127.0.0.1:PORT/acme/app.git`
    pub fn url(&self, repo: &str) -> String {
        format!("{}/acme/{repo}.git", self.server.base_url())
    }

    /// `http://127.0.0.1:PORT/git/acme/app.git`
    pub fn git_prefixed_url(&self, repo: &str) -> String {
        format!("{}/git/acme/{repo}.git", self.server.base_url())
    }

    /// Runs `git` (the given binary) in `cwd`.
    pub fn git(&self, git: &str, cwd: Option<&Path>, args: &[&str]) -> Run {
        let mut cmd = Command::new(git);
        cmd.args(args);
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        } else {
            cmd.current_dir(self.dir.path());
        }
        self.run(cmd, None)
    }

    /// Runs the helper binary directly, with `stdin` as its input.
    pub fn helper(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut cmd = Command::new(helper());
        cmd.args(args).current_dir(self.dir.path());
        self.run(cmd, stdin)
    }

    /// Runs a command with this world's environment only, a deadline, and a
    /// check that nothing it printed holds a token the server issued.
    pub fn run(&self, cmd: Command, stdin: Option<&str>) -> Run {
        self.run_within(cmd, stdin, DEADLINE)
    }

    /// [`World::run`] with a deadline of its own (e.g. for a release build).
    pub fn run_within(&self, mut cmd: Command, stdin: Option<&str>, deadline: Duration) -> Run {
        self.prepare(&mut cmd);
        let out_path = self.dir.path().join(format!("out-{}", unique()));
        let err_path = self.dir.path().join(format!("err-{}", unique()));
        cmd.stdout(File::create(&out_path).expect("stdout file"));
        cmd.stderr(File::create(&err_path).expect("stderr file"));
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        if let Some(input) = stdin {
            use std::io::Write;
            let mut pipe = child.stdin.take().expect("stdin pipe");
            // The child may exit without reading everything: that is its business.
            let _ = pipe.write_all(input.as_bytes());
        }
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if started.elapsed() > deadline {
                let _ = child.kill();
                panic!("{cmd:?} did not finish within {deadline:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let elapsed = started.elapsed();
        let read =
            |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
        let run = Run {
            status,
            stdout: read(&out_path),
            stderr: read(&err_path),
            elapsed,
        };
        let _ = std::fs::remove_file(&out_path);
        let _ = std::fs::remove_file(&err_path);
        // Nothing but an answer that is a token by design (the helper's `get` and
        // `token`, `git credential fill`, `secret-tool lookup`) may hold one.
        let answers_git = cmd
            .get_args()
            .any(|a| a == "get" || a == "fill" || a == "lookup" || a == "token");
        self.assert_no_tokens_in(&format!("stderr of {cmd:?}"), &run.stderr);
        if !answers_git {
            self.assert_no_tokens_in(&format!("stdout of {cmd:?}"), &run.stdout);
        }
        run
    }

    /// A command with this world's environment and user, in its directory, for
    /// tests that start it themselves (to signal it, or to look at it running).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(self.dir.path());
        self.prepare(&mut cmd);
        cmd
    }

    /// This world's user and environment, and nothing else.
    fn prepare(&self, cmd: &mut Command) {
        if let Some(user) = self.user {
            use std::os::unix::process::CommandExt;
            cmd.uid(user.uid).gid(user.gid);
        }
        cmd.env_clear();
        for (k, v) in self.base_env() {
            cmd.env(k, v);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
    }

    /// The environment every command gets: an isolated HOME and config, no
    /// prompts, the helper on PATH, and the D-Bus session (for keychain tests).
    fn base_env(&self) -> Vec<(String, OsString)> {
        let helper_dir = Path::new(helper()).parent().expect("helper dir");
        let mut path = OsString::from(helper_dir);
        path.push(":/usr/local/bin:/usr/bin:/bin");
        let mut env = vec![
            ("PATH".to_owned(), path),
            ("HOME".to_owned(), self.home.clone().into()),
            (
                "XDG_CONFIG_HOME".to_owned(),
                self.home.join(".config").into(),
            ),
            ("XDG_CACHE_HOME".to_owned(), self.home.join(".cache").into()),
            // Each world has its own agent, which exits when this directory goes.
            ("XDG_RUNTIME_DIR".to_owned(), self.runtime_dir().into()),
            ("GIT_CONFIG_NOSYSTEM".to_owned(), "1".into()),
            ("GIT_TERMINAL_PROMPT".to_owned(), "0".into()),
            ("LANG".to_owned(), "C".into()),
            ("USER".to_owned(), "tester".into()),
            ("GIT_AUTHOR_NAME".to_owned(), "Tester".into()),
            ("GIT_AUTHOR_EMAIL".to_owned(), "tester@example.com".into()),
            ("GIT_COMMITTER_NAME".to_owned(), "Tester".into()),
            (
                "GIT_COMMITTER_EMAIL".to_owned(),
                "tester@example.com".into(),
            ),
        ];
        // GITHOSTED_NO_AGENT: CI runs the end-to-end suite once more without the agent.
        for key in [
            "DBUS_SESSION_BUS_ADDRESS",
            "GITHOSTED_LOG",
            "GITHOSTED_NO_AGENT",
        ] {
            if let Some(value) = std::env::var_os(key) {
                env.push((key.to_owned(), value));
            }
        }
        env
    }

    /// Every file under this world's directory (HOME, runtime dir, clones).
    pub fn files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                match entry.file_type() {
                    Ok(t) if t.is_dir() => walk(&path, out),
                    Ok(t) if t.is_file() => out.push(path),
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        walk(self.dir.path(), &mut out);
        out
    }

    /// Asserts that no token the server ever issued appears in `text`.
    #[track_caller]
    pub fn assert_no_tokens_in(&self, what: &str, text: &str) {
        for token in self.server.issued_tokens() {
            assert!(
                !text.contains(&token),
                "{what} contains a token the server issued"
            );
        }
    }

    /// Clones `url` into `name` with `git`, asserting success and no leaked token.
    #[track_caller]
    pub fn clone(&self, git: &str, url: &str, name: &str) -> PathBuf {
        let run = self.git(git, None, &["clone", "-q", url, name]);
        run.assert_ok();
        self.assert_no_tokens_in("git clone output", &format!("{}{}", run.stdout, run.stderr));
        self.path(name)
    }

    /// Makes a commit in `repo` and returns its id.
    pub fn commit(&self, git: &str, repo: &Path, file: &str) -> String {
        std::fs::write(repo.join(file), file).expect("write file");
        self.git(git, Some(repo), &["add", file]).assert_ok();
        self.git(git, Some(repo), &["commit", "-q", "-m", file])
            .assert_ok();
        self.git(git, Some(repo), &["rev-parse", "HEAD"])
            .assert_ok()
            .stdout
            .trim()
            .to_owned()
    }
}

impl Drop for World {
    /// No token ever touches the disk: scan every file the test left behind.
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let tokens = self.server.issued_tokens();
        for file in self.files() {
            let bytes = std::fs::read(&file).unwrap_or_default();
            for token in &tokens {
                let found = bytes.windows(token.len()).any(|w| w == token.as_bytes());
                assert!(!found, "{} holds a token the server issued", file.display());
            }
        }
    }
}

impl World {
    /// `get` for `acme/<repo>` with the helper options, straight to the helper.
    pub fn get(&self, repo: &str, options: &[&str]) -> Run {
        let url = self.server.base_url();
        let mut args = vec!["--api-url", url.as_str()];
        args.extend_from_slice(options);
        args.push("get");
        let path = format!("acme/{repo}.git");
        self.helper(
            &args,
            Some(&request("http", &self.server.host(), Some(&path))),
        )
    }

    /// The password `get` answers for `acme/<repo>`.
    #[track_caller]
    pub fn token(&self, repo: &str, options: &[&str]) -> String {
        let run = self.get(repo, options);
        field(&run.stdout, "password")
            .unwrap_or_else(|| panic!("no password: {run:#?}"))
            .to_owned()
    }

    /// Pids of agent processes serving this world (found by the `--dir` on
    /// their command line, which anyone may read).
    pub fn agent_pids(&self) -> Vec<u32> {
        let dir = self.agent_dir();
        let dir = dir.as_os_str().as_encoded_bytes();
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            if args.len() >= 4
                && (args[0].ends_with(b"git-credential-githosted")
                    || args[0].ends_with(b"git-credential-githosted-core")
                    || args[0].ends_with(b"git-credential-githosted-agent"))
                && args[1] == b"agent"
                && args[2] == b"--dir"
                && args[3] == dir
            {
                pids.push(pid);
            }
        }
        pids
    }
}

/// A request as git would send it to `get`.
pub fn request(protocol: &str, host: &str, path: Option<&str>) -> String {
    let mut r = format!("protocol={protocol}\nhost={host}\n");
    if let Some(path) = path {
        r.push_str(&format!("path={path}\n"));
    }
    r
}

/// The value of `key` in a helper answer.
pub fn field<'a>(answer: &'a str, key: &str) -> Option<&'a str> {
    answer
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A private D-Bus session with an unlocked gnome-keyring (a headless Secret
/// Service), run as the world's user, alive until dropped. The world's
/// commands use it. Needs `dbus-daemon`, `gnome-keyring-daemon` and `dbus-send`
/// (CI installs them).
pub struct KeyringSession {
    bus_pid: u32,
    pub address: String,
}

impl KeyringSession {
    pub fn start(world: &mut World) -> KeyringSession {
        use std::os::unix::process::CommandExt;
        let data = world.path("keyring-data");
        std::fs::create_dir_all(&data).expect("keyring data dir");
        if let Some(user) = world.user {
            chown_tree(&data, user);
        }
        let as_user = |cmd: &mut Command| {
            if let Some(user) = world.user {
                cmd.uid(user.uid).gid(user.gid);
            }
            cmd.env_clear()
                .env("PATH", "/usr/local/bin:/usr/bin:/bin")
                .env("HOME", &world.home)
                .env("XDG_DATA_HOME", &data);
        };
        let mut bus = Command::new("dbus-daemon");
        bus.args(["--session", "--fork", "--print-address=1", "--print-pid=1"]);
        as_user(&mut bus);
        let out = bus.output().expect("dbus-daemon (Debian: dbus-daemon)");
        assert!(out.status.success(), "dbus-daemon: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = text.lines();
        let address = lines.next().expect("bus address").trim().to_owned();
        let bus_pid: u32 = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .expect("bus pid");
        let session = KeyringSession { bus_pid, address };

        let mut keyring = Command::new("gnome-keyring-daemon");
        keyring
            .args(["--unlock", "--components=secrets"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        as_user(&mut keyring);
        keyring.env("DBUS_SESSION_BUS_ADDRESS", &session.address);
        let mut child = keyring.spawn().expect("gnome-keyring-daemon");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            let _ = stdin.write_all(b"test-keyring-pass");
        }
        let _ = child.wait();
        // The daemon forks before it owns its name: wait for it.
        let started = Instant::now();
        loop {
            let mut ask = Command::new("dbus-send");
            ask.args([
                "--session",
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.NameHasOwner",
                "string:org.freedesktop.secrets",
            ]);
            as_user(&mut ask);
            ask.env("DBUS_SESSION_BUS_ADDRESS", &session.address);
            let reply = ask.output().expect("dbus-send");
            if String::from_utf8_lossy(&reply.stdout).contains("boolean true") {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no Secret Service came up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        world.set_env("DBUS_SESSION_BUS_ADDRESS", &session.address);
        session
    }
}

impl Drop for KeyringSession {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.bus_pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
}
