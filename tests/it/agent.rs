//! The in-memory agent: one exchange per repo and permission, served until
//! shortly before expiry, forgotten on erase, safe against other users.
//!
//! Unix only: the harness runs processes as other users, uses Unix sockets and
//! `git http-backend` (Windows runs the unit tests and `protocol_props`).
#![cfg(unix)]

use std::time::Duration;

use githosted_testkit::*;

#[test]
fn two_ls_remotes_cost_one_exchange() {
    for git in GITS {
        let mut world = World::configured(&[]);
        world.with_env_parent();
        let url = world.url("app");
        world.git(git, None, &["ls-remote", &url]).assert_ok();
        world.git(git, None, &["ls-remote", &url]).assert_ok();
        assert_eq!(world.server.exchange_count(), 1, "{git}");
        assert_eq!(world.agent_pids().len(), 1);
    }
}

#[test]
fn cached_answer_carries_the_record_expiry() {
    let mut world = World::new();
    world.with_env_parent();
    let first = world.get("app", &[]);
    let second = world.get("app", &[]);
    assert_eq!(
        first.stdout, second.stdout,
        "the second get is served from the cache"
    );
    let token = field(&second.stdout, "password").unwrap();
    let expiry: i64 = field(&second.stdout, "password_expiry_utc")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        Some(expiry),
        world.server.record_for(token).unwrap().expires_at
    );
    assert_eq!(world.server.exchange_count(), 1);
}

#[test]
fn past_the_margin_a_new_token_is_minted() {
    let mut world = World::new();
    world.with_env_parent();
    // Expiry is in whole seconds: 60 s - 3.1 s leaves at most 57 whole seconds.
    let opts = ["--ttl", "60", "--min-ttl", "58"];
    let first = world.token("app", &opts);
    assert_eq!(world.token("app", &opts), first, "fresh enough");
    std::thread::sleep(Duration::from_millis(3100));
    let second = world.token("app", &opts);
    assert_ne!(second, first, "inside the margin: must not be served");
    assert_eq!(world.server.exchange_count(), 2);
    // Without --min-ttl the default margin (a quarter of 60 s) still allows the new one.
    assert_eq!(world.token("app", &["--ttl", "60"]), second);
}

#[test]
fn read_and_write_keys_are_separate() {
    let mut world = World::new();
    world.with_env_parent();
    let write = world.token("app", &[]);
    let read = world.token("app", &["--permission", "read"]);
    assert_ne!(write, read);
    assert_eq!(world.token("app", &["--permission", "read"]), read);
    assert_eq!(world.server.exchange_count(), 2);
}

#[test]
fn a_different_env_parent_does_not_reuse_tokens() {
    let mut world = World::new();
    world.with_env_parent();
    let first = world.token("app", &[]);
    world.with_env_parent();
    assert_ne!(world.token("app", &[]), first);
}

#[test]
fn parallel_cold_fills_share_one_exchange() {
    let mut world = World::configured(&[]);
    world.with_env_parent();
    world.server.add_repo("acme", "lib");
    let input = format!(
        "protocol=http\nhost={}\npath=acme/lib.git\n\n",
        world.server.host()
    );
    let world = &world;
    let runs: Vec<Run> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..32)
            .map(|_| {
                let input = input.clone();
                s.spawn(move || {
                    let mut cmd = std::process::Command::new(GIT_NEW);
                    cmd.args(["credential", "fill"]);
                    world.run(cmd, Some(&input))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let tokens: Vec<&str> = runs
        .iter()
        .map(|r| field(&r.stdout, "password").unwrap_or_else(|| panic!("{r:#?}")))
        .collect();
    assert!(tokens.iter().all(|t| *t == tokens[0]), "different tokens");
    assert_eq!(world.server.exchange_count(), 1);
    assert_eq!(
        world.agent_pids().len(),
        1,
        "racing spawns left more than one agent"
    );
}

#[test]
fn revoked_token_is_erased_and_the_next_command_works() {
    for git in GITS {
        let mut world = World::configured(&[]);
        world.with_env_parent();
        let url = world.url("app");
        let work = world.clone(git, &url, "work");
        let first = world.token("app", &[]);
        let first_id = world.server.record_for(&first).unwrap().id;
        world.server.revoke(&first);

        let failed = world.git(git, Some(&work), &["fetch", "origin"]);
        failed.assert_failed();
        assert!(
            failed.stderr.contains("Authentication failed"),
            "{}",
            failed.stderr
        );
        // git's erase made the agent forget it, and the helper revoked it too.
        assert_eq!(world.server.revoked_via_api(), vec![first_id], "{git}");

        world
            .git(git, Some(&work), &["fetch", "origin"])
            .assert_ok();
        let second = world.token("app", &[]);
        assert_ne!(second, first);
        assert_eq!(world.server.exchange_count(), 2);
    }
}

#[test]
fn erase_of_another_token_leaves_the_cached_one() {
    let mut world = World::new();
    world.with_env_parent();
    world.server.add_repo("acme", "lib");
    let app = world.token("app", &[]);
    let lib = world.token("lib", &[]);
    let url = world.server.base_url();
    let host = world.server.host();
    let erase = |extra: &str| {
        let input = format!("protocol=http\nhost={host}\n{extra}");
        world
            .helper(&["--api-url", &url, "erase"], Some(&input))
            .assert_ok();
    };

    erase("path=acme/app.git\nusername=githosted\npassword=gr_notours\n");
    assert_eq!(world.token("app", &[]), app);
    assert!(world.server.revoked_via_api().is_empty());

    // An erase naming the token drops exactly it, wherever git thinks it was used.
    erase(&format!(
        "path=acme/lib.git\nusername=githosted\npassword={app}\n"
    ));
    assert_eq!(world.token("lib", &[]), lib);
    let new_app = world.token("app", &[]);
    assert_ne!(new_app, app);

    // Host-only: everything for the host goes.
    erase("");
    assert_ne!(world.token("lib", &[]), lib);
    assert_ne!(world.token("app", &[]), new_app);
    assert_eq!(world.server.revoked_via_api().len(), 3);
    assert_eq!(world.server.exchange_count(), 5);
}

#[test]
fn a_killed_agent_is_replaced() {
    let mut world = World::new();
    world.with_env_parent();
    let first = world.token("app", &[]);
    let pids = world.agent_pids();
    assert_eq!(pids.len(), 1);
    let kill = std::process::Command::new("kill")
        .args(["-KILL", &pids[0].to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    while world.agent_pids().contains(&pids[0]) {
        std::thread::sleep(Duration::from_millis(10));
    }
    // The socket file of the dead agent is still there: it must be replaced.
    assert!(
        world
            .agent_dir()
            .join(git_credential_githosted::agent::SOCKET_NAME)
            .exists()
    );
    let second = world.token("app", &[]);
    assert_ne!(second, first, "a new agent starts empty");
    let now = world.agent_pids();
    assert_eq!(now.len(), 1);
    assert_ne!(now[0], pids[0]);
    assert_eq!(world.token("app", &[]), second);
}

#[test]
fn a_loose_agent_directory_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let mut world = World::new();
    world.with_env_parent();
    world.token("app", &[]);
    std::fs::set_permissions(world.agent_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = world.get("app", &[]);
    assert!(
        run.stderr.contains("is mode 755, not 700") && run.stderr.contains("chmod 700"),
        "{}",
        run.stderr
    );
    // Still correct, just uncached.
    assert!(field(&run.stdout, "password").is_some());
    assert_eq!(world.server.exchange_count(), 2);
}

#[test]
fn no_agent_mints_every_time_and_starts_nothing() {
    let mut world = World::configured(&["--no-agent"]);
    world.with_env_parent();
    let url = world.url("app");
    world.git(GIT_NEW, None, &["ls-remote", &url]).assert_ok();
    world.git(GIT_NEW, None, &["ls-remote", &url]).assert_ok();
    assert_eq!(world.server.exchange_count(), 2);
    assert!(world.agent_pids().is_empty());
    assert!(
        !world
            .agent_dir()
            .join(git_credential_githosted::agent::SOCKET_NAME)
            .exists()
    );
}

#[test]
fn status_shows_fingerprints_only() {
    let mut world = World::new();
    world.with_env_parent();
    let token = world.token("app", &["--permission", "read"]);
    let url = world.server.base_url();
    let status = world.helper(&["--api-url", &url, "status"], None);
    status.assert_ok();
    let pid = world.agent_pids()[0];
    assert!(
        status.stdout.contains(&format!("agent: pid {pid}, up ")),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("acme/app  read  expires in "),
        "{}",
        status.stdout
    );
    assert!(status.stdout.contains("gr_…"), "{}", status.stdout);
    assert!(
        status.stdout.contains("GITHOSTED_TOKEN: gw_…"),
        "{}",
        status.stdout
    );
    assert!(!status.stdout.contains(&token));
    world.assert_no_tokens_in("status", &format!("{}{}", status.stdout, status.stderr));
}

#[test]
fn the_agent_exits_when_idle_and_empty() {
    let mut world = World::new();
    world.with_env_parent();
    world.set_env("GITHOSTED_AGENT_IDLE_SECS", "1");
    world.token("app", &["--ttl", "2"]);
    assert_eq!(world.agent_pids().len(), 1);
    // The token expires after 2 s, then 1 s of idleness: gone well within 10 s.
    let mut waited = 0;
    while !world.agent_pids().is_empty() && waited < 100 {
        std::thread::sleep(Duration::from_millis(100));
        waited += 1;
    }
    assert!(world.agent_pids().is_empty(), "the agent is still running");
    assert!(
        !world
            .agent_dir()
            .join(git_credential_githosted::agent::SOCKET_NAME)
            .exists(),
        "socket left behind"
    );
}

/// The agent answers only its own user. As root (CI), connect as `nobody`
/// through a deliberately opened directory; the agent must hang up unanswered,
/// while the same client as root gets an answer.
#[test]
#[ignore = "needs root (to connect as another user); CI runs it"]
fn a_connection_from_another_uid_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let mut world = World::new();
    world.with_env_parent();
    world.token("app", &[]);
    let socket = world
        .agent_dir()
        .join(git_credential_githosted::agent::SOCKET_NAME);
    for dir in [
        world.dir.path().to_owned(),
        world.runtime_dir(),
        world.agent_dir(),
    ] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).unwrap();
    let client = r#"
import socket, struct, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(5)
body = b'"Status"'
try:
    s.sendall(struct.pack('>I', len(body)) + body)
    data = s.recv(65536)
except (BrokenPipeError, ConnectionResetError):
    data = b''
print('answered' if data else 'refused')
"#;
    let run_as = |prefix: &[&str]| {
        let mut cmd = std::process::Command::new(prefix[0]);
        cmd.args(&prefix[1..])
            .args(["python3", "-c", client])
            .arg(&socket);
        world.run(cmd, None)
    };
    let own = run_as(&["env"]);
    assert_eq!(own.stdout.trim(), "answered", "{own:#?}");
    let other = run_as(&[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ]);
    assert_eq!(other.stdout.trim(), "refused", "{other:#?}");
}

/// A process in another pid namespace (a sandbox, a container) gets nothing
/// from the agent, even one that reaches its socket and names the exact key
/// (here the test computes it: an attacker inside `exec` could name a keychain
/// key): the same 20-line client gets the token outside and nothing inside
/// bubblewrap's namespaces.
#[test]
fn a_client_in_another_pid_namespace_gets_nothing() {
    use git_credential_githosted::agent::wire::{Request, encode};
    use git_credential_githosted::cache::Key;
    use git_credential_githosted::secret::Secret;
    use git_credential_githosted::settings::Settings;
    let Some(bwrap) = ["/usr/bin/bwrap", "/bin/bwrap"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        eprintln!("bubblewrap is not installed; skipped (CI installs it)");
        assert!(std::env::var_os("CI").is_none(), "CI must have bubblewrap");
        return;
    };
    let mut world = World::new();
    let parent = world.with_env_parent();
    world.token("app", &[]);
    let socket = world
        .agent_dir()
        .join(git_credential_githosted::agent::SOCKET_NAME);
    let url = world.server.base_url();
    let key = Key {
        api: Settings::for_api(Some(&url))
            .unwrap()
            .service
            .api_url()
            .to_string(),
        workspace: "acme".into(),
        repo: "app".into(),
        permission: git_credential_githosted::token::Permission::Write,
        origin: git_credential_githosted::cache::Origin::env(&Secret::new(parent)),
    };
    let frame = encode(&Request::Get { key, min_ttl: None }).unwrap();
    let frame_file = world.path("frame");
    std::fs::write(&frame_file, &*frame).unwrap();
    let client = r#"
import socket, struct, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(5)
try:
    s.sendall(open(sys.argv[2], 'rb').read())
    data = s.recv(65536)
except (BrokenPipeError, ConnectionResetError, socket.timeout):
    data = b''
print('token' if b'gr_' in data else 'miss' if data else 'refused')
"#;
    let ask = |prefix: &[&str]| {
        let mut cmd = std::process::Command::new(prefix[0]);
        cmd.args(&prefix[1..])
            .args(["python3", "-c", client])
            .arg(&socket)
            .arg(&frame_file);
        world.run(cmd, None)
    };
    let outside = ask(&["env"]);
    assert_eq!(outside.stdout.trim(), "token", "{outside:#?}");
    let inside = ask(&[
        bwrap,
        "--dev-bind",
        "/",
        "/",
        "--unshare-user",
        "--unshare-pid",
        "--proc",
        "/proc",
        "--",
    ]);
    assert_eq!(inside.stdout.trim(), "refused", "{inside:#?}");
}
