//! `token`, `exec` and `--permission auto`, with real git.
//!
//! Unix only: the harness runs processes as other users, uses Unix sockets and
//! `git http-backend` (Windows runs the unit tests and `protocol_props`).
#![cfg(unix)]

use githosted_testkit::*;

#[test]
fn token_prints_one_repo_token_from_the_cache() {
    let mut world = World::new();
    world.with_env_parent();
    let url = world.server.base_url();
    let run = world.helper(
        &[
            "--api-url",
            &url,
            "token",
            "--repo",
            "acme/app",
            "--permission",
            "read",
        ],
        None,
    );
    run.assert_ok();
    let token = run.stdout.trim();
    let record = world.server.record_for(token).expect("a minted token");
    assert_eq!(record.repo_allowlist, vec!["app".to_string()]);
    assert_eq!(record.permission, Permission::Read);
    // The cache answers the same for `token` and for git's `get`.
    assert_eq!(world.token("app", &["--permission", "read"]), token);
    assert_eq!(world.server.exchange_count(), 1);

    let bad = world.helper(&["--api-url", &url, "token", "--repo", "nonsense"], None);
    bad.assert_failed();
    assert!(
        bad.stderr.contains("`nonsense` is not WORKSPACE/REPO"),
        "{}",
        bad.stderr
    );
}

#[test]
fn exec_gives_the_command_a_scoped_token_and_revokes_it() {
    let mut world = World::new();
    let parent = world.with_env_parent();
    world.server.add_repo("acme", "lib");
    let url = world.server.base_url();
    let clone_url = world.url("app");
    // No `configure`: exec points git inside the command at the helper itself.
    let script = format!(
        r#"case "$GITHOSTED_TOKEN" in gr_*) echo scoped;; *) echo "not scoped";; esac
env | grep -c gw_ || true
git ls-remote {clone_url} >/dev/null && echo git-ok
exit 7"#
    );
    let run = world.helper(
        &[
            "--api-url",
            &url,
            "exec",
            "--repo",
            "acme/app",
            "--repo",
            "acme/lib",
            "--",
            "sh",
            "-c",
            &script,
        ],
        None,
    );
    assert_eq!(run.status.code(), Some(7), "{run:#?}");
    assert_eq!(run.stdout, "scoped\n0\ngit-ok\n", "{}", run.stderr);

    // One exchange for both repos; git used exactly that token; it is revoked now.
    let exchanges = world.server.exchanges();
    assert_eq!(exchanges.len(), 1);
    assert_eq!(
        exchanges[0].allowlist,
        vec!["app".to_string(), "lib".to_string()]
    );
    let id = exchanges[0].minted.id.clone();
    assert!(
        world
            .server
            .git_requests()
            .iter()
            .filter_map(|r| r.token_id())
            .all(|t| t == id)
    );
    assert_eq!(world.server.revoked_via_api(), vec![id]);
    assert!(
        world
            .server
            .record_for(&parent)
            .unwrap()
            .revoked_at
            .is_none()
    );
}

#[test]
fn exec_revokes_when_the_command_dies_of_a_signal() {
    let mut world = World::new();
    world.with_env_parent();
    let url = world.server.base_url();
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
    assert_eq!(world.server.revoked_via_api().len(), 1);
}

#[test]
fn exec_revokes_when_it_is_terminated_itself() {
    let mut world = World::new();
    world.with_env_parent();
    let url = world.server.base_url();
    let marker = world.path("started");
    let script = format!("touch {}; sleep 30", marker.display());
    let script_marker = marker.display().to_string();
    let mut cmd = std::process::Command::new(helper());
    // The command writes its marker where it works (its /tmp is its own).
    cmd.current_dir(world.dir.path());
    cmd.args([
        "--api-url",
        &url,
        "exec",
        "--repo",
        "acme/app",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    // Run it in the background, then SIGTERM the helper (as a CI timeout would).
    let world = &world;
    let run = std::thread::scope(|s| {
        let handle = s.spawn(move || world.run(cmd, None));
        while !marker.exists() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let helper_pid = helper_pid_of_exec(&script_marker);
        std::process::Command::new("kill")
            .args(["-TERM", &helper_pid.to_string()])
            .status()
            .unwrap();
        handle.join().unwrap()
    });
    assert_eq!(run.status.code(), Some(128 + 15), "{run:#?}");
    assert_eq!(world.server.revoked_via_api().len(), 1);
}

/// The pid of the running `git-credential-githosted … exec` whose command line
/// holds `marker` (tests run in parallel in one process).
fn helper_pid_of_exec(marker: &str) -> u32 {
    let me = std::process::id().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1))
            .unwrap_or("");
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let has_marker = cmdline
            .windows(marker.len())
            .any(|w| w == marker.as_bytes());
        if ppid == me
            && has_marker
            && args.iter().any(|a| *a == b"exec")
            && args[0].ends_with(b"git-credential-githosted-core")
        {
            return pid;
        }
    }
    panic!("no exec helper found");
}

#[test]
fn exec_never_hands_over_a_repo_parent() {
    let mut world = World::new();
    let token = world
        .server
        .seed_token("acme", TokenSpec::repo(Permission::Write, &["app"], None));
    world.set_env("GITHOSTED_TOKEN", &token);
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
    assert!(
        run.stderr.contains("needs one to mint a narrower token"),
        "{}",
        run.stderr
    );
}

#[test]
fn permission_auto_reads_for_fetching_and_writes_for_pushing() {
    for git in GITS {
        let mut world = World::configured(&["--permission", "auto"]);
        world.with_env_parent();
        let url = world.url("app");
        let requested = |world: &World| {
            world
                .server
                .exchanges()
                .last()
                .and_then(|e| e.requested_permission)
        };

        world.git(git, None, &["ls-remote", &url]).assert_ok();
        assert_eq!(requested(&world), Some(Permission::Read), "{git} ls-remote");
        let work = world.clone(git, &url, "work");
        world.git(git, Some(&work), &["fetch", "-q"]).assert_ok();
        world.git(git, Some(&work), &["pull", "-q"]).assert_ok();
        // All of those: one read token, from the cache after the first.
        assert_eq!(world.server.exchange_count(), 1, "{git}");

        world.commit(git, &work, "auto.txt");
        world
            .git(git, Some(&work), &["push", "-q", "origin", "HEAD:main"])
            .assert_ok();
        assert_eq!(requested(&world), Some(Permission::Write), "{git} push");
        assert_eq!(world.server.exchange_count(), 2, "{git}");
        // The read token could not have pushed: the server saw the write one on the push.
        let pushes: Vec<_> = world
            .server
            .git_requests()
            .into_iter()
            .filter(|r| r.push && r.token.is_some())
            .collect();
        assert!(
            pushes
                .iter()
                .all(|r| r.token.as_ref().unwrap().permission == Permission::Write)
        );
        let helpers = world.git(
            git,
            None,
            &[
                "config",
                "--global",
                "--get-all",
                &format!("credential.{}.helper", world.server.base_url()),
            ],
        );
        assert!(
            helpers.stdout.contains("--permission auto"),
            "{}",
            helpers.stdout
        );
    }
}

/// `exec` mints through the same minter as `get`: with acme's workspace token
/// it refuses globex's repo in one line, before any exchange (it once minted
/// acme/lib for `--repo globex/lib`).
#[test]
fn exec_refuses_a_repo_of_another_workspace_as_get_does() {
    let mut world = World::new();
    world.with_env_parent();
    world.server.add_workspace("globex");
    world.server.add_repo("globex", "lib");
    world.server.add_repo("acme", "lib");
    let url = world.server.base_url();
    let marker = world.path("ran");
    let script = format!("touch {}", marker.display());
    let run = world.helper(
        &[
            "--api-url",
            &url,
            "exec",
            "--repo",
            "globex/lib",
            "--",
            "sh",
            "-c",
            &script,
        ],
        None,
    );
    run.assert_failed();
    let line = run.stderr.trim();
    assert!(
        line.contains("your token is for acme, not globex"),
        "{}",
        run.stderr
    );
    assert_eq!(line.lines().count(), 1, "{}", run.stderr);
    assert!(!marker.exists(), "the command ran");
    assert_eq!(world.server.exchange_count(), 0);
    // `get` says the same.
    let get = world.helper(
        &["--api-url", &url, "get"],
        Some(&request(
            "http",
            &world.server.host(),
            Some("globex/lib.git"),
        )),
    );
    assert!(
        get.stderr.contains("your token is for acme, not globex"),
        "{}",
        get.stderr
    );
    assert_eq!(world.server.exchange_count(), 0);
}

/// When the API cannot say which workspace `GITHOSTED_TOKEN` belongs to
/// (`ListWorkspaces` answers 404), nothing is minted by `get`, `token` or
/// `exec` until it is declared; a declaration the API contradicts is refused.
#[test]
fn an_unplaceable_parent_mints_nothing_until_its_workspace_is_declared() {
    let mut world = World::new();
    world.with_env_parent();
    world.server.add_workspace("globex");
    world.server.add_repo("globex", "app");
    let url = world.server.base_url();
    let not_listed =
        || githosted_testkit::server::Fault::status(Some("ListWorkspaces"), 100, 404, "not_found");
    world.server.inject_fault(not_listed());
    let token = |world: &World| {
        world.helper(
            &[
                "--api-url",
                &url,
                "--no-agent",
                "token",
                "--repo",
                "globex/app",
            ],
            None,
        )
    };
    let refused = token(&world);
    refused.assert_failed();
    assert!(
        refused
            .stderr
            .contains("cannot say which workspace GITHOSTED_TOKEN belongs to")
            && refused.stderr.contains("GITHOSTED_WORKSPACE=globex"),
        "{}",
        refused.stderr
    );
    let get = world.helper(
        &["--api-url", &url, "--no-agent", "get"],
        Some(&request(
            "http",
            &world.server.host(),
            Some("globex/app.git"),
        )),
    );
    assert!(!get.stdout.contains("password"), "{}", get.stdout);
    assert!(get.stderr.contains("GITHOSTED_WORKSPACE"), "{}", get.stderr);
    let exec = world.helper(
        &[
            "--api-url",
            &url,
            "exec",
            "--no-isolate",
            "--repo",
            "globex/app",
            "--",
            "true",
        ],
        None,
    );
    exec.assert_failed();
    assert!(
        exec.stderr.contains("GITHOSTED_WORKSPACE"),
        "{}",
        exec.stderr
    );
    assert_eq!(world.server.exchange_count(), 0);

    // Declared: the declaration decides while the API cannot say.
    world.set_env("GITHOSTED_WORKSPACE", "acme");
    let wrong = token(&world);
    assert!(
        wrong.stderr.contains("your token is for acme, not globex"),
        "{}",
        wrong.stderr
    );
    let ok = world.helper(
        &[
            "--api-url",
            &url,
            "--no-agent",
            "token",
            "--repo",
            "acme/app",
        ],
        None,
    );
    ok.assert_ok();
    assert_eq!(world.server.exchange_count(), 1);

    // The API answers again: a declaration it contradicts is refused.
    world.server.clear_faults();
    world.set_env("GITHOSTED_WORKSPACE", "globex");
    let contradicted = token(&world);
    contradicted.assert_failed();
    assert!(
        contradicted.stderr.contains("says the token is for globex")
            && contradicted.stderr.contains("it is for acme"),
        "{}",
        contradicted.stderr
    );
    assert_eq!(world.server.exchange_count(), 1);
}

/// An agent's session outlives its tokens: git inside `exec` gets fresh ones
/// through `exec`'s channel (tokens live 6 s here; the session lasts over 3 of
/// them), each minted for `exec` alone and all revoked at the end.
#[test]
fn exec_renews_the_token_for_a_long_session() {
    let mut world = World::new();
    world.with_env_parent();
    world
        .server
        .cap_exchange_ttl(std::time::Duration::from_secs(6));
    let url = world.server.base_url();
    let clone_url = world.url("app");
    let script = format!(
        r#"set -e
git clone -q {clone_url} work
cd work
git config user.email agent@example.com
git config user.name agent
for i in 1 2 3 4; do
  sleep 6
  echo "$i" > "file$i"
  git add "file$i"
  git commit -q -m "change $i"
  git push -q origin HEAD
done
echo pushed"#
    );
    let run = world.helper(
        &[
            "--api-url",
            &url,
            "exec",
            "--ttl",
            "60",
            "--repo",
            "acme/app",
            "--",
            "sh",
            "-c",
            &script,
        ],
        None,
    );
    run.assert_ok();
    assert_eq!(run.stdout.trim(), "pushed", "{}", run.stderr);
    let exchanges = world.server.exchanges();
    assert!(exchanges.len() >= 3, "{} exchanges", exchanges.len());
    for e in &exchanges {
        assert_eq!(e.allowlist, vec!["app".to_string()]);
        assert_eq!(e.ttl_seconds, 60);
        assert!(e.subject.ends_with(" exec"), "{}", e.subject);
    }
    // Every token exec minted that was still alive is revoked; none is in the agent.
    let revoked = world.server.revoked_via_api();
    assert!(!revoked.is_empty());
    let last = exchanges.last().unwrap().minted.id.clone();
    assert!(revoked.contains(&last), "{revoked:?}");
    let status = world.helper(&["--api-url", &url, "status"], None);
    assert!(!status.stdout.contains("acme/app"), "{}", status.stdout);
}

/// The renewal channel mints for the granted repos only: `token` and git
/// inside `exec` are refused another repo in one line, and nothing is minted
/// for it.
#[test]
fn exec_channel_refuses_repos_outside_the_grant() {
    let mut world = World::new();
    world.with_env_parent();
    world.server.add_repo("acme", "lib");
    let url = world.server.base_url();
    let host = world.server.host();
    let script = format!(
        r#"git-credential-githosted --api-url {url} token --repo acme/lib; echo "token rc=$?"
printf 'protocol=http\nhost={host}\npath=acme/lib.git\n' | git-credential-githosted --api-url {url} get; echo "get rc=$?"
printf 'protocol=http\nhost={host}\npath=acme/app.git\n' | git-credential-githosted --api-url {url} get | grep -c '^password=gr_'
git-credential-githosted --api-url {url} token --repo acme/app | grep -c '^gr_'"#
    );
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
            &script,
        ],
        None,
    );
    run.assert_ok();
    assert_eq!(
        run.stdout, "token rc=1\nquit=1\nget rc=1\n1\n1\n",
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("runs under `exec` with tokens for acme/app only, not acme/lib"),
        "{}",
        run.stderr
    );
    let exchanges = world.server.exchanges();
    assert_eq!(exchanges.len(), 1, "one token, for app only");
    assert_eq!(exchanges[0].allowlist, vec!["app".to_string()]);
}

/// After `--max-session`, exec renews no more: the command's next git fails
/// with one line that says so and what to do, not a bare "Authentication
/// failed" nor a Username prompt (tokens live 3 s here, the session 1 s).
#[test]
fn a_push_after_the_exec_session_ended_says_why() {
    let mut world = World::new();
    world.with_env_parent();
    world
        .server
        .cap_exchange_ttl(std::time::Duration::from_secs(3));
    let url = world.server.base_url();
    let clone_url = world.url("app");
    let script = format!(
        r#"set -e
git clone -q {clone_url} work
cd work
git config user.email agent@example.com
git config user.name agent
sleep 4
echo 1 > file1
git add file1
git commit -q -m change
git push -q origin HEAD && echo pushed || echo "push failed""#
    );
    let run = world.helper(
        &[
            "--api-url",
            &url,
            "exec",
            "--ttl",
            "60",
            "--max-session",
            "1",
            "--repo",
            "acme/app",
            "--",
            "sh",
            "-c",
            &script,
        ],
        None,
    );
    run.assert_ok();
    assert_eq!(run.stdout.trim(), "push failed", "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "exec's session for acme/app ended after --max-session 1 s; run exec again (with a longer --max-session)"
        ),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("Username"), "{}", run.stderr);
    assert_eq!(
        world.server.exchanges().len(),
        1,
        "no renewal after the session"
    );
}

/// A token githosted refuses inside `exec` (revoked here, as an admin
/// would) gets a hint from the command's helper when git erases it, and the
/// next git command gets a fresh one.
#[test]
fn a_rejected_exec_token_gets_a_hint_and_the_next_git_a_fresh_one() {
    let mut world = World::new();
    world.with_env_parent();
    let url = world.server.base_url();
    let clone_url = world.url("app");
    let first = world.path("first-done");
    let go = world.path("revoked");
    let script = format!(
        r#"git ls-remote {clone_url} >/dev/null && echo first-ok
touch {first}
while [ ! -e {go} ]; do sleep 0.05; done
git ls-remote {clone_url} >/dev/null && echo second-ok || echo second-failed
git ls-remote {clone_url} >/dev/null && echo third-ok"#,
        first = first.display(),
        go = go.display()
    );
    let mut cmd = std::process::Command::new(helper());
    cmd.current_dir(world.dir.path());
    cmd.args([
        "--api-url",
        &url,
        "exec",
        "--repo",
        "acme/app",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let world = &world;
    let run = std::thread::scope(|s| {
        let handle = s.spawn(move || world.run(cmd, None));
        while !first.exists() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let minted = world.server.issued_tokens();
        world.server.revoke(minted.last().unwrap());
        std::fs::write(&go, "").unwrap();
        handle.join().unwrap()
    });
    run.assert_ok();
    assert_eq!(
        run.stdout, "first-ok\nsecond-failed\nthird-ok\n",
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "githosted rejected exec's token for acme/app (revoked, or expired early); exec mints a fresh one for the next git command: run it again"
        ),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("Username"), "{}", run.stderr);
    assert_eq!(world.server.exchanges().len(), 2);
}
