//! Attacks on the helper's secrets, made the way an attacker would make them:
//! a hostile command under `exec`, a second local user, a same-user process that
//! read the helper's output. Where root would hide the bug (root reads any
//! process's memory and passes every ownership check) the victim runs as a user
//! without privileges, created by the test; those tests need root and are
//! ignored elsewhere (CI runs them).
//!
//! Unix only: the harness runs processes as other users, uses Unix sockets and
//! `git http-backend` (Windows runs the unit tests and `protocol_props`).
#![cfg(unix)]

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use githosted_testkit::*;

/// Waits for `child` up to `limit`; kills it and panics past that.
fn wait_for(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("pid");
    rustix::process::kill_process(pid, sig).expect("kill");
}

/// Item 1: a hostile command under `exec` (same uid, no privileges) looks for
/// the workspace token everywhere it could be, and for tokens of other repos.
#[test]
#[ignore = "needs root (creates a user), bubblewrap, dbus-daemon, gnome-keyring and secret-tool; CI installs them"]
fn exec_confines_a_hostile_command() {
    let user = unprivileged_user();
    let mut world = World::as_user(user);
    world.server.add_repo("acme", "lib");
    let _keyring = KeyringSession::start(&mut world);
    let url = world.server.base_url();
    let host = world.server.host();

    // The keychain holds a workspace token; the agent holds a token for lib.
    let stored = world
        .server
        .seed_token("acme", TokenSpec::workspace_write());
    world
        .helper(
            &["--api-url", &url, "login", "--workspace", "acme"],
            Some(&stored),
        )
        .assert_ok();
    world.token("lib", &[]);
    assert_eq!(world.agent_pids().len(), 1, "an agent serves this user");
    // exec itself gets its parent from the environment.
    world.with_env_parent();
    let exchanges_before = world.server.exchange_count();

    let script = r#"
echo "procs=$(ls -d /proc/[0-9]* | wc -l)"
found=0
for p in /proc/[0-9]*; do
  for f in environ cmdline; do
    if tr '\0' '\n' < $p/$f 2>/dev/null | grep -q 'g[w]_'; then found=1; echo "match=$p/$f"; fi
  done
done
echo "found_in_proc=$found"
echo "keychain=$(DBUS_SESSION_BUS_ADDRESS=$ORIG_BUS secret-tool lookup service git-credential-githosted username $HOST/acme 2>/dev/null | head -c 3)"
for s in /tmp/dbus-*; do
  echo "scan=$(DBUS_SESSION_BUS_ADDRESS=unix:path=$s secret-tool lookup service git-credential-githosted username $HOST/acme 2>/dev/null | head -c 3)"
done
[ -e "$AGENT_SOCK" ] && echo agent_sock=visible || echo agent_sock=hidden
echo "token_lib=$(env -u GITHOSTED_TOKEN git-credential-githosted --api-url $URL token --repo acme/lib 2>/dev/null | head -c 3)"
echo "get_lib=$(printf 'protocol=http\nhost=%s\npath=acme/lib.git\n' $HOST | env -u GITHOSTED_TOKEN git-credential-githosted --api-url $URL get 2>/dev/null | grep -c password=)"
git ls-remote $URL/acme/app.git >/dev/null 2>&1 && echo app=ok || echo app=fail
git ls-remote $URL/acme/lib.git >/dev/null 2>&1 && echo lib=ok || echo lib=fail
"#;
    let orig_bus = world
        .env
        .iter()
        .find(|(k, _)| k == "DBUS_SESSION_BUS_ADDRESS")
        .map(|(_, v)| v.clone())
        .expect("bus address");
    world.set_env("ORIG_BUS", &orig_bus);
    world.set_env("HOST", &host);
    world.set_env("URL", &url);
    let sock = world
        .agent_dir()
        .join(git_credential_githosted::agent::SOCKET_NAME);
    world.set_env("AGENT_SOCK", &sock.to_string_lossy());
    let run = world.helper(
        &[
            "--api-url",
            &url,
            "exec",
            "--repo",
            "acme/app",
            "--",
            "sh",
            "-c",
            script,
        ],
        None,
    );
    run.assert_ok();
    let out = &run.stdout;
    let value = |key: &str| -> String {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in {out}\n{}", run.stderr))
            .to_owned()
    };
    let procs: usize = value("procs").trim().parse().expect("procs");
    assert!(procs < 10, "the command sees {procs} processes: {out}");
    assert_eq!(value("found_in_proc"), "0", "{out}");
    assert_eq!(value("keychain"), "", "the keychain answered inside: {out}");
    assert!(
        out.lines()
            .filter_map(|l| l.strip_prefix("scan="))
            .all(str::is_empty),
        "a D-Bus socket answered inside: {out}"
    );
    assert_eq!(value("agent_sock"), "hidden", "{out}");
    assert_eq!(value("token_lib"), "", "{out}");
    assert_eq!(value("get_lib"), "0", "{out}");
    assert_eq!(value("app"), "ok", "the granted repo works: {out}");
    assert_eq!(value("lib"), "fail", "{out}");
    // Nothing was minted inside: exec's own exchange only.
    assert_eq!(world.server.exchange_count(), exchanges_before + 1);
    let exec = world.server.exchanges().pop().expect("exec's exchange");
    assert_eq!(exec.allowlist, vec!["app".to_string()]);
    assert_eq!(world.server.revoked_via_api(), vec![exec.minted.id]);
}

/// Item 1: where namespaces cannot be had, `exec` refuses before minting, and
/// says how to proceed; `--no-isolate` then runs the command.
#[test]
fn exec_without_bubblewrap_refuses_before_minting() {
    let mut world = World::new();
    world.with_env_parent();
    // A PATH with git and sh but no bwrap.
    let bin = world.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["sh", "git", "true"] {
        let found = ["/usr/local/bin", "/usr/bin", "/bin"]
            .iter()
            .map(|d| std::path::Path::new(d).join(tool))
            .find(|p| p.exists())
            .expect(tool);
        std::os::unix::fs::symlink(found, bin.join(tool)).unwrap();
    }
    let helper_dir = std::path::Path::new(helper()).parent().unwrap();
    world.set_env(
        "PATH",
        &format!("{}:{}", helper_dir.display(), bin.display()),
    );
    let url = world.server.base_url();
    let run = world.helper(
        &[
            "--api-url",
            &url,
            "exec",
            "--repo",
            "acme/app",
            "--",
            "true",
        ],
        None,
    );
    run.assert_failed();
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("bwrap") && run.stderr.contains("--no-isolate"),
        "{}",
        run.stderr
    );
    assert_eq!(world.server.exchange_count(), 0, "nothing minted");
    let run = world.helper(
        &[
            "--api-url",
            &url,
            "exec",
            "--no-isolate",
            "--repo",
            "acme/app",
            "--",
            "true",
        ],
        None,
    );
    run.assert_ok();
    assert_eq!(world.server.exchange_count(), 1);
}

/// Item 2: a socket in the agent's place that someone else serves (here root,
/// the victim an ordinary user) gets nothing at all, and `get` still works.
#[test]
#[ignore = "needs root: creates a user and serves a socket in that user's directory"]
fn the_helper_sends_nothing_to_an_impostor_agent() {
    let user = unprivileged_user();
    let mut world = World::as_user(user);
    world.with_env_parent();
    let dir = world.agent_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    chown_tree(&dir, user);
    let socket = dir.join(git_credential_githosted::agent::SOCKET_NAME);
    let listener = UnixListener::bind(&socket).unwrap();
    std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let received = Arc::new(Mutex::new(Vec::<u8>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let impostor = {
        let (received, stop) = (received.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut conns: Vec<UnixStream> = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok((conn, _)) = listener.accept() {
                    conn.set_nonblocking(true).unwrap();
                    conns.push(conn);
                }
                for conn in &mut conns {
                    let mut buf = [0u8; 4096];
                    if let Ok(n) = conn.read(&mut buf) {
                        received.lock().unwrap().extend_from_slice(&buf[..n]);
                        // Answer "Miss", hoping for a Mint with the parent.
                        let _ = conn.write_all(&[0, 0, 0, 6]);
                        let _ = conn.write_all(b"\"Miss\"");
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let run = world.get("app", &[]);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    impostor.join().unwrap();
    run.assert_ok();
    assert!(field(&run.stdout, "password").is_some(), "{run:#?}");
    assert!(
        run.stderr.contains("served by uid 0") && run.stderr.contains("nothing was sent"),
        "{}",
        run.stderr
    );
    let received = received.lock().unwrap();
    assert!(
        received.is_empty(),
        "the impostor received {} bytes",
        received.len()
    );
}

/// Item 2: a runtime directory others can write (without the sticky bit), or
/// a symlinked one, is refused with a clear line; `get` mints directly.
#[test]
fn a_runtime_dir_others_could_swap_is_refused() {
    let mut world = World::new();
    world.with_env_parent();
    let open = world.path("open-run");
    std::fs::create_dir_all(&open).unwrap();
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    world.set_env("XDG_RUNTIME_DIR", &open.to_string_lossy());
    let run = world.get("app", &[]);
    run.assert_ok();
    assert!(field(&run.stdout, "password").is_some());
    assert!(
        run.stderr.contains("writable by other users") && run.stderr.contains("without the agent"),
        "{}",
        run.stderr
    );
    assert!(!open.join("git-credential-githosted").exists());

    let real = world.path("real-run");
    std::fs::create_dir_all(&real).unwrap();
    std::fs::set_permissions(&real, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let link = world.path("link-run");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    world.set_env("XDG_RUNTIME_DIR", &link.to_string_lossy());
    let run = world.get("app", &[]);
    run.assert_ok();
    assert!(run.stderr.contains("is a symlink"), "{}", run.stderr);
    assert!(!real.join("git-credential-githosted").exists());
}

/// Item 1(d): what `status` prints (fingerprints) does not let a process ask
/// the agent for a token minted from `GITHOSTED_TOKEN`.
#[test]
fn printed_fingerprints_do_not_unlock_the_agent() {
    let mut world = World::new();
    let parent = world.with_env_parent();
    let token = world.token("app", &[]);
    let url = world.server.base_url();
    let status = world.helper(&["--api-url", &url, "status"], None);
    // The attacker knows the parent's fingerprint (logs, status) and the key layout.
    let fingerprint = {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(parent.as_bytes());
        format!(
            "gw_…{}",
            digest[..4]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        )
    };
    assert!(!status.stdout.contains(&token));
    let api = format!("{url}/");
    for guess in [
        fingerprint.clone(),
        fingerprint["gw_…".len()..].to_owned(),
        String::new(),
    ] {
        let request = serde_json::json!({"Get": {"key": {
            "api": api, "workspace": "acme", "repo": "app",
            "permission": "PERMISSION_WRITE", "origin": {"Env": {"holder": guess}}},
            "min_ttl": null}});
        let body = serde_json::to_vec(&request).unwrap();
        let mut conn = UnixStream::connect(
            world
                .agent_dir()
                .join(git_credential_githosted::agent::SOCKET_NAME),
        )
        .unwrap();
        conn.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
        conn.write_all(&body).unwrap();
        let mut len = [0u8; 4];
        conn.read_exact(&mut len).unwrap();
        let mut answer = vec![0u8; u32::from_be_bytes(len) as usize];
        conn.read_exact(&mut answer).unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(answer, "\"Miss\"", "key parent {guess}");
    }
}

/// Item 4: a process that holds a workspace token cannot be read by other
/// processes of its user, and leaves no core file when it is killed.
#[test]
#[ignore = "needs root: runs the victim as a user without privileges"]
fn processes_holding_a_parent_are_not_readable_and_leave_no_core() {
    let user = unprivileged_user();
    let mut world = World::as_user(user);
    let parent = world.with_env_parent();
    world.server.inject_fault(server::Fault::delay(
        Some("ExchangeToken"),
        1,
        Duration::from_secs(20),
    ));
    let url = world.server.base_url();
    let core_in_cwd = std::fs::read_to_string("/proc/sys/kernel/core_pattern")
        .is_ok_and(|p| !p.starts_with('|') && !p.contains('/'));
    let cases: [&[&str]; 2] = [
        &["--no-agent", "--timeout", "15", "get"],
        &[
            "exec",
            "--no-isolate",
            "--repo",
            "acme/app",
            "--",
            "sleep",
            "30",
        ],
    ];
    for (i, args) in cases.iter().enumerate() {
        if i == 1 {
            world.server.clear_faults();
        }
        let mut cmd = world.command("sh");
        let mut line = format!("ulimit -c unlimited; exec {} --api-url {url}", helper());
        for a in *args {
            line.push(' ');
            line.push_str(a);
        }
        cmd.args(["-c", &line])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        let pid = child.id();
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(request("http", &world.server.host(), Some("acme/app.git")).as_bytes())
            .unwrap();
        drop(stdin);
        // Holding the parent: waiting on the API (get), or running the command (exec).
        let holding = || match i {
            0 => world.server.pending_faults() == 0,
            _ => world.server.exchange_count() > 0,
        };
        assert!(until(Duration::from_secs(10), holding), "{args:?}");
        std::thread::sleep(Duration::from_millis(200));
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let core = limits
            .lines()
            .find(|l| l.starts_with("Max core file size"))
            .unwrap();
        assert!(
            core.split_whitespace().nth(4) == Some("0"),
            "{args:?}: {core}"
        );
        for part in ["environ", "mem"] {
            let mut read = world.command("cat");
            read.arg(format!("/proc/{pid}/{part}"))
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            let out = read.output().unwrap();
            assert!(
                !out.status.success() && !String::from_utf8_lossy(&out.stdout).contains(&parent),
                "{args:?}: the same user read /proc/{pid}/{part}"
            );
        }
        signal(pid, rustix::process::Signal::QUIT);
        let status = wait_for(&mut child, Duration::from_secs(10));
        assert!(!status.success(), "{args:?}");
        if core_in_cwd {
            for file in world.files() {
                let name = file.file_name().unwrap().to_string_lossy().into_owned();
                assert!(
                    !name.starts_with("core"),
                    "{args:?} left {}",
                    file.display()
                );
            }
        }
    }
}

/// Item 6: signals sent to `exec` reach the command; `exec` outlives it to
/// revoke the token; the token lives 15 minutes by default.
#[test]
fn exec_passes_signals_on_and_revokes() {
    let mut world = World::new();
    world.with_env_parent();
    let url = world.server.base_url();
    let signals = [
        ("INT", rustix::process::Signal::INT),
        ("TERM", rustix::process::Signal::TERM),
        ("HUP", rustix::process::Signal::HUP),
        ("QUIT", rustix::process::Signal::QUIT),
        ("USR1", rustix::process::Signal::USR1),
        ("USR2", rustix::process::Signal::USR2),
    ];
    for (n, (name, sig)) in signals.into_iter().enumerate() {
        let ready = world.path(&format!("ready-{name}"));
        let script = format!(
            "trap 'echo got-{name}; exit 9' {name}; touch {}; while :; do sleep 0.05; done",
            ready.display()
        );
        let mut cmd = world.command(helper());
        cmd.args([
            "--api-url",
            &url,
            "exec",
            "--repo",
            "acme/app",
            "--",
            "sh",
            "-c",
        ])
        .arg(&script)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        assert!(until(Duration::from_secs(10), || ready.exists()), "{name}");
        signal(child.id(), sig);
        let status = wait_for(&mut child, Duration::from_secs(10));
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(status.code(), Some(9), "{name}: {out}");
        assert_eq!(out, format!("got-{name}\n"));
        assert_eq!(world.server.revoked_via_api().len(), n + 1, "{name}");
    }
    assert!(
        world
            .server
            .exchanges()
            .iter()
            .all(|e| e.ttl_seconds == 900)
    );
}

/// Item 6: when `exec` is killed outright, its command dies with it (with and
/// without the sandbox).
#[test]
fn the_command_dies_with_exec() {
    let mut world = World::new();
    world.with_env_parent();
    let url = world.server.base_url();
    for isolate in [true, false] {
        let marker = format!("marker-{isolate}-{}", std::process::id());
        let ready = world.path(&marker);
        let script = format!("touch {}; sleep 300; : {marker}", ready.display());
        let mut cmd = world.command(helper());
        cmd.args(["--api-url", &url, "exec", "--repo", "acme/app"]);
        if !isolate {
            cmd.arg("--no-isolate");
        }
        cmd.args(["--", "sh", "-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        // The shell's command line holds the marker (and bubblewrap's, if any).
        let running = || {
            std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
                std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                    c.windows(marker.len()).any(|w| w == marker.as_bytes())
                        && !c.starts_with(helper().as_bytes())
                })
            })
        };
        assert!(until(Duration::from_secs(10), || ready.exists()));
        assert!(running(), "isolate={isolate}: the command is not running");
        signal(child.id(), rustix::process::Signal::KILL);
        wait_for(&mut child, Duration::from_secs(5));
        assert!(
            until(Duration::from_secs(5), || !running()),
            "isolate={isolate}: the command outlived exec"
        );
    }
}

/// Item 10: an agent out of file descriptors waits instead of spinning, and
/// serves again once the idle connections are gone.
#[test]
fn a_flood_of_idle_connections_does_not_spin_the_agent() {
    let mut world = World::new();
    world.with_env_parent();
    let url = world.server.base_url();
    // The agent inherits a small descriptor limit from the helper that starts it.
    let mut start = world.command("sh");
    start.args([
        "-c",
        &format!(
            "ulimit -n 40; printf 'protocol=http\\nhost={}\\npath=acme/app.git\\n' | {} --api-url {url} get >/dev/null",
            world.server.host(),
            helper()
        ),
    ]);
    assert!(start.status().unwrap().success());
    let pids = world.agent_pids();
    assert_eq!(pids.len(), 1);
    let pid = pids[0];
    let cpu = || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let socket = world
        .agent_dir()
        .join(git_credential_githosted::agent::SOCKET_NAME);
    let conns: Vec<UnixStream> = (0..100)
        .filter_map(|_| UnixStream::connect(&socket).ok())
        .collect();
    assert!(conns.len() > 40, "the flood did not get through");
    let before = cpu();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let ticks = cpu() - before;
    let hz = 100.0; // USER_HZ
    let share = ticks as f64 / hz / started.elapsed().as_secs_f64();
    assert!(
        share < 0.5,
        "the agent used {:.0}% CPU while flooded",
        share * 100.0
    );
    drop(conns);
    // Served again (the cached token, no new exchange).
    std::thread::sleep(Duration::from_millis(300));
    world.get("app", &[]).assert_ok();
    assert_eq!(world.server.exchange_count(), 1);
}

/// Every readable, writable mapping of `pid`'s memory (root only: the agent is
/// not dumpable).
fn writable_memory(pid: u32) -> Vec<u8> {
    use std::io::{Seek, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut all = Vec::new();
    for line in maps.lines() {
        let mut parts = line.split_whitespace();
        let (Some(range), Some(perms)) = (parts.next(), parts.next()) else {
            continue;
        };
        if !perms.starts_with("rw") {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        let mut buf = vec![0u8; (end - start) as usize];
        if mem.seek(SeekFrom::Start(start)).is_ok() && mem.read_exact(&mut buf).is_ok() {
            all.extend_from_slice(&buf);
        }
    }
    all
}

/// Item 11: once a mint is done, the agent's memory no longer holds the
/// workspace token it was handed (request buffers, HTTP connection buffers).
#[test]
#[ignore = "needs root: reads the (non-dumpable) agent's memory"]
fn the_agent_keeps_no_workspace_token_after_a_mint() {
    let mut world = World::new();
    let parent = world.with_env_parent();
    world.server.add_repo("acme", "lib");
    let token = world.token("app", &[]);
    world.token("lib", &[]);
    let pid = world.agent_pids()[0];
    std::thread::sleep(Duration::from_millis(500));
    let memory = writable_memory(pid);
    assert!(memory.len() > 100_000, "read only {} bytes", memory.len());
    let holds = |needle: &str| memory.windows(needle.len()).any(|w| w == needle.as_bytes());
    // The check can see tokens: the cached repo token is there, as it must be.
    assert!(holds(&token), "the scan did not find the cached token");
    assert!(
        !holds(&parent),
        "the agent's memory still holds the workspace token"
    );
}

/// Item 3: a loopback API is never proxied, whatever the proxy variables say
/// (the workspace token would cross the proxy in clear).
#[test]
fn a_loopback_api_is_never_proxied() {
    use std::net::TcpListener;
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    proxy.set_nonblocking(true).unwrap();
    for options in [&["--no-agent"][..], &[][..]] {
        let mut world = World::new();
        world.with_env_parent();
        world.set_proxies(&proxy_url);
        let run = world.get("app", options);
        assert!(field(&run.stdout, "password").is_some(), "{run:#?}");
        assert!(
            proxy.accept().is_err(),
            "{options:?}: the proxy got a connection"
        );
    }
}

/// Item 3: the agent keeps none of the proxy or CA variables of the process
/// that started it (each request brings its asker's).
#[test]
#[ignore = "needs root: reads the (non-dumpable) agent's environment"]
fn the_agent_keeps_no_proxy_or_ca_settings_of_its_starter() {
    let mut world = World::new();
    world.with_env_parent();
    world.set_env("HTTPS_PROXY", "http://127.0.0.1:9");
    world.set_env("SSL_CERT_FILE", "/nonexistent/ca.pem");
    world.token("app", &[]);
    let pid = world.agent_pids()[0];
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    for var in ["HTTPS_PROXY=", "SSL_CERT_FILE="] {
        assert!(!environ.contains(var), "the agent inherited {var}");
    }
}

/// A pseudo-terminal owned by `user`, as another terminal of theirs (a
/// shell's, waiting for a paste): the master, the slave and its number.
fn terminal_of(user: User) -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd, String) {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname(&master, Vec::new()).unwrap();
    let name = name.to_string_lossy().into_owned();
    let slave = rustix::fs::open(
        name.as_str(),
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    rustix::fs::chown(
        name.as_str(),
        Some(rustix::fs::Uid::from_raw(user.uid)),
        None,
    )
    .unwrap();
    rustix::fs::chmod(name.as_str(), rustix::fs::Mode::from_raw_mode(0o620)).unwrap();
    let number = name.rsplit('/').next().unwrap().to_owned();
    (master, slave, number)
}

/// Issue 17: `exec`'s sandbox is an allow-list. A hostile command (same uid,
/// no privileges) cannot open another terminal of the user, reach an agent of
/// the user started with or without `XDG_RUNTIME_DIR`, or write what runs
/// later outside the sandbox (the helper's programs in `~/.local/bin`,
/// `~/.gitconfig`, `~/.bashrc`, autostart units, the clone's `.git/config`
/// and hooks, `.git` itself); it can commit and push to its repo, write its
/// working tree, `/tmp` and `--rw` paths.
#[test]
#[ignore = "needs root (creates a user) and bubblewrap; CI runs it"]
fn exec_is_an_allow_list_for_a_hostile_command() {
    let user = unprivileged_user();
    let mut world = World::as_user(user);
    // HOME and the runtime directory where they usually are: outside /tmp
    // (which is private inside); the clone stays under /tmp.
    let outside = tempfile::Builder::new()
        .prefix("githosted-security-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let home = outside.path().join("home");
    let run_dir = outside.path().join("run");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&run_dir).unwrap();
    std::fs::set_permissions(
        &run_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    chown_tree(outside.path(), user);
    world.home = home.clone();
    world.set_env("XDG_RUNTIME_DIR", &run_dir.to_string_lossy());
    world.with_env_parent();
    world.configure(&[]);
    let url = world.server.base_url();
    let sock = git_credential_githosted::agent::SOCKET_NAME;

    // What runs later outside: the helper's programs, git's and the shell's config.
    let bin = home.join(".local/bin");
    std::fs::create_dir_all(&bin).unwrap();
    for program in [
        "git-credential-githosted",
        "git-credential-githosted-core",
        "git-credential-githosted-agent",
    ] {
        std::fs::write(bin.join(program), "#!/bin/sh\n").unwrap();
    }
    std::fs::write(home.join(".bashrc"), "# rc\n").unwrap();
    let allowed = home.join("allowed");
    let other = home.join("other");
    std::fs::create_dir_all(&allowed).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    chown_tree(&home, user);
    let gitconfig_before = std::fs::read(home.join(".gitconfig")).unwrap();

    // The clone (its git starts an agent in the runtime directory).
    let clone = world.clone(GIT_NEW, &world.url("app"), "clone");
    let run_sock = run_dir
        .join(git_credential_githosted::agent::DIR_NAME)
        .join(sock);
    assert!(run_sock.exists(), "an agent in the runtime directory");
    let config_before = std::fs::read(clone.join(".git/config")).unwrap();
    // An agent started without XDG_RUNTIME_DIR or XDG_CACHE_HOME (cron, su):
    // in ~/.cache.
    world.set_env("XDG_RUNTIME_DIR", "");
    world.set_env("XDG_CACHE_HOME", "");
    world.token("app", &[]);
    let cache_sock = home
        .join(".cache")
        .join(git_credential_githosted::agent::DIR_NAME)
        .join(sock);
    assert!(cache_sock.exists(), "an agent in ~/.cache");
    // exec's own environment names neither of those directories' agents.
    world.set_env("XDG_RUNTIME_DIR", &run_dir.to_string_lossy());
    world.set_env("XDG_CACHE_HOME", &home.join(".xdg-cache").to_string_lossy());

    // Another terminal of the user, with something typed into it.
    let (mut other_master, _other_slave, pts) = terminal_of(user);
    rustix::io::write(&mut other_master, b"gw_typed\n").unwrap();

    world.set_env("PTS", &pts);
    world.set_env("RUN_SOCK", &run_sock.to_string_lossy());
    world.set_env("CACHE_SOCK", &cache_sock.to_string_lossy());
    let script = r#"
if (exec 3<>"/dev/pts/$PTS") 2>/dev/null; then echo other_tty=open; else echo other_tty=closed; fi
[ -S "$RUN_SOCK" ] && echo agent_run=visible || echo agent_run=hidden
[ -S "$CACHE_SOCK" ] && echo agent_cache=visible || echo agent_cache=hidden
try() { if (printf '\n# x\n' >> "$2") 2>/dev/null; then echo "$1=written"; else echo "$1=refused"; fi; }
try local_bin "$HOME/.local/bin/git-credential-githosted-core"
try new_local_bin "$HOME/.local/bin/git"
try gitconfig "$HOME/.gitconfig"
try bashrc "$HOME/.bashrc"
try other_dir "$HOME/other/x"
try git_config .git/config
try pre_commit .git/hooks/pre-commit
try info_exclude .git/info/exclude
mkdir -p "$HOME/.config/systemd/user" 2>/dev/null && echo systemd=written || echo systemd=refused
try rw_path "$HOME/allowed/x"
echo change > work.txt && echo tree=written || echo tree=refused
echo t > /tmp/scratch && echo tmp=written || echo tmp=refused
echo "tmpdir=$TMPDIR"
git add work.txt && git commit -q -m work && echo commit=ok || echo commit=fail
git push -q origin HEAD:main && echo push=ok || echo push=fail
if mv .git .git-moved 2>/dev/null; then echo git_moved=yes; mv .git-moved .git; else echo git_moved=no; fi
"#;
    let mut cmd = std::process::Command::new(helper());
    cmd.current_dir(&clone)
        .args(["--api-url", &url, "exec", "--repo", "acme/app"]);
    cmd.arg("--rw").arg(&allowed);
    cmd.args(["--", "sh", "-c", script]);
    let run = world.run(cmd, None);
    let out = &run.stdout;
    let value = |key: &str| -> String {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in {out}\n{}", run.stderr))
            .to_owned()
    };
    run.assert_ok();
    assert_eq!(value("other_tty"), "closed", "{out}");
    assert_eq!(value("agent_run"), "hidden", "{out}");
    assert_eq!(value("agent_cache"), "hidden", "{out}");
    for key in [
        "local_bin",
        "new_local_bin",
        "gitconfig",
        "bashrc",
        "other_dir",
        "git_config",
        "pre_commit",
        "info_exclude",
        "systemd",
    ] {
        assert_eq!(value(key), "refused", "{key}: {out}\n{}", run.stderr);
    }
    assert_eq!(value("git_moved"), "no", "{out}");
    for key in ["rw_path", "tree", "tmp"] {
        assert_eq!(value(key), "written", "{key}: {out}\n{}", run.stderr);
    }
    assert_eq!(value("tmpdir"), "/tmp", "{out}");
    assert_eq!(value("commit"), "ok", "{out}\n{}", run.stderr);
    assert_eq!(value("push"), "ok", "{out}\n{}", run.stderr);

    // Outside, nothing that runs later changed; the push reached the server.
    assert_eq!(
        std::fs::read(home.join(".gitconfig")).unwrap(),
        gitconfig_before
    );
    assert_eq!(
        std::fs::read(clone.join(".git/config")).unwrap(),
        config_before
    );
    assert!(!clone.join(".git/hooks/pre-commit").exists());
    assert_eq!(
        std::fs::read_to_string(bin.join("git-credential-githosted-core")).unwrap(),
        "#!/bin/sh\n"
    );
    assert!(!bin.join("git").exists());
    assert!(!home.join(".config/systemd").exists());
    let head = world.git(GIT_NEW, Some(&clone), &["rev-parse", "HEAD"]);
    let on_server = world.server.git(
        Some(&world.server.repo_path("acme", "app")),
        &["rev-parse", "main"],
        None,
    );
    assert_eq!(on_server.trim(), head.stdout.trim());
    assert_eq!(
        std::fs::read_to_string(allowed.join("x")).unwrap(),
        "\n# x\n"
    );

    // Started in a directory that holds HOME: home stays read-only.
    let mut cmd = std::process::Command::new(helper());
    cmd.current_dir(outside.path())
        .args(["--api-url", &url, "exec", "--repo", "acme/app", "--"])
        .args(["sh", "-c", "printf x >> home/.bashrc; printf x > scratch"]);
    world.run(cmd, None).assert_ok();
    assert_eq!(
        std::fs::read_to_string(home.join(".bashrc")).unwrap(),
        "# rc\n"
    );
    assert_eq!(
        std::fs::read_to_string(outside.path().join("scratch")).unwrap(),
        "x"
    );
}

/// Issue 17: on a terminal, the command under `exec` gets a terminal of its
/// own as its controlling terminal (`/dev/tty`), with the user's window size
/// (and its changes); a line typed reaches it, and Ctrl-C reaches it as
/// SIGINT through its terminal; the user's terminal is raw meanwhile and put
/// back as it was afterwards.
#[test]
fn exec_gives_an_interactive_command_a_terminal_of_its_own() {
    use githosted_testkit::pty::Pty;
    let mut world = World::new();
    world.with_env_parent();
    let url = world.server.base_url();
    let script = r#"
echo "size=$(stty size)"
if (exec 3<>/dev/tty) 2>/dev/null; then echo devtty=ok; else echo devtty=none; fi
printf 'name? '; read name; echo "hello-$name"
trap 'echo "resized=$(stty size)"' WINCH
trap 'echo caught-int; exit 7' INT
echo waiting; while :; do sleep 0.05; done
"#;
    // The user's terminal is 33x101 when exec starts.
    let mut cmd = world.command("sh");
    cmd.args([
        "-c",
        &format!(
            "stty rows 33 cols 101; exec {} --api-url {url} exec --repo acme/app -- sh -c \"$0\"",
            helper()
        ),
        script,
    ]);
    let size = |rows, cols| rustix::termios::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let mut pty = Pty::spawn(cmd);
    let limit = Duration::from_secs(30);
    pty.expect("size=33 101", limit);
    pty.expect("devtty=ok", limit);
    pty.expect("name? ", limit);
    pty.send(b"bob\r");
    pty.expect("hello-bob", limit);
    pty.expect("waiting", limit);
    // The user's terminal is raw while the command runs: keys go to it as they are.
    let modes = rustix::termios::tcgetattr(&pty.slave).unwrap().local_modes;
    assert!(
        !modes.contains(rustix::termios::LocalModes::ICANON)
            && !modes.contains(rustix::termios::LocalModes::ISIG),
        "{modes:?}"
    );
    rustix::termios::tcsetwinsize(&pty.slave, size(40, 120)).unwrap();
    pty.expect("resized=40 120", limit);
    pty.send(b"\x03");
    pty.expect("caught-int", limit);
    let status = pty.wait(limit);
    assert_eq!(status.code(), Some(7), "{}", pty.screen());
    assert!(pty.echoes(), "the user's terminal was not put back");
    let modes = rustix::termios::tcgetattr(&pty.slave).unwrap().local_modes;
    assert!(modes.contains(rustix::termios::LocalModes::ICANON));
    assert_eq!(world.server.revoked_via_api().len(), 1);

    // A command ended by signal N: exec exits 128 + N.
    let run = world.helper(
        &[
            "--api-url",
            &url,
            "exec",
            "--repo",
            "acme/app",
            "--",
            "sh",
            "-c",
            "kill -TERM $$",
        ],
        None,
    );
    assert_eq!(run.status.code(), Some(128 + 15), "{run:#?}");
}

/// `GITHOSTED_TOKEN` leaves the core's environment block at start: its bytes
/// are zeroed there (`/proc/PID/environ` shows the original block), so not
/// even root reading it while the core waits on git's request finds the token.
#[test]
fn the_workspace_token_leaves_the_core_environment_block() {
    if !rustix::process::geteuid().is_root() {
        println!("ignored: needs root to read the non-dumpable core's /proc/PID/environ");
        return;
    }
    let mut world = World::new();
    let parent = world.with_env_parent();
    let url = world.server.base_url();
    let core = std::path::Path::new(helper()).with_file_name("git-credential-githosted-core");
    let mut cmd = world.command(&core);
    cmd.args(["--api-url", &url, "--no-agent", "get"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let environ = format!("/proc/{}/environ", child.id());
    let cmdline = format!("/proc/{}/cmdline", child.id());
    // Blocked reading its stdin; the block holds the token until `main` takes it.
    let gone = until(Duration::from_secs(20), || {
        let is_core = std::fs::read(&cmdline)
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("git-credential-githosted-core"));
        is_core
            && std::fs::read(&environ).is_ok_and(|block| {
                !block.is_empty() && !String::from_utf8_lossy(&block).contains(&parent)
            })
    });
    let block = std::fs::read(&environ).unwrap_or_default();
    drop(child.stdin.take());
    let _ = wait_for(&mut child, Duration::from_secs(20));
    assert!(
        gone,
        "{environ} still holds the token: {:?}",
        String::from_utf8_lossy(&block).replace(&parent, "gw_<the token>")
    );
}
