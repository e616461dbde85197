//! The first hour of a new user: the right workspace or a clear refusal, what
//! a read-only token can do, a CLI that answers a person typing.
//!
//! Unix only: the harness runs processes as other users, uses Unix sockets and
//! `git http-backend` (Windows runs the unit tests and `protocol_props`).
#![cfg(unix)]

use std::time::Duration;

use githosted_testkit::pty::Pty;
use githosted_testkit::*;

/// Item 1: a parent of another workspace (or a typo of the workspace) is never
/// exchanged, nothing is cached, and one line says what to do.
#[test]
fn another_workspaces_token_is_refused_before_any_exchange() {
    for options in [&[][..], &["--no-agent"][..]] {
        let mut world = World::new();
        world.server.add_workspace("globex");
        world.server.add_repo("globex", "lib");
        world.server.add_repo("acme", "lib");
        world.with_env_parent(); // an acme token
        let url = world.server.base_url();
        for (ws, repo) in [("globex", "lib"), ("acmee", "app")] {
            let path = format!("{ws}/{repo}.git");
            let run = world.helper(
                &[&["--api-url", url.as_str()][..], options, &["get"]].concat(),
                Some(&request("http", &world.server.host(), Some(&path))),
            );
            assert_eq!(field(&run.stdout, "password"), None, "{run:#?}");
            assert!(
                run.stderr
                    .contains(&format!("your token is for acme, not {ws}"))
                    && run
                        .stderr
                        .contains(&format!("login --api-url {url} --workspace {ws}")),
                "{}",
                run.stderr
            );
            assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        }
        assert_eq!(world.server.exchange_count(), 0, "{options:?}: exchanged");
        if options.is_empty() {
            let status = world.helper(&["--api-url", &url, "status"], None);
            assert!(
                status.stdout.contains("0 cached tokens"),
                "{}",
                status.stdout
            );
        }
        // The right workspace still works.
        assert!(world.token("app", options).starts_with("gr_"));
    }
}

/// Item 2: with a read-only workspace token, a write request fails with the
/// exact command that fixes it.
#[test]
fn a_read_only_parent_says_where_permission_goes() {
    let mut world = World::new();
    let parent = world.server.seed_token("acme", TokenSpec::workspace_read());
    world.set_env("GITHOSTED_TOKEN", &parent);
    let url = world.server.base_url();
    let run = world.get("app", &[]);
    assert_eq!(field(&run.stdout, "password"), None);
    assert!(
        run.stderr
            .contains(&format!("configure --api-url {url} --permission auto")),
        "{}",
        run.stderr
    );
    assert!(
        world
            .token("app", &["--permission", "read"])
            .starts_with("gr_")
    );
}

/// Item 3: a person typing a wrong word is told, with the closest command;
/// git (stdin not a terminal) inventing an operation gets silence.
#[test]
fn unknown_words_typed_by_a_person_get_did_you_mean() {
    let world = World::new();
    for (typed, meant) in [
        ("statsu", "status"),
        ("doctr", "doctor"),
        ("loginn", "login"),
    ] {
        let mut cmd = world.command(helper());
        cmd.arg(typed);
        let mut pty = Pty::spawn(cmd);
        let status = pty.wait(Duration::from_secs(20));
        assert_eq!(status.code(), Some(2), "{typed}: {}", pty.screen());
        assert!(
            pty.screen().contains(&format!("did you mean `{meant}`")),
            "{}",
            pty.screen()
        );
        // From git (stdin a pipe): quiet success.
        let run = world.helper(&[typed], Some(""));
        run.assert_ok();
        assert_eq!(run.stdout, "");
        assert_eq!(run.stderr, "");
    }
}

/// Item 5: a token pasted as an argument is never echoed back.
#[test]
fn a_token_in_argv_is_refused_without_showing_it() {
    let world = World::new();
    let secret = "gw_pastedbymistake0123456789";
    for args in [
        vec!["login", secret],
        vec!["login", "--workspace", secret],
        vec![secret],
        vec!["--api-url=gr_oops0123456789", "status"],
    ] {
        let run = world.helper(&args, None);
        assert_eq!(run.status.code(), Some(2), "{args:?}");
        assert!(
            run.stderr.contains("tokens are read from stdin"),
            "{}",
            run.stderr
        );
        assert!(!run.stderr.contains("pastedbymistake") && !run.stderr.contains("oops0123"));
        assert!(!run.stdout.contains("pastedbymistake"));
    }
}

/// Item 5: Ctrl-C at the login prompt leaves the terminal as it was (echo on).
#[test]
fn ctrl_c_at_the_login_prompt_restores_the_terminal() {
    let world = World::new();
    let mut cmd = world.command(helper());
    cmd.args(["--api-url", &world.server.base_url(), "login"]);
    let mut pty = Pty::spawn(cmd);
    assert!(pty.echoes());
    pty.expect("(input hidden):", Duration::from_secs(20));
    pty.send(b"gw_half");
    pty.send(&[0x03]);
    let status = pty.wait(Duration::from_secs(20));
    assert!(!status.success());
    assert!(pty.echoes(), "the terminal was left with echo off");
    assert!(pty.screen().contains("interrupted"), "{}", pty.screen());
    assert!(
        !pty.screen().contains("gw_half"),
        "the typed token was echoed"
    );
}

/// Item 7: the API need not be repeated: GITHOSTED_API_URL, else (for a
/// person's commands) the one API `configure` wrote.
#[test]
fn the_api_is_remembered() {
    let mut world = World::new();
    world.with_env_parent();
    let url = world.server.base_url();
    // Not configured, not named: the public API (and no token for it here).
    let run = world.helper(&["token", "--repo", "acme/app"], None);
    run.assert_failed();
    world.set_env("GITHOSTED_API_URL", &url);
    let run = world.helper(&["token", "--repo", "acme/app"], None);
    run.assert_ok();
    assert!(run.stdout.starts_with("gr_"));

    let mut world = World::configured(&["--permission", "read"]);
    world.with_env_parent();
    let url = world.server.base_url();
    let run = world.helper(&["token", "--repo", "acme/app"], None);
    run.assert_ok();
    let status = world.helper(&["status"], None);
    assert!(
        status.stdout.contains(&format!("git: {url}/ helpers = ")),
        "{}",
        status.stdout
    );
    // git's own `get` takes its options from the helper line, as always.
    let run = world.git(GIT_NEW, None, &["ls-remote", &world.url("app")]);
    run.assert_ok();
}

/// Item 7: a host that does not resolve fails at once, in one line, each
/// cause once.
#[test]
fn a_host_that_does_not_resolve_fails_at_once() {
    let mut world = World::new();
    world.with_env_parent();
    for options in [&[][..], &["--no-agent"][..]] {
        let mut args = vec![
            "--api-url",
            "https://no-such-host.invalid",
            "token",
            "--repo",
            "acme/app",
        ];
        args.extend_from_slice(options);
        let run = world.helper(&args, None);
        run.assert_failed();
        assert!(run.elapsed < Duration::from_secs(5), "{:?}", run.elapsed);
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert!(
            run.stderr.contains("cannot resolve no-such-host.invalid"),
            "{}",
            run.stderr
        );
        assert!(!run.stderr.contains("try again later"), "{}", run.stderr);
        assert_eq!(
            run.stderr.matches("no-such-host.invalid").count(),
            1,
            "{}",
            run.stderr
        );
    }
}

/// Item 8: inside a clone, `token` needs no --repo (origin, or the only
/// githosted remote), as `gh` does.
#[test]
fn token_in_a_clone_finds_the_repo() {
    let mut world = World::configured(&[]);
    world.with_env_parent();
    world.server.add_repo("acme", "lib");
    let clone = world.clone(GIT_NEW, &world.url("lib"), "lib");
    let mut cmd = std::process::Command::new(helper());
    cmd.arg("token").current_dir(&clone);
    let run = world.run(cmd, None);
    run.assert_ok();
    let record = world
        .server
        .record_for(run.stdout.trim())
        .expect("a minted token");
    assert_eq!(record.repo_allowlist, vec!["lib".to_string()]);
    // Outside a clone it says what to do.
    let run = world.helper(&["token"], None);
    run.assert_failed();
    assert!(
        run.stderr.contains("--repo WORKSPACE/REPO"),
        "{}",
        run.stderr
    );
}

/// Items 9 and 10: each command's help lists its own options; status and
/// doctor speak JSON with stable fields and never a secret; colour only when
/// asked for (or on a terminal without NO_COLOR); completions and a man page
/// come from the same definition.
#[test]
fn conventions_people_expect() {
    let mut world = World::configured(&[]);
    world.with_env_parent();
    world.token("app", &[]);
    let help = |cmd: &str| world.helper(&[cmd, "--help"], None).stdout;
    let login = help("login");
    assert!(
        login.contains("--workspace") && login.contains("--no-verify"),
        "{login}"
    );
    assert!(!login.contains("--repo") && !login.contains("--remove") && !login.contains("--ttl"));
    let get = help("get");
    assert!(
        !get.contains("--remove") && get.contains("GITHOSTED_WORKSPACE"),
        "{get}"
    );
    let exec = help("exec");
    assert!(exec.contains("for the --repo repos only"), "{exec}");
    assert!(!exec.contains("in GITHOSTED_TOKEN, revoked"), "{exec}");

    let status = world.helper(&["status", "--json"], None);
    status.assert_ok();
    let json: serde_json::Value = serde_json::from_str(&status.stdout).expect("status --json");
    assert_eq!(json["agent"]["running"], true);
    assert_eq!(json["agent"]["tokens"][0]["repo"], "app");
    assert!(
        json["agent"]["tokens"][0]["fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("gr_…")
    );
    assert!(json["env_token"].as_str().unwrap().starts_with("gw_…"));
    assert!(json["git"][0]["helpers"].is_array());
    let doctor = world.helper(&["doctor", "--json"], None);
    let json: serde_json::Value = serde_json::from_str(&doctor.stdout).expect("doctor --json");
    assert!(
        json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["level"].is_string())
    );
    assert_eq!(json["ok"], doctor.ok());

    let plain = world.helper(&["doctor"], None).stdout;
    assert!(!plain.contains('\u{1b}'), "colour without a terminal");
    let coloured = world.helper(&["doctor", "--color", "always"], None).stdout;
    assert!(coloured.contains("\u{1b}[32mOK"), "{coloured}");
    world.set_env("NO_COLOR", "1");
    let mut cmd = world.command(helper());
    cmd.arg("doctor");
    let mut pty = githosted_testkit::pty::Pty::spawn(cmd);
    pty.wait(Duration::from_secs(30));
    assert!(
        !pty.screen().contains('\u{1b}'),
        "NO_COLOR on a terminal: {}",
        pty.screen()
    );

    let bash = world.helper(&["completions", "bash"], None);
    assert!(bash.stdout.contains("git-credential-githosted") && bash.stdout.contains("--api-url"));
    let man = world.helper(&["man"], None);
    assert!(
        man.stdout.contains(".TH git-credential-githosted"),
        "{}",
        &man.stdout[..200.min(man.stdout.len())]
    );
}
