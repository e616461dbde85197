//! Windows: the three programs as git runs them, the agent on its named pipe,
//! the Credential Manager, `exec --no-isolate` and `configure` with Windows
//! paths. These run under Wine here (`../shared/tools/wine-check`) and on real
//! Windows in the GitHub workflow; what Wine cannot show (another user, a pipe's
//! DACL) is in README, Platforms.
//!
//! Git for Windows is not here: git's credential protocol is spoken to the
//! programs directly, and the one test that needs git itself (`configure`,
//! then git running the helper line) is ignored unless run with
//! `--include-ignored` where git is on PATH (the GitHub workflow).
//!
//! The API is a small stand-in for githosted's (`ExchangeToken`,
//! `RevokeToken`, `ListTokens`, `ListWorkspaces`), enough for these programs. The tests run one
//! at a time: they share this user's agent pipe and Credential Manager, and
//! Wine's `CredEnumerateW` misaligns every entry after the first (a debug
//! build aborts on it), so at most one credential exists at a time.
#![cfg(windows)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use git_credential_githosted::agent::client::{Agent, AgentError};

/// One test at a time (see the module's documentation).
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The workspace token every test's server accepts.
const PARENT: &str = "gw_windowstest0123456789abcdef0123";

// ---------------------------------------------------------------- the API

/// What the stand-in API saw.
#[derive(Default)]
struct Seen {
    /// `(method, bearer token)` of every call.
    calls: Vec<(String, String)>,
    /// The repo tokens it issued.
    issued: Vec<String>,
}

/// A githosted-compatible API on 127.0.0.1, on its own thread, for the life of
/// the test process (one per test; it is small).
struct Api {
    port: u16,
    seen: Arc<Mutex<Seen>>,
}

impl Api {
    fn start() -> Api {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let state = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = state.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &state);
                });
            }
        });
        Api { port, seen }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The calls of one method, with the token each carried.
    fn calls(&self, method: &str) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        seen.calls
            .iter()
            .filter(|(m, _)| m == method)
            .map(|(_, token)| token.clone())
            .collect()
    }

    fn issued(&self) -> Vec<String> {
        self.seen.lock().unwrap().issued.clone()
    }
}

/// Answers HTTP/1.1 requests on one connection until the client closes it.
fn serve(stream: TcpStream, seen: &Mutex<Seen>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut stream = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let path = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let (mut length, mut bearer) = (0usize, String::new());
        loop {
            let mut header = String::new();
            reader.read_line(&mut header)?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().unwrap_or(0);
            } else if name.eq_ignore_ascii_case("authorization") {
                bearer = value.strip_prefix("Bearer ").unwrap_or_default().to_owned();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let method = path
            .strip_prefix("/githosted.v1.ApiService/")
            .unwrap_or(&path)
            .to_owned();
        let (status, answer) = answer(&method, &bearer, &body, seen);
        let reply = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        stream.write_all(reply.as_bytes())?;
    }
}

fn answer(method: &str, bearer: &str, body: &[u8], seen: &Mutex<Seen>) -> (&'static str, String) {
    let mut seen = seen.lock().unwrap();
    seen.calls.push((method.to_owned(), bearer.to_owned()));
    let unauthenticated = (
        "401 Unauthorized",
        r#"{"code":"unauthenticated","message":"missing, invalid, expired or revoked token"}"#
            .to_owned(),
    );
    match method {
        "ExchangeToken" => {
            if bearer != PARENT {
                return unauthenticated;
            }
            let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
            let n = seen.issued.len() + 1;
            let token = format!("gr_windowstest{n:04}{:016x}", fastrand::u64(..));
            seen.issued.push(token.clone());
            let expires = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
            let expires = expires
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap();
            let answer = serde_json::json!({
                "token": token,
                "record": {
                    "id": format!("tk_{n}"),
                    "prefix": "gr",
                    "kind": "TOKEN_KIND_REPO",
                    "permission": request["permission"],
                    "repoAllowlist": request["repoAllowlist"],
                    "expiresAt": expires,
                }
            });
            ("200 OK", answer.to_string())
        }
        // The parent's workspace: the helper mints only when it is known.
        "ListWorkspaces" if bearer == PARENT => (
            "200 OK",
            r#"{"workspaces":[{"id":"ws_acme","slug":"acme","permission":"PERMISSION_WRITE"}]}"#
                .to_owned(),
        ),
        "RevokeToken" | "ListTokens" if bearer == PARENT => ("200 OK", "{}".to_owned()),
        "RevokeToken" | "ListTokens" => unauthenticated,
        _ => (
            "404 Not Found",
            r#"{"code":"not_found","message":"no such method"}"#.to_owned(),
        ),
    }
}

// ---------------------------------------------------------------- the programs

/// The three programs, copied into a directory of their own (so a test may
/// take one away), with a space and shell syntax in its name.
struct Programs {
    _dir: tempfile::TempDir,
    bin: PathBuf,
}

const FRONT: &str = "git-credential-githosted.exe";
const CORE: &str = "git-credential-githosted-core.exe";
const AGENT: &str = "git-credential-githosted-agent.exe";

impl Programs {
    fn copy() -> Programs {
        // This test runs from `target/<triple>/debug/deps`; cargo built the programs one up.
        let exe = std::env::current_exe().unwrap();
        let built = exe.parent().unwrap().parent().unwrap().to_path_buf();
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("Program Files (x86)").join("githosted's");
        std::fs::create_dir_all(&bin).unwrap();
        for program in [FRONT, CORE, AGENT] {
            std::fs::copy(built.join(program), bin.join(program))
                .unwrap_or_else(|e| panic!("copying {program} from {}: {e}", built.display()));
        }
        Programs { _dir: dir, bin }
    }

    fn path(&self, program: &str) -> PathBuf {
        self.bin.join(program)
    }
}

/// What a finished program printed.
#[derive(Debug)]
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn assert_ok(&self) -> &Self {
        assert!(self.status.success(), "failed: {self:#?}");
        self
    }

    /// The value of `key` in a helper's answer.
    fn field(&self, key: &str) -> Option<&str> {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
    }
}

/// Runs `program ARGS…` with `stdin`, `env` over a clean environment, and
/// waits (at most 90 s). Output goes to files, not pipes: under Wine an
/// agent the program starts keeps its creator's Unix stderr open, so a pipe
/// would not end until the agent does.
fn run(program: &Path, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let (out, err, input) = (
        dir.path().join("out"),
        dir.path().join("err"),
        dir.path().join("in"),
    );
    std::fs::write(&input, stdin).unwrap();
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(std::fs::File::open(&input).unwrap())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    for name in [
        "GITHOSTED_TOKEN",
        "GITHOSTED_API_URL",
        "GITHOSTED_LOG",
        "GITHOSTED_NO_AGENT",
        "GITHOSTED_BROKER",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        command.env_remove(name);
    }
    // Agents these tests start leave soon after they are drained.
    command.env("GITHOSTED_AGENT_IDLE_SECS", "2");
    command.envs(env.iter().copied());
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{} {args:?} hung", program.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap()).replace('\r', "");
    Run {
        status,
        stdout: read(&out),
        stderr: read(&err),
    }
}

/// git's request for `acme/<repo>` on the API's host.
fn request(api: &Api, repo: &str) -> String {
    format!(
        "protocol=http\nhost={}\npath=acme/{repo}.git\n\n",
        api.host()
    )
}

/// Empties this user's agent (if one runs) and waits for it to leave, so the
/// next test starts without one. (Not by connecting again: each connection
/// restarts its idle time.)
fn stop_agent(api: &Api) {
    let Ok(mut agent) = Agent::connect() else {
        return;
    };
    let pid = agent.status().unwrap().pid;
    agent.drain(&format!("{}/", api.url()), None).unwrap();
    drop(agent);
    assert!(
        wait_for_exit(pid, Duration::from_secs(30)),
        "the agent (pid {pid}) did not leave"
    );
    assert!(matches!(Agent::connect(), Err(AgentError::NotRunning)));
}

/// Whether the process `pid` ended (or was gone) within `timeout`.
#[allow(unsafe_code)] // a test's only
fn wait_for_exit(pid: u32, timeout: Duration) -> bool {
    use windows_sys::Win32::Foundation::{CloseHandle, WAIT_OBJECT_0};
    use windows_sys::Win32::System::Threading::{
        OpenProcess, PROCESS_SYNCHRONIZE, WaitForSingleObject,
    };
    let millis = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
    // SAFETY: OpenProcess and WaitForSingleObject take no pointers; the
    // handle, when there is one, is closed once here.
    unsafe {
        let process = OpenProcess(PROCESS_SYNCHRONIZE, 0, pid);
        if process.is_null() {
            return true;
        }
        let waited = WaitForSingleObject(process, millis);
        CloseHandle(process);
        waited == WAIT_OBJECT_0
    }
}

// ---------------------------------------------------------------- the tests

/// Git's protocol through the three programs: a cold `get` goes front → core,
/// which starts the agent and mints through it; a warm `get` is answered by
/// the front alone, from the agent over its named pipe (the core is gone by
/// then); `erase` makes the agent forget the token, and the next `get` mints
/// again.
#[test]
fn git_protocol_round_trip_through_front_core_and_agent() {
    let _serial = serial();
    let api = Api::start();
    stop_agent(&api);
    let programs = Programs::copy();
    let front = programs.path(FRONT);
    let url = api.url();
    let env = [("GITHOSTED_TOKEN", PARENT)];
    let get = |front: &Path| {
        run(
            front,
            &["--api-url", &url, "get"],
            &request(&api, "app"),
            &env,
        )
    };

    let cold = get(&front);
    cold.assert_ok();
    let token = cold.field("password").unwrap_or_default().to_owned();
    assert_eq!(api.issued(), [token.clone()], "{cold:#?}");
    assert_eq!(api.calls("ExchangeToken"), [PARENT]);
    assert!(
        Agent::connect().unwrap().status().unwrap().entries.len() == 1,
        "the agent holds the token"
    );

    // Warm: the front answers from the agent, with no core to hand over to.
    std::fs::remove_file(programs.path(CORE)).unwrap();
    let warm = get(&front);
    warm.assert_ok();
    assert_eq!(warm.field("password"), Some(token.as_str()), "{warm:#?}");
    assert_eq!(api.issued().len(), 1, "no second mint");

    // `erase` (the core's): the agent forgets the token; the next get mints.
    std::fs::copy(
        std::env::current_exe()
            .unwrap()
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join(CORE),
        programs.path(CORE),
    )
    .unwrap();
    let erase = format!(
        "protocol=http\nhost={}\npath=acme/app.git\nusername={}\npassword={token}\n\n",
        api.host(),
        cold.field("username").unwrap_or_default()
    );
    run(&front, &["--api-url", &url, "erase"], &erase, &env).assert_ok();
    let again = get(&front);
    again.assert_ok();
    let issued = api.issued();
    assert_eq!(issued.len(), 2, "{again:#?}");
    assert_eq!(again.field("password"), Some(issued[1].as_str()));
    stop_agent(&api);
}

/// A warm `get` for a host that is not githosted's says nothing (the front
/// alone, as on Linux), and one for a repo the agent does not hold is handed
/// over to the core.
#[test]
fn the_front_answers_other_hosts_with_nothing() {
    let _serial = serial();
    let api = Api::start();
    let programs = Programs::copy();
    // No core: the front must not need it for another host.
    std::fs::remove_file(programs.path(CORE)).unwrap();
    let other = run(
        &programs.path(FRONT),
        &["--api-url", &api.url(), "get"],
        "protocol=https\nhost=github.com\npath=a/b.git\n\n",
        &[("GITHOSTED_TOKEN", PARENT)],
    );
    other.assert_ok();
    assert_eq!(other.stdout, "", "{other:#?}");
    assert!(api.calls("ExchangeToken").is_empty());
}

/// The Credential Manager: `login` stores the workspace token, `status`
/// lists it (by fingerprint), a `get` finds it there, `logout` deletes it.
#[test]
fn credential_manager_login_status_get_logout() {
    let _serial = serial();
    let api = Api::start();
    stop_agent(&api);
    let programs = Programs::copy();
    let core = programs.path(CORE);
    let url = api.url();
    let account = format!("{}/acme", api.host());
    run(
        &core,
        &["login", "--api-url", &url, "--workspace", "acme"],
        PARENT,
        &[],
    )
    .assert_ok();
    assert_eq!(api.calls("ListTokens"), [PARENT], "login checks the token");

    let status = run(&core, &["status", "--json", "--api-url", &url], "", &[]);
    status.assert_ok();
    let json: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let listed = json.to_string();
    assert!(
        listed.contains(&format!("\"account\":\"{account}\"")),
        "{listed}"
    );
    let fingerprint =
        git_credential_githosted::secret::Secret::new(PARENT.to_owned()).fingerprint();
    assert!(listed.contains(&fingerprint), "{listed}");
    assert!(!status.stdout.contains(PARENT) && !status.stderr.contains(PARENT));

    // The keychain's parent reaches the API through the front and core.
    let got = run(
        &programs.path(FRONT),
        &["--api-url", &url, "--no-agent", "get"],
        &request(&api, "app"),
        &[],
    );
    got.assert_ok();
    assert_eq!(
        got.field("password"),
        api.issued().first().map(String::as_str)
    );
    assert_eq!(api.calls("ExchangeToken"), [PARENT]);

    let out = run(
        &core,
        &["logout", "--api-url", &url, "--workspace", "acme"],
        "",
        &[],
    );
    out.assert_ok();
    let status = run(&core, &["status", "--json", "--api-url", &url], "", &[]);
    assert!(!status.stdout.contains(&account), "{status:#?}");
    stop_agent(&api);
}

/// `exec --no-isolate`: the command runs in a job object with a fresh repo
/// token (never the workspace token) as GITHOSTED_TOKEN, its exit code comes
/// back, and the token is revoked when it ends.
#[test]
fn exec_no_isolate_runs_the_command_with_a_repo_token_then_revokes_it() {
    let _serial = serial();
    let api = Api::start();
    let programs = Programs::copy();
    let core = programs.path(CORE);
    let url = api.url();
    let env = [("GITHOSTED_TOKEN", PARENT)];
    let exec = |command: &[&str]| {
        let mut args = vec![
            "exec",
            "--api-url",
            &url,
            "--no-isolate",
            "--repo",
            "acme/app",
            "--",
        ];
        args.extend_from_slice(command);
        run(&core, &args, "", &env)
    };
    let shown = exec(&["cmd", "/c", "echo", "token=%GITHOSTED_TOKEN%"]);
    shown.assert_ok();
    let issued = api.issued();
    assert_eq!(issued.len(), 1, "{shown:#?}");
    assert!(
        shown.stdout.contains(&format!("token={}", issued[0])),
        "{shown:#?}"
    );
    assert!(!shown.stdout.contains(PARENT));
    assert_eq!(api.calls("RevokeToken"), [PARENT], "revoked when it ended");

    let failed = exec(&["cmd", "/c", "exit", "7"]);
    assert_eq!(failed.status.code(), Some(7), "{failed:#?}");
    assert_eq!(api.calls("RevokeToken").len(), 2);

    // Refused without --no-isolate: nothing is minted.
    let refused = run(
        &core,
        &[
            "exec",
            "--api-url",
            &url,
            "--repo",
            "acme/app",
            "--",
            "cmd",
            "/c",
            "exit",
            "0",
        ],
        "",
        &env,
    );
    assert!(!refused.status.success());
    assert!(refused.stderr.contains("--no-isolate"), "{refused:#?}");
    assert_eq!(api.issued().len(), 2);
}

/// `configure` with Windows paths: git for Windows gets a helper line it runs
/// (the front, by an absolute path with `/` and shell escapes, from a
/// directory with spaces, parentheses and a quote in its name), `git
/// credential fill` gets a token through it, and `configure --remove` takes
/// out exactly what configure wrote.
#[test]
#[ignore = "needs git for Windows on PATH; the GitHub workflow's windows job runs it"]
fn configure_and_remove_with_windows_paths_then_git_runs_the_helper() {
    let _serial = serial();
    let api = Api::start();
    stop_agent(&api);
    let programs = Programs::copy();
    let core = programs.path(CORE);
    let url = api.url();
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("gitconfig");
    let config_text = config.to_string_lossy().into_owned();
    std::fs::write(&config, "[credential]\n\thelper = store\n").unwrap();
    let env = [
        ("GIT_CONFIG_GLOBAL", config_text.as_str()),
        ("GIT_CONFIG_NOSYSTEM", "1"),
        ("GIT_TERMINAL_PROMPT", "0"),
        ("GCM_INTERACTIVE", "never"),
    ];
    let git = |args: &[&str], stdin: &str, extra: &[(&str, &str)]| {
        let mut all = env.to_vec();
        all.extend_from_slice(extra);
        run(Path::new("git"), args, stdin, &all)
    };
    run(&core, &["configure", "--api-url", &url], "", &env).assert_ok();
    let key = format!("credential.http://{}.helper", api.host());
    let helpers = git(&["config", "--global", "--get-all", &key], "", &[]);
    helpers.assert_ok();
    let lines: Vec<&str> = helpers.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{helpers:#?}");
    assert_eq!(lines[0], "");
    let front = programs.path(FRONT).to_string_lossy().replace('\\', "/");
    let words = shlex::split(lines[1]).unwrap();
    assert_eq!(words[0], front, "{}", lines[1]);

    // Git runs it: a token for the repo, from the workspace token.
    let fill = git(
        &["credential", "fill"],
        &request(&api, "app"),
        &[("GITHOSTED_TOKEN", PARENT)],
    );
    fill.assert_ok();
    assert_eq!(
        fill.field("password"),
        api.issued().first().map(String::as_str),
        "{fill:#?}"
    );

    run(
        &core,
        &["configure", "--api-url", &url, "--remove"],
        "",
        &env,
    )
    .assert_ok();
    let left = std::fs::read_to_string(&config).unwrap();
    assert!(!left.contains("githosted"), "{left}");
    assert!(left.contains("helper = store"), "{left}");
    stop_agent(&api);
}

/// `status`, `doctor` and the other commands read the options back from a
/// helper line `configure` wrote with a Windows path.
#[test]
fn a_windows_helper_line_is_read_back_for_its_options() {
    let line = r"C:/Program\ Files\ \(x86\)/githosted/git-credential-githosted.exe --api-url http://127.0.0.1:9 --permission auto";
    let options = git_credential_githosted::cli::options_of_line(line).unwrap();
    assert_eq!(options.api.api_url.as_deref(), Some("http://127.0.0.1:9"));
    assert!(
        git_credential_githosted::cli::options_of_line("C:/x/git-credential-githosted-core.exe")
            .is_none()
    );
}
